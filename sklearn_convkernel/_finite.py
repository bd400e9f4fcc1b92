"""Finite random networks sampled from an architecture spec (NumPy, for tests).

As the width grows, the empirical kernel of a random network,
``(1/C_out) sum_c f_c(x) f_c(y)``, converges to the NNGP / CKN kernel that
:func:`sklearn_convkernel._reference.reference_gram` computes exactly.  This
gives an independent Monte-Carlo check of the recursion (DESIGN.md §6.3).

Parameterisation (neural-tangents' "ntk" parameterisation, standard normal
parameters scaled by the fan-in):

* every :class:`~sklearn_convkernel.arch.Conv` / ``Dense`` has ``width``
  output channels, weights ``~ N(0, weight_var / (kh kw C_in))`` and biases
  ``~ N(0, bias_var)``;
* ``input_norm="sum"`` multiplies the input by ``sqrt(C)``, which is the same
  as drawing the first layer's weights from ``N(0, weight_var / (kh kw))``;
* nonlinearities act pointwise: ReLU ``max(0, u)``, Erf ``erf(u)``,
  ``ArcCosKernel(1)`` ``sqrt(2) relu(u)``, ``LinearKernel`` the identity.
  The other homogeneous kernels ``sqrt(Vx Vy) kappa(rho)`` use an exact
  random-feature map of ``kappa`` applied to the normalised pre-activation,
  ``f(u) = sqrt(V) g(u / sqrt(V))`` with ``E[g(a) g(b)] = kappa(rho)`` for
  standard normal (a, b) of correlation rho: ``g = sqrt(2) step`` (arc-cosine
  order 0), ``g(a) = exp(a / sigma - 1 / sigma^2)`` (ExpKernel),
  ``g = He_d / sqrt(d!)`` (PolyKernel, probabilists' Hermite polynomial).
  ``V`` is the *empirical* per-position variance ``(1/C) sum_c u_c(p)^2`` of
  the pre-activation, which converges to ``Vx[p]`` as the width grows;
* pools and readouts act per channel; ``Flatten`` reshapes the map into
  ``H W C`` channels of a 1x1 map (so a following Dense has fan-in ``H W C``),
  ``Trace`` does the same scaled by ``sqrt(H W)``; ``GlobalAvgPool`` averages
  each channel over positions;
* ``Sum`` branches have their own weights and their outputs are added;
  ``Tap`` read-outs are ignored (only the final output is returned).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import arch as _arch
from ._reference import _axis_geometry, _axis_padding, _pool_matrices
from ._validation import check_images

__all__ = ["FiniteNetwork", "sample_network", "empirical_kernel"]


def _entropy(random_state):
    """An integer seed from an int, None, a Generator, a RandomState or a SeedSequence."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    return int(np.random.default_rng(random_state).integers(0, 2**63 - 1))


