"""Architecture specification: immutable layers describing a convolutional kernel.

An architecture is a tree of small immutable layer objects, composed with
:class:`Sequential`, :class:`Sum` (independent branches whose kernels add up,
e.g. residual blocks) and :class:`Tap` (an extra read-out at an intermediate
depth, so that several depths are computed in one pass).

Every layer maps the pair of covariance tensors carried through an infinitely
wide network -- the NNGP covariance ``K[p, q]`` and, when ``kind="ntk"``, the
neural tangent kernel ``Theta[p, q]`` over pairs of spatial positions -- to the
tensors of the next stage (see ``docs/`` and the module ``_reference`` for the
math).  The conventions:

* input: ``K0[p, q] = s * sum_c x_c(p) y_c(q)`` with ``s = 1/C``
  (``input_norm="mean"``, neural-tangents, cnn_gp) or ``s = 1`` (``"sum"``,
  ckn_kernel, Arora et al.);
* :class:`Conv`: ``K' = weight_var * mean_{window}(K) + bias_var`` where the
  window offset is the same on both sides; ``Theta' = weight_var *
  mean_{window}(Theta) + K'`` (without ``+ K'`` if ``trainable=False``);
* nonlinearities act entrywise using the self-variances ``K(x,x)[p,p]`` and
  ``K(y,y)[q,q]``;
* pools are linear maps applied on both sides independently;
* readouts reduce the map to a single position (1x1).

Shapes are checked by :meth:`Sequential.output_shape` /
:func:`sklearn_convkernel._plan.make_plan` before any computation, with errors
that name the offending layer and say how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Tuple, Union

import numpy as np

from sklearn_convkernel import _abi

__all__ = [
    "ArchitectureError",
    "Layer",
    "Sequential",
    "Sum",
    "Tap",
    "Identity",
    "Conv",
    "Dense",
    "ReLU",
    "Erf",
    "ExpKernel",
    "ArcCosKernel",
    "PolyKernel",
    "LinearKernel",
    "AvgPool",
    "GaussianPool",
    "BoxPool",
    "StridedPool",
    "GlobalAvgPool",
    "Flatten",
    "Trace",
    "ShiftAverage",
]


class ArchitectureError(ValueError):
    """Raised when an architecture is malformed or does not fit the input shape."""


# ---------------------------------------------------------------------------
# parameter helpers
# ---------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_bool(value, name, owner):
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ArchitectureError(f"{owner}: {name} must be True or False, got {value!r}.")
    return bool(value)


# Largest window size, stride, dilation or subsampling: far beyond any image the
# engine can hold, small enough that every derived extent fits in int64 without
# overflow and no padding is sized from an absurd value.
MAX_INT_PARAM = 2**20


def _pair(value, name, owner, minimum=1):
    """Normalise an int or an (h, w) pair of ints to a tuple of two ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        value = (int(value[0]), int(value[1]))
    else:
        raise ArchitectureError(
            f"{owner}: {name} must be an int or a pair (h, w) of ints, got {value!r}."
        )
    if min(value) < minimum:
        raise ArchitectureError(f"{owner}: {name} must be >= {minimum}, got {value!r}.")
    if max(value) > MAX_INT_PARAM:
        raise ArchitectureError(
            f"{owner}: {name} must be <= {MAX_INT_PARAM} (2**20, larger than any image), "
            f"got {value!r}."
        )
    return value


def _nonneg_float(value, name, owner, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArchitectureError(f"{owner}: {name} must be a real number, got {value!r}.")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "> 0" if positive else ">= 0"
        raise ArchitectureError(f"{owner}: {name} must be finite and {kind}, got {value!r}.")
    return value


_PADDING_NAMES = ("same", "valid", "circular")


def _padding(value, owner):
    """Normalise a padding spec.

    Returns either one of the strings "same", "valid", "circular" or explicit
    pads ((top, bottom), (left, right)).
    """
    if isinstance(value, str):
        low = value.lower()
        if low not in _PADDING_NAMES:
            raise ArchitectureError(
                f"{owner}: padding must be 'same', 'valid', 'circular', an int or "
                f"((top, bottom), (left, right)); got {value!r}."
            )
        return low
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise ArchitectureError(f"{owner}: padding must be >= 0, got {value!r}.")
        v = int(value)
        return ((v, v), (v, v))
    try:
        (t, b), (l, r) = value
        pads = tuple(
            tuple(int(v) for v in pair) for pair in ((t, b), (l, r))
        )
        ok = all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0
            for v in (t, b, l, r)
        )
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ArchitectureError(
            f"{owner}: padding must be 'same', 'valid', 'circular', a non-negative int "
            f"or ((top, bottom), (left, right)) of non-negative ints; got {value!r}."
        )
    return pads


