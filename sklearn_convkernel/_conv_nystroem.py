"""ConvNystroem: Nyström features of an exact convolutional kernel, for any linear model.

The exact kernel between all n images and m landmark images chosen among
them, ``K_nm``, is computed by the tiled engine (resumable through ``out=``);
the features are ``K_nm K_mm^{-1/2}`` (pseudo-inverse square root), so that
their inner products are the Nyström approximation ``K_nm K_mm^+ K_mn`` of the
kernel -- exact when the landmarks are all the images.  Memory and time grow
as ``n * m`` instead of ``n**2``: 60 000 images with 5 000 landmarks is a
2.4 GB float64 ``K_nm``.
"""

from __future__ import annotations

import os
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from sklearn_convkernel import arch as A
from sklearn_convkernel._base import ImageInputMixin, resolve_dtype
from sklearn_convkernel._gram import conv_kernel
from sklearn_convkernel._params import COMMON_CONSTRAINTS
from sklearn_convkernel._transformers import architecture_or_default

__all__ = ["ConvNystroem", "pinv_sqrt_psd"]


def pinv_sqrt_psd(K, rtol=None, dtype=None):
    """Pseudo-inverse square root ``K^{+1/2}`` of a symmetric PSD matrix.

    Eigenvalues at most ``rtol * max(eigenvalue)`` (rounding noise, including
    the small negative ones) are treated as zero.  ``rtol`` defaults to
    ``sqrt(m) * eps`` of K's dtype (m = size of K), or of ``dtype`` when the
    kernel was computed in a lower precision than K is stored in.

    Why ``sqrt(m)`` and not numpy's ``m``: independent rounding errors of
    relative size ``eps`` in the entries form a random symmetric matrix of
    spectral norm about ``2 sqrt(m) eps max|K|``, far below ``m eps
    lambda_max``.  The spectra of convolutional kernels decay slowly: on 1 500
    Fashion-MNIST images the float32 CNTK has its smallest eigenvalue at
    ``2e-5 lambda_max``; ``m * eps`` kept only 569 of its 1 500 directions and
    lost 0.8 point of hold-out accuracy.

    Returns
    -------
    R : ndarray (m, m), float64, symmetric, with ``R K R`` the projector on
        the kept eigenvectors.
    n_kept : int
        The numerical rank used.
    """
    K = np.asarray(K)
    if rtol is None:
        if dtype is None:
            dtype = K.dtype if K.dtype.kind == "f" else np.float64
        rtol = np.sqrt(K.shape[0]) * np.finfo(dtype).eps
    K = np.asarray(K, dtype=np.float64)
    w, V = np.linalg.eigh((K + K.T) * 0.5)
    keep = w > rtol * max(w.max(initial=0.0), 0.0)
    V = V[:, keep]
    return (V / np.sqrt(w[keep])) @ V.T, int(keep.sum())


