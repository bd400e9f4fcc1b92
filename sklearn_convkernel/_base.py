"""Shared scikit-learn glue: image validation and kernel computation through the cache.

Estimators and transformers never call the compiled core: they go through
:class:`KernelComputer`, which compiles an architecture once per input shape
and asks the :class:`~sklearn_convkernel.KernelCache` (or, without a cache,
the tiled Gram engine) for kernel matrices.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_convkernel import arch as A
from sklearn_convkernel._augment import FlipPlan, check_augment
from sklearn_convkernel._cache import _image_keys
from sklearn_convkernel._gram import (
    compile_architecture,
    flip_arguments,
    gram,
    self_passes,
)
from sklearn_convkernel._validation import check_finite, check_image_dims, resolve_dtype


@functools.lru_cache(maxsize=256)
def _compile_memo(architecture, image_shape, kind, dtype_name, spatial):
    prog, plan = compile_architecture(architecture, image_shape, kind, spatial)
    return prog, plan, (repr(architecture), image_shape, kind, dtype_name, spatial)


def compiled(architecture, image_shape, kind, dtype, spatial="auto"):
    """Compile (memoised) ``architecture`` for one input shape; returns (prog, plan, key).

    The memo is a bounded LRU keyed on the architecture itself (layers are
    immutable and hashable); ``key`` identifies the program in a
    :class:`~sklearn_convkernel.KernelCache`.
    """
    args = (architecture, tuple(image_shape), kind, np.dtype(dtype).name, spatial)
    try:
        hash(architecture)
    except TypeError:  # a layer with unhashable fields: compile without the memo
        return _compile_memo.__wrapped__(*args)
    return _compile_memo(*args)


class KernelComputer:
    """Kernel matrices of one architecture and input shape, through a cache or not.

    Parameters
    ----------
    architecture : Layer
    image_shape : (H, W, C)
    kind : {"nngp", "ntk"}
    dtype : numpy float type
    output : int
        Which read-out of a multi-output (tapped) architecture to return.
    cache : KernelCache or None
    n_jobs, verbose, augment : see :func:`~sklearn_convkernel.conv_kernel`
        With ``augment``, the cache holds the mirrored images as ordinary
        images: the plain entries ``K(x, y)`` are shared with
        ``augment=None``, and ``K(x, flip y)`` are ordinary entries too
        (entries of other images for each augment value, so never mixed up).
    """

    def __init__(self, architecture, image_shape, kind, dtype, output=-1, cache=None,
                 n_jobs=None, verbose=0, augment=None):
        self.prog, self.plan, self.key = compiled(architecture, image_shape, kind, dtype)
        self.flip = (FlipPlan(self.plan, architecture, augment) if check_augment(augment)
                     else None)
        n_out = self.plan.n_outputs
        if not -n_out <= output < n_out:
            raise ValueError(
                f"output={output} is out of range for an architecture with {n_out} read-out(s)."
            )
        self.output = output % n_out
        self.dtype = dtype
        self.cache = cache
        self.n_jobs = n_jobs
        self.verbose = verbose

    def kernel(self, Xf, Yf=None):
        """K(X, Y) for flattened images (Y=None: the symmetric Gram K(X, X))."""
        return np.ascontiguousarray(self.all_outputs(Xf, Yf)[self.output])

    def all_outputs(self, Xf, Yf=None):
        """Every read-out of K(X, Y): array (n_outputs, n_X, n_Y)."""
        if self.cache is not None:
            K = self.cache.kernel(self.key, self.prog, Xf, Yf, n_jobs=self.n_jobs,
                                  verbose=self.verbose)
            if K is not None and self.flip is not None:
                F = self._cached_flip_block(Xf, Yf)
                K = None if F is None else (K + F) * 0.5
            if K is not None:
                return K
        tx, sx = self_passes(self.prog, Xf, self.n_jobs, verbose=self.verbose)
        ty = (None if Yf is None
              else self_passes(self.prog, Yf, self.n_jobs, verbose=self.verbose)[0])
        flipped = None
        if self.flip is not None:
            flipped, sx = flip_arguments(self.prog, self.flip, Xf, tx, sx, Yf, ty, self.n_jobs)
        return gram(self.prog, Xf, tx, sx, Yf, ty, n_jobs=self.n_jobs, verbose=self.verbose,
                    flipped=flipped)

    def _cached_flip_block(self, Xf, Yf=None):
        """K(X, flip Y) (Y = X when None) through the cache, or None if it does not fit.

        For a flip-equivariant program ``K(x, flip y) = K(flip x, y)``: the
        value of each pair is the cache entry ``(x, flip y)`` when ``x`` has
        the smaller content hash and ``(flip x, y)`` otherwise, so that
        overlapping requests (folds, a search over ``augment``) share entries
        and ``K(X, flip X)`` costs about half a block.  Rows go in groups of
        consecutive hashes whose range holds few columns; the pairs within a
        group's hash range are requested as ``(x, flip y)`` whatever the
        order (at most ``group`` extra entries per row).
        """
        symmetric = Yf is None
        Yf = Xf if symmetric else Yf
        kx = np.array(_image_keys(Xf))
        ky = kx if symmetric else np.array(_image_keys(Yf))
        Fx, Fy = self.flip.images(Xf), self.flip.images(Yf)
        rows, cols = np.argsort(kx, kind="stable"), np.argsort(ky, kind="stable")
        sorted_ky = ky[cols]
        out = np.empty((self.plan.n_outputs, Xf.shape[0], Yf.shape[0]), dtype=Xf.dtype)
        group = max(16, -(-len(rows) // 64))
        first = np.searchsorted(sorted_ky, kx[rows], side="left")  # columns hashing below
        last = np.searchsorted(sorted_ky, kx[rows], side="right")
        a = 0
        while a < len(rows):
            # a group: consecutive rows whose hash range holds at most `group` columns
            b = a + 1
            while b < len(rows) and b - a < group and last[b] - first[a] <= group:
                b += 1
            G, start = rows[a:b], first[a]
            a = b
            requests = [(Xf[G], Fy, cols[start:])]  # columns hashing from the group on
            if not symmetric:  # columns hashing below the group (mirrored when symmetric)
                requests.append((Fx[G], Yf, cols[:start]))
            for A, B, C in requests:
                if len(C):
                    K = self.cache.kernel(self.key, self.prog, A, B[C], n_jobs=self.n_jobs,
                                          verbose=self.verbose)
                    if K is None:
                        return None
                    out[:, G[:, None], C[None, :]] = K
        if symmetric:  # the lower triangle (in hash order) from the upper one
            rank = np.empty(len(rows), dtype=np.int64)
            rank[rows] = np.arange(len(rows))
            lower = rank[:, None] > rank[None, :]
            out[:, lower] = out.transpose(0, 2, 1)[:, lower]
        return out

    def self_kernel(self, Xf):
        """k(x, x) for each image: array (n_X,) (flip-averaged with ``augment``)."""
        if self.flip is not None:
            tx, sx = self_passes(self.prog, Xf, self.n_jobs, verbose=self.verbose)
            _, sx = flip_arguments(self.prog, self.flip, Xf, tx, sx, n_jobs=self.n_jobs)
            return np.array(sx[:, self.output])
        if self.cache is not None:
            d = self.cache.self_kernel(self.key, self.prog, Xf, n_jobs=self.n_jobs,
                                       verbose=self.verbose)
            if d is not None:
                return np.array(d[self.output])
        _, sx = self_passes(self.prog, Xf, self.n_jobs, verbose=self.verbose)
        return np.array(sx[:, self.output])


def _resolve_image_shape(image_shape, n_features, owner):
    """(H, W, C) from the ``image_shape`` parameter for flat rows of n_features."""
    if image_shape is None:
        side = math.isqrt(n_features)
        if side * side == n_features:
            return (side, side, 1)
        raise ValueError(
            f"{owner}: X has {n_features} features per row, which is not a square "
            "single-channel image; pass image_shape=(height, width, channels) "
            "(one entry may be -1 to infer it, e.g. image_shape=(1, -1) for 1-D "
            "signals), or pass X as an (n_samples, height, width, channels) array."
        )
    shape = tuple(image_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) for v in shape):
        raise ValueError(
            f"{owner}: image_shape must be (height, width) or (height, width, channels) "
            f"ints, got {image_shape!r}."
        )
    if sum(1 for v in shape if v == -1) > 1 or any(v == 0 or v < -1 for v in shape):
        raise ValueError(f"{owner}: image_shape entries must be positive (one may be -1), "
                         f"got {image_shape!r}.")
    known = int(np.prod([v for v in shape if v != -1]))
    if -1 in shape:
        if n_features % known:
            raise ValueError(
                f"{owner}: X has {n_features} features per row, not a multiple of "
                f"{known} as image_shape={image_shape!r} requires."
            )
        shape = tuple(n_features // known if v == -1 else int(v) for v in shape)
    if int(np.prod(shape)) != n_features:
        raise ValueError(
            f"{owner}: image_shape={tuple(image_shape)!r} holds {int(np.prod(shape))} values "
            f"but X has {n_features} features per row."
        )
    return tuple(int(v) for v in shape)


def validate_images(est, X, reset, dtype=None):
    """Flat C-contiguous rows (n, H*W*C) from images (n, H, W[, C]) or flat rows.

    Sets ``image_shape_`` (and, through ``validate_data``, ``n_features_in_``)
    when ``reset``; otherwise checks the images against ``image_shape_``.
    ``dtype`` is the estimator's ``dtype`` parameter: the rows are converted
    to :func:`~sklearn_convkernel._validation.resolve_dtype` of it (``None``
    keeps float32 input as float32 and makes the rest float64) and must be
    finite in that dtype (the rules of :mod:`sklearn_convkernel._validation`).
    """
    owner = type(est).__name__
    shape = None
    if not hasattr(X, "iloc"):  # keep pandas DataFrames for feature names
        arr = np.asarray(X) if not hasattr(X, "toarray") else X
        if getattr(arr, "ndim", 2) in (3, 4):
            shape = arr.shape[1:] if arr.ndim == 4 else arr.shape[1:] + (1,)
            check_image_dims((arr.shape[0],) + tuple(shape), "X")
            if est.image_shape is not None:
                expected = _resolve_image_shape(est.image_shape, int(np.prod(shape)), owner)
                if tuple(shape) != expected:
                    raise ValueError(
                        f"{owner}: X holds images of shape {tuple(shape)} but "
                        f"image_shape={est.image_shape!r}."
                    )
            X = arr.reshape(arr.shape[0], int(np.prod(shape)))
    X = validate_data(est, X, reset=reset, dtype=[np.float64, np.float32],
                      accept_sparse=False, ensure_min_samples=1)
    with np.errstate(over="ignore"):  # overflow in a float32 cast: check_finite says it
        X = np.ascontiguousarray(X, dtype=resolve_dtype(dtype, X))
    check_finite(X, "X")
    if shape is None:
        shape = _resolve_image_shape(est.image_shape, X.shape[1], owner)
    shape = tuple(int(v) for v in shape)
    if reset:
        est.image_shape_ = shape
    elif shape != est.image_shape_:
        raise ValueError(
            f"{owner}: X holds images of shape {shape} but the estimator was fitted on "
            f"images of shape {est.image_shape_}."
        )
    return X


def fit_classes(est, y):
    """Set ``est.classes_`` from the 1-D classification targets y; returns their codes.

    Refuses targets that are not classes, or of a single class (a classifier
    needs two).
    """
    check_classification_targets(y)
    est.classes_, codes = np.unique(y, return_inverse=True)
    if len(est.classes_) < 2:
        raise ValueError(
            f"{type(est).__name__} needs samples of at least 2 classes in the data, but the "
            f"data contains only one class: {est.classes_[0]!r}."
        )
    return codes


class ImageInputMixin:
    """Validation of image inputs for estimators: 4-D/3-D arrays or flat rows."""

    def _validate_images(self, X, reset):
        """Flat rows (n, H*W*C) of the estimator's dtype; see :func:`validate_images`."""
        return validate_images(self, X, reset, self.dtype)

    def _validate_fitted_images(self, X):
        """Flat rows of X for a fitted estimator: ``check_is_fitted``, then ``image_shape_``."""
        check_is_fitted(self)
        return self._validate_images(X, reset=False)


def check_architecture(architecture, owner):
    if architecture is not None and not isinstance(architecture, A.Layer):
        raise ValueError(
            f"{owner}: architecture must be None or a layer from sklearn_convkernel.arch "
            f"(e.g. Sequential(Conv(3), ReLU(), Flatten())), got {architecture!r}."
        )
