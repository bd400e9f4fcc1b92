"""Image preprocessing for the kernels: regularised ZCA whitening and a patch feature layer.

Both transformers take NHWC images (``(n, H, W, C)`` arrays, ``(n, H, W)``
arrays or flat rows with ``image_shape``), learn their statistics in ``fit``
from the training images only, and return images again, so that they sit in a
:class:`~sklearn.pipeline.Pipeline` in front of a kernel estimator.  An
``(n, H, W[, C])`` input gives an ``(n, H', W', C')`` output; flat rows give
flat rows (pass ``image_shape=(H', W', C')`` to the next step).

Regularised ZCA (Lee et al. 2020, *Finite versus infinite neural networks*;
Shankar et al. 2020).  With the training covariance ``Sigma`` (d x d, of
whole images or of k x k patches) and its mean eigenvalue
``mbar = trace(Sigma) / d``, the whitening matrix is

    W = (Sigma + eps * mbar * I)^{-1/2},

so the whitened training data has covariance ``Sigma (Sigma + eps mbar I)^{-1}``:
eigenvalues ``l / (l + eps mbar)``, close to 1 for directions well above
``eps mbar`` and shrunk towards 0 below.  ``eps = 0`` is plain ZCA.

Patch-level ZCA whitens the k x k patches around every pixel and keeps, for
each pixel, the whitened values of its own (centre) position: a k x k
convolution from C to C channels (plus a bias from the mean), hence an image
of the same shape, translation-equivariant away from the border.

Patch features (Coates, Lee & Ng 2011, the first layer of Li et al. 2019):
every k x k patch is contrast-normalised and ZCA-whitened, compared with a
dictionary of ``n_filters`` patches (k-means centroids or random training
patches) and passed through a nonlinearity; the responses are the channels
of a new image.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    OneToOneFeatureMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.cluster import MiniBatchKMeans
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from sklearn_convkernel._base import validate_images
from sklearn_convkernel._ckn import patch_pads
from sklearn_convkernel._nystrom import extract_patches, gather_patches

__all__ = ["ZCAWhitening", "PatchFeatures"]

_BATCH = 256  # images per batch when patches are extracted


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _input_images(est, X, reset):
    """(flat rows, 4-D view, whether the caller passed images) of X."""
    as_images = getattr(np.asarray(X) if not hasattr(X, "iloc") else X, "ndim", 2) in (3, 4)
    ndim = np.ndim(X) if as_images else 2
    Xf = validate_images(est, X, reset=reset)
    return Xf, Xf.reshape((-1,) + est.image_shape_), ndim


def standardize_images(X4, mode):
    """Per-image standardisation of X4 (N, H, W, C) (a new float array).

    ``"image"``: subtract each image's mean and divide by its standard
    deviation (over all pixels and channels); ``"channel"``: the same per
    channel of each image; None: a copy.  Constant images (or channels) are
    only centred.
    """
    X4 = np.array(X4, copy=True)
    if mode is None:
        return X4
    axes = (1, 2, 3) if mode == "image" else (1, 2)
    X4 -= X4.mean(axis=axes, keepdims=True)
    sd = X4.std(axis=axes, keepdims=True)
    sd[sd == 0] = 1.0
    X4 /= sd
    return X4


def zca_matrix(cov, regularization):
    """``(cov + eps * mean(eig) * I)^{-1/2}``; returns (matrix, eigenvalues of cov).

    Directions whose regularised eigenvalue vanishes (``eps = 0`` and a
    singular ``cov``) are mapped to 0 instead of infinity.
    """
    cov = np.asarray(cov, dtype=np.float64)
    lam, U = np.linalg.eigh((cov + cov.T) * 0.5)
    lam = np.maximum(lam, 0.0)
    shifted = lam + regularization * float(lam.mean()) if lam.size else lam
    tol = 1e-12 * max(float(shifted.max(initial=0.0)), 1e-300)
    inv = np.zeros_like(shifted)
    np.divide(1.0, np.sqrt(shifted), out=inv, where=shifted > tol)
    return (U * inv) @ U.T, lam[::-1].copy()


def interior_patches(X4, p):
    """Rows (n_patches, C*p*p) of the p x p patches lying entirely inside the images."""
    N, H, W, C = X4.shape
    lo, hi = patch_pads(p)
    E = extract_patches(X4, p).reshape(N, H, W, -1)
    return E[:, lo:H - hi, lo:W - hi].reshape(-1, C * p * p)


def patch_mirror(C, p):
    """Column permutation mirroring flat p x p patches: ``P[:, m]`` reverses their width.

    For the (channel, dy, dx) layout of :func:`extract_patches` and
    :func:`gather_patches`; ``m[m] = identity``.
    """
    return np.arange(C * p * p).reshape(C, p, p)[:, :, ::-1].ravel()


def _commute_with(A, m):
    """``A`` (vector or square matrix) averaged with its image under the permutation ``m``.

    The result is exactly invariant under ``m`` (float addition commutes);
    ``A`` itself when ``m`` is None.
    """
    if m is None:
        return A
    return 0.5 * (A + (A[m] if A.ndim == 1 else A[np.ix_(m, m)]))


def contrast_normalize(E, eps):
    """Rows of E minus their mean, divided by ``sqrt(variance + eps)`` (in place)."""
    E -= E.mean(axis=1, keepdims=True)
    E /= np.sqrt(E.var(axis=1, keepdims=True) + eps)
    return E


def patch_moments(X4, p, prepare=None):
    """Mean (d,) and covariance (d, d) of the interior p x p patches of X4, in float64."""
    d = X4.shape[3] * p * p
    total = np.zeros(d)
    gram = np.zeros((d, d))
    m = 0
    for s in range(0, X4.shape[0], _BATCH):
        E = interior_patches(X4[s:s + _BATCH], p).astype(np.float64)
        if prepare is not None:
            E = prepare(E)
        total += E.sum(axis=0)
        gram += E.T @ E
        m += E.shape[0]
    mean = total / max(m, 1)
    return mean, gram / max(m, 1) - np.outer(mean, mean), m


def _check_patch_fits(owner, image_shape, p):
    if image_shape[0] < p or image_shape[1] < p:
        raise ValueError(
            f"{owner}: patch_size={p} does not fit in {image_shape[0]}x{image_shape[1]} "
            "images; use a patch_size no larger than the image height and width."
        )


def _output(out4, ndim):
    """The output in the caller's format: images (4-D, or 3-D when one channel) or rows."""
    if ndim == 4:
        return out4
    if ndim == 3 and out4.shape[3] == 1:
        return out4[..., 0]
    if ndim == 3:
        return out4
    return out4.reshape(out4.shape[0], -1)


