"""Slow, obviously-correct reference implementation of the kernel recursion.

This module is a **test oracle**: it is written for clarity from the formulas
of DESIGN.md §2 (with the pooling conventions of §5.1 and the padding
conventions of §5.4), independently of the compiled core and of the helper
code in :mod:`sklearn_convkernel.arch` (it re-derives padding amounts, output
sizes and pooling taps itself and only reads the layers' public attributes).

Each layer states its rule in its ``_oracle(oracle, stage)`` method (in
:mod:`sklearn_convkernel.arch`, next to its other rules) by combining the
operations of :class:`_Oracle` below with its public parameters; a
nonlinearity contributes its dual activation ``_dual(rho)``.  The geometry
(window means, pooling matrices, shift weights) stays in this module.

For every image pair (x, y) it carries the full 4-D tensors ``K[i, j, i', j']``
(and ``Theta`` for ``kind="ntk"``) over pairs of spatial positions, together
with the self recursions (x, x) and (y, y) whose spatial diagonals provide the
variances ``Vx[p] = K(x, x)[p, p]`` needed by the nonlinearities.  All tensors
of a batch are stacked along leading axes; every operation acts on the last
four axes ``(i, j, i', j')``.

Use :func:`reference_gram`.
"""

from __future__ import annotations

import math

import numpy as np

from . import arch as _arch
from ._validation import check_images

__all__ = ["reference_gram"]

_KINDS = ("nngp", "ntk")


# ---------------------------------------------------------------------------
# geometry (re-derived from the documented conventions)
# ---------------------------------------------------------------------------


def _axis_padding(padding, axis):
    """The padding spec of one axis: a string, or explicit (lo, hi) pads."""
    if isinstance(padding, str):
        return padding.lower()
    if isinstance(padding, (int, np.integer)):
        return (int(padding), int(padding))
    lo, hi = padding[axis]
    return (int(lo), int(hi))