class ConvNystroem(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ImageInputMixin,
                   BaseEstimator):
    """Nyström features of an exact convolutional kernel (CNTK, CNN-GP, CKN).

    In the style of :class:`sklearn.kernel_approximation.Nystroem`:
    ``n_components`` landmark images are chosen from the training images, the
    exact kernel ``K_nm`` between every image and the landmarks is computed by
    the tiled engine of :func:`~sklearn_convkernel.conv_kernel`, and the
    features are ``K(X, landmarks) K_mm^{-1/2}``, so that any linear model
    (``RidgeClassifier``, ``LinearSVC``, ``LogisticRegression``) learns on
    top at a cost linear in the number of images.  With ``n_components`` equal
    to the number of training images the features reproduce the exact
    kernel: ``F @ F.T == K``.

    Parameters
    ----------
    architecture : Layer, default=None
        The network (see :mod:`sklearn_convkernel.arch`, the presets and
        e.g. :func:`cntk_architecture`); None uses
        :func:`default_architecture`.  With :class:`~.arch.Tap` read-outs the
        final read-out is used.
    kind : {"nngp", "ntk"}, default="nngp"
    n_components : int, default=100
        Number of landmarks (features).  More than the number of training
        images is reduced to it, with a warning.
    landmarks : {"uniform"}, default="uniform"
        How the landmarks are chosen: a uniformly random subset of the
        training images.  (Kernel k-means++ seeding was tried: on 1 000
        Fashion-MNIST images with 50 landmarks it gave no better accuracy
        and cost 10x the time, so it is not offered.)
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
    dtype : {"float64", "float32"}, default="float64"
        Precision of the kernel computation (the features are float64).
    n_jobs : int, default=None
        Threads (or joblib workers, e.g. on a dask cluster) for the kernel.
    random_state : int, RandomState instance or None, default=None
        Chooses the landmarks.
    verbose : int, default=0
        Progress bars (tqdm, on stderr; plain lines every 30 s when stderr is a
        file or a pipe) when > 0.
    augment : {None, "hflip", "hflip_reverse_channels"}, default=None
        ``"hflip"`` averages the kernel over left-right flips of its second
        argument, ``"hflip_reverse_channels"`` over flips with the channel
        order reversed (see :func:`~sklearn_convkernel.conv_kernel`): the features
        then approximate the flip-averaged kernel, a PSD kernel for the
        flip-equivariant architectures it accepts.
    out : str or path-like, default=None
        Path of a ``.npy`` Gram store for the training ``K_nm`` (see
        :func:`~sklearn_convkernel.conv_kernel`): an interrupted ``fit``
        called again with the same data and parameters resumes, computing
        only the unfinished tiles.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The landmark images, flattened.
    component_indices_ : ndarray of shape (n_components,)
        Their indices in the training data.
    normalization_ : ndarray of shape (n_components, n_components)
        ``K_mm^{-1/2}`` (pseudo-inverse square root).
    rank_ : int
        Numerical rank of ``K_mm``: eigenvalues below ``sqrt(m) * eps *
        max``, rounding noise of the kernel's ``dtype``, are dropped (see
        :func:`pinv_sqrt_psd`).
    architecture_ : Layer
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int

    See Also
    --------
    sklearn.kernel_approximation.Nystroem : the same for closed-form kernels.
    conv_kernel : the exact kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import RidgeClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_convkernel import ConvNystroem, cntk_architecture
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.random((30, 8, 8, 1)), np.arange(30) % 2
    >>> arch, _ = cntk_architecture(depth=2)
    >>> model = make_pipeline(ConvNystroem(arch, kind="ntk", n_components=10, random_state=0),
    ...                       RidgeClassifier())
    >>> model.fit(X, y).predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "architecture": [A.Layer, None],
        "kind": [StrOptions({"nngp", "ntk"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "landmarks": [StrOptions({"uniform"})],
        "random_state": ["random_state"],
        "out": [str, os.PathLike, None],
        **{k: v for k, v in COMMON_CONSTRAINTS.items() if k != "cache"},
    }

    def __init__(self, architecture=None, *, kind="nngp", n_components=100, landmarks="uniform",
                 image_shape=None, dtype="float64", n_jobs=None, random_state=None, verbose=0,
                 augment=None, out=None):
        self.architecture = architecture
        self.kind = kind
        self.n_components = n_components
        self.landmarks = landmarks
        self.image_shape = image_shape
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.augment = augment
        self.out = out

    def _images(self, Xf):
        return Xf.reshape((Xf.shape[0],) + tuple(self.image_shape_))

    def _kernel(self, Xf, Lf, out=None):
        """K(X, L) of flat images: (n_X, n_L), the final read-out."""
        K = conv_kernel(self._images(Xf), self._images(Lf), architecture=self.architecture_,
                        kind=self.kind, dtype=resolve_dtype(self.dtype), n_jobs=self.n_jobs,
                        verbose=self.verbose, augment=self.augment, out=out)
        return np.asarray(K[-1] if K.ndim == 3 else K, dtype=np.float64)

    def _fit(self, X):
        Xf = self._validate_images(X, reset=True)
        self.architecture_ = architecture_or_default(self.architecture)
        n = Xf.shape[0]
        m = self.n_components
        if m > n:
            warnings.warn(
                f"ConvNystroem: n_components={m} > n_samples={n}; using n_components={n} "
                "(every training image is a landmark: the exact kernel).",
                UserWarning,
            )
            m = n
        idx = check_random_state(self.random_state).permutation(n)[:m]
        K_nm = self._kernel(Xf, Xf[idx], out=self.out)
        self.component_indices_ = idx
        self.components_ = Xf[idx]
        self.normalization_, self.rank_ = pinv_sqrt_psd(K_nm[idx],
                                                        dtype=resolve_dtype(self.dtype))
        self._n_features_out = m
        return K_nm

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Choose the landmarks and compute ``K_mm^{-1/2}``.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit and return the features of X (reusing the ``K_nm`` of the fit).

        Returns
        -------
        F : ndarray of shape (n_samples, n_components)
        """
        return self._fit(X) @ self.normalization_

    def transform(self, X):
        """Nyström features ``K(X, landmarks) K_mm^{-1/2}``.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W, C) or (n_samples, n_features)

        Returns
        -------
        F : ndarray of shape (n_samples, n_components)
        """
        Xf = self._validate_fitted_images(X)
        return self._kernel(Xf, self.components_) @ self.normalization_
