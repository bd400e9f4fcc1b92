"""ConvKernel: a transformer mapping images to their kernel against the training images."""

from __future__ import annotations

from numbers import Integral

from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions

from sklearn_convkernel import arch as A
from sklearn_convkernel._base import (
    ImageInputMixin,
    KernelComputer,
    resolve_dtype,
)
from sklearn_convkernel._cache import CacheParamMixin
from sklearn_convkernel._params import COMMON_CONSTRAINTS

__all__ = ["ConvKernel", "default_architecture"]


def default_architecture():
    """The architecture used when none is given: a 2-layer ReLU CNN, flatten read-out.

    ``Sequential(Conv(3, weight_var=2), ReLU(), Conv(3, weight_var=2), ReLU(),
    Flatten(), Dense())`` -- cheap (diagonal-only path) and valid for any
    image size.
    """
    return A.Sequential(
        A.Conv(3, weight_var=2.0), A.ReLU(),
        A.Conv(3, weight_var=2.0), A.ReLU(),
        A.Flatten(), A.Dense(),
    )


def architecture_or_default(architecture):
    """The architecture in use: ``architecture``, or :func:`default_architecture` when None."""
    return architecture if architecture is not None else default_architecture()


class ConvKernel(ClassNamePrefixFeaturesOutMixin, TransformerMixin, CacheParamMixin, ImageInputMixin,
                 BaseEstimator):
    """Exact convolutional kernel against the training images, as a transformer.

    ``fit(X)`` stores the training images (and computes their self passes);
    ``transform(X)`` returns ``K(X, X_fit_)``, so that
    ``make_pipeline(ConvKernel(...), SVC(kernel="precomputed"))`` works,
    including inside ``GridSearchCV``.  ``fit_transform(X)`` computes the
    symmetric Gram ``K(X, X)`` by the fast symmetric path.

    Parameters
    ----------
    architecture : Layer, default=None
        The network (see :mod:`sklearn_convkernel.arch`); None uses
        :func:`default_architecture`.
    kind : {"nngp", "ntk"}, default="nngp"
        NNGP / CKN covariance or neural tangent kernel.
    output : int, default=-1
        Which read-out of an architecture with :class:`~.arch.Tap` s to
        return (taps first, the final output last).
    augment : {None, "hflip", "hflip_reverse_channels"}, default=None
        "hflip" averages the kernel over a left-right flip of the training
        images, ``(K(x, y) + K(x, flip y)) / 2`` (see :func:`conv_kernel`;
        the architecture must be flip-equivariant);
        "hflip_reverse_channels" over the flip with the channel order
        reversed, for the channels of
        ``PatchFeatures(flip_equivariant=True)``.  Entries of the plain
        kernel are shared with ``augment=None`` through the cache.
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
        None: X must be an (n, H, W, C) or (n, H, W) array, or flat rows of a
        square single-channel image.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the kernel computation.
    n_jobs : int, default=None
        Threads for the kernel computation (joblib semantics).
    cache : "auto", KernelCache or None, default="auto"
        Where computed kernel entries are kept for reuse. "auto": a
        :class:`~sklearn_convkernel.KernelCache` (2 GiB budget) created for
        this transformer and shared with its clones, so the folds and
        candidates of a ``GridSearchCV`` reuse entries; it is freed with them.
        A ``KernelCache`` object: that cache, shared with whoever else holds
        it. None: no caching.
    verbose : int, default=0
        Progress bars (tqdm, on stderr; plain lines every 30 s when stderr is a
        file or a pipe) for the kernel computation when > 0.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        The training images, flattened.
    image_shape_ : tuple (H, W, C)
    architecture_ : Layer
        The architecture in use.
    cache_ : KernelCache or None
        The cache the kernels go through (see ``cache``).
    n_features_in_ : int

    See Also
    --------
    conv_kernel : the function behind this transformer.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.svm import SVC
    >>> from sklearn_convkernel import ConvKernel
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((20, 8, 8, 1)), np.arange(20) % 2
    >>> model = make_pipeline(ConvKernel(kind="ntk"), SVC(kernel="precomputed"))
    >>> model.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "architecture": [A.Layer, None],
        "kind": [StrOptions({"nngp", "ntk"})],
        "output": [Interval(Integral, None, None, closed="neither")],
        **COMMON_CONSTRAINTS,
    }

    def __init__(self, architecture=None, *, kind="nngp", output=-1, augment=None,
                 image_shape=None, dtype="float64", n_jobs=None, cache="auto", verbose=0):
        self.architecture = architecture
        self.kind = kind
        self.output = output
        self.augment = augment
        self.image_shape = image_shape
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.cache = cache
        self.verbose = verbose

    def _computer(self):
        return KernelComputer(
            self.architecture_, self.image_shape_, self.kind, resolve_dtype(self.dtype),
            output=self.output, cache=self._resolve_cache(), n_jobs=self.n_jobs,
            verbose=self.verbose, augment=self.augment,
        )

    def _fit(self, X):
        X = self._validate_images(X, reset=True)
        self.architecture_ = architecture_or_default(self.architecture)
        self.X_fit_ = X
        self._n_features_out = X.shape[0]
        self.cache_ = self._resolve_cache()
        return self._computer()

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Store the training images.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        comp = self._fit(X)
        # compile now so that architecture errors surface at fit time, and
        # warm the cache with the training images' self passes
        comp.self_kernel(self.X_fit_)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit and return the symmetric Gram matrix ``K(X, X)``.

        Returns
        -------
        K : ndarray of shape (n_samples, n_samples)
        """
        comp = self._fit(X)
        return comp.kernel(self.X_fit_)

    def transform(self, X):
        """Kernel between X and the training images.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)

        Returns
        -------
        K : ndarray of shape (n_samples, n_samples_fit)
        """
        X = self._validate_fitted_images(X)
        return self._computer().kernel(X, self.X_fit_)

    def self_kernel(self, X):
        """The diagonal ``k(x, x)`` for each image of X: ndarray (n_samples,)."""
        X = self._validate_fitted_images(X)
        return self._computer().self_kernel(X)
