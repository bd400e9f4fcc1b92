"""Kernel-ridge / GP estimators on exact convolutional kernels: CKN, CNTK and CNN-GP.

Each family has a regressor and a classifier whose architecture
hyper-parameters (depth, kernel size, sigma, pooling, ...) are plain
constructor parameters, so ``GridSearchCV`` searches them directly.  An
explicit ``architecture=`` overrides the shorthand.

Computation sharing.  Kernels go through a
:class:`~sklearn_convkernel.KernelCache` that an estimator shares with its
clones (``cache="auto"``), so cross-validation folds and candidates reuse
entries.  With ``max_depth`` set, the network is built to
``max_depth`` with a read-out after every depth (one pass gives all depths),
and the estimator uses the read-out at ``depth``: a search over
``depth <= max_depth`` then costs one pass at ``max_depth``.

The solver is kernel ridge regression (the GP posterior mean), with a
regulariser relative to the mean of the Gram diagonal, so that ``alpha`` does
not depend on the kernel's overall scale.  Classification regresses one-hot
targets (as Arora et al. and Garriga-Alonso et al. do).
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.exceptions import DataConversionWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sklearn_convkernel import _ckn
from sklearn_convkernel import arch as A
from sklearn_convkernel._base import ImageInputMixin, KernelComputer, fit_classes, resolve_dtype
from sklearn_convkernel._cache import CacheParamMixin
from sklearn_convkernel._parallel import blas_limit
from sklearn_convkernel._params import COMMON_CONSTRAINTS

__all__ = [
    "CKNClassifier",
    "CKNRegressor",
    "CNTKClassifier",
    "CNTKRegressor",
    "CNNGPClassifier",
    "CNNGPRegressor",
    "cntk_architecture",
    "cnngp_architecture",
    "ckn_architecture",
]


# ---------------------------------------------------------------------------
# architectures of the three families (with optional depth sweeps)
# ---------------------------------------------------------------------------


def _with_taps(blocks, readout, n_blocks, max_blocks, min_blocks):
    """Sequential layers of blocks plus a read-out; a tap at every depth when swept.

    ``blocks[b]`` is the list of layers of block b.  The network has
    ``n_blocks`` blocks, or ``max_blocks`` when that is not None, in which case
    a :class:`~.arch.Tap` reads out after every block count from
    ``min_blocks`` on: the architecture is then the same for every
    ``n_blocks <= max_blocks`` (so they share cached entries).  Returns
    (layers, output index of ``n_blocks`` blocks).
    """
    if max_blocks is None:
        layers = [layer for block in blocks[:n_blocks] for layer in block]
        return layers + list(readout), 0
    layers = []
    out_index = max_blocks - min_blocks  # the final output, after all taps
    for b in range(min_blocks, max_blocks + 1):
        if b > 0:
            layers.extend(blocks[b - 1])
        if b < max_blocks:
            if b == n_blocks:
                out_index = b - min_blocks
            layers.append(A.Tap(*readout))
    return layers + list(readout), out_index


def _check_max_depth(depth, max_depth, owner):
    for name, value in (("depth", depth), ("max_depth", max_depth)):
        if value is None and name == "max_depth":
            continue
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}.")
    if max_depth is not None and max_depth < depth:
        raise ValueError(
            f"{owner}: max_depth={max_depth} is smaller than depth={depth}; set "
            "max_depth >= depth (the largest depth of your search), or None."
        )


def _spatial_readout(gap, max_shift, owner):
    """The read-out layer of a family: GlobalAvgPool, Flatten or ShiftAverage."""
    if max_shift is None:
        return A.GlobalAvgPool() if gap else A.Flatten()
    if gap:
        raise ValueError(
            f"{owner}: gap=True and max_shift={max_shift!r} ask for two read-outs; pass "
            "gap=False to average the flatten read-out over shifts (or max_shift=None)."
        )
    return A.ShiftAverage(max_shift)


def cntk_architecture(depth=3, gap=True, fix=False, max_depth=None, max_shift=None):
    """Arora et al.'s CNTK architecture in neural-tangents scaling.

    ``[Conv(3, weight_var=2), ReLU()] * (depth - 1)`` then ``GlobalAvgPool()``
    (``gap=True``), ``Flatten()`` or, with ``max_shift``, Li et al.'s local
    average pooling ``ShiftAverage(max_shift)`` (needs ``gap=False``), then
    ``Dense()``.  ``fix=True`` freezes
    the first convolution and the read-out.  Arora et al.'s own numbers are
    ``C`` (gap) or ``C * H * W`` (vanilla) times these; the scale does not
    change the estimators (their ``alpha`` is relative).

    Returns
    -------
    architecture : Sequential
    output : int
        Index of the read-out at ``depth`` (taps at every depth 1..max_depth).
    """
    _check_max_depth(depth, max_depth, "cntk_architecture")
    top = depth if max_depth is None else max_depth
    blocks = [
        [A.Conv(3, weight_var=2.0, trainable=not (fix and d == 0)), A.ReLU()]
        for d in range(top - 1)
    ]
    readout = [_spatial_readout(gap, max_shift, "cntk_architecture"),
               A.Dense(trainable=not fix)]
    layers, out = _with_taps(blocks, readout, depth - 1,
                             None if max_depth is None else max_depth - 1, 0)
    return A.Sequential(*layers), out


def cnngp_architecture(depth=7, kernel_size=7, weight_var=2.79, bias_var=7.86, max_depth=None,
                       max_shift=None):
    """Garriga-Alonso et al.'s ConvNet GP (paper defaults: depth 7, 7x7, 2.79, 7.86).

    ``depth`` x ``[Conv(kernel_size, "same", weight_var * kernel_size**2,
    bias_var), ReLU()]`` then ``Flatten(), Dense(weight_var, bias_var)``:
    ``weight_var`` is the variance per input of a window tap (cnn_gp's
    ``var_weight * kernel_size**2`` convention).  With ``max_shift`` the
    read-out is ``ShiftAverage(max_shift)`` instead of ``Flatten()``.
    """
    _check_max_depth(depth, max_depth, "cnngp_architecture")
    top = depth if max_depth is None else max_depth
    k2 = kernel_size * kernel_size
    blocks = [
        [A.Conv(kernel_size, weight_var=weight_var * k2, bias_var=bias_var), A.ReLU()]
        for _ in range(top)
    ]
    readout = [_spatial_readout(False, max_shift, "cnngp_architecture"),
               A.Dense(weight_var=weight_var, bias_var=bias_var)]
    layers, out = _with_taps(blocks, readout, depth, max_depth, 1)
    return A.Sequential(*layers), out




def _per_layer(value, n, name, owner):
    if isinstance(value, (tuple, list)):
        if len(value) < n:
            raise ValueError(
                f"{owner}: {name} has {len(value)} entries but {n} layers are built; give "
                f"one per layer (up to max_depth) or a single value."
            )
        return list(value[:n])
    return [value] * n


def ckn_architecture(depth=2, patch_size=3, kernel="exp", sigma=0.65, pooling="gaussian",
                     subsampling=(2, 5), kind="nngp", max_depth=None):
    """A multi-layer convolutional kernel network in ckn_kernel's conventions.

    Each layer: a patch *sum* over ``patch_size`` x ``patch_size`` windows
    (zero padding, size preserved; even sizes reach one further up/left),
    the homogeneous dot-product kernel (``exp`` with ``sigma``, ``relu`` =
    normalised arc-cosine of order 1, ``arccos0``, ``linear``, ``poly2..4``),
    then pooling (``gaussian``, ``average`` or ``strided``) with the layer's
    subsampling.  Read-out: the trace (plus a trained read-out for the NTK).
    ``patch_size``, ``sigma``, ``pooling`` and ``subsampling`` take one value
    or one per layer.
    """
    owner = "ckn_architecture"
    _check_max_depth(depth, max_depth, owner)
    if kernel not in _ckn.KERNELS:
        raise ValueError(f"{owner}: kernel must be one of {_ckn.KERNELS}, got {kernel!r}.")
    top = depth if max_depth is None else max_depth
    patches = _per_layer(patch_size, top, "patch_size", owner)
    sigmas = _per_layer(sigma, top, "sigma", owner)
    pools = _per_layer(pooling, top, "pooling", owner)
    subs = _per_layer(subsampling, top, "subsampling", owner)
    blocks = []
    for p, s, pool, d in zip(patches, sigmas, pools, subs):
        if pool not in _ckn.POOLINGS:
            raise ValueError(f"{owner}: pooling must be one of {_ckn.POOLINGS}, got {pool!r}.")
        blocks.append(_ckn.ckn_layer(p, kernel, s, pool, d))
    readout = [A.Trace()] + ([A.Dense()] if kind == "ntk" else [])
    layers, out = _with_taps(blocks, readout, depth, max_depth, 1)
    return A.Sequential(*layers, input_norm="sum"), out


# ---------------------------------------------------------------------------
# the solver
# ---------------------------------------------------------------------------


class _Factor:
    """A factorisation of K + reg * I used for solves and posterior variances."""

    def __init__(self, K, alpha):
        with blas_limit(K.shape[0]):
            self._factorize(K, alpha)

    def _factorize(self, K, alpha):
        K = np.asarray(K, dtype=np.float64)
        n = K.shape[0]
        diag = np.diag(K)
        scale = float(np.mean(diag)) if n else 1.0
        if not np.isfinite(scale) or scale <= 0:
            scale = 1.0
        self.scale = scale
        self.reg = alpha * scale
        Areg = K + self.reg * np.eye(n)
        self.jitter = 0.0
        self.method = "cholesky"
        jitter = 0.0
        while True:
            try:
                L = linalg.cholesky(Areg + jitter * np.eye(n), lower=True, check_finite=False)
                if np.all(np.isfinite(L)):
                    self.L = L
                    self.jitter = jitter
                    break
            except linalg.LinAlgError:
                pass
            jitter = 1e-12 * scale if jitter == 0.0 else jitter * 10.0
            if jitter > 1e-6 * scale:
                self.L = None
                break
        if self.L is not None and self.jitter == 0 and n:
            pivot = float(np.min(np.diag(self.L))) ** 2 / scale
            if pivot < 1e-10:
                warnings.warn(
                    f"The training Gram matrix is nearly singular (smallest Cholesky pivot "
                    f"{pivot:.1e} of its mean diagonal, e.g. duplicated images); predictions "
                    "may be unstable. Increase alpha to silence this warning.",
                    RuntimeWarning,
                    stacklevel=5,
                )
        if self.L is not None and self.jitter > 0:
            warnings.warn(
                f"The training Gram matrix is numerically singular; added {self.jitter:.3g} "
                f"({self.jitter / scale:.1e} of its mean diagonal) to its diagonal. "
                "Increase alpha to silence this warning.",
                RuntimeWarning,
                stacklevel=5,
            )
        if self.L is None:
            # K + reg has eigenvalues below -1e-6 of the mean diagonal: K itself
            # is indefinite by more than the regulariser (an indefinite kernel,
            # e.g. ShiftAverage(one_sided=True), or heavy rounding).  Flooring
            # at a tiny value would put huge weights on K's negative
            # directions (predictions at chance level); clip K's spectrum at 0
            # instead (the nearest positive semi-definite matrix), then add reg.
            w, V = linalg.eigh(Areg, check_finite=False)
            floor = max(self.reg, max(float(w.max()), scale) * 1e-10)
            n_low = int(np.sum(w < floor))
            lowest = float(w.min()) - self.reg  # the smallest eigenvalue of K
            warnings.warn(
                f"The training Gram matrix is not positive semi-definite: its smallest "
                f"eigenvalue is {lowest:.3g} ({lowest / scale:.1e} of its mean diagonal), "
                f"beyond what alpha={self.reg / scale:.3g} (relative) absorbs. Solving with "
                f"its negative spectrum clipped to 0 ({n_low} eigenvalues). If this is not "
                "rounding, the kernel itself is indefinite (e.g. ShiftAverage(one_sided=True):"
                " use one_sided=False); kernel ridge on an indefinite kernel is unreliable.",
                RuntimeWarning,
                stacklevel=5,
            )
            self.method = "eigh"
            self.w = np.maximum(w, floor)
            self.V = V

    def solve(self, B):
        with blas_limit(B.shape[0]):
            return self._solve(B)

    def _solve(self, B):
        if self.method == "cholesky":
            return linalg.cho_solve((self.L, True), B, check_finite=False)
        return self.V @ ((self.V.T @ B) / self.w[:, None] if B.ndim == 2 else (self.V.T @ B) / self.w)

    def quad(self, Ks):
        """Row-wise k_i^T (K + reg)^{-1} k_i for the rows of Ks."""
        with blas_limit(Ks.shape[1]):
            return self._quad(Ks)

    def _quad(self, Ks):
        if self.method == "cholesky":
            v = linalg.solve_triangular(self.L, Ks.T, lower=True, check_finite=False)
            return np.sum(v * v, axis=0)
        u = self.V.T @ Ks.T
        return np.sum(u * u / self.w[:, None], axis=0)


# ---------------------------------------------------------------------------
# base estimator
# ---------------------------------------------------------------------------


class _ConvKernelRidge(CacheParamMixin, ImageInputMixin, BaseEstimator):
    """Kernel ridge regression on an exact convolutional kernel (base class)."""

    _parameter_constraints = {
        "architecture": [A.Layer, None],
        "alpha": [Interval(Real, 0, None, closed="left")],
        **COMMON_CONSTRAINTS,
    }
    _kind = "nngp"

    def _set_common_params(self, architecture, alpha, image_shape, dtype, n_jobs, cache,
                           verbose, augment=None):
        # the parameters every family shares (scikit-learn's __init__ contract:
        # store them unchanged, validate in fit)
        self.architecture = architecture
        self.augment = augment
        self.alpha = alpha
        self.image_shape = image_shape
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.cache = cache
        self.verbose = verbose

    def _family_architecture(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _architecture(self):
        """(architecture, output index) from the explicit architecture or the shorthand."""
        if self.architecture is not None:
            return self.architecture, -1
        return self._family_architecture()

    def _get_kind(self):
        return getattr(self, "kind", self._kind)

    def _computer(self):
        return KernelComputer(
            self.architecture_, self.image_shape_, self._get_kind(), resolve_dtype(self.dtype),
            output=self.output_index_, cache=self._resolve_cache(), n_jobs=self.n_jobs,
            verbose=self.verbose, augment=self.augment,
        )

    def _validate_training_data(self, X, y):
        """(flat rows of X, y as an array) for ``fit``; refuses ``y=None``."""
        if y is None:
            raise ValueError(
                "requires y to be passed, but the target y is None: this estimator is "
                "supervised; use ConvKernel for the kernel matrix alone."
            )
        return self._validate_images(X, reset=True), np.asarray(y)

    def _fit_targets(self, X, Y):
        """Fit on flat images X and 2-D float targets Y."""
        self.architecture_, self.output_index_ = self._architecture()
        self.X_fit_ = X
        self.cache_ = self._resolve_cache()
        K = self._computer().kernel(X)
        self._factor = _Factor(K, self.alpha)
        self.dual_coef_ = self._factor.solve(Y)
        if not np.all(np.isfinite(self.dual_coef_)):  # pragma: no cover - defensive
            raise FloatingPointError(
                "kernel ridge produced non-finite coefficients; increase alpha or use "
                "dtype='float64'."
            )
        return self

    def _decision(self, X):
        X = self._validate_fitted_images(X)
        Ks = self._computer().kernel(X, self.X_fit_).astype(np.float64, copy=False)
        return Ks @ self.dual_coef_, Ks, X

    def truncated(self):
        """This fitted model with a network that stops at ``depth``, for cheaper predictions.

        With ``max_depth`` set, the fitted network runs to ``max_depth`` (a
        read-out after every depth), so each new image costs a kernel at
        ``max_depth`` even though only the read-out at ``depth`` is used --
        e.g. ``search.best_estimator_`` after a search over ``depth``.  The
        returned estimator has ``max_depth=None``: its network is the one of
        ``depth`` alone, whose kernel equals that read-out (to rounding), and
        it keeps this model's fit (training images, dual coefficients,
        factorised training Gram), so nothing is refitted or recomputed.  Its
        predictions equal this model's to floating-point rounding, at about
        ``depth / max_depth`` of the kernel cost per image.

        It shares this model's ``cache`` parameter; its kernels are cached
        under the truncated network, so images already cached for the full
        network (e.g. a search's validation folds) are computed again.
        Fitting it again fits the truncated network.

        Returns
        -------
        estimator : estimator of the same class
            A fitted copy with ``max_depth=None`` (this model itself is not
            changed; its arrays are shared, not copied).
        """
        check_is_fitted(self)
        if self.architecture is not None:
            raise ValueError(
                f"{type(self).__name__}.truncated: the model was fitted with an explicit "
                "architecture, which has no depth to stop at; build the shorter architecture "
                "and fit it instead."
            )
        params = self.get_params(deep=False)
        model = clone(self).set_params(max_depth=None)
        for name, value in vars(self).items():  # the fitted state, shared
            if name not in params:
                setattr(model, name, value)
        model.architecture_, model.output_index_ = model._architecture()
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class _RegressorBase(RegressorMixin, _ConvKernelRidge):
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit kernel ridge regression on the images X.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
            Images, or flat rows with ``image_shape``.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        self
        """
        X, y = self._validate_training_data(X, y)
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise ValueError(
                f"y must have shape (n_samples,) or (n_samples, n_targets) with n_samples="
                f"{X.shape[0]}, got {y.shape}."
            )
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values.")
        self._y_1d = y.ndim == 1
        return self._fit_targets(X, y.reshape(len(y), -1))

    def predict(self, X):
        """Predicted targets (the kernel ridge / GP posterior mean).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        pred, _, _ = self._decision(X)
        return pred.ravel() if self._y_1d else pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _ClassifierBase(ClassifierMixin, _ConvKernelRidge):
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit one-hot kernel ridge regression on the images X.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        X, y = self._validate_training_data(X, y)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            if y.ndim == 2 and y.shape[1] == 1 and y.shape[0] == X.shape[0]:
                warnings.warn(
                    "A column-vector y was passed when a 1d array was expected; "
                    "ravelling it.", DataConversionWarning, stacklevel=2)
                y = y.ravel()
            else:
                raise ValueError(f"y must have shape (n_samples,), got {y.shape}.")
        codes = fit_classes(self, y)
        Y = np.zeros((len(y), len(self.classes_)))
        Y[np.arange(len(y)), codes] = 1.0
        return self._fit_targets(X, Y)

    def decision_function(self, X):
        """One-hot regression scores; for two classes, score(class 1) - score(class 0).

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        scores, _, _ = self._decision(X)
        if len(self.classes_) == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict(self, X):
        """Predicted class labels (argmax of the one-hot regression).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        scores, _, _ = self._decision(X)
        return self.classes_[np.argmax(scores, axis=1)]


# ---------------------------------------------------------------------------
# families
# ---------------------------------------------------------------------------

_DEPTH = [Interval(Integral, 1, None, closed="left")]
_MAX_DEPTH = [Interval(Integral, 1, None, closed="left"), None]
_MAX_SHIFT = [Interval(Integral, 0, None, closed="left"), None]

_SHARED_DOC = """
    architecture : Layer, default=None
        An explicit architecture (see :mod:`sklearn_convkernel.arch`) that
        overrides the shorthand parameters above.
    augment : {None, "hflip", "hflip_reverse_channels"}, default=None
        "hflip" averages the kernel over a left-right flip of one image,
        ``(K(x, y) + K(x, flip y)) / 2`` (see
        :func:`~sklearn_convkernel.conv_kernel`; the architecture must be
        flip-equivariant, else fit raises); "hflip_reverse_channels" over
        the flip with the channel order reversed, for the channels of
        ``PatchFeatures(flip_equivariant=True)`` in a pipeline.  About twice
        the kernel cost; a search over ``augment`` reuses the plain entries
        through the cache.
    alpha : float, default=1e-3
        Ridge regulariser relative to the mean of the training Gram's
        diagonal (0 interpolates, as Arora et al.; a numerically singular
        Gram then gets a small jitter with a warning).
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
    dtype : {"float64", "float32"}, default="float64"
        Precision of the kernel computation (the solve is in float64).
    n_jobs : int, default=None
        Threads for the kernel computation.
    cache : "auto", KernelCache or None, default="auto"
        Kernel-entry cache shared across fits. "auto": a
        :class:`~sklearn_convkernel.KernelCache` (2 GiB budget) created for
        this estimator and shared with its clones, so the folds and
        candidates of a ``GridSearchCV`` reuse entries; it is freed with them.
        A ``KernelCache`` object: that cache, shared with whoever else holds
        it. None: no caching.
    verbose : int, default=0
        Progress bars (tqdm, on stderr; plain lines every 30 s when stderr is a
        file or a pipe) for the kernel computation when > 0:
        self passes and kernel entries, including the cache fills of a
        cross-validation search.
"""

_FITTED_DOC = """
    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training images (flattened).
    dual_coef_ : ndarray of shape (n_samples, n_targets)
        Kernel ridge coefficients.
    architecture_ : Layer
        The architecture in use.
    output_index_ : int
        Its read-out used (the one at ``depth`` when ``max_depth`` is set).
    cache_ : KernelCache or None
        The cache the kernels go through (see ``cache``).
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int
"""


class _CNTKMixin:
    _kind = "ntk"
    _parameter_constraints = {
        **_ConvKernelRidge._parameter_constraints,
        "depth": _DEPTH,
        "gap": ["boolean"],
        "fix": ["boolean"],
        "max_depth": _MAX_DEPTH,
        "max_shift": _MAX_SHIFT,
    }

    def __init__(self, depth=3, *, gap=True, fix=False, max_depth=None, max_shift=None,
                 architecture=None, augment=None, alpha=1e-3, image_shape=None, dtype="float64",
                 n_jobs=None,
                 cache="auto", verbose=0):
        self.depth = depth
        self.gap = gap
        self.fix = fix
        self.max_depth = max_depth
        self.max_shift = max_shift
        self._set_common_params(architecture, alpha, image_shape, dtype, n_jobs, cache, verbose,
                                augment=augment)

    def _family_architecture(self):
        return cntk_architecture(self.depth, self.gap, self.fix, self.max_depth, self.max_shift)


_CNTK_DOC = """Convolutional neural tangent kernel {what} (Arora et al., 2019).

    Kernel ridge regression{extra} with the CNTK of an infinitely wide ReLU CNN
    trained by gradient flow: ``depth - 1`` layers of 3x3 convolutions and
    ReLU, then a global-average-pooling (``gap=True``) or flatten ("vanilla")
    read-out.

    Parameters
    ----------
    depth : int, default=3
        Number of layers with weights, the read-out included (Arora et al.'s
        depth).
    gap : bool, default=True
        Global average pooling read-out (True) or flatten read-out.
    fix : bool, default=False
        Freeze the first convolution and the read-out (Arora et al.'s ``fix``).
    max_depth : int, default=None
        Build the network to ``max_depth`` with a read-out at every depth, so
        that a search over ``depth`` costs one pass (with the shared cache).
    max_shift : int, default=None
        With ``gap=False``: Li et al.'s local average pooling, the flatten
        read-out averaged over shifts of both images by up to ``max_shift``
        pixels (:class:`~sklearn_convkernel.arch.ShiftAverage`); costs about
        ``(4 max_shift + 1)**2`` flatten kernels.
    {shared}
    {fitted}
    See Also
    --------
    cntk_architecture : the architecture used.
    ConvKernel : the kernel as a transformer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import {name}
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((12, 8, 8, 1)), np.arange(12) % {mod}
    >>> {name}(depth=2).fit(X, y).predict(X[:2]).shape
    (2,)
    """


class CNTKRegressor(_CNTKMixin, _RegressorBase):
    __doc__ = _CNTK_DOC.format(what="regressor", extra="", shared=_SHARED_DOC,
                               fitted=_FITTED_DOC, name="CNTKRegressor", mod=3)


class CNTKClassifier(_CNTKMixin, _ClassifierBase):
    __doc__ = _CNTK_DOC.format(what="classifier", extra=" on one-hot targets",
                               shared=_SHARED_DOC, fitted=_FITTED_DOC, name="CNTKClassifier",
                               mod=2)


class _CNNGPMixin:
    _kind = "nngp"
    _parameter_constraints = {
        **_ConvKernelRidge._parameter_constraints,
        "depth": _DEPTH,
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "weight_var": [Interval(Real, 0, None, closed="left")],
        "bias_var": [Interval(Real, 0, None, closed="left")],
        "max_depth": _MAX_DEPTH,
        "max_shift": _MAX_SHIFT,
    }

    def __init__(self, depth=7, *, kernel_size=7, weight_var=2.79, bias_var=7.86,
                 max_depth=None, max_shift=None, architecture=None, augment=None, alpha=1e-3,
                 image_shape=None, dtype="float64", n_jobs=None, cache="auto", verbose=0):
        self.depth = depth
        self.kernel_size = kernel_size
        self.weight_var = weight_var
        self.bias_var = bias_var
        self.max_depth = max_depth
        self.max_shift = max_shift
        self._set_common_params(architecture, alpha, image_shape, dtype, n_jobs, cache, verbose,
                                augment=augment)

    def _family_architecture(self):
        return cnngp_architecture(self.depth, self.kernel_size, self.weight_var, self.bias_var,
                                  self.max_depth, self.max_shift)


_CNNGP_DOC = """Convolutional Gaussian-process {what} (Garriga-Alonso et al., 2019).

    The NNGP kernel of an infinitely wide randomly initialised ReLU CNN (the
    paper's ConvNet GP by default: 7 layers of 7x7 "same" convolutions), with
    {solver}.

    Parameters
    ----------
    depth : int, default=7
        Number of convolution + ReLU layers.
    kernel_size : int, default=7
    weight_var : float, default=2.79
        Weight variance per input of a window tap (the layer's total is
        ``weight_var * kernel_size**2``; the read-out's is ``weight_var``).
    bias_var : float, default=7.86
    max_depth : int, default=None
        Build the network to ``max_depth`` with a read-out at every depth
        (one pass serves a search over ``depth``).
    max_shift : int, default=None
        Replace the flatten read-out by Li et al.'s local average pooling
        (:class:`~sklearn_convkernel.arch.ShiftAverage`): the kernel averaged
        over shifts of both images by up to ``max_shift`` pixels; costs about
        ``(4 max_shift + 1)**2`` flatten kernels.
    {shared}
    {fitted}
    See Also
    --------
    cnngp_architecture : the architecture used.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import {name}
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((12, 8, 8, 1)), np.arange(12) % {mod}
    >>> {name}(depth=2, kernel_size=3).fit(X, y).predict(X[:2]).shape
    (2,)
    """


class CNNGPRegressor(_CNNGPMixin, _RegressorBase):
    __doc__ = _CNNGP_DOC.format(
        what="regressor", solver="the GP posterior mean and standard deviation "
        "(``alpha`` times the mean prior variance is the observation noise)",
        shared=_SHARED_DOC, fitted=_FITTED_DOC, name="CNNGPRegressor", mod=3)

    def predict(self, X, return_std=False):
        """GP posterior mean, and optionally its standard deviation.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        return_std : bool, default=False
            Also return the posterior standard deviation of the latent function.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_targets)
        y_std : ndarray of shape (n_samples,), only when ``return_std``
        """
        mean, Ks, Xv = self._decision(X)
        mean = mean.ravel() if self._y_1d else mean
        if not return_std:
            return mean
        kxx = self._computer().self_kernel(Xv).astype(np.float64)
        var = kxx - self._factor.quad(Ks)
        # clip round-off below zero (relative to the prior variance)
        var = np.where(var < 0, 0.0, var)
        return mean, np.sqrt(var)


class CNNGPClassifier(_CNNGPMixin, _ClassifierBase):
    __doc__ = _CNNGP_DOC.format(
        what="classifier", solver="one-hot GP regression (posterior mean, argmax)",
        shared=_SHARED_DOC, fitted=_FITTED_DOC, name="CNNGPClassifier", mod=2)


class _CKNMixin:
    _parameter_constraints = {
        **_ConvKernelRidge._parameter_constraints,
        "depth": _DEPTH,
        "patch_size": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "kernel": [StrOptions(set(_ckn.KERNELS))],
        "sigma": [Interval(Real, 0, None, closed="neither"), tuple, list],
        "pooling": [StrOptions(set(_ckn.POOLINGS)), tuple, list],
        "subsampling": [Interval(Integral, 1, None, closed="left"), tuple, list],
        "kind": [StrOptions({"nngp", "ntk"})],
        "max_depth": _MAX_DEPTH,
    }

    def __init__(self, depth=2, *, patch_size=3, kernel="exp", sigma=0.65, pooling="gaussian",
                 subsampling=(2, 5), kind="nngp", max_depth=None, architecture=None,
                 augment=None, alpha=1e-3, image_shape=None, dtype="float64", n_jobs=None,
                 cache="auto", verbose=0):
        self.depth = depth
        self.patch_size = patch_size
        self.kernel = kernel
        self.sigma = sigma
        self.pooling = pooling
        self.subsampling = subsampling
        self.kind = kind
        self.max_depth = max_depth
        self._set_common_params(architecture, alpha, image_shape, dtype, n_jobs, cache, verbose,
                                augment=augment)

    def _family_architecture(self):
        self.subsampling_ = self._fitted_subsampling()
        return ckn_architecture(self.depth, self.patch_size, self.kernel, self.sigma,
                                self.pooling, self.subsampling_, self.kind, self.max_depth)

    def _fitted_subsampling(self):
        """The subsamplings, each lowered until the maps fit the images' size.

        Layer by layer, the largest subsampling <= the requested one that
        leaves a valid (non-empty) map is kept, so that the defaults (2 then 5,
        made for 28x28 images) also run on e.g. 8x8 digits (2 then 1).  When
        no value fits, the requested ones are returned (and the architecture's
        own error explains why).
        """
        owner = type(self).__name__
        top = self.depth if self.max_depth is None else self.max_depth
        wanted = [int(d) for d in _per_layer(self.subsampling, top, "subsampling", owner)]
        shape = self.image_shape_[:2]
        chosen = []

        def fits(trial):
            arch, _ = ckn_architecture(len(chosen) + 1, self.patch_size, self.kernel,
                                       self.sigma, self.pooling, chosen + [trial], self.kind)
            try:
                A.validate(arch, shape)
            except A.ArchitectureError:
                return False
            return True

        for d in wanted:
            d = _ckn.largest_fitting_subsampling(d, fits)
            if d is None:
                return tuple(wanted)
            chosen.append(d)
        return tuple(chosen)


_CKN_DOC = """Convolutional kernel network {what} (Mairal 2016; Bietti & Mairal 2019).

    Kernel ridge regression{extra} with the exact multi-layer CKN kernel in
    ckn_kernel's conventions: per layer, a patch sum, a homogeneous
    dot-product kernel on normalised patches and a linear pooling; the trace
    as read-out.

    Parameters
    ----------
    depth : int, default=2
        Number of layers.
    patch_size : int or tuple, default=3
        Patch side, one value or one per layer.
    kernel : {{"exp", "relu", "arccos0", "linear", "poly2", "poly3", "poly4"}}, default="exp"
        ``exp``: exp((rho - 1) / sigma**2); ``relu``: normalised arc-cosine
        kernel of order 1.
    sigma : float or tuple, default=0.65
        Bandwidth of the exp kernel, one value or one per layer.
    pooling : {{"gaussian", "average", "strided"}} or tuple, default="gaussian"
    subsampling : int or tuple, default=(2, 5)
        Pooling subsampling, one value or one per layer (ckn_kernel's README
        network: 2 then 5 on 28x28 images).  A value too large for the map
        it pools is lowered until the map fits (e.g. 2 then 1 on 8x8 images);
        ``subsampling_`` holds the values used.
    kind : {{"nngp", "ntk"}}, default="nngp"
        The CKN kernel, or its NTK (relu only in ckn_kernel).
    max_depth : int, default=None
        Build ``max_depth`` layers with a read-out after each (one pass serves
        a search over ``depth``); per-layer tuples must cover ``max_depth``.
    {shared}
    {fitted}    subsampling_ : tuple of int
        The subsampling of each layer used (see ``subsampling``).

    See Also
    --------
    ckn_architecture : the architecture used.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import {name}
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((12, 8, 8, 1)), np.arange(12) % {mod}
    >>> {name}(subsampling=(2, 1)).fit(X, y).predict(X[:2]).shape
    (2,)
    """


class CKNRegressor(_CKNMixin, _RegressorBase):
    __doc__ = _CKN_DOC.format(what="regressor", extra="", shared=_SHARED_DOC,
                              fitted=_FITTED_DOC, name="CKNRegressor", mod=3)


class CKNClassifier(_CKNMixin, _ClassifierBase):
    __doc__ = _CKN_DOC.format(what="classifier", extra=" on one-hot targets",
                              shared=_SHARED_DOC, fitted=_FITTED_DOC, name="CKNClassifier",
                              mod=2)