def resolve_padding(padding, n, k, s, d):
    """Resolve a padding spec along one axis.

    Parameters
    ----------
    padding : str or (lo, hi)
        "same", "valid", "circular" or explicit pads for this axis.
    n, k, s, d : int
        Input length, window size, stride and dilation.

    Returns
    -------
    lo, hi : int
        Pads before and after.
    circular : bool
        Whether padding wraps around.
    out : int
        Output length (may be <= 0 when the window does not fit).

    Notes
    -----
    "same" follows TensorFlow / neural-tangents: ``out = ceil(n / s)``, the
    total padding is ``max((out - 1) s + d (k - 1) + 1 - n, 0)``, with
    ``floor(total / 2)`` before and the rest after.  "circular" uses the same
    amounts, wrapping around.
    """
    ext = d * (k - 1) + 1
    if padding in ("same", "circular"):
        out = -(-n // s)
        total = max((out - 1) * s + ext - n, 0)
        lo = total // 2
        hi = total - lo
        return lo, hi, padding == "circular", out
    if padding == "valid":
        lo = hi = 0
    else:
        lo, hi = padding
    out = (n + lo + hi - ext) // s + 1
    return lo, hi, False, out


# ---------------------------------------------------------------------------
# base classes
# ---------------------------------------------------------------------------


class Layer:
    """Base class of every architecture element.

    Layers are immutable; compose them with :class:`Sequential`.

    Each layer class owns its whole meaning (``docs/developer.rst``, "Adding
    a layer"); the drivers only call these methods:

    * :meth:`output_shape` -- the shape rule (and its error messages);
    * ``_lower(lowering, shape)`` -- its operations of the compiled core's
      program, through the builders of ``_plan._Lowering``;
      returns the output shape;
    * ``_oracle(oracle, stage)`` -- its rule in the slow reference recursion,
      from the generic maps of ``_reference._Oracle``;
      returns the next stage;
    * ``_finite(net, h, counter)`` -- its forward pass in a finite random
      network (``FiniteNetwork``) on maps
      ``h`` of shape (n, H, W, C); ``counter`` numbers the parameterised layers;
    * ``_gaussian_out(gaussian)`` -- whether its output is a Gaussian
      pre-activation (nonlinearities check their input is);
    * ``_children()`` -- the sub-architectures of a combinator;
    * ``_describe(describe)`` / ``_from_description(params, build)`` -- its
      JSON description (``_serialize``): the parameters of a dataclass layer,
      the nested layers of a combinator.

    A layer class that has no rule for a driver names the method in
    ``_unsupported`` and inherits the default, which raises a clear error.
    """

    #: driver methods ("_lower", "_oracle", "_finite") this class deliberately lacks
    _unsupported = frozenset()
    #: whether the layer draws random weights (numbered by FiniteNetwork)
    _has_weights = False
    #: whether the layer only groups other layers (Sequential, Sum, Tap)
    _combinator = False

    def output_shape(self, shape):
        """Spatial shape (H, W) after this layer, for an input of spatial shape ``shape``.

        Raises :class:`ArchitectureError` naming the layer when it does not fit.
        """
        raise NotImplementedError

    def __rshift__(self, other):
        return Sequential(self, other)

    # -- structure ---------------------------------------------------------
    def _children(self):
        """The layers this one groups (combinators), in order."""
        return ()

    def _describe(self, describe):
        """This layer's parameters as a JSON-ready dict (``describe`` maps a nested layer).

        The default covers the dataclass layers: one entry per field, tuples as lists.
        """
        if not dataclasses.is_dataclass(self):
            raise ArchitectureError(f"cannot describe {self!r} as JSON: it has no parameters "
                                    "as dataclass fields.")
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def _from_description(cls, params, build):
        """The layer of parameters ``params`` (the inverse of :meth:`_describe`).

        ``build(key)`` turns the list ``params[key]`` into layers (for
        combinators).  Unknown parameters raise :class:`ArchitectureError`.
        """
        known = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else ()
        _no_extra_params(cls, {k: v for k, v in params.items() if k not in known})
        return cls(**{k: _unplain(v) for k, v in params.items()})

    @property
    def _input_norm(self):
        """Channel normalisation of the input kernel when this layer is the architecture."""
        return "mean"

    def _check_input_norm(self, top):
        for child in self._children():
            child._check_input_norm(False)

    def _gaussian_out(self, gaussian):
        """Gaussianity of the output given that of the input (linear maps keep it)."""
        return gaussian

    def _check_kind(self, kind):
        """Raise if the layer has no rule for ``kind`` ("nngp" or "ntk")."""

    # -- drivers -----------------------------------------------------------
    def _lower(self, lowering, shape):
        raise ArchitectureError(f"unsupported layer {self!r}: it has no lowering to the core.")

    def _oracle(self, oracle, st):
        raise TypeError(f"reference_gram: unsupported layer {self!r}")

    def _finite(self, net, h, counter):
        raise TypeError(f"finite networks do not support {self!r}")


def _plain(value):
    """Tuples as (nested) lists, for JSON."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _unplain(value):
    """Lists as (nested) tuples: the inverse of :func:`_plain`."""
    if isinstance(value, list):
        return tuple(_unplain(v) for v in value)
    return value


def _no_extra_params(cls, params):
    if params:
        raise ArchitectureError(f"{cls.__name__} has no parameter(s) {', '.join(sorted(params))}.")


def iter_layers(layer):
    """``layer`` and every layer it contains (combinators included), depth first."""
    yield layer
    for child in layer._children():
        yield from iter_layers(child)


def _name(layer):
    return repr(layer)


# ---------------------------------------------------------------------------
# linear layers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv(Layer):
    """2-D convolution with infinitely many channels.

    ``K'[a, a'] = weight_var * mean_{delta in window} K~[s a + d delta - pad,
    s a' + d delta - pad] + bias_var`` with the *same* offset ``delta`` on both
    sides (weight sharing), ``K~`` the zero- (or circularly) padded tensor, and
    the mean taken over the ``kh * kw`` window taps (border taps that fall in the
    zero padding count as zeros).  The NTK gets ``Theta' = weight_var *
    mean(Theta) + K'`` (no ``+ K'`` when ``trainable=False``).

    Parameters
    ----------
    size : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), default=1
    dilation : int or (int, int), default=1
    padding : {"same", "valid", "circular"}, int or ((top, bottom), (left, right)), default="same"
        "same" follows TensorFlow / neural-tangents (the extra pad of an even
        window goes after, i.e. down/right).
    weight_var : float, default=1.0
        Weight variance (``W_std ** 2`` in neural-tangents).  The window is
        averaged, so a window *sum* (ckn_kernel, Arora et al.) is
        ``weight_var = kh * kw``.
    bias_var : float, default=0.0
        Bias variance (``b_std ** 2``).
    trainable : bool, default=True
        Whether the layer's parameters are trained (contributes ``+ K'`` to the NTK).
    """

    size: Union[int, Tuple[int, int]] = 3
    stride: Union[int, Tuple[int, int]] = 1
    dilation: Union[int, Tuple[int, int]] = 1
    padding: object = "same"
    weight_var: float = 1.0
    bias_var: float = 0.0
    trainable: bool = True

    def __post_init__(self):
        owner = f"Conv(size={self.size!r})"
        object.__setattr__(self, "size", _pair(self.size, "size", owner))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", owner))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", owner))
        object.__setattr__(self, "padding", _padding(self.padding, owner))
        object.__setattr__(self, "weight_var", _nonneg_float(self.weight_var, "weight_var", owner))
        object.__setattr__(self, "bias_var", _nonneg_float(self.bias_var, "bias_var", owner))
        object.__setattr__(self, "trainable", _check_bool(self.trainable, "trainable", owner))

    def axis_params(self, shape):
        """Per-axis (lo, hi, circular, out) for an input of spatial shape ``shape``."""
        res = []
        for ax in range(2):
            pad = self.padding
            if isinstance(pad, tuple):
                pad = pad[ax]
            res.append(
                resolve_padding(pad, shape[ax], self.size[ax], self.stride[ax], self.dilation[ax])
            )
        return res

    def output_shape(self, shape):
        out = []
        for ax, (lo, hi, circ, n_out) in enumerate(self.axis_params(shape)):
            if n_out < 1:
                ext = self.dilation[ax] * (self.size[ax] - 1) + 1
                raise ArchitectureError(
                    f"{_name(self)}: its window spans {ext} pixels along "
                    f"{'height' if ax == 0 else 'width'} but the (padded) input is only "
                    f"{shape[ax] + lo + hi}; use a smaller size/dilation, padding='same', "
                    "or remove a preceding pool."
                )
            out.append(n_out)
        return tuple(out)

    _has_weights = True

    def _gaussian_out(self, gaussian):
        return True

    def _lower(self, lowering, shape):
        out = self.output_shape(shape)
        (lo_h, _, circ_h, _), (lo_w, _, circ_w, _) = self.axis_params(shape)
        lowering.conv(shape, out, self.size, self.stride, self.dilation, (lo_h, lo_w),
                      (circ_h, circ_w), self.trainable, self.weight_var, self.bias_var)
        return out

    def _oracle(self, oracle, st):
        return oracle.affine(st, oracle.conv_window_mean(self), self.weight_var,
                             self.bias_var, self.trainable)

    def _finite(self, net, h, counter):
        return net.conv(h, self, counter)


@dataclass(frozen=True)
class Dense(Layer):
    """Fully connected layer: a 1x1 convolution on maps, a plain dense layer on readouts.

    ``K' = weight_var * K + bias_var``, ``Theta' = weight_var * Theta + K'``
    (without ``+ K'`` when ``trainable=False``).
    """

    weight_var: float = 1.0
    bias_var: float = 0.0
    trainable: bool = True

    def __post_init__(self):
        owner = "Dense"
        object.__setattr__(self, "weight_var", _nonneg_float(self.weight_var, "weight_var", owner))
        object.__setattr__(self, "bias_var", _nonneg_float(self.bias_var, "bias_var", owner))
        object.__setattr__(self, "trainable", _check_bool(self.trainable, "trainable", owner))

    def as_conv(self):
        """The equivalent 1x1 :class:`Conv`."""
        return Conv(1, padding="valid", weight_var=self.weight_var,
                    bias_var=self.bias_var, trainable=self.trainable)

    def output_shape(self, shape):
        return tuple(shape)

    _has_weights = True

    def _gaussian_out(self, gaussian):
        return True

    def _lower(self, lowering, shape):
        return self.as_conv()._lower(lowering, shape)

    def _oracle(self, oracle, st):  # a 1x1 convolution: no window
        return oracle.affine(st, lambda M: M, self.weight_var, self.bias_var, self.trainable)

    def _finite(self, net, h, counter):
        return net.conv(h, self.as_conv(), counter)


# ---------------------------------------------------------------------------
# nonlinearities
# ---------------------------------------------------------------------------


class _Nonlinearity(Layer):
    """An entrywise nonlinearity; its dual activation is defined once, here.

    A subclass gives its core function code ``_fn_code`` (``_abi.FN_*``, from
    ``_ext/include/convkernel/abi.hpp``), its dual ``_dual(rho)`` for the
    oracle (dot-product kernels ``sqrt(Vx Vy) kappa(rho)``; :class:`Erf`
    overrides ``_oracle``) and its random features for finite networks
    (``_feature_map(a)`` of a standard normal ``a``, or ``_features``).
    """

    #: whether the NTK rule exists (derivative bounded at rho = 1)
    has_ntk = True
    _fn_code = None

    def output_shape(self, shape):
        return tuple(shape)

    def _gaussian_out(self, gaussian):
        if not gaussian:
            raise ArchitectureError(
                f"{self!r} is applied to a tensor that is not a Gaussian "
                "pre-activation (raw inputs, or the output of another nonlinearity); "
                "put a Conv or Dense layer before it."
            )
        return False

    def _check_kind(self, kind):
        if kind == "ntk" and not self.has_ntk:
            raise ArchitectureError(
                f"{self!r} has no NTK (its derivative is unbounded at rho = 1); "
                "use kind='nngp' or ArcCosKernel(order=1)."
            )

    def _core_params(self):
        """(function code, degree, sigma) of the core's NONLIN op."""
        return self._fn_code, 1, 1.0

    def _lower(self, lowering, shape):
        self._check_kind(lowering.kind)
        fn, degree, sigma = self._core_params()
        lowering.nonlinearity(shape, fn, degree, sigma)
        return shape

    def _dual(self, rho):
        """(kappa(rho), kappa'(rho), kappa(1), kappa'(1)); kappa' None without an NTK."""
        raise NotImplementedError

    def _oracle(self, oracle, st):
        def entrywise(K, T, vp, vq, coincident):
            return oracle.homogeneous(self._dual, K, T, vp, vq, coincident)

        return oracle.nonlinearity(st, entrywise)

    def _feature_map(self, a):
        """g with ``E[g(a) g(b)] = kappa(rho)`` for standard normal (a, b) of correlation rho."""
        raise NotImplementedError

    def _features(self, net, u):
        """The finite network's pointwise map of the pre-activations u (n, H, W, C)."""
        return net.homogeneous(u, self._feature_map)

    def _finite(self, net, h, counter):
        return self._features(net, h)


@dataclass(frozen=True)
class ReLU(_Nonlinearity):
    """Rectified linear unit: ``K' = E[relu(u) relu(v)]`` for Gaussian (u, v).

    ``K' = sqrt(Vx Vy) (sin t + (pi - t) cos t) / (2 pi)`` with
    ``t = arccos(K / sqrt(Vx Vy))`` and ``Theta' = Theta (pi - t) / (2 pi)``.
    No factor 2: use ``Conv(weight_var=2)`` for the He scaling.
    """

    _fn_code = _abi.FN_RELU

    def _dual(self, rho):
        # the normalised expectation E[relu(u) relu(v)] / sqrt(Vx Vy) (= kappa_1 / 2)
        theta = np.arccos(rho)
        kap = (np.sqrt(1.0 - rho * rho) + (np.pi - theta) * rho) / (2 * np.pi)
        return kap, (np.pi - theta) / (2 * np.pi), 0.5, 0.5

    def _features(self, net, u):
        return np.maximum(u, 0.0)


@dataclass(frozen=True)
class Erf(_Nonlinearity):
    """Error function nonlinearity (neural-tangents' ``Erf()`` with a=1, b=1, c=0).

    ``K' = (2/pi) arcsin(2 K / sqrt((1 + 2 Vx)(1 + 2 Vy)))``.
    """

    _fn_code = _abi.FN_ERF

    @staticmethod
    def _entrywise(K, T, vp, vq, coincident):
        """The oracle's rule (not a dot-product kernel: it reads the variances directly)."""
        a = (1.0 + 2.0 * vp) * (1.0 + 2.0 * vq)
        Kn = (2.0 / np.pi) * np.arcsin(np.clip(2.0 * K / np.sqrt(a), -1.0, 1.0))
        dot = (4.0 / np.pi) / np.sqrt(a - 4.0 * K * K)
        if coincident is not None:
            V = np.broadcast_to(vp, K.shape)
            Kn = np.where(coincident, (2.0 / np.pi) * np.arcsin(2.0 * V / (1.0 + 2.0 * V)), Kn)
            dot = np.where(coincident, (4.0 / np.pi) / np.sqrt(1.0 + 4.0 * V), dot)
        return Kn, (None if T is None else T * dot)

    def _oracle(self, oracle, st):
        return oracle.nonlinearity(st, self._entrywise)

    def _features(self, net, u):
        from scipy.special import erf

        return erf(u)


@dataclass(frozen=True)
class ExpKernel(_Nonlinearity):
    """Homogeneous exponential dot-product kernel of the CKN family.

    ``K' = sqrt(Vx Vy) kappa(rho)`` with ``rho = K / sqrt(Vx Vy)`` and
    ``kappa(rho) = exp((rho - 1) / sigma**2)``; ``Theta' = Theta kappa'(rho)``.
    """

    sigma: float = 0.6

    def __post_init__(self):
        object.__setattr__(self, "sigma", _nonneg_float(self.sigma, "sigma", "ExpKernel", positive=True))

    _fn_code = _abi.FN_EXP

    def _core_params(self):
        return self._fn_code, 1, self.sigma

    def _dual(self, rho):
        s2 = self.sigma**2
        kap = np.exp((rho - 1.0) / s2)
        return kap, kap / s2, 1.0, 1.0 / s2

    def _feature_map(self, a):
        s = self.sigma
        return np.exp(a / s - 1.0 / s**2)


@dataclass(frozen=True)
class ArcCosKernel(_Nonlinearity):
    """Arc-cosine kernel of order 0 or 1, normalised so that ``kappa(1) = 1``.

    ``kappa_1(rho) = (sqrt(1 - rho**2) + rho (pi - arccos rho)) / pi`` (twice
    the ReLU expectation), ``kappa_0(rho) = (pi - arccos rho) / pi``.
    Order 0 has no NTK (its derivative is unbounded at ``rho = 1``).
    """

    order: int = 1

    def __post_init__(self):
        if self.order not in (0, 1) or isinstance(self.order, bool):
            raise ArchitectureError(f"ArcCosKernel: order must be 0 or 1, got {self.order!r}.")
        object.__setattr__(self, "order", int(self.order))

    @property
    def has_ntk(self):
        return self.order == 1

    def _core_params(self):
        return (_abi.FN_ARCCOS0 if self.order == 0 else _abi.FN_ARCCOS1), 1, 1.0

    def _dual(self, rho):
        theta = np.arccos(rho)
        k0 = (np.pi - theta) / np.pi
        if self.order == 0:
            return k0, None, 1.0, None
        k1 = (np.sqrt(1.0 - rho * rho) + rho * (np.pi - theta)) / np.pi
        return k1, k0, 1.0, 1.0

    def _feature_map(self, a):  # order 0
        return math.sqrt(2.0) * (a > 0)

    def _features(self, net, u):
        if self.order == 1:
            return math.sqrt(2.0) * np.maximum(u, 0.0)
        return net.homogeneous(u, self._feature_map)


@dataclass(frozen=True)
class PolyKernel(_Nonlinearity):
    """Homogeneous polynomial dot-product kernel ``kappa(rho) = rho ** degree``."""

    degree: int = 2

    def __post_init__(self):
        if (not isinstance(self.degree, numbers.Integral) or isinstance(self.degree, bool)
                or not 1 <= self.degree <= 2 ** 20):
            raise ArchitectureError(
                f"PolyKernel: degree must be an int in [1, 2**20], got {self.degree!r}."
            )
        object.__setattr__(self, "degree", int(self.degree))

    _fn_code = _abi.FN_POLY

    def _core_params(self):
        return self._fn_code, self.degree, 1.0

    def _dual(self, rho):
        d = self.degree
        return rho**d, d * rho ** (d - 1), 1.0, float(d)

    def _feature_map(self, a):
        # probabilists' Hermite polynomial He_d / sqrt(d!)
        d = self.degree
        return (np.polynomial.hermite_e.hermeval(a, [0.0] * d + [1.0])
                / math.sqrt(math.factorial(d)))


@dataclass(frozen=True)
class LinearKernel(_Nonlinearity):
    """Homogeneous linear kernel ``kappa(rho) = rho`` (the identity map on K)."""

    _fn_code = _abi.FN_LINEAR

    def _dual(self, rho):
        return rho, np.ones_like(rho), 1.0, 1.0

    def _features(self, net, u):
        return u


# ---------------------------------------------------------------------------
# pools and readouts (parameter-free linear maps on positions)
# ---------------------------------------------------------------------------


class _Pool(Layer):
    """A linear map on positions applied on both sides: ``K' = P K P^T``."""

    def axis_matrices(self, shape):
        """Dense 1-D pooling matrices (rows x input length) for height and width."""
        return [self._axis_matrix(shape[ax], ax) for ax in range(2)]

    def _axis_matrix(self, n, ax):
        """The pooling matrix along axis ``ax`` (0: height, 1: width) of input length n."""
        raise NotImplementedError

    def _check_pooled_length(self, n, ax, out, what):
        """Refuse an axis of length n pooled to ``out < 1`` positions (``what`` ends the message)."""
        if out < 1:
            raise ArchitectureError(
                f"{_name(self)}: an input of length {n} along "
                f"{'height' if ax == 0 else 'width'} pools to {what}"
            )

    def output_shape(self, shape):
        mats = self.axis_matrices(shape)
        return (mats[0].shape[0], mats[1].shape[0])

    def _oracle_matrix(self, oracle, n, ax):
        """The oracle's own pooling matrix along axis ``ax`` (input length n)."""
        raise NotImplementedError

    def _lower(self, lowering, shape):
        mh, mw = self.axis_matrices(shape)
        return lowering.pool(shape, mh, mw)

    def _oracle(self, oracle, st):
        return oracle.pool(st, self)

    def _finite(self, net, h, counter):
        return net.pool(h, self)


def _conv_like_matrix(n, k, s, padding, owner, axis):
    lo, hi, circ, out = resolve_padding(padding, n, k, s, 1)
    if out < 1:
        raise ArchitectureError(
            f"{owner}: window {k} does not fit the {'height' if axis == 0 else 'width'} "
            f"{n} (+ padding {lo + hi}); use a smaller window or padding='same'."
        )
    m = np.zeros((out, n))
    for a in range(out):
        for t in range(k):
            i = s * a + t - lo
            if circ:
                m[a, i % n] += 1.0 / k
            elif 0 <= i < n:
                m[a, i] += 1.0 / k
    return m


@dataclass(frozen=True)
class AvgPool(_Pool):
    """Average pooling with neural-tangents' conventions.

    Parameters
    ----------
    window : int or (int, int)
    stride : int or (int, int), default=1
        neural-tangents' default (``strides=None``) is 1.  PyTorch's
        ``AvgPool2d`` defaults to ``stride = window``: pass it explicitly.
    padding : {"valid", "same", "circular"}, int or ((t, b), (l, r)), default="valid"
        Taps in the zero padding count as zeros: edges are divided by the full
        window (neural-tangents' ``normalize_edges=False``).
    """

    window: Union[int, Tuple[int, int]] = 2
    stride: Union[int, Tuple[int, int]] = 1
    padding: object = "valid"

    def __post_init__(self):
        owner = f"AvgPool(window={self.window!r})"
        object.__setattr__(self, "window", _pair(self.window, "window", owner))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", owner))
        object.__setattr__(self, "padding", _padding(self.padding, owner))

    def _axis_matrix(self, n, ax):
        pad = self.padding if isinstance(self.padding, str) else self.padding[ax]
        return _conv_like_matrix(n, self.window[ax], self.stride[ax], pad, _name(self), ax)

    def _oracle_matrix(self, oracle, n, ax):
        return oracle.avgpool_matrix(n, self.window[ax], self.stride[ax],
                                     oracle.axis_padding(self.padding, ax))



def _subsampling_and_factor(pool):
    """(d, p) of a ckn_kernel pooling: its subsampling d and pool factor p (None: p = d)."""
    d = int(pool.subsampling)
    return d, d if pool.poolfactor is None else int(pool.poolfactor)


@dataclass(frozen=True)
class GaussianPool(_Pool):
    """ckn_kernel's Gaussian pooling with subsampling ``d`` and pool factor ``p``.

    Along each axis (input length n): taps ``f_k`` proportional to
    ``exp(-k**2 / p**2)`` for ``k = -p..p``, summing to 1; output length
    ``n // d - 1``; ``out(i) = sum_k f_k in(d i + p + k)``, truncated at the
    borders and not renormalised.  ``poolfactor=None`` means ``p = d``.
    """

    subsampling: int = 2
    poolfactor: object = None

    def __post_init__(self):
        owner = f"GaussianPool(subsampling={self.subsampling!r})"
        _pair(self.subsampling, "subsampling", owner)
        if not isinstance(self.subsampling, numbers.Integral):
            raise ArchitectureError(f"{owner}: subsampling must be an int.")
        if self.poolfactor is not None:
            _pair(self.poolfactor, "poolfactor", owner)
            if not isinstance(self.poolfactor, numbers.Integral):
                raise ArchitectureError(f"{owner}: poolfactor must be an int or None.")

    def _axis_matrix(self, n, ax):
        d, p = _subsampling_and_factor(self)
        out = n // d - 1
        self._check_pooled_length(
            n, ax, out, f"{out} positions; use a smaller subsampling (needs n >= {2 * d}).")
        ks = np.arange(-p, p + 1)
        f = np.exp(-(ks.astype(float) ** 2) / float(p * p))
        f /= f.sum()
        m = np.zeros((out, n))
        for i in range(out):
            for k, fk in zip(ks, f):
                j = d * i + p + int(k)
                if 0 <= j < n:
                    m[i, j] += fk
        return m

    def _oracle_matrix(self, oracle, n, ax):
        return oracle.gaussian_pool_matrix(n, *_subsampling_and_factor(self))



@dataclass(frozen=True)
class BoxPool(_Pool):
    """ckn_kernel's "average" pooling with subsampling ``d`` and pool factor ``p``.

    Along each axis: ``out(i) = (1/p) sum_{k=0}^{p-1} in(d i + k)``, output
    length ``n // d``, truncated at the border (not renormalised).
    ``poolfactor=None`` means ``p = d``.
    """

    subsampling: int = 2
    poolfactor: object = None

    def __post_init__(self):
        owner = f"BoxPool(subsampling={self.subsampling!r})"
        if not _is_int(self.subsampling) or self.subsampling < 1:
            raise ArchitectureError(f"{owner}: subsampling must be an int >= 1.")
        if self.poolfactor is not None and (not _is_int(self.poolfactor) or self.poolfactor < 1):
            raise ArchitectureError(f"{owner}: poolfactor must be an int >= 1 or None.")

    def _axis_matrix(self, n, ax):
        d, p = _subsampling_and_factor(self)
        out = n // d
        self._check_pooled_length(n, ax, out, "nothing; use a smaller subsampling.")
        m = np.zeros((out, n))
        for i in range(out):
            for k in range(p):
                j = d * i + k
                if j < n:
                    m[i, j] += 1.0 / p
        return m

    def _oracle_matrix(self, oracle, n, ax):
        return oracle.box_pool_matrix(n, *_subsampling_and_factor(self))



@dataclass(frozen=True)
class StridedPool(_Pool):
    """ckn_kernel's strided pooling: ``out(i) = in(d (i + 1))``, length ``n // d - 1``."""

    subsampling: int = 2

    def __post_init__(self):
        if not _is_int(self.subsampling) or self.subsampling < 1:
            raise ArchitectureError(
                f"StridedPool: subsampling must be an int >= 1, got {self.subsampling!r}."
            )

    def _axis_matrix(self, n, ax):
        d = int(self.subsampling)
        out = n // d - 1
        self._check_pooled_length(n, ax, out, f"{out} positions; needs n >= {2 * d}.")
        m = np.zeros((out, n))
        for i in range(out):
            m[i, d * (i + 1)] = 1.0
        return m

    def _oracle_matrix(self, oracle, n, ax):
        return oracle.strided_pool_matrix(n, int(self.subsampling))



@dataclass(frozen=True)
class GlobalAvgPool(_Pool):
    """Mean over all position pairs: ``K' = mean_{p, q} K[p, q]`` (a 1x1 map)."""

    def _axis_matrix(self, n, ax):
        return np.full((1, n), 1.0 / n)

    def output_shape(self, shape):
        return (1, 1)

    def _oracle(self, oracle, st):
        return oracle.readout(st, lambda M: M.mean(axis=(-4, -3, -2, -1)))

    def _finite(self, net, h, counter):
        return h.mean(axis=(1, 2), keepdims=True)


class _DiagonalReadout(Layer):
    """``K' = scale * sum_p K[p, p]`` (a 1x1 map); subclasses give the scale."""

    def output_shape(self, shape):
        return (1, 1)

    @staticmethod
    def _scale(shape):
        raise NotImplementedError

    def _lower(self, lowering, shape):
        return lowering.diag_sum(shape, self._scale(shape))

    def _oracle(self, oracle, st):
        scale = self._scale(oracle.shape(st))
        return oracle.readout(st, lambda M: scale * np.einsum("...ijij->...", M))


@dataclass(frozen=True)
class Flatten(_DiagonalReadout):
    """Flatten readout: mean of the spatial diagonal, ``K' = mean_p K[p, p]`` (1x1 map).

    Followed by :class:`Dense` it is neural-tangents' ``Flatten(), Dense()``.
    """

    @staticmethod
    def _scale(shape):
        return 1.0 / (shape[0] * shape[1])

    def _finite(self, net, h, counter):
        # H W C channels of a 1x1 map: a following Dense has fan-in H W C
        return h.reshape(h.shape[0], 1, 1, -1)


@dataclass(frozen=True)
class Trace(_DiagonalReadout):
    """Trace readout: ``K' = sum_p K[p, p]`` (ckn_kernel, Arora et al.'s vanilla CNTK)."""

    @staticmethod
    def _scale(shape):
        return 1.0

    def _finite(self, net, h, counter):
        return math.sqrt(h.shape[1] * h.shape[2]) * h.reshape(h.shape[0], 1, 1, -1)


@dataclass(frozen=True)
class ShiftAverage(Layer):
    """Shift-averaged read-out (local average pooling, LAP; Li et al. 2019).

    ``K' = (1 / (H W)) sum_{p, q} w_h(q_h - p_h) w_w(q_w - p_w) K[p, q]``: a
    :class:`Flatten` read-out that also sums the entries between positions
    displaced by up to ``2 * max_shift`` pixels, weighted by how many pairs
    of shifts ``s, s'`` in ``[-max_shift, max_shift]`` produce that
    displacement.  With ``circular=True`` (displacements wrap around, as
    circular padding does) and a network of circular stride-1 convolutions
    and nonlinearities, it equals **exactly** the :class:`Flatten` kernel
    averaged over all shifts of both images,
    ``mean_{s, s'} K_flatten(roll(x, s), roll(y, s'))`` -- data augmentation
    by translations without the augmented images.

    Parameters
    ----------
    max_shift : int or (int, int), default=2
        Largest shift per axis.  ``0`` is :class:`Flatten`; with
        ``circular=True`` and ``2 * max_shift + 1`` equal to the map size the
        read-out is :class:`GlobalAvgPool`.
    one_sided : bool, default=False
        Shift only one image: box weights ``1 / (2 max_shift + 1)`` over
        displacements ``|d| <= max_shift`` (``mean_s K_flatten(x, roll(y, s))``)
        instead of the triangular weights ``(2 m + 1 - |d|) / (2 m + 1)**2``
        over ``|d| <= 2 m`` of the two-sided average.  Cheaper (fewer
        displacements) but not positive semi-definite in general: on
        Fashion-MNIST Grams its most negative eigenvalue was seen from a few
        percent of the mean diagonal up to the order of the diagonal
        itself, so kernel ridge needs an ``alpha`` above that (the estimators
        warn when it does not, and clip the negative spectrum).
    circular : bool, default=False
        Let displacements wrap around the map (use with ``padding="circular"``
        convolutions).  Without it the read-out is the zero-padded version,
        which is positive semi-definite as well (it is an average pooling of
        window ``2 max_shift + 1`` over the zero-extended map, summed).

    Notes
    -----
    Cost: stride-1 convolutions and nonlinearities keep each displacement
    apart, so only the displacements with a non-zero weight are computed:
    ``(4 m + 1)**2`` two-sided, ``(2 m + 1)**2`` one-sided, against
    ``(2 H - 1)(2 W - 1)`` for :class:`GlobalAvgPool`.
    """

    max_shift: Union[int, Tuple[int, int]] = 2
    one_sided: bool = False
    circular: bool = False

    def __post_init__(self):
        owner = f"ShiftAverage(max_shift={self.max_shift!r})"
        object.__setattr__(self, "max_shift", _pair(self.max_shift, "max_shift", owner, minimum=0))
        object.__setattr__(self, "one_sided", _check_bool(self.one_sided, "one_sided", owner))
        object.__setattr__(self, "circular", _check_bool(self.circular, "circular", owner))
        if max(self.max_shift) > 4096:
            raise ArchitectureError(f"{owner}: max_shift must be <= 4096.")

    def output_shape(self, shape):
        return (1, 1)

    def displacement_weights(self, shape):
        """Weights of the displacements ``d = q - p`` per axis.

        Returns two arrays of lengths ``2 H - 1`` and ``2 W - 1``; entry
        ``d + n - 1`` is the weight of displacement ``d`` along that axis,
        the ``1 / n`` of the mean over positions included (wrapped
        displacements folded in when ``circular``).
        """
        weights = []
        for n, m in zip(shape, self.max_shift):
            reach = m if self.one_sided else 2 * m
            d = np.arange(-reach, reach + 1)
            if self.one_sided:
                base = np.full(d.shape, 1.0 / (2 * m + 1))
            else:
                base = (2 * m + 1 - np.abs(d)) / float((2 * m + 1) ** 2)
            w = np.zeros(2 * n - 1)
            for delta, value in zip(d, base):
                if self.circular:
                    r = delta % n
                    w[r + n - 1] += value  # q - p = r >= 0
                    if r:
                        w[r - n + n - 1] += value  # q - p = r - n < 0
                elif abs(delta) < n:
                    w[delta + n - 1] += value
            weights.append(w / n)
        return weights[0], weights[1]

    def _lower(self, lowering, shape):
        return lowering.shift_sum(shape, self.displacement_weights(shape))

    def _oracle(self, oracle, st):
        H, W = oracle.shape(st)
        Wh = oracle.shift_pair_weights(H, self.max_shift[0], self.one_sided, self.circular)
        Ww = oracle.shift_pair_weights(W, self.max_shift[1], self.one_sided, self.circular)
        return oracle.readout(st, lambda M: np.einsum("...ijkl,ik,jl->...", M, Wh, Ww) / (H * W))

    def _finite(self, net, h, counter):
        """Two-sided: the mean of the shifted maps, flattened.

        Without wrap-around the shifts land on a canvas extended by
        ``max_shift`` on every side (a box filter in "full" mode), so that
        every pair of shifts keeps all of its products; the scale makes the
        following Dense (fan-in: canvas size x channels) average over the
        ``H W`` positions of the map, as Flatten does.
        """
        if self.one_sided:
            raise TypeError(
                f"{self!r} (one-sided) is not the kernel of a single network; "
                "use one_sided=False for finite networks."
            )
        n, H, W, C = h.shape
        mh, mw = self.max_shift
        if self.circular:
            g = np.zeros_like(h)
            for s in range(-mh, mh + 1):
                for t in range(-mw, mw + 1):
                    g += np.roll(h, (s, t), axis=(1, 2))
            size = H * W
        else:
            g = np.zeros((n, H + 2 * mh, W + 2 * mw, C))
            for s in range(2 * mh + 1):
                for t in range(2 * mw + 1):
                    g[:, s:s + H, t:t + W] += h
            size = (H + 2 * mh) * (W + 2 * mw)
        g *= math.sqrt(size / (H * W)) / ((2 * mh + 1) * (2 * mw + 1))
        return g.reshape(n, 1, 1, -1)


# ---------------------------------------------------------------------------
# combinators
# ---------------------------------------------------------------------------


def _check_layer(obj, where):
    if not isinstance(obj, Layer):
        hint = ""
        if isinstance(obj, type) and issubclass(obj, Layer):
            hint = f" (did you mean {obj.__name__}()?)"
        raise ArchitectureError(f"{where}: expected a layer, got {obj!r}{hint}.")
    return obj


class Sequential(Layer):
    """Layers applied one after the other.

    Parameters
    ----------
    *layers : Layer
        The layers, in order.  Nested :class:`Sequential` are allowed.
    input_norm : {"mean", "sum"}, default="mean"
        Channel normalisation of the input kernel, ``K0 = s * sum_c x_c y_c``
        with ``s = 1/C`` ("mean": neural-tangents, cnn_gp) or ``s = 1``
        ("sum": ckn_kernel, Arora et al.).  Only the outermost architecture's
        setting is used; nested ones must keep the default.

    Examples
    --------
    >>> from sklearn_convkernel.arch import Sequential, Conv, ReLU, GlobalAvgPool, Dense
    >>> arch = Sequential(Conv(3, weight_var=2.0), ReLU(), GlobalAvgPool(), Dense())
    >>> arch.output_shape((28, 28))
    (1, 1)
    """

    __slots__ = ("layers", "input_norm")

    def __init__(self, *layers, input_norm="mean"):
        for i, layer in enumerate(layers):
            _check_layer(layer, f"Sequential layer {i}")
        if input_norm not in ("mean", "sum"):
            raise ArchitectureError(
                f"Sequential: input_norm must be 'mean' or 'sum', got {input_norm!r}."
            )
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "input_norm", input_norm)

    def __setattr__(self, name, value):
        raise AttributeError("architectures are immutable")

    def __eq__(self, other):
        return (
            isinstance(other, Sequential)
            and self.layers == other.layers
            and self.input_norm == other.input_norm
        )

    def __hash__(self):
        return hash(("Sequential", self.layers, self.input_norm))

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        norm = "" if self.input_norm == "mean" else f", input_norm={self.input_norm!r}"
        return f"Sequential({inner}{norm})"

    def __reduce__(self):
        return (_rebuild_sequential, (self.layers, self.input_norm))

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, idx):
        return self.layers[idx]

    def __add__(self, other):
        if not isinstance(other, Sequential):
            return NotImplemented
        return Sequential(*self.layers, *other.layers, input_norm=self.input_norm)

    def output_shape(self, shape):
        shape = tuple(shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    _combinator = True

    def _children(self):
        return self.layers

    def _describe(self, describe):
        d = {"layers": [describe(x) for x in self.layers]}
        if self.input_norm != "mean":
            d["input_norm"] = self.input_norm
        return d

    @classmethod
    def _from_description(cls, params, build):
        layers = build("layers")
        norm = params.pop("input_norm", "mean")
        _no_extra_params(cls, params)
        return cls(*layers, input_norm=norm)

    @property
    def _input_norm(self):
        return self.input_norm

    def _check_input_norm(self, top):
        if not top and self.input_norm != "mean":
            raise ArchitectureError(
                "input_norm applies only to the outermost Sequential; remove it from "
                f"the nested {self!r}."
            )
        super()._check_input_norm(top)

    def _gaussian_out(self, gaussian):
        for layer in self.layers:
            gaussian = layer._gaussian_out(gaussian)
        return gaussian

    def _lower(self, lowering, shape):
        for sub in self.layers:
            shape = lowering.emit(sub, shape)
        return shape

    def _oracle(self, oracle, st):
        for sub in self.layers:
            st = oracle.apply(sub, st)
        return st

    def _finite(self, net, h, counter):
        for sub in self.layers:
            h = net.forward(sub, h, counter)
        return h


def _rebuild_sequential(layers, input_norm):
    return Sequential(*layers, input_norm=input_norm)


Identity = Sequential
"""The identity map (``Sequential()`` with no layer), e.g. a residual shortcut."""


class Sum(Layer):
    """Independent branches applied to the same input; their kernels add up.

    ``Sum(Identity(), Sequential(Conv(3), ReLU(), Conv(3)))`` is a residual
    block.  All branches must produce the same spatial shape.  (cnn_gp's
    ``Sum``; neural-tangents' ``FanOut(n) >> parallel(...) >> FanInSum()``.)
    """

    __slots__ = ("branches",)

    def __init__(self, *branches):
        if len(branches) < 1:
            raise ArchitectureError("Sum: needs at least one branch.")
        for i, b in enumerate(branches):
            _check_layer(b, f"Sum branch {i}")
        object.__setattr__(self, "branches", tuple(branches))

    def __setattr__(self, name, value):
        raise AttributeError("architectures are immutable")

    def __reduce__(self):
        return (Sum, self.branches)

    def __eq__(self, other):
        return isinstance(other, Sum) and self.branches == other.branches

    def __hash__(self):
        return hash(("Sum", self.branches))

    def __repr__(self):
        return "Sum(" + ", ".join(repr(b) for b in self.branches) + ")"

    def output_shape(self, shape):
        shapes = [b.output_shape(shape) for b in self.branches]
        if len(set(shapes)) != 1:
            raise ArchitectureError(
                f"Sum: branches produce different spatial shapes {shapes} from input "
                f"{tuple(shape)}; make the branches agree (e.g. a strided 1x1 Conv "
                "projection on the shortcut)."
            )
        return shapes[0]

    _combinator = True

    def _children(self):
        return self.branches

    def _describe(self, describe):
        return {"branches": [describe(b) for b in self.branches]}

    @classmethod
    def _from_description(cls, params, build):
        branches = build("branches")
        _no_extra_params(cls, params)
        return cls(*branches)

    def _gaussian_out(self, gaussian):
        # A sum of independent Gaussian branches is Gaussian; a sum involving a
        # post-nonlinearity branch is not a valid nonlinearity input.
        outs = [b._gaussian_out(gaussian) for b in self.branches]
        return all(outs)

    def _lower(self, lowering, shape):
        # each branch but the last runs on a pushed copy of the input, swapped
        # below the branch output; the outputs are then added up
        n = len(self.branches)
        outs = []
        for i, branch in enumerate(self.branches):
            last = i == n - 1
            if not last:
                lowering.push(shape)
            out = lowering.emit(branch, shape)
            outs.append(out)
            if not last:
                lowering.swap(out, shape)
        for _ in range(n - 1):
            lowering.add(outs[0])
        return outs[0]

    def _oracle(self, oracle, st):
        total = None
        for branch in self.branches:
            res = oracle.apply(branch, st)
            total = res if total is None else total + res
        return total

    def _finite(self, net, h, counter):
        outs = [net.forward(b, h, counter) for b in self.branches]
        if len({o.shape for o in outs}) != 1:
            raise ValueError(
                "Sum: the branches of a finite network must produce the same number of "
                f"channels, got shapes {[o.shape for o in outs]} (an Identity shortcut "
                "needs an input with `width` channels)."
            )
        return sum(outs)


class Tap(Layer):
    """An extra read-out at this depth; the network continues unchanged.

    ``Tap(GlobalAvgPool(), Dense())`` placed after each block reads the kernel
    out at every depth in a single pass.  The outputs are ordered as the taps
    appear (depth-first), the network's final output last.
    """

    __slots__ = ("readout",)

    def __init__(self, *layers):
        object.__setattr__(self, "readout", Sequential(*layers))

    def __setattr__(self, name, value):
        raise AttributeError("architectures are immutable")

    def __reduce__(self):
        return (Tap, self.readout.layers)

    def __eq__(self, other):
        return isinstance(other, Tap) and self.readout == other.readout

    def __hash__(self):
        return hash(("Tap", self.readout))

    def __repr__(self):
        return "Tap(" + ", ".join(repr(layer) for layer in self.readout.layers) + ")"

    def output_shape(self, shape):
        out = self.readout.output_shape(shape)
        if tuple(out) != (1, 1):
            raise ArchitectureError(
                f"{self!r}: a tap must read out to a single position, got shape {out}; "
                "end it with GlobalAvgPool(), Flatten() or Trace()."
            )
        return tuple(shape)

    _combinator = True

    def _children(self):
        return (self.readout,)

    def _describe(self, describe):
        return {"layers": [describe(x) for x in self.readout.layers]}

    @classmethod
    def _from_description(cls, params, build):
        layers = build("layers")
        _no_extra_params(cls, params)
        return cls(*layers)

    def _gaussian_out(self, gaussian):
        self.readout._gaussian_out(gaussian)
        return gaussian

    def _lower(self, lowering, shape):
        # outputs are numbered in order of appearance (an outer tap before
        # the taps nested in its read-out)
        slot = lowering.new_tap_slot()
        lowering.push(shape)
        out = lowering.emit(self.readout, shape)
        lowering.output(out, slot)
        lowering.pop(out, shape)
        return shape

    def _oracle(self, oracle, st):
        oracle.tap(self.readout, st)
        return st

    def _finite(self, net, h, counter):
        # keep the parameter numbering stable but ignore the read-out
        net.skip_parameters(self.readout, counter)
        return h


def validate(architecture, input_shape):
    """Validate ``architecture`` for images of shape (H, W) or (H, W, C).

    Returns the output spatial shape.  Raises :class:`ArchitectureError` with a
    message naming the offending layer and the fix.
    """
    if not isinstance(architecture, Layer):
        raise ArchitectureError(
            f"architecture must be a layer such as Sequential(...), got {architecture!r}."
        )
    architecture._check_input_norm(top=True)
    shape = tuple(int(v) for v in input_shape[:2])
    if len(shape) != 2 or min(shape) < 1:
        raise ArchitectureError(f"input spatial shape must be (H, W) >= 1, got {input_shape!r}.")
    architecture._gaussian_out(False)
    out = architecture.output_shape(shape)
    if tuple(out) != (1, 1):
        raise ArchitectureError(
            f"the architecture maps {shape} images to a {out} map; a kernel needs a "
            "single output position: end it with a readout such as GlobalAvgPool(), "
            "Flatten() or Trace() (optionally followed by Dense()), or a Conv whose "
            "window covers the whole map with padding='valid'."
        )
    return out