def _axis_geometry(padding, n, k, stride, dilation):
    """Pads, wrap flag and output length along one axis.

    ``padding`` is "same", "valid", "circular" or explicit ``(lo, hi)``.
    Returns ``(lo, hi, circular, out)``.

    * "same" / "circular" (TensorFlow, neural-tangents): ``out = ceil(n / s)``;
      the dilated window spans ``d (k - 1) + 1`` pixels; the total padding is
      whatever makes the last window end at the padded border,
      ``max((out - 1) s + span - n, 0)``; the smaller half goes before
      (so an even window's extra pad is after: down / right).
    * "valid": no padding; explicit pads as given.  In both cases
      ``out = floor((n + lo + hi - span) / s) + 1``.
    """
    span = dilation * (k - 1) + 1
    if padding in ("same", "circular"):
        out = -(-n // stride)
        total = max((out - 1) * stride + span - n, 0)
        lo = total // 2
        return lo, total - lo, padding == "circular", out
    if padding == "valid":
        lo = hi = 0
    else:
        lo, hi = padding
    return lo, hi, False, (n + lo + hi - span) // stride + 1


def _padding_operator(n, lo, hi, circular):
    """0/1 matrix of shape (lo + n + hi, n) mapping a signal to its padded version.

    Row r of the padded signal is the input at ``r - lo`` (zero outside
    ``[0, n)``), or at ``(r - lo) mod n`` when circular.
    """
    rows = np.arange(-lo, n + hi)
    E = np.zeros((rows.size, n))
    if circular:
        E[np.arange(rows.size), rows % n] = 1.0
    else:
        inside = (rows >= 0) & (rows < n)
        E[np.flatnonzero(inside), rows[inside]] = 1.0
    return E


def _avgpool_matrix(n, window, stride, padding):
    """AvgPool along one axis: out(a) = (1/window) sum_t padded(s a + t)."""
    lo, hi, circular, out = _axis_geometry(padding, n, window, stride, 1)
    E = _padding_operator(n, lo, hi, circular)
    P = np.zeros((out, n))
    for t in range(window):
        P += E[t : t + stride * (out - 1) + 1 : stride]
    return P / window


def _gaussian_pool_matrix(n, d, p):
    """ckn_kernel Gaussian pooling along one axis (DESIGN §5.1).

    ``out(i) = sum_{k=-p..p} f_k in(d i + p + k)``, ``f_k ∝ exp(-k^2/p^2)``
    normalised to sum 1 over the full filter, truncated at the borders (not
    renormalised), output length ``n // d - 1``.
    """
    out = n // d - 1
    norm = sum(math.exp(-(k * k) / (p * p)) for k in range(-p, p + 1))
    offset = np.arange(n)[None, :] - (d * np.arange(out) + p)[:, None]
    return np.where(np.abs(offset) <= p, np.exp(-(offset**2) / (p * p)) / norm, 0.0)


def _box_pool_matrix(n, d, p):
    """ckn_kernel "average" pooling: out(i) = (1/p) sum_{k<p} in(d i + k), length n // d."""
    out = n // d
    offset = np.arange(n)[None, :] - (d * np.arange(out))[:, None]
    return np.where((offset >= 0) & (offset < p), 1.0 / p, 0.0)


def _strided_pool_matrix(n, d):
    """ckn_kernel strided pooling: out(i) = in(d (i + 1)), length n // d - 1."""
    out = n // d - 1
    return (np.arange(n)[None, :] == (d * (np.arange(out) + 1))[:, None]).astype(float)


def _pool_matrices(layer, shape):
    """Per-axis pooling matrices (out_len x in_len) of a pooling layer.

    The layer picks its matrix (``layer._oracle_matrix``) among the
    constructions of this module.
    """
    return [layer._oracle_matrix(ORACLE, shape[ax], ax) for ax in range(2)]


# ---------------------------------------------------------------------------
# linear maps on the 4-D tensors (last four axes (i, j, i', j'))
# ---------------------------------------------------------------------------


def _conv_window_mean(M, layer):
    """A[M][a, a'] = mean_{delta} M~[s a + d delta - lo, s a' + d delta - lo].

    The same window offset ``delta`` is used on both sides (weight sharing);
    ``M~`` is ``M`` zero- (or circularly) padded along all four spatial axes.
    """
    H, W = M.shape[-4], M.shape[-3]
    kh, kw = layer.size
    sh, sw = layer.stride
    dh, dw = layer.dilation
    lo_h, hi_h, circ_h, oh = _axis_geometry(_axis_padding(layer.padding, 0), H, kh, sh, dh)
    lo_w, hi_w, circ_w, ow = _axis_geometry(_axis_padding(layer.padding, 1), W, kw, sw, dw)
    assert circ_h == circ_w
    widths = [(0, 0)] * (M.ndim - 4) + [(lo_h, hi_h), (lo_w, hi_w), (lo_h, hi_h), (lo_w, hi_w)]
    Mp = np.pad(M, widths, mode="wrap" if circ_h else "constant")
    out = np.zeros(M.shape[:-4] + (oh, ow, oh, ow))
    for th in range(kh):
        rows = slice(dh * th, dh * th + sh * (oh - 1) + 1, sh)
        for tw in range(kw):
            cols = slice(dw * tw, dw * tw + sw * (ow - 1) + 1, sw)
            out += Mp[..., rows, cols, rows, cols]
    return out / (kh * kw)


def _shift_pair_weights(n, m, one_sided, circular):
    """ShiftAverage along one axis: the weight of position pair (i, i').

    The Flatten kernel averaged over shifts ``s`` of x and ``s'`` of y in
    ``[-m, m]`` (``s = 0`` only when one-sided) pairs position ``i`` of x
    with ``i' = i + s - s'`` of y: the weight of (i, i') is the fraction of
    shift pairs with that displacement (mod n when circular).
    """
    shifts = range(-m, m + 1)
    pairs = [(0 if one_sided else s, t) for s in (shifts if not one_sided else [0])
             for t in shifts]
    Wt = np.zeros((n, n))
    for i in range(n):
        for i2 in range(n):
            for s, t in pairs:
                d = i2 - i - (s - t)
                if (d % n == 0) if circular else (d == 0):
                    Wt[i, i2] += 1.0
    return Wt / len(pairs)


def _pool(M, Ph, Pw):
    """K' = P K P^T on both sides, P = Ph ⊗ Pw."""
    return np.einsum("ai,bj,...ijkl,ck,dl->...abcd", Ph, Pw, M, Ph, Pw, optimize=True)


def _as_1x1(values):
    return values[..., None, None, None, None]


# ---------------------------------------------------------------------------
# nonlinearities (entrywise, using the self variances)
# ---------------------------------------------------------------------------


def _homogeneous(dual, K, T, vp, vq, coincident):
    """A dot-product nonlinearity ``sqrt(vp vq) kappa(rho)`` on (K, Theta) of a batch of pairs.

    ``dual(rho)`` returns ``(kappa(rho), kappa'(rho), kappa(1), kappa'(1))``
    (``kappa'`` None without an NTK rule).  ``vp`` / ``vq`` are the variances
    of the first / second position of each entry (broadcastable to K).
    ``coincident`` is None for a cross pair, or a boolean mask over
    (i, j, i', j') marking p == q for a self pair, where the exact values are
    used.
    """
    prod = vp * vq
    positive = prod > 0
    norm = np.sqrt(prod)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(positive, K / np.where(positive, norm, 1.0), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    kap, dkap, kap1, dkap1 = dual(rho)
    Kn = norm * kap
    if coincident is not None:
        exact = coincident & positive
        V = np.broadcast_to(vp, K.shape)
        Kn = np.where(exact, V * kap1, Kn)
    if T is None:
        return Kn, None
    if coincident is not None:
        dkap = np.where(exact, dkap1, dkap)
    return Kn, T * dkap


def _diagonal(K):
    """Spatial diagonal K[..., i, j, i, j] -> (..., i, j)."""
    return np.einsum("...ijij->...ij", K)


# ---------------------------------------------------------------------------
# the recursion on the triple (xy, xx, yy)
# ---------------------------------------------------------------------------


class _Stage:
    """K / Theta of the cross pairs (nx, ny, ...) and of the self pairs (n, ...).

    ``yy is None`` means Y is X (the (y, y) recursion is the (x, x) one).
    Each entry is a pair ``(K, T)`` with ``T = None`` for ``kind="nngp"``.
    """

    __slots__ = ("xy", "xx", "yy")

    def __init__(self, xy, xx, yy):
        self.xy, self.xx, self.yy = xy, xx, yy

    def map(self, fn):
        """Apply the same linear map ``fn(K, T) -> (K', T')`` to all three."""
        return _Stage(fn(*self.xy), fn(*self.xx), None if self.yy is None else fn(*self.yy))

    def __add__(self, other):
        def add(a, b):
            return (a[0] + b[0], None if a[1] is None else a[1] + b[1])

        yy = None if self.yy is None else add(self.yy, other.yy)
        return _Stage(add(self.xy, other.xy), add(self.xx, other.xx), yy)


def _affine(scale_K, weight_var, bias_var, trainable, K, T):
    """K' = w A[K] + b; Theta' = w A[Theta] (+ K' if trainable)."""
    Kn = weight_var * scale_K(K) + bias_var
    if T is None:
        return Kn, None
    Tn = weight_var * scale_K(T)
    if trainable:
        Tn = Tn + Kn
    return Kn, Tn


class _Oracle:
    """The oracle's operations, called by each layer's ``_oracle(oracle, stage)`` method.

    A layer's oracle rule (in :mod:`sklearn_convkernel.arch`) combines these
    generic maps on a :class:`_Stage` with the geometry of this module; the
    layer itself only contributes its public parameters and, for a
    nonlinearity, its dual activation.
    """

    axis_padding = staticmethod(_axis_padding)
    avgpool_matrix = staticmethod(_avgpool_matrix)
    gaussian_pool_matrix = staticmethod(_gaussian_pool_matrix)
    box_pool_matrix = staticmethod(_box_pool_matrix)
    strided_pool_matrix = staticmethod(_strided_pool_matrix)
    homogeneous = staticmethod(_homogeneous)
    shift_pair_weights = staticmethod(_shift_pair_weights)

    def __init__(self):
        self.outputs = []

    def apply(self, layer, st):
        """Propagate the stage through ``layer``."""
        return layer._oracle(self, st)

    def tap(self, readout, st):
        """Read ``st`` out through ``readout`` into the next output slot."""
        slot = len(self.outputs)
        self.outputs.append(None)  # keep the order of appearance for nested taps
        self.outputs[slot] = self.apply(readout, st)

    @staticmethod
    def shape(st):
        """Spatial shape (H, W) of the stage."""
        return st.xy[0].shape[-4:-2]

    @staticmethod
    def linear(st, fn):
        """The same linear map ``fn`` on K and Theta of all three recursions."""
        return st.map(lambda K, T: (fn(K), None if T is None else fn(T)))

    @staticmethod
    def readout(st, fn):
        """A read-out ``fn(M)`` (a scalar per pair over the last four axes) as a 1x1 stage."""
        return _Oracle.linear(st, lambda M: _as_1x1(fn(M)))

    @staticmethod
    def affine(st, window_mean, weight_var, bias_var, trainable):
        """K' = w A[K] + b; Theta' = w A[Theta] (+ K' if trainable)."""
        return st.map(lambda K, T: _affine(window_mean, weight_var, bias_var, trainable, K, T))

    @staticmethod
    def conv_window_mean(layer):
        """The window mean of a :class:`~.arch.Conv` as a map on 4-D tensors."""
        return lambda M: _conv_window_mean(M, layer)

    @staticmethod
    def pool(st, layer):
        """K' = P K P^T with the pooling layer's matrices."""
        Ph, Pw = _pool_matrices(layer, _Oracle.shape(st))
        return _Oracle.linear(st, lambda M: _pool(M, Ph, Pw))

    @staticmethod
    def nonlinearity(st, entrywise):
        """An entrywise nonlinearity ``entrywise(K, T, vp, vq, coincident)`` (see _homogeneous)."""
        return _apply_nonlinearity(entrywise, st)


ORACLE = _Oracle()  # stateless uses (pool matrices); reference_gram makes its own


def _apply_nonlinearity(entrywise, st):
    Vx = _diagonal(st.xx[0])  # (nx, H, W)
    Vy = Vx if st.yy is None else _diagonal(st.yy[0])
    H, W = Vx.shape[-2:]
    coincident = np.eye(H * W, dtype=bool).reshape(H, W, H, W)

    def self_pair(KT, V):
        vp = V[:, :, :, None, None]
        vq = V[:, None, None, :, :]
        return entrywise(KT[0], KT[1], vp, vq, coincident)

    vp = Vx[:, None, :, :, None, None]
    vq = Vy[None, :, None, None, :, :]
    xy = entrywise(st.xy[0], st.xy[1], vp, vq, None)
    xx = self_pair(st.xx, Vx)
    yy = None if st.yy is None else self_pair(st.yy, Vy)
    return _Stage(xy, xx, yy)


# ---------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------


def reference_gram(X, Y=None, *, architecture, kind="nngp"):
    """Kernel matrix between image sets by the full 4-D recursion (test oracle).

    Parameters
    ----------
    X : array of shape (n_X, H, W, C)
    Y : array of shape (n_Y, H, W, C), default=None
        ``None`` means ``Y = X``; the diagonal then uses the exact self
        recursion of each image (coincident points evaluated exactly).
    architecture : Layer
        An architecture from :mod:`sklearn_convkernel.arch`.
    kind : {"nngp", "ntk"}
        Read out ``K`` (NNGP / CKN covariance) or ``Theta`` (NTK).

    Returns
    -------
    ndarray of shape (n_X, n_Y), or (n_outputs, n_X, n_Y) when the
    architecture contains :class:`~sklearn_convkernel.arch.Tap` layers
    (taps in depth-first order of appearance, the final output last).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}.")
    X = check_images(X, "X", np.float64)
    same = Y is None
    if not same:
        Y = check_images(Y, "Y", np.float64)
        if Y.shape[1:] != X.shape[1:]:
            raise ValueError(
                f"X and Y must have the same image shape (H, W, C); got {X.shape[1:]} "
                f"and {Y.shape[1:]}."
            )
    _arch.validate(architecture, X.shape[1:3])
    for layer in _arch.iter_layers(architecture):
        layer._check_kind(kind)

    C = X.shape[3]
    s = 1.0 / C if architecture._input_norm == "mean" else 1.0
    Kxy = s * np.einsum("ahwc,bijc->abhwij", X, X if same else Y)
    Kxx = s * np.einsum("ahwc,aijc->ahwij", X, X)
    Kyy = None if same else s * np.einsum("ahwc,aijc->ahwij", Y, Y)

    def with_theta(K):
        return (K, np.zeros_like(K) if kind == "ntk" else None)

    st = _Stage(with_theta(Kxy), with_theta(Kxx), None if same else with_theta(Kyy))
    oracle = _Oracle()
    final = oracle.apply(architecture, st)
    outputs = oracle.outputs + [final]

    idx = 1 if kind == "ntk" else 0
    grams = []
    for out in outputs:
        G = np.array(out.xy[idx][..., 0, 0, 0, 0], dtype=np.float64)
        if same:  # exact self values on the diagonal
            G[np.diag_indices_from(G)] = out.xx[idx][..., 0, 0, 0, 0]
        grams.append(G)
    return np.stack(grams) if len(grams) > 1 else grams[0]
