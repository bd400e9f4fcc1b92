"""Nyström feature maps of convolutional kernel networks (unsupervised CKN, Mairal 2016).

A CKN layer maps a feature map ``x`` (positions ``u``, channels) to

1. patches ``x_u`` (a zero-padded ``p x p`` window of the previous map, all
   channels; odd ``p`` centred, even ``p`` reaching one further up/left),
2. ``psi(x_u) = ||x_u|| K_ZZ^{-1/2} kappa(Z^T x_u / ||x_u||)`` with unit-norm
   anchors ``Z`` (the columns) and ``K_ZZ = kappa(Z^T Z)``,
3. linear pooling over positions (Gaussian / average / strided, exactly the
   1-D matrices of :class:`~sklearn_convkernel.arch.GaussianPool`,
   :class:`~sklearn_convkernel.arch.BoxPool` and
   :class:`~sklearn_convkernel.arch.StridedPool`).

``psi(x_u) . psi(y_v)`` is the Nyström approximation of the homogeneous
dot-product kernel ``||x_u|| ||y_v|| kappa(<x_u, y_v> / (||x_u|| ||y_v||))``,
so the inner product of the flattened last maps approximates the exact CKN
kernel of :func:`~sklearn_convkernel.presets.from_ckn_kernel` (trace
read-out), and converges to it as the numbers of anchors grow.

Implementation notes.  Patches come from
:func:`numpy.lib.stride_tricks.sliding_window_view` (one copy per batch) and
every product is a BLAS GEMM; because pooling and ``K_ZZ^{-1/2}`` are both
linear they commute, so ``K_ZZ^{-1/2}`` is applied *after* pooling (on 4x to
40x fewer positions).  Images are processed in batches (bounded memory),
optionally in parallel (:func:`~sklearn_convkernel._parallel.parallel`).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from joblib import delayed, effective_n_jobs
from numpy.lib.stride_tricks import sliding_window_view
from scipy import sparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sklearn_convkernel import _ckn
from sklearn_convkernel import arch as A
from sklearn_convkernel._base import validate_images
from sklearn_convkernel._parallel import blas_limit, parallel

__all__ = ["CKNFeatures"]


# ---------------------------------------------------------------------------
# dot-product kernels and their derivatives
# ---------------------------------------------------------------------------


def kappa(u, kernel, sigma):
    """``kappa(u)`` elementwise (a new array of u's dtype).

    The dual of the CKN layer named ``kernel`` (:func:`._ckn.nonlinearity`):
    the one definition in :mod:`~sklearn_convkernel.arch`, which the exact
    kernel's oracle also uses; ``u`` is clipped to [-1, 1] as there.
    """
    return _ckn.nonlinearity(kernel, sigma)._dual(np.clip(u, -1.0, 1.0))[0]


def kappa_prime(u, kernel, sigma):
    """Derivative ``kappa'(u)`` elementwise (same definition and clipping as :func:`kappa`)."""
    return _ckn.nonlinearity(kernel, sigma)._dual(np.clip(u, -1.0, 1.0))[1]


def _scaled_kappa(S, r, kernel, sigma):
    """``r[:, None] * kappa(S)``, in place on S where cheap (S is (M, F), r is (M,))."""
    if kernel == "exp":
        # exp((S - 1)/sigma^2 + log r): one pass; r = 0 gives exp(-inf) = 0
        with np.errstate(divide="ignore"):
            logr = np.log(r)
        S -= 1.0
        S *= 1.0 / (sigma * sigma)
        S += logr[:, None]
        np.exp(S, out=S)
        return S
    out = kappa(S, kernel, sigma)
    out *= r[:, None]
    return out


# ---------------------------------------------------------------------------
# linear algebra helpers
# ---------------------------------------------------------------------------


def inv_sqrt_psd(K, regularization):
    """``(K + reg I)^{-1/2}`` of a symmetric PSD matrix; returns (matrix, eigvals, eigvecs).

    ``eigvals`` are those of ``K + reg I`` (negative rounding errors of K are
    clipped to 0 first).
    """
    K = np.asarray(K, dtype=np.float64)
    w, V = np.linalg.eigh((K + K.T) * 0.5)
    w = np.maximum(w, 0.0) + regularization
    return (V * (1.0 / np.sqrt(w))) @ V.T, w, V


def pool_matrices(pooling, subsampling, shape):
    """The 1-D pooling matrices (height, width) of ckn_kernel's pooling, from :mod:`.arch`."""
    layer = _ckn.pooling_layer(pooling, int(subsampling))
    return layer.axis_matrices(tuple(shape[:2]))


def _is_identity(m):
    return m.shape[0] == m.shape[1] and np.array_equal(m, np.eye(m.shape[0]))


def pool(U, Ah, Aw):
    """Separable pooling of maps U (N, H, W, F) -> (N, H', W', F)."""
    N, H, W, F = U.shape
    if Ah is not None:
        U = np.matmul(Ah, U.reshape(N, H, W * F)).reshape(N, Ah.shape[0], W, F)
        H = Ah.shape[0]
    if Aw is not None:
        U = np.matmul(Aw, U.reshape(N * H, W, F)).reshape(N, H, Aw.shape[0], F)
    return U


def pool_adjoint(G, Ah, Aw):
    """Adjoint of :func:`pool`: G (N, H', W', F) -> (N, H, W, F)."""
    N, H, W, F = G.shape
    if Aw is not None:
        G = np.matmul(Aw.T, G.reshape(N * H, W, F)).reshape(N, H, Aw.shape[1], F)
        W = Aw.shape[1]
    if Ah is not None:
        G = np.matmul(Ah.T, G.reshape(N, H, W * F)).reshape(N, Ah.shape[1], W, F)
    return G


def extract_patches(X, p):
    """All ``p x p`` patches of maps X (N, H, W, C), zero padded: rows (N*H*W, C*p*p).

    The row layout is (channel, dy, dx); the anchors use the same layout.
    """
    N, H, W, C = X.shape
    if p == 1:
        return np.ascontiguousarray(X).reshape(N * H * W, C)
    lo, hi = _ckn.patch_pads(p)
    Xp = np.zeros((N, H + p - 1, W + p - 1, C), dtype=X.dtype)
    Xp[:, lo:lo + H, lo:lo + W, :] = X
    view = sliding_window_view(Xp, (p, p), axis=(1, 2))  # (N, H, W, C, p, p)
    return view.reshape(N * H * W, C * p * p)


def patches_adjoint(G, shape, p):
    """Adjoint of :func:`extract_patches`: G (N*H*W, C*p*p) -> maps (N, H, W, C)."""
    N, H, W, C = shape
    if p == 1:
        return G.reshape(N, H, W, C)
    lo, _ = _ckn.patch_pads(p)
    G = G.reshape(N, H, W, C, p, p)
    Xp = np.zeros((N, H + p - 1, W + p - 1, C), dtype=G.dtype)
    for dy in range(p):
        for dx in range(p):
            Xp[:, dy:dy + H, dx:dx + W, :] += G[..., dy, dx]
    return Xp[:, lo:lo + H, lo:lo + W, :]


def _window_sums(M, p):
    """Sums of the zero-padded ``p x p`` windows of maps M (N, H, W) (same layout as patches)."""
    N, H, W = M.shape
    lo, _ = _ckn.patch_pads(p)
    Mp = np.zeros((N, H + p - 1, W + p - 1), dtype=np.float64)
    Mp[:, lo:lo + H, lo:lo + W] = M
    c = np.zeros((N, H + p, W + p))
    c[:, 1:, 1:] = Mp.cumsum(1).cumsum(2)
    return c[:, p:, p:] - c[:, :-p, p:] - c[:, p:, :-p] + c[:, :-p, :-p]


def sample_patches(X, p, n, rng):
    """Up to ``n`` random non-zero patches of maps X (N, H, W, C), as unit-norm rows (float64).

    Patches of (numerically) zero norm -- background, padding -- are skipped:
    those below 1e-14 times the *median* squared norm of the non-zero patches
    (a robust scale: relative to the largest norm, one outlier pixel of 1e8
    would discard every normal patch).
    """
    N, H, W, C = X.shape
    sq = np.einsum("nhwc,nhwc->nhw", X, X, dtype=np.float64)
    norms2 = _window_sums(sq, p).reshape(-1)
    positive = norms2[norms2 > 0]
    if positive.size:
        candidates = np.flatnonzero(norms2 > 1e-14 * float(np.median(positive)))
    else:
        candidates = np.empty(0, np.intp)
    if candidates.size > n:
        candidates = np.sort(rng.choice(candidates, size=n, replace=False))
    i, rest = np.divmod(candidates, H * W)
    y, x = np.divmod(rest, W)
    lo, _ = _ckn.patch_pads(p)
    Xp = np.zeros((N, H + p - 1, W + p - 1, C), dtype=X.dtype)
    Xp[:, lo:lo + H, lo:lo + W, :] = X
    P = np.empty((candidates.size, C, p, p), dtype=np.float64)
    for dy in range(p):  # gather whole channel rows, one offset at a time
        for dx in range(p):
            P[:, :, dy, dx] = Xp[i, y + dy, x + dx, :]
    P = P.reshape(candidates.size, C * p * p)
    norms = np.sqrt(np.einsum("ij,ij->i", P, P))
    keep = norms > 0
    P = P[keep] if not keep.all() else P
    P /= norms[keep, None]
    return P


def spherical_kmeans(P, k, rng, n_iter=10):
    """Spherical k-means on unit-norm rows P (n, d): k unit-norm centroids as columns (d, k).

    Initialised with distinct random rows; an empty cluster is re-seeded with
    the patches worst represented by their centroids.  With fewer than k
    patches the remaining anchors are random unit vectors.  Similarities are
    computed in float32 (only their argmax is used), centroids in float64.
    """
    n, d = P.shape
    Z = np.empty((d, k))
    if n == 0:
        Z = rng.standard_normal((d, k))
        return Z / np.linalg.norm(Z, axis=0)
    m = min(n, k)
    Z[:, :m] = P[rng.choice(n, size=m, replace=False)].T
    if m < k:
        R = rng.standard_normal((d, k - m))
        Z[:, m:] = R / np.linalg.norm(R, axis=0)
    if n <= k:
        return Z
    P32 = P.astype(np.float32)
    rows = np.arange(n)
    prev = None
    for _ in range(n_iter):
        sim = P32 @ Z.astype(np.float32)
        assign = np.argmax(sim, axis=1)
        if prev is not None and np.array_equal(assign, prev):
            break
        prev = assign
        onehot = sparse.csr_matrix((np.ones(n), (assign, rows)), shape=(k, n))
        C = np.asarray(onehot @ P)  # (k, d) cluster sums
        empty = np.flatnonzero(np.bincount(assign, minlength=k) == 0)
        if empty.size:
            worst = np.argsort(sim[rows, assign])[: empty.size]
            C[empty] = P[worst]
        norms = np.sqrt(np.einsum("ij,ij->i", C, C))
        norms[norms == 0] = 1.0
        Z = np.ascontiguousarray((C / norms[:, None]).T)
    return Z


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------


class CKNLayer:
    """One Nyström CKN layer for a fixed input shape (plain container, no validation).

    Attributes: ``patch_size``, ``subsampling``, ``pooling``, ``kernel``,
    ``sigma``, ``in_shape`` (H, W, C), ``out_shape`` (H', W', F),
    ``anchors`` (C*p*p, F) unit-norm columns, ``lintrans`` (F, F) =
    ``(kappa(Z^T Z) + reg I)^{-1/2}``, ``pool_h`` / ``pool_w`` (1-D pooling
    matrices, None for the identity).
    """

    def __init__(self, patch_size, subsampling, pooling, kernel, sigma, in_shape, n_filters):
        self.patch_size = int(patch_size)
        self.subsampling = int(subsampling)
        self.pooling = pooling
        self.kernel = kernel
        self.sigma = float(sigma)
        self.in_shape = tuple(int(v) for v in in_shape)
        self.n_filters = int(n_filters)
        Ah, Aw = pool_matrices(pooling, subsampling, in_shape)
        self.pool_h = None if _is_identity(Ah) else Ah
        self.pool_w = None if _is_identity(Aw) else Aw
        self.out_shape = (Ah.shape[0], Aw.shape[0], self.n_filters)
        self.anchors = None
        self.lintrans = None

    @property
    def patch_dim(self):
        return self.in_shape[2] * self.patch_size ** 2

    def set_anchors(self, Z, regularization):
        """Set the anchors and compute ``(kappa(Z^T Z) + reg I)^{-1/2}``."""
        self.anchors = np.ascontiguousarray(Z, dtype=np.float64)
        K = kappa(self.anchors.T @ self.anchors, self.kernel, self.sigma)
        self.lintrans = inv_sqrt_psd(K, regularization)[0]

    def pooled_responses(self, X, Z=None):
        """Pooled ``||x_u|| kappa(Z^T x_u / ||x_u||)`` of maps X (N, H, W, C): (N, H', W', F)."""
        Z = self.anchors if Z is None else Z
        N, H, W, _ = X.shape
        E = extract_patches(X, self.patch_size)
        r = np.sqrt(np.einsum("ij,ij->i", E, E))
        with np.errstate(divide="ignore"):
            rinv = np.where(r > 0, 1.0 / np.where(r > 0, r, 1.0), 0.0).astype(X.dtype)
        S = E @ Z.astype(X.dtype, copy=False)
        S *= rinv[:, None]
        U = _scaled_kappa(S, r, self.kernel, self.sigma)
        return pool(U.reshape(N, H, W, -1), self._cast(self.pool_h, X.dtype),
                    self._cast(self.pool_w, X.dtype))

    @staticmethod
    def _cast(m, dtype):
        return None if m is None else m.astype(dtype, copy=False)

    def forward(self, X):
        """Feature maps (N, H', W', F) of maps X (N, H, W, C)."""
        V = self.pooled_responses(X)
        N, h, w, F = V.shape
        out = V.reshape(-1, F) @ self.lintrans.astype(X.dtype, copy=False)
        return out.reshape(N, h, w, F)


def forward_layers(layers, X):
    """Run maps X (N, H, W, C) through the layers."""
    for layer in layers:
        X = layer.forward(X)
    return X


def per_layer(value, depth, name, owner):
    """Broadcast a scalar or check a per-layer sequence of length ``depth``."""
    if isinstance(value, (list, tuple, np.ndarray)):
        value = list(value)
        if len(value) != depth:
            raise ValueError(
                f"{owner}: {name} has {len(value)} entries but the network has {depth} "
                f"layer(s); give one value or one per layer."
            )
        return value
    return [value] * depth


def network_depth(n_filters, others):
    """Number of layers: ``len(n_filters)``, else the longest other sequence (else 1)."""
    if isinstance(n_filters, (list, tuple, np.ndarray)):
        return len(n_filters)
    lengths = [len(v) for v in others if isinstance(v, (list, tuple, np.ndarray))]
    return max(lengths) if lengths else 1


def _check_per_layer(values, name, owner, kind):
    for v in values:
        if kind == "int":
            if isinstance(v, bool) or not isinstance(v, Integral) or v < 1:
                raise ValueError(f"{owner}: {name} must hold positive ints, got {v!r}.")
        elif kind == "float":
            if isinstance(v, bool) or not isinstance(v, Real) or not v > 0:
                raise ValueError(f"{owner}: {name} must hold positive numbers, got {v!r}.")
        else:
            if v not in kind:
                raise ValueError(f"{owner}: {name} must be one of {list(kind)}, got {v!r}.")


def layer_specs(est):
    """Per-layer (n_filters, patch_size, subsampling, pooling, kernel, sigma) of an estimator."""
    owner = type(est).__name__
    depth = network_depth(est.n_filters, [est.patch_sizes, est.subsamplings, est.pooling,
                                          est.kernel, est.sigma])
    if depth == 0:
        raise ValueError(f"{owner}: n_filters must hold at least one layer, got "
                         f"{est.n_filters!r}.")
    nf = per_layer(est.n_filters, depth, "n_filters", owner)
    ps = per_layer(est.patch_sizes, depth, "patch_sizes", owner)
    ss = per_layer(est.subsamplings, depth, "subsamplings", owner)
    po = per_layer(est.pooling, depth, "pooling", owner)
    ke = per_layer(est.kernel, depth, "kernel", owner)
    sg = per_layer(est.sigma, depth, "sigma", owner)
    _check_per_layer(nf, "n_filters", owner, "int")
    _check_per_layer(ps, "patch_sizes", owner, "int")
    _check_per_layer(ss, "subsamplings", owner, "int")
    _check_per_layer(po, "pooling", owner, _ckn.POOLINGS)
    _check_per_layer(ke, "kernel", owner, _ckn.NYSTROM_KERNELS)
    _check_per_layer(sg, "sigma", owner, "float")
    return list(zip(nf, ps, ss, po, ke, sg))


def build_layers(specs, image_shape):
    """CKNLayer objects (without anchors) for images of ``image_shape`` (H, W, C).

    A subsampling too large for its map is lowered to the largest that fits
    (:func:`~._ckn.largest_fitting_subsampling`, the estimators' rule), so
    that the defaults also run on small images.

    Returns
    -------
    layers : list of CKNLayer
    specs : list of tuple
        ``specs`` with the subsamplings actually used.
    """
    layers, used = [], []
    shape = tuple(image_shape)
    for i, (nf, p, d, po, ke, sg) in enumerate(specs):
        def make(trial):
            try:
                return CKNLayer(p, trial, po, ke, sg, shape, nf)
            except A.ArchitectureError:
                return None

        fitted = _ckn.largest_fitting_subsampling(d, lambda trial: make(trial) is not None)
        if fitted is None:
            try:
                CKNLayer(p, 1, po, ke, sg, shape, nf)
            except A.ArchitectureError as exc:
                raise ValueError(
                    f"layer {i}: the {shape[0]}x{shape[1]} map is too small for {po} "
                    f"pooling even with subsampling 1 ({exc}); use fewer layers, smaller "
                    "patch sizes or pooling='average'."
                ) from exc
        layer = make(fitted)
        layers.append(layer)
        used.append((nf, p, fitted, po, ke, sg))
        shape = layer.out_shape
    return layers, used


def ckn_model(specs):
    """ckn_kernel's model (list of layer dicts) of the same network."""
    return [
        {"npatch": int(p), "subsampling": int(d), "pooling": po, "kernel": ke, "sigma": float(sg)}
        for (_, p, d, po, ke, sg) in specs
    ]


def fit_anchors(layers, X, n_patches, kmeans_iter, regularization, rng, batch_size):
    """Learn every layer's anchors on the images X (N, H, W, C), layer by layer."""
    maps = X
    for i, layer in enumerate(layers):
        P = sample_patches(maps, layer.patch_size, n_patches, rng)
        Z = spherical_kmeans(P, layer.n_filters, rng, kmeans_iter)
        layer.set_anchors(Z, regularization)
        if i + 1 < len(layers):
            maps = np.concatenate([
                layer.forward(maps[s:s + batch_size])
                for s in range(0, maps.shape[0], batch_size)
            ]) if maps.shape[0] else maps
    return layers


def images_for_anchors(layers, n_images, n_patches):
    """How many training images to push through the network to sample ``n_patches``."""
    fewest = min(layer.in_shape[0] * layer.in_shape[1] for layer in layers)
    return min(n_images, max(64, math.ceil(4 * n_patches / fewest)))


def _transform_batch(layers, X, dtype, start):
    return start, forward_layers(layers, X.astype(dtype, copy=False)).reshape(len(X), -1)


def transform_batches(layers, X4, dtype, batch_size, n_jobs):
    """Flattened last maps of images X4 (N, H, W, C), batch by batch (in parallel if n_jobs > 1)."""
    n = X4.shape[0]
    h, w, f = layers[-1].out_shape
    out = np.empty((n, h * w * f), dtype=dtype)
    starts = range(0, n, batch_size)
    with blas_limit():
        if len(starts) == 1 or effective_n_jobs(n_jobs) == 1:
            results = (_transform_batch(layers, X4[s:s + batch_size], dtype, s) for s in starts)
        else:
            results = parallel(n_jobs, unordered=True)(
                delayed(_transform_batch)(layers, X4[s:s + batch_size], dtype, s) for s in starts)
        for start, maps in results:
            out[start:start + len(maps)] = maps
    return out


def check_magnitude(X, layers, owner, dtype):
    """Refuse images whose first-layer patch norms overflow in ``dtype``."""
    top = float(np.max(np.abs(X), initial=0.0))
    p, C = layers[0].patch_size, layers[0].in_shape[2]
    # squared patch norms, with headroom (1e4) for the sums of later layers
    bound = top * top * (p * p * C * 1e4) if top < 1e154 else np.inf
    if not bound <= float(np.finfo(dtype).max):
        raise ValueError(
            f"{owner}: X has values too large for {np.dtype(dtype).name} (largest |pixel| "
            f"{top:.3g}): the squared patch norms overflow; rescale X (e.g. X / X.max())"
            + (" or use dtype='float64'." if dtype == np.float32 else ".")
        )


def check_features(F, owner):
    """Refuse non-finite feature vectors (an overflow inside the network)."""
    if not np.isfinite(F).all():
        raise ValueError(
            f"{owner}: the features overflow (non-finite values) for these images; rescale "
            "X (e.g. X / X.max()) or use dtype='float64'."
        )
    return F


PER_LAYER_INT = [Interval(Integral, 1, None, closed="left"), tuple, list]

CKN_NETWORK_CONSTRAINTS = {
    "n_filters": PER_LAYER_INT,
    "patch_sizes": PER_LAYER_INT,
    "subsamplings": PER_LAYER_INT,
    "kernel": [StrOptions(set(_ckn.NYSTROM_KERNELS)), tuple, list],
    "sigma": [Interval(Real, 0, None, closed="neither"), tuple, list],
    "pooling": [StrOptions(set(_ckn.POOLINGS)), tuple, list],
    "n_patches": [Interval(Integral, 1, None, closed="left")],
    "kmeans_iter": [Interval(Integral, 0, None, closed="left")],
    "regularization": [Interval(Real, 0, None, closed="neither")],
    "image_shape": [tuple, list, None],
    "dtype": [StrOptions({"float32", "float64"}), None],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "n_jobs": [Integral, None],
    "random_state": ["random_state"],
}


class CKNFeatures(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Nyström feature maps of a convolutional kernel network (unsupervised CKN).

    ``fit`` learns, layer by layer, anchor points by spherical k-means on
    normalised patches sampled from the training images (pushed through the
    layers learnt so far) and computes ``K_ZZ^{-1/2}``; ``transform`` returns
    finite feature vectors ``psi(x)`` whose inner products approximate the
    exact CKN kernel of :func:`~sklearn_convkernel.presets.from_ckn_kernel`
    with the same layers (attribute :attr:`architecture_`):
    ``psi(x) @ psi(y) -> conv_kernel(x, y, architecture=architecture_)`` as
    ``n_filters`` grows.  Pair it with a linear model (``LinearSVC``,
    ``RidgeClassifier``, ``SGDClassifier``, ``LogisticRegression``).

    Each layer: zero-padded ``p x p`` patches (all channels; odd ``p``
    centred, even ``p`` reaching one further up/left, as ckn_kernel) ->
    ``||x_u|| K_ZZ^{-1/2} kappa(Z^T x_u / ||x_u||)`` -> pooling with the
    layer's subsampling.  The output is the flattened last map
    (height x width x filters, row-major).

    Parameters
    ----------
    n_filters : int or sequence of int, default=(64, 256)
        Number of anchors (filters) per layer; its length is the depth.
    patch_sizes : int or sequence of int, default=(3, 3)
        Patch side ``p`` per layer.
    subsamplings : int or sequence of int, default=(2, 3)
        Pooling subsampling ``d`` per layer.  With Gaussian or strided pooling
        a map of side n becomes ``n // d - 1``; with average pooling
        ``n // d``.  The defaults map 28x28 images to 13x13 then 3x3 maps
        (3 * 3 * 256 = 2304 features).
        A subsampling too large for its map (small images) is lowered to the
        largest that fits; ``subsamplings_`` holds the values used.
    kernel : {"exp", "relu", "poly2", "poly3", "poly4"} or sequence, default="exp"
        Dot-product kernel ``kappa`` on normalised patches: ``exp((u - 1) /
        sigma**2)``, the normalised arc-cosine kernel of order 1, or ``u**d``.
    sigma : float or sequence of float, default=0.6
        Bandwidth of the "exp" kernel.
    pooling : {"gaussian", "average", "strided"} or sequence, default="gaussian"
        ckn_kernel's poolings (see :class:`~sklearn_convkernel.arch.GaussianPool`,
        :class:`~sklearn_convkernel.arch.BoxPool`,
        :class:`~sklearn_convkernel.arch.StridedPool`).
    n_patches : int, default=50000
        Patches sampled per layer for the k-means (zero patches are skipped).
    kmeans_iter : int, default=10
        Spherical k-means iterations (0: random patches as anchors).
    regularization : float, default=1e-3
        Added to the eigenvalues of ``K_ZZ`` (whose diagonal is 1) before the
        inverse square root.
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
    dtype : {"float32", "float64"}, default=None
        Precision of the features; None keeps float32 input as float32 and
        uses float64 otherwise.  float32 is about twice as fast.
    batch_size : int, default=128
        Images per batch in ``transform`` (bounds memory).
    n_jobs : int, default=None
        Threads over batches (joblib semantics; each thread runs a
        single-threaded BLAS).  None: one thread, multi-threaded BLAS.
    random_state : int, RandomState instance or None, default=None
        Seeds the patch sampling and the k-means.

    Attributes
    ----------
    layers_ : list of CKNLayer
        The fitted layers (``anchors`` (C p p, F), ``lintrans`` (F, F), ...).
    architecture_ : Sequential
        The exact kernel's architecture (``from_ckn_kernel(ckn_model_)``).
    subsamplings_ : tuple of int
        The subsamplings used (the requested ones, lowered where a map was
        too small for them).
    ckn_model_ : list of dict
        The network in ckn_kernel's format.
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int
    feature_map_shape_ : tuple (H', W', F)
        Shape of the last map; ``n_features_out = H' W' F``.

    See Also
    --------
    SupervisedCKNClassifier : the same network trained end to end.
    sklearn_convkernel.presets.from_ckn_kernel : the exact kernel.

    References
    ----------
    J. Mairal, "End-to-End Kernel Learning with Supervised Convolutional
    Kernel Networks", NeurIPS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import CKNFeatures
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((10, 12, 12, 1))
    >>> ckn = CKNFeatures(n_filters=(8, 16), subsamplings=(2, 2), random_state=0)
    >>> ckn.fit_transform(X).shape  # 12x12 -> 5x5 -> 1x1 maps, 16 filters
    (10, 16)
    """

    _parameter_constraints = dict(CKN_NETWORK_CONSTRAINTS)

    def __init__(self, n_filters=(64, 256), *, patch_sizes=(3, 3), subsamplings=(2, 3),
                 kernel="exp", sigma=0.6, pooling="gaussian", n_patches=50000, kmeans_iter=10,
                 regularization=1e-3, image_shape=None, dtype=None, batch_size=128,
                 n_jobs=None, random_state=None):
        self.n_filters = n_filters
        self.patch_sizes = patch_sizes
        self.subsamplings = subsamplings
        self.kernel = kernel
        self.sigma = sigma
        self.pooling = pooling
        self.n_patches = n_patches
        self.kmeans_iter = kmeans_iter
        self.regularization = regularization
        self.image_shape = image_shape
        self.dtype = dtype
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the anchors of every layer.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        X = validate_images(self, X, reset=True, dtype=self.dtype)
        layers, specs = build_layers(layer_specs(self), self.image_shape_)
        dtype = X.dtype.type
        check_magnitude(X, layers, type(self).__name__, dtype)
        rng = check_random_state(self.random_state)
        n = X.shape[0]
        m = images_for_anchors(layers, n, self.n_patches)
        idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        X4 = X[idx].reshape((-1,) + self.image_shape_).astype(dtype, copy=False)
        with blas_limit():
            fit_anchors(layers, X4, self.n_patches, self.kmeans_iter, self.regularization,
                        rng, self.batch_size)
        self.layers_ = layers
        self.subsamplings_ = tuple(spec[2] for spec in specs)
        self.ckn_model_ = ckn_model(specs)
        from sklearn_convkernel.presets import from_ckn_kernel

        self.architecture_ = from_ckn_kernel(self.ckn_model_)
        self.feature_map_shape_ = layers[-1].out_shape
        self._n_features_out = int(np.prod(self.feature_map_shape_))
        return self

    def transform(self, X):
        """Feature vectors ``psi(x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)

        Returns
        -------
        psi : ndarray of shape (n_samples, H' * W' * F)
        """
        check_is_fitted(self)
        X = validate_images(self, X, reset=False, dtype=self.dtype)
        dtype = X.dtype.type
        check_magnitude(X, self.layers_, type(self).__name__, dtype)
        X4 = X.reshape((-1,) + self.image_shape_)
        return check_features(
            transform_batches(self.layers_, X4, dtype, self.batch_size, self.n_jobs),
            type(self).__name__)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = (
            ["float64", "float32"] if self.dtype is None else [self.dtype])
        return tags
