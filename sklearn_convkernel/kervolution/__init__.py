"""Kervolution: convolutions whose response is a kernel of patch and filter (optional PyTorch).

Wang, Yang, Zhang, Jiang and Gao, "Kervolutional Neural Networks", CVPR
2019.  A :class:`KernelConv2d` computes, at every output position, the
kernel ``k(p, w)`` between the (strided, dilated, padded) input patch ``p``
of each group of input channels and each filter ``w`` (plus a bias):

========== ============================== =====================
kernel     response ``k(p, w)``           parameters
========== ============================== =====================
linear     ``<p, w>``
polynomial ``(<p, w> + c) ** degree``     ``c=1.0, degree=2``
gaussian   ``exp(-gamma ||p - w||^2)``    ``gamma=1.0``
sigmoid    ``tanh(alpha <p, w> + c)``     ``alpha=1.0, c=0.0``
manhattan  ``-||p - w||_1``
========== ============================== =====================

The linear kernel is exactly ``torch.nn.functional.conv2d``.  The
patch/filter products come from ``conv2d`` itself (so channel and
position orders are those of PyTorch), the Gaussian distance from
``||p||^2 + ||w||^2 - 2 <p, w>`` (``||p||^2`` is a convolution of ``x**2``
with a ones filter), never materialising the ``N x C_out x patch x
positions`` difference tensor; the Manhattan distance uses
``torch.nn.functional.unfold`` and :func:`torch.cdist` on chunks of images
of bounded size.

This package imports without PyTorch (the implementation, in the private
module ``_torch``, is imported on first use); :class:`KernelConv2d` and
:func:`kernelize` raise an :class:`ImportError` naming
``pip install sklearn-convkernel[torch]`` when PyTorch is missing.
"""

from __future__ import annotations

import importlib

from sklearn_convkernel.kervolution import _kernels

__all__ = ["KernelConv2d", "kernelize", "KERVOLUTION_KERNELS"]

#: Kernel names and the keyword parameters each accepts (with defaults).
KERVOLUTION_KERNELS = _kernels.KERVOLUTION_KERNELS

_INSTALL_HINT = (
    "sklearn_convkernel.kervolution needs PyTorch, which is not installed; install it with "
    "`pip install sklearn-convkernel[torch]` (or `pip install torch`)."
)


def _torch_impl():
    """The PyTorch implementation module, or an ImportError with the install hint."""
    try:
        return importlib.import_module("sklearn_convkernel.kervolution._torch")
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch" or "torch" in str(exc):
            raise ImportError(_INSTALL_HINT) from exc
        raise


def __getattr__(name):
    # PEP 562: KernelConv2d (an nn.Module subclass) is created on first access
    if name == "KernelConv2d":
        return _torch_impl().KernelConv2d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["KernelConv2d"])


def kernelize(module, kernel, **kernel_params):
    """Replace every ``torch.nn.Conv2d`` of ``module`` by a :class:`KernelConv2d`, keeping weights.

    Parameters
    ----------
    module : torch.nn.Module
        A model (converted in place) or a single ``Conv2d`` (a new module is
        returned).
    kernel : {"linear", "polynomial", "gaussian", "sigmoid", "manhattan"}
        The kernel of the new layers.
    **kernel_params
        Parameters of the kernel (see :data:`KERVOLUTION_KERNELS`), and
        ``learnable`` (bool) to make them trainable.

    Returns
    -------
    torch.nn.Module
        ``module`` itself with its convolutions replaced, or the new layer
        when ``module`` is a ``Conv2d``.  Weights, biases, strides, paddings
        (including the padding mode), dilations, groups, devices, dtypes and
        the training flag are kept; layers that already are
        :class:`KernelConv2d` are left alone.  With ``kernel="linear"`` the
        outputs are unchanged.

    Examples
    --------
    >>> import torch  # doctest: +SKIP
    >>> from sklearn_convkernel.kervolution import kernelize  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())  # doctest: +SKIP
    >>> net = kernelize(net, "polynomial", c=1.0, degree=2)  # doctest: +SKIP
    >>> type(net[0]).__name__  # doctest: +SKIP
    'KernelConv2d'
    """
    return _torch_impl().kernelize(module, kernel, **kernel_params)