# ---------------------------------------------------------------------------
# ZCA whitening
# ---------------------------------------------------------------------------


class ZCAWhitening(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Regularised ZCA whitening of images, of whole images or of their patches.

    ``fit`` estimates the covariance ``Sigma`` of the (optionally
    standardised and centred) training images -- whole flattened images for
    ``mode="image"``, the k x k patches inside the images for
    ``mode="patch"`` -- and the whitening matrix
    ``W = (Sigma + regularization * mean_eig(Sigma) * I)^{-1/2}``
    (Lee et al. 2020; Shankar et al. 2020).  ``transform`` applies the same
    per-image standardisation, subtracts the *training* mean and multiplies
    by ``W``: the whitened training data has covariance
    ``Sigma (Sigma + eps mbar I)^{-1}`` (eigenvalues ``l / (l + eps mbar)``).

    With ``mode="patch"`` the output pixel ``u``, channel ``c`` is the
    whitened value of the centre pixel, channel ``c``, of the (zero-padded)
    patch around ``u``: a k x k convolution with ``C`` output channels, so
    the output has the input's shape.  Patch statistics use the patches
    lying entirely inside the training images.

    Parameters
    ----------
    mode : {"image", "patch"}, default="image"
        Whiten whole images (the covariance is ``(H W C)^2``; fine up to a
        few thousand features) or k x k patches.
    patch_size : int, default=3
        Patch side ``k`` for ``mode="patch"`` (odd: centred; even: reaching
        one further up/left, as :class:`CKNFeatures`).
    regularization : float, default=0.1
        ``eps``: the eigenvalues are shifted by ``eps`` times their mean
        before the inverse square root (0: plain ZCA; larger values whiten
        less).
    standardize : {"image", "channel"} or None, default="image"
        Per-image standardisation before anything else (in ``fit`` and
        ``transform``): subtract each image's mean and divide by its standard
        deviation, over the whole image or per channel; None leaves the
        pixels as they are.
    center : bool, default=True
        Subtract the training mean (of the images or patches) before
        whitening.  False whitens the second-moment matrix instead.
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).

    Attributes
    ----------
    mean_ : ndarray of shape (d,)
        Training mean of the flattened images (``d = H W C``) or patches
        (``d = C k k``, layout (channel, dy, dx)); zeros when ``center=False``.
    whitening_ : ndarray of shape (d, d)
        The symmetric whitening matrix ``W``.
    eigenvalues_ : ndarray of shape (d,)
        Eigenvalues of ``Sigma``, in decreasing order.
    filters_ : ndarray of shape (k, k, C, C)
        ``mode="patch"`` only: the convolution (``filters_[dy, dx, c_in,
        c_out]``) applied to the zero-padded image; ``bias_`` (C,) is
        subtracted after it.
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int

    See Also
    --------
    PatchFeatures : whitened patches compared with a dictionary.

    References
    ----------
    J. Lee, S. Schoenholz, J. Pennington et al., "Finite Versus Infinite
    Neural Networks: an Empirical Study", NeurIPS 2020.
    V. Shankar, A. Fang, W. Guo et al., "Neural Kernels Without Tangents",
    ICML 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import ZCAWhitening
    >>> X = np.random.default_rng(0).random((50, 8, 8, 1))
    >>> ZCAWhitening(mode="patch", patch_size=3).fit_transform(X).shape
    (50, 8, 8, 1)
    """

    _parameter_constraints = {
        "mode": [StrOptions({"image", "patch"})],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "regularization": [Interval(Real, 0, None, closed="left")],
        "standardize": [StrOptions({"image", "channel"}), None],
        "center": ["boolean"],
        "image_shape": [tuple, list, None],
    }

    def __init__(self, mode="image", *, patch_size=3, regularization=0.1, standardize="image",
                 center=True, image_shape=None):
        self.mode = mode
        self.patch_size = patch_size
        self.regularization = regularization
        self.standardize = standardize
        self.center = center
        self.image_shape = image_shape

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the mean and the whitening matrix from training images.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W[, C]) or (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        _, X4, _ = _input_images(self, X, reset=True)
        X4 = standardize_images(X4, self.standardize)
        if self.mode == "image":
            F = X4.reshape(X4.shape[0], -1).astype(np.float64)
            mean = F.mean(axis=0) if self.center else np.zeros(F.shape[1])
            F = F - mean
            cov = F.T @ F / F.shape[0]
        else:
            p = self.patch_size
            _check_patch_fits(type(self).__name__, self.image_shape_, p)
            mean, cov, _ = patch_moments(X4, p)
            if not self.center:
                cov = cov + np.outer(mean, mean)
                mean = np.zeros_like(mean)
        self.mean_ = mean
        self.whitening_, self.eigenvalues_ = zca_matrix(cov, self.regularization)
        if self.mode == "patch":
            p, C = self.patch_size, self.image_shape_[2]
            lo, _ = patch_pads(p)
            centre = np.arange(C) * p * p + lo * p + lo
            rows = self.whitening_[centre]  # (C_out, C*p*p)
            self.filters_ = rows.reshape(C, C, p, p).transpose(2, 3, 1, 0).copy()
            self.bias_ = rows @ self.mean_
        return self

    def transform(self, X):
        """Whiten images with the training statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W[, C]) or (n_samples, n_features)

        Returns
        -------
        X_white : ndarray of the same shape as X
        """
        check_is_fitted(self)
        Xf, X4, ndim = _input_images(self, X, reset=False)
        dtype = Xf.dtype
        X4 = standardize_images(X4, self.standardize)
        if self.mode == "image":
            F = X4.reshape(X4.shape[0], -1) - self.mean_.astype(dtype)
            out = (F @ self.whitening_.astype(dtype)).reshape(X4.shape)
        else:
            p, C = self.patch_size, self.image_shape_[2]
            Wc = self.filters_.transpose(3, 2, 0, 1).reshape(C, -1).T.astype(dtype)
            out = np.empty(X4.shape, dtype=dtype)
            for s in range(0, X4.shape[0], _BATCH):
                B = X4[s:s + _BATCH]
                out[s:s + _BATCH] = (extract_patches(B, p) @ Wc).reshape(B.shape)
            out -= self.bias_.astype(dtype)
        return _output(out.astype(dtype, copy=False), ndim)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


# ---------------------------------------------------------------------------
# patch features (Coates et al. 2011)
# ---------------------------------------------------------------------------


class PatchFeatures(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A Coates-style first layer: responses of image patches to a dictionary, as channels.

    For every pixel ``u`` the (zero-padded) k x k patch ``x_u`` around it is
    contrast-normalised (its mean subtracted, divided by
    ``sqrt(variance + eps)`` with ``eps = contrast_eps`` times the mean
    training patch variance), ZCA-whitened with the training patch
    covariance (as :class:`ZCAWhitening`) and compared with ``n_filters``
    dictionary patches ``d_j``; the nonlinearity gives channel ``j`` of the
    output pixel ``u``:

    - ``"triangle"`` (k-means triangle encoding): ``max(0, mean_i z_i - z_j)``
      with the distances ``z_j = ||x_u - d_j||``;
    - ``"relu"``: ``max(0, <x_u, d_j> - threshold)`` with unit-norm ``d_j``;
    - ``"split"``: both ``max(0, <x_u, d_j> - threshold)`` and
      ``max(0, -<x_u, d_j> - threshold)`` (``2 n_filters`` channels).

    The dictionary is learnt by k-means
    (:class:`~sklearn.cluster.MiniBatchKMeans`) on whitened training patches,
    or drawn from them at random.  With ``flip_equivariant=True`` the layer
    commutes with left-right flips (see Notes).  The output is an image ``(n, H, W, F)``
    that any kernel of this package accepts.  The kernels' first convolution
    sums over the ``F`` channels for every image pair, so a kernel entry
    costs more with many channels: on 28x28 images about 1.4x the pixels'
    cost with 16 channels, 5x with 64 and 20x with 256 (depth-5 flatten
    CNTK); keep ``n_filters`` small for exact kernels.

    Parameters
    ----------
    n_filters : int, default=64
        Dictionary size (output channels; doubled by ``activation="split"``).
    patch_size : int, default=5
        Patch side ``k`` (odd: centred).
    dictionary : {"kmeans", "random"}, default="kmeans"
        K-means centroids of whitened training patches, or random whitened
        training patches.
    activation : {"triangle", "relu", "split"}, default="triangle"
        The nonlinearity (see above).
    threshold : float, default=0.25
        Offset of the "relu" and "split" activations.
    whiten : bool, default=True
        ZCA-whiten the patches (else they are only contrast-normalised).
    regularization : float, default=0.1
        ZCA regularisation, a fraction of the mean eigenvalue (see
        :class:`ZCAWhitening`).
    contrast_eps : float or None, default=0.1
        Contrast normalisation constant as a fraction of the mean training
        patch variance; None disables contrast normalisation.
    n_patches : int, default=50000
        Training patches sampled (uniformly among interior patches) for the
        statistics and the dictionary.
    flip_equivariant : bool, default=False
        Make the layer commute with left-right flips,
        ``transform(x[:, :, ::-1]) == transform(x)[:, :, ::-1, ::-1]``
        (see Notes): the statistics come from the training patches and
        their mirror images, and the dictionary is ``n_filters // 2`` atoms
        and their mirror images.  Needs an even ``n_filters`` and an odd
        ``patch_size``.
    image_shape : tuple (H, W) or (H, W, C), default=None
        Shape of one image when X is given as flat rows (one entry may be -1).
    random_state : int, RandomState instance or None, default=None
        Seeds the patch sampling and the dictionary.

    Attributes
    ----------
    dictionary_ : ndarray of shape (n_filters, C k k)
        The dictionary in the whitened space (unit-norm rows for "relu" and
        "split").  With ``flip_equivariant=True`` row ``n_filters - 1 - j``
        is the mirror image of row ``j``.
    mean_ : ndarray of shape (C k k,)
        Mean of the normalised training patches (and of their mirror images
        with ``flip_equivariant=True``).
    whitening_ : ndarray of shape (C k k, C k k)
        The ZCA matrix (identity when ``whiten=False``).
    contrast_eps_ : float
        The absolute contrast normalisation constant.
    output_shape_ : tuple (H, W, F)
        Shape of the output images.
    image_shape_ : tuple (H, W, C)
    n_features_in_ : int

    See Also
    --------
    ZCAWhitening : whitening that keeps the image shape.
    CKNFeatures : a multi-layer feature map of the same family.

    Notes
    -----
    Flip equivariance.  A k-means dictionary is not closed under mirroring,
    so the patch features of a flipped image are not the flipped features,
    and the kernels' ``augment="hflip"`` on them is no flip of the images.
    With ``flip_equivariant=True`` (``M`` the mirror of a patch, the
    reversal of its width):

    - the mean and covariance are those of the sampled training patches
      together with their mirror images, so ``M mean = mean`` and the ZCA
      matrix commutes with ``M`` (contrast normalisation is per patch, and
      unchanged by ``M``);
    - the dictionary is ``[c_1, ..., c_m, M c_m, ..., M c_1]`` with
      ``m = n_filters // 2`` k-means centroids (or random patches) of the
      symmetrised whitened patches: channel ``n_filters - 1 - j`` responds
      to the mirror image of what channel ``j`` responds to;
    - "relu" keeps that order and "triangle" too (its mean distance over
      all atoms is unchanged by the pairing); "split" orders its
      ``2 n_filters`` channels as ``[pos_1..pos_m, neg_1..neg_2m,
      pos_m+1..pos_2m]``, so that reversing them again pairs each channel
      with its mirror image.

    Hence, for odd patch sizes (a centred, symmetrically padded patch),
    ``transform(x[:, :, ::-1]) == transform(x)[:, :, ::-1, ::-1]``: the
    features of a flipped image are the flipped features with their channel
    order reversed.  This is what the kernels' ``augment="hflip_reverse_channels"``
    (see :func:`~sklearn_convkernel.conv_kernel`) mirrors, so that, with
    ``F`` this layer, ``K(F x, F y)`` averaged over that augment is
    ``(K(F x, F y) + K(F x, F(y[:, :, ::-1]))) / 2``: flip averaging of
    the images behind the patch layer, at the kernel's cost instead of
    doubling the training set.

    References
    ----------
    A. Coates, H. Lee, A. Ng, "An Analysis of Single-Layer Networks in
    Unsupervised Feature Learning", AISTATS 2011.
    Z. Li, R. Wang, D. Yu et al., "Enhanced Convolutional Neural Tangent
    Kernels", 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import PatchFeatures
    >>> X = np.random.default_rng(0).random((30, 10, 10, 1))
    >>> PatchFeatures(n_filters=16, patch_size=3, random_state=0).fit_transform(X).shape
    (30, 10, 10, 16)
    """

    _parameter_constraints = {
        "n_filters": [Interval(Integral, 1, None, closed="left")],
        "patch_size": [Interval(Integral, 1, None, closed="left")],
        "dictionary": [StrOptions({"kmeans", "random"})],
        "activation": [StrOptions({"triangle", "relu", "split"})],
        "threshold": [Real],
        "whiten": ["boolean"],
        "regularization": [Interval(Real, 0, None, closed="left")],
        "contrast_eps": [Interval(Real, 0, None, closed="neither"), None],
        "n_patches": [Interval(Integral, 1, None, closed="left")],
        "flip_equivariant": ["boolean"],
        "image_shape": [tuple, list, None],
        "random_state": ["random_state"],
    }

    def __init__(self, n_filters=64, *, patch_size=5, dictionary="kmeans", activation="triangle",
                 threshold=0.25, whiten=True, regularization=0.1, contrast_eps=0.1,
                 n_patches=50000, flip_equivariant=False, image_shape=None, random_state=None):
        self.n_filters = n_filters
        self.patch_size = patch_size
        self.dictionary = dictionary
        self.activation = activation
        self.threshold = threshold
        self.whiten = whiten
        self.regularization = regularization
        self.contrast_eps = contrast_eps
        self.n_patches = n_patches
        self.flip_equivariant = flip_equivariant
        self.image_shape = image_shape
        self.random_state = random_state

    def _normalize(self, E):
        if self.contrast_eps is None:
            return E
        return contrast_normalize(E, self.contrast_eps_)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the patch statistics and the dictionary from training images.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W[, C]) or (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        _, X4, _ = _input_images(self, X, reset=True)
        p = self.patch_size
        _check_patch_fits(type(self).__name__, self.image_shape_, p)
        self._check_flip_equivariant()
        rng = check_random_state(self.random_state)
        N, H, W, C = X4.shape
        h, w = H - p + 1, W - p + 1
        take = rng.choice(N * h * w, size=min(self.n_patches, N * h * w), replace=False)
        P = gather_patches(X4, np.sort(take), p)
        if self.contrast_eps is not None:
            mean_var = float(P.var(axis=1).mean())
            # constant patches only (e.g. 1x1 patches of one channel): centring alone
            self.contrast_eps_ = self.contrast_eps * mean_var if mean_var > 0 else 1.0
            P = contrast_normalize(P, self.contrast_eps_)
        else:
            self.contrast_eps_ = 0.0
        # with flip_equivariant: the patches and their mirror images, and the
        # statistics made to commute with the mirror exactly (not only to rounding)
        mirror = patch_mirror(C, p) if self.flip_equivariant else None
        if mirror is not None:
            P = np.concatenate([P, P[:, mirror]])
        self.mean_ = _commute_with(P.mean(axis=0), mirror)
        if self.whiten:
            Pc = P - self.mean_
            self.whitening_ = _commute_with(
                zca_matrix(Pc.T @ Pc / P.shape[0], self.regularization)[0], mirror)
        else:
            self.whitening_ = np.eye(P.shape[1])
        Pw = (P - self.mean_) @ self.whitening_
        k = self.n_filters
        atoms = k // 2 if mirror is not None else k
        if self.dictionary == "kmeans" and Pw.shape[0] > atoms:
            km = MiniBatchKMeans(n_clusters=atoms, n_init=3, batch_size=2048,
                                 random_state=rng.randint(np.iinfo(np.int32).max))
            D = km.fit(Pw).cluster_centers_
        else:
            D = Pw[rng.choice(Pw.shape[0], size=atoms, replace=Pw.shape[0] < atoms)]
        if self.activation != "triangle":
            norms = np.linalg.norm(D, axis=1, keepdims=True)
            norms[norms == 0] = 1.0
            D = D / norms
        if mirror is not None:  # [c_1..c_m, M c_m..M c_1]: atom k-1-j mirrors atom j
            D = np.concatenate([D, D[::-1][:, mirror]])
        self.dictionary_ = D
        F = 2 * k if self.activation == "split" else k
        self.output_shape_ = (H, W, F)
        self._n_features_out = H * W * F
        return self

    def _check_flip_equivariant(self):
        if not self.flip_equivariant:
            return
        owner = type(self).__name__
        k = self.n_filters
        if k % 2:
            use = f"{k - 1} or {k + 1}" if k > 1 else "2"
            raise ValueError(
                f"{owner}: flip_equivariant=True needs an even n_filters (n_filters // 2 "
                f"atoms and their mirror images), got n_filters={k}; use n_filters={use}."
            )
        if self.patch_size % 2 == 0:
            raise ValueError(
                f"{owner}: flip_equivariant=True needs an odd patch_size (an even patch is "
                "not centred on its pixel, so the mirror image of a patch is not the patch "
                f"of the mirrored pixel), got patch_size={self.patch_size}; use "
                f"patch_size={self.patch_size - 1} or {self.patch_size + 1}."
            )

    def transform(self, X):
        """Dictionary responses of every patch, as the channels of an image.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W[, C]) or (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, H, W, F) for image input, else (n_samples, H W F)
        """
        check_is_fitted(self)
        Xf, X4, ndim = _input_images(self, X, reset=False)
        dtype = Xf.dtype
        p = self.patch_size
        N, H, W, _ = X4.shape
        A = (self.whitening_ @ self.dictionary_.T).astype(dtype)  # W symmetric
        offset = (self.mean_ @ self.whitening_ @ self.dictionary_.T).astype(dtype)
        if self.activation == "triangle":
            Wt = self.whitening_.astype(dtype)
            dnorm2 = np.einsum("ij,ij->i", self.dictionary_, self.dictionary_).astype(dtype)
        out = np.empty((N, H, W) + (self.output_shape_[2],), dtype=dtype)
        for s in range(0, N, _BATCH):
            B = X4[s:s + _BATCH]
            E = self._normalize(extract_patches(B, p).astype(dtype, copy=True))
            S = E @ A - offset  # <W (x - mean), d_j>
            if self.activation == "triangle":
                Y = (E - self.mean_.astype(dtype)) @ Wt
                z2 = np.einsum("ij,ij->i", Y, Y)[:, None] - 2.0 * S + dnorm2
                z = np.sqrt(np.maximum(z2, 0.0))
                R = np.maximum(z.mean(axis=1, keepdims=True) - z, 0.0)
            elif self.activation == "relu":
                R = np.maximum(S - self.threshold, 0.0)
            else:
                pos, neg = np.maximum(S - self.threshold, 0.0), np.maximum(-S - self.threshold, 0.0)
                if self.flip_equivariant:  # [pos of the first half, neg, pos of the second]
                    m = S.shape[1] // 2
                    R = np.concatenate([pos[:, :m], neg, pos[:, m:]], axis=1)
                else:
                    R = np.concatenate([pos, neg], axis=1)
            out[s:s + _BATCH] = R.reshape(B.shape[:3] + (R.shape[1],))
        return _output(out, 4 if ndim in (3, 4) else 2)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