class FiniteNetwork:
    """A finite random network drawn from an architecture.

    The parameters of the ``i``-th parameterised layer (depth-first order) are
    drawn from ``np.random.default_rng([seed, i])`` when first needed and
    cached per fan-in, so the network is a fixed function of its inputs for any
    image size.

    Call it on images of shape (n, H, W, C) to get the final 1x1 map's
    channels, shape (n, C_out).

    Parameters
    ----------
    architecture : Layer
        The architecture (layers of :mod:`sklearn_convkernel.arch`) ending in
        a read-out, so that the output is a 1x1 map.
    input_channels : int
        Number of channels ``C`` of the images.
    width : int
        Number of output channels of every ``Conv`` / ``Dense`` layer.
    random_state : int, numpy.random.Generator, RandomState, SeedSequence or None, default=None
        Seeds the parameters (reduced to one integer seed, the attribute ``seed``).

    See Also
    --------
    sample_network : the same, as a function.
    empirical_kernel : the Monte-Carlo kernel of many such networks.
    """

    def __init__(self, architecture, input_channels, width, random_state=None):
        if not isinstance(architecture, _arch.Layer):
            raise ValueError(f"architecture must be a layer, got {architecture!r}.")
        if not isinstance(width, numbers.Integral) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}.")
        if not isinstance(input_channels, numbers.Integral) or input_channels < 1:
            raise ValueError(f"input_channels must be a positive int, got {input_channels!r}.")
        self.architecture = architecture
        self.input_channels = int(input_channels)
        self.width = int(width)
        self.seed = _entropy(random_state)
        self._params = {}

    # -- parameters --------------------------------------------------------

    def _weights(self, index, layer, c_in):
        key = (index, c_in)
        if key not in self._params:
            rng = np.random.default_rng([self.seed, index])
            kh, kw = layer.size
            std = math.sqrt(layer.weight_var / (kh * kw * c_in))
            W = std * rng.standard_normal((kh, kw, c_in, self.width))
            b = math.sqrt(layer.bias_var) * rng.standard_normal(self.width)
            self._params[key] = (W, b)
        return self._params[key]

    # -- forward pass ------------------------------------------------------

    def __call__(self, X):
        X = check_images(X, "X", np.float64)
        if X.shape[3] != self.input_channels:
            raise ValueError(
                f"expected images of shape (n, H, W, {self.input_channels}), got {X.shape}."
            )
        _arch.validate(self.architecture, X.shape[1:3])
        if self.architecture._input_norm == "sum":
            X = X * math.sqrt(X.shape[3])
        counter = iter(range(10**9))
        out = self.forward(self.architecture, X, counter)
        assert out.shape[1:3] == (1, 1)
        return out[:, 0, 0, :]

    # -- operations called by each layer's ``_finite(net, h, counter)`` method --

    def forward(self, layer, h, counter):
        """Apply ``layer`` to the maps ``h`` (n, H, W, C); ``counter`` numbers the parameters."""
        return layer._finite(self, h, counter)

    def skip_parameters(self, layer, counter):
        """Consume the parameter indices of ``layer`` without applying it (a tap's read-out)."""
        for sub in _arch.iter_layers(layer):
            if sub._has_weights:
                next(counter)

    def conv(self, h, layer, counter):
        """A random :class:`~.arch.Conv` with ``width`` output channels (next parameter index)."""
        return self._conv(h, layer, next(counter))

    @staticmethod
    def pool(h, layer):
        """A pooling layer per channel (the oracle's pooling matrices)."""
        Ph, Pw = _pool_matrices(layer, h.shape[1:3])
        return np.einsum("ai,bj,nijc->nabc", Ph, Pw, h, optimize=True)

    @staticmethod
    def homogeneous(u, g):
        """Random features of a homogeneous kernel: ``sqrt(V) g(u / sqrt(V))``.

        ``V`` is the empirical per-position variance over the channels.
        """
        V = np.mean(u * u, axis=-1, keepdims=True)
        scale = np.sqrt(V)
        a = np.divide(u, scale, out=np.zeros_like(u), where=scale > 0)
        return scale * g(a)

    def _conv(self, h, layer, index):
        n, H, W, c_in = h.shape
        Wt, b = self._weights(index, layer, c_in)
        kh, kw = layer.size
        sh, sw = layer.stride
        dh, dw = layer.dilation
        lo_h, hi_h, circ, oh = _axis_geometry(_axis_padding(layer.padding, 0), H, kh, sh, dh)
        lo_w, hi_w, _, ow = _axis_geometry(_axis_padding(layer.padding, 1), W, kw, sw, dw)
        hp = np.pad(h, [(0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)],
                    mode="wrap" if circ else "constant")
        patches = [
            hp[:, dh * th: dh * th + sh * (oh - 1) + 1: sh,
               dw * tw: dw * tw + sw * (ow - 1) + 1: sw, :]
            for th in range(kh) for tw in range(kw)
        ]
        # im2col: one GEMM over (taps x input channels)
        cols = np.concatenate(patches, axis=-1).reshape(n * oh * ow, kh * kw * c_in)
        out = (cols @ Wt.reshape(kh * kw * c_in, self.width)).reshape(n, oh, ow, self.width)
        return out + b


def sample_network(architecture, input_channels, width, random_state=None):
    """Draw a finite random network of the given width from ``architecture``.

    Parameters
    ----------
    architecture : Layer
        The architecture (layers of :mod:`sklearn_convkernel.arch`) ending in
        a read-out.
    input_channels : int
        Number of channels ``C`` of the images.
    width : int
        Number of output channels of every ``Conv`` / ``Dense`` layer.
    random_state : int, numpy.random.Generator, RandomState, SeedSequence or None, default=None
        Seeds the parameters.

    Returns
    -------
    FiniteNetwork
        A callable ``f(X) -> (n, C_out)`` on images X of shape (n, H, W, C).
    """
    return FiniteNetwork(architecture, input_channels, width, random_state)


def empirical_kernel(X, Y=None, *, architecture, width, n_networks, random_state=None):
    """Monte-Carlo estimate of the NNGP kernel from finite random networks.

    Parameters
    ----------
    X : array-like of shape (n_X, H, W, C)
        Images.
    Y : array-like of shape (n_Y, H, W, C), default=None
        Second set of images; None means ``Y = X``.
    architecture : Layer
        The architecture (layers of :mod:`sklearn_convkernel.arch`) ending in
        a read-out.
    width : int
        Number of output channels of every ``Conv`` / ``Dense`` layer.
    n_networks : int
        Number of independent networks (at least 2).
    random_state : int, numpy.random.Generator, RandomState, SeedSequence or None, default=None
        Seeds the networks.

    Returns
    -------
    mean : ndarray of shape (n_X, n_Y)
        The mean over the networks of the empirical kernel
        ``(1/C_out) sum_c f_c(x) f_c(y)``.
    stderr : ndarray of shape (n_X, n_Y)
        Its standard error across networks.
    """
    X = check_images(X, "X", np.float64)
    if Y is not None:
        Y = check_images(Y, "Y", np.float64)
        if Y.shape[1:] != X.shape[1:]:
            raise ValueError(f"Y must have shape (n, {X.shape[1:]}), got {Y.shape}.")
    if not isinstance(n_networks, numbers.Integral) or n_networks < 2:
        raise ValueError(f"n_networks must be an int >= 2, got {n_networks!r}.")
    seeds = np.random.SeedSequence(_entropy(random_state)).generate_state(n_networks, np.uint64)
    samples = []
    for seed in seeds:
        net = sample_network(architecture, X.shape[3], width, int(seed))
        fX = net(X)
        fY = fX if Y is None else net(Y)
        samples.append(fX @ fY.T / fX.shape[1])
    samples = np.stack(samples)
    return samples.mean(axis=0), samples.std(axis=0, ddof=1) / math.sqrt(n_networks)
