"""PyTorch implementation of :mod:`sklearn_convkernel.kervolution` (imports torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sklearn_convkernel.kervolution._kernels import KERVOLUTION_KERNELS

__all__ = ["KernelConv2d", "kernelize"]

#: elements of one unfolded chunk in the Manhattan kernel (about 128 MiB of float32)
_MANHATTAN_CHUNK = 1 << 25


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _same_pads(n, k, s, d):
    """TensorFlow SAME padding (before, after) of one axis: output ceil(n / s)."""
    out = -(-n // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


class KernelConv2d(nn.Conv2d):
    """2-D kervolution: the response is a kernel ``k(patch, filter)``, not ``<patch, filter>``.

    A subclass of :class:`torch.nn.Conv2d` with the same parameters (weight of
    shape ``(out_channels, in_channels // groups, kh, kw)``, optional bias),
    so its state dict is a ``Conv2d``'s (plus learnable kernel parameters, if
    any).  The bias is added to the kernel value.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d`.
    padding : int, tuple, "valid" or "same", default=0
        As :class:`torch.nn.Conv2d`; ``"same"`` is also accepted with a
        stride (TensorFlow's SAME: output size ``ceil(n / stride)``, the odd
        padding pixel at the bottom/right), which ``Conv2d`` refuses.
    kernel : {"linear", "polynomial", "gaussian", "sigmoid", "manhattan"}, default="linear"
        ``<p, w>``; ``(<p, w> + c) ** degree``; ``exp(-gamma ||p - w||^2)``;
        ``tanh(alpha <p, w> + c)``; ``-||p - w||_1``.
    c : float, default=None
        Offset of the polynomial (default 1.0) and sigmoid (default 0.0) kernels.
    degree : int, default=2
        Degree of the polynomial kernel.
    gamma : float, default=1.0
        Bandwidth of the Gaussian kernel.
    alpha : float, default=1.0
        Slope of the sigmoid kernel.
    learnable : bool, default=False
        Whether the kernel's real parameters (c, gamma, alpha) are trained
        (``nn.Parameter``); the degree is always fixed.
    device, dtype
        As :class:`torch.nn.Conv2d`.

    Notes
    -----
    With ``kernel="linear"`` the forward pass *is* ``Conv2d``'s (same call
    to ``torch.nn.functional.conv2d``), hence bit-identical.  The Gaussian
    distance uses ``||p||^2 + ||w||^2 - 2 <p, w>`` (clamped at 0), computed
    by two convolutions; the Manhattan kernel unfolds chunks of images whose
    size is bounded (``torch.cdist`` with ``p=1`` on each chunk).

    Examples
    --------
    >>> import torch
    >>> from sklearn_convkernel.kervolution import KernelConv2d
    >>> layer = KernelConv2d(3, 8, 3, padding="same", kernel="gaussian", gamma=0.5)
    >>> layer(torch.randn(2, 3, 10, 12)).shape
    torch.Size([2, 8, 10, 12])
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 kernel="linear", c=None, degree=2, gamma=1.0, alpha=1.0, learnable=False):
        if kernel not in KERVOLUTION_KERNELS:
            raise ValueError(
                f"KernelConv2d: kernel must be one of {sorted(KERVOLUTION_KERNELS)}, "
                f"got {kernel!r}."
            )
        tf_same = isinstance(padding, str) and padding == "same" and _pair(stride) != (1, 1)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=0 if tf_same else padding, dilation=dilation, groups=groups,
                         bias=bias, padding_mode=padding_mode, device=device, dtype=dtype)
        self._tf_same = tf_same
        if tf_same:
            self.padding = "same"
        self.kernel = kernel
        if kernel == "polynomial":
            if isinstance(degree, bool) or int(degree) != degree or degree < 1:
                raise ValueError(f"KernelConv2d: degree must be an int >= 1, got {degree!r}.")
            self.degree = int(degree)
            self._kernel_param("c", 1.0 if c is None else c, learnable, device, dtype)
        elif kernel == "gaussian":
            if not gamma > 0:
                raise ValueError(f"KernelConv2d: gamma must be > 0, got {gamma!r}.")
            self._kernel_param("gamma", gamma, learnable, device, dtype)
        elif kernel == "sigmoid":
            self._kernel_param("alpha", alpha, learnable, device, dtype)
            self._kernel_param("c", 0.0 if c is None else c, learnable, device, dtype)
        self.learnable = bool(learnable)

    def _kernel_param(self, name, value, learnable, device, dtype):
        t = torch.tensor(float(value), device=device,
                         dtype=dtype if dtype is not None else torch.get_default_dtype())
        if learnable:
            self.register_parameter(name, nn.Parameter(t))
        else:
            self.register_buffer(name, t)

    def extra_repr(self):
        s = super().extra_repr() + f", kernel={self.kernel!r}"
        if self.kernel == "polynomial":
            s += f", c={float(self.c):g}, degree={self.degree}"
        elif self.kernel == "gaussian":
            s += f", gamma={float(self.gamma):g}"
        elif self.kernel == "sigmoid":
            s += f", alpha={float(self.alpha):g}, c={float(self.c):g}"
        return s

    # -- the pieces ------------------------------------------------------

    def _prepared(self, x):
        """(input, conv padding) such that ``conv2d(input, w, padding=...)`` gives ``<p, w>``."""
        if self._tf_same:
            kh, kw = self.kernel_size
            top, bottom = _same_pads(x.shape[-2], kh, self.stride[0], self.dilation[0])
            left, right = _same_pads(x.shape[-1], kw, self.stride[1], self.dilation[1])
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(x, (left, right, top, bottom), mode=mode), (0, 0)
        if self.padding_mode != "zeros":
            return (F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                    (0, 0))
        return x, self.padding

    def _dot(self, x, padding):
        return F.conv2d(x, self.weight, None, self.stride, padding, self.dilation, self.groups)

    def _patch_sqnorms(self, x, padding):
        """``||p||^2`` per group and output position: (N, groups, H', W')."""
        g = self.groups
        ones = torch.ones((g, self.in_channels // g) + tuple(self.kernel_size),
                          device=x.device, dtype=x.dtype)
        return F.conv2d(x * x, ones, None, self.stride, padding, self.dilation, g)

    def _manhattan(self, x, padding):
        """``-||p - w||_1`` by unfold + cdist over chunks of images."""
        n = x.shape[0]
        g = self.groups
        kh, kw = self.kernel_size
        dim = (self.in_channels // g) * kh * kw
        if isinstance(padding, str):  # "same" (stride 1) or "valid"
            if padding == "valid":
                padding = (0, 0)
            else:
                pads = [_same_pads(x.shape[-2 + a], self.kernel_size[a], 1, self.dilation[a])
                        for a in range(2)]
                x = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
                padding = (0, 0)
        hp = x.shape[-2] + 2 * padding[0]
        wp = x.shape[-1] + 2 * padding[1]
        ho = (hp - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (wp - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        positions = ho * wo
        per_image = self.in_channels * kh * kw * positions
        step = max(1, _MANHATTAN_CHUNK // max(per_image, 1))
        w = self.weight.reshape(g, self.out_channels // g, dim)
        outs = []
        for s in range(0, n, step):
            cols = F.unfold(x[s:s + step], (kh, kw), dilation=self.dilation, padding=padding,
                            stride=self.stride)  # (m, C kh kw, L), channel-major like weight
            m = cols.shape[0]
            cols = cols.reshape(m, g, dim, positions).transpose(2, 3)  # (m, g, L, dim)
            d = torch.cdist(cols, w.unsqueeze(0).expand(m, -1, -1, -1), p=1.0)  # (m, g, L, o/g)
            outs.append(-d.permute(0, 1, 3, 2).reshape(m, self.out_channels, ho, wo))
        return torch.cat(outs, dim=0)

    def forward(self, x):
        """Kernel responses (plus bias) of a batch ``x`` of shape (N, C_in, H, W).

        Parameters
        ----------
        x : torch.Tensor of shape (N, in_channels, H, W)

        Returns
        -------
        torch.Tensor of shape (N, out_channels, H', W')
            The output size is that of :class:`torch.nn.Conv2d` with the same
            stride, padding and dilation (``ceil(H / stride)`` for
            ``padding="same"`` with a stride).
        """
        if self.kernel == "linear":
            return self._conv_forward(x, self.weight, self.bias) if not self._tf_same else (
                F.conv2d(self._prepared(x)[0], self.weight, self.bias, self.stride, 0,
                         self.dilation, self.groups))
        xp, padding = self._prepared(x)
        if self.kernel == "polynomial":
            out = (self._dot(xp, padding) + self.c) ** self.degree
        elif self.kernel == "sigmoid":
            out = torch.tanh(self.alpha * self._dot(xp, padding) + self.c)
        elif self.kernel == "gaussian":
            g, o = self.groups, self.out_channels
            dot = self._dot(xp, padding)
            n, _, h, w = dot.shape
            wn = self.weight.flatten(1).pow(2).sum(1).view(1, g, o // g, 1, 1)
            pn = self._patch_sqnorms(xp, padding).view(n, g, 1, h, w)  # broadcast, no copy
            d2 = (pn + wn - 2.0 * dot.view(n, g, o // g, h, w)).clamp_min(0.0)
            out = torch.exp(-self.gamma * d2).view(n, o, h, w)
        else:  # manhattan
            out = self._manhattan(xp, padding)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    @classmethod
    def from_conv(cls, conv, kernel, **kernel_params):
        """A KernelConv2d with ``conv``'s configuration, weights, device, dtype and mode."""
        w = conv.weight
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=w.device, dtype=w.dtype, kernel=kernel, **kernel_params)
        with torch.no_grad():
            new.weight.copy_(w)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.weight.requires_grad_(w.requires_grad)
        if conv.bias is not None:
            new.bias.requires_grad_(conv.bias.requires_grad)
        new.train(conv.training)
        return new


def kernelize(module, kernel, **kernel_params):
    """See :func:`sklearn_convkernel.kervolution.kernelize`."""
    if kernel not in KERVOLUTION_KERNELS:
        raise ValueError(
            f"kernelize: kernel must be one of {sorted(KERVOLUTION_KERNELS)}, got {kernel!r}."
        )
    if not isinstance(module, nn.Module):
        raise TypeError(f"kernelize expects a torch.nn.Module, got {type(module).__name__}.")
    if isinstance(module, nn.Conv2d) and not isinstance(module, KernelConv2d):
        return KernelConv2d.from_conv(module, kernel, **kernel_params)
    for name, child in list(module.named_children()):
        new = kernelize(child, kernel, **kernel_params)
        if new is not child:
            setattr(module, name, new)
    return module

