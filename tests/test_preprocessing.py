"""ZCA whitening and patch features: closed forms against slow NumPy definitions."""

import numpy as np
import pytest
from scipy.linalg import sqrtm
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_convkernel import CNTKClassifier, PatchFeatures, ZCAWhitening, conv_kernel
from sklearn_convkernel._preprocessing import patch_mirror


def _images(n=40, h=7, w=6, c=2, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.random((n, h, w, c))
    # correlated pixels, so that whitening has something to do
    return base + 0.5 * np.roll(base, 1, axis=1) + 0.3 * base[..., :1]


def _slow_standardize(x, mode):
    x = np.array(x, dtype=float)
    for i in range(len(x)):
        if mode == "image":
            x[i] = (x[i] - x[i].mean()) / x[i].std()
        elif mode == "channel":
            for c in range(x.shape[-1]):
                x[i, ..., c] = (x[i, ..., c] - x[i, ..., c].mean()) / x[i, ..., c].std()
    return x


def _slow_zca(cov, eps):
    """(cov + eps * trace(cov)/d * I)^{-1/2} by a matrix square root (not an eigh)."""
    d = cov.shape[0]
    return np.real(np.linalg.inv(sqrtm(cov + eps * np.trace(cov) / d * np.eye(d))))


@pytest.mark.parametrize("standardize", ["image", "channel", None])
@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_image_zca_matches_definition(standardize, eps):
    X = _images()
    zca = ZCAWhitening(regularization=eps, standardize=standardize).fit(X)
    F = _slow_standardize(X, standardize).reshape(len(X), -1)
    mu = F.mean(axis=0)
    cov = np.cov(F, rowvar=False, bias=True)
    W = _slow_zca(cov, eps)
    np.testing.assert_allclose(zca.whitening_, W, rtol=1e-7, atol=1e-8)
    out = zca.transform(X)
    assert out.shape == X.shape
    np.testing.assert_allclose(out.reshape(len(X), -1), (F - mu) @ W, rtol=1e-7, atol=1e-8)
    # the whitened training covariance is cov (cov + eps mbar I)^{-1}: identity, shrunk
    mbar = np.trace(cov) / cov.shape[0]
    target = cov @ np.linalg.inv(cov + eps * mbar * np.eye(len(cov)))
    np.testing.assert_allclose(np.cov(out.reshape(len(X), -1), rowvar=False, bias=True),
                               target, atol=1e-8)
    np.testing.assert_allclose(zca.eigenvalues_, np.sort(np.linalg.eigvalsh(cov))[::-1],
                               atol=1e-10)


def test_plain_zca_whitens_exactly():
    X = _images(n=200, h=3, w=3, c=1)
    out = ZCAWhitening(regularization=0.0, standardize=None).fit_transform(X)
    cov = np.cov(out.reshape(200, -1), rowvar=False, bias=True)
    np.testing.assert_allclose(cov, np.eye(9), atol=1e-8)


def _slow_patches(x, p):
    """Interior p x p patches of x (H, W, C) in the (channel, dy, dx) layout."""
    H, W, C = x.shape
    rows = []
    for y in range(H - p + 1):
        for u in range(W - p + 1):
            rows.append(x[y:y + p, u:u + p, :].transpose(2, 0, 1).ravel())
    return np.array(rows)


@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("center", [True, False])
def test_patch_zca_matches_definition(p, center):
    X = _images(n=12)
    eps = 0.2
    zca = ZCAWhitening(mode="patch", patch_size=p, regularization=eps, standardize="channel",
                       center=center).fit(X)
    Xs = _slow_standardize(X, "channel")
    P = np.concatenate([_slow_patches(x, p) for x in Xs])
    mu = P.mean(axis=0) if center else np.zeros(P.shape[1])
    cov = (P - mu).T @ (P - mu) / len(P)
    W = _slow_zca(cov, eps)
    np.testing.assert_allclose(zca.whitening_, W, rtol=1e-7, atol=1e-8)
    target = cov @ np.linalg.inv(cov + eps * np.trace(cov) / len(cov) * np.eye(len(cov)))
    Y = (P - mu) @ W  # second moment of the whitened patches (centred when center=True)
    np.testing.assert_allclose(Y.T @ Y / len(P), target, atol=1e-8)
    # the output is the whitened centre pixel of the zero-padded patch at every pixel
    out = zca.transform(X)
    assert out.shape == X.shape
    H, W_, C = X.shape[1:]
    lo = p // 2
    centre = np.arange(C) * p * p + lo * p + lo
    for i in (0, 5):
        padded = np.zeros((H + p - 1, W_ + p - 1, C))
        padded[lo:lo + H, lo:lo + W_] = Xs[i]
        for y in range(H):
            for u in range(W_):
                patch = padded[y:y + p, u:u + p].transpose(2, 0, 1).ravel()
                np.testing.assert_allclose(out[i, y, u], (W @ (patch - mu))[centre],
                                           rtol=1e-7, atol=1e-8)


def test_patch_zca_commutes_with_translations_in_the_interior():
    rng = np.random.default_rng(3)
    X = np.zeros((30, 12, 12, 1))
    X[:, 2:8, 2:8] = rng.random((30, 6, 6, 1))
    zca = ZCAWhitening(mode="patch", patch_size=3, standardize=None).fit(X)
    shifted = np.roll(X, (2, 3), axis=(1, 2))  # content stays inside the image
    a, b = zca.transform(X), zca.transform(shifted)
    np.testing.assert_allclose(b[:, 3:10, 4:11], a[:, 1:8, 1:8], atol=1e-12)
    # standardisation is per image, so it commutes with the shift as well
    zca = ZCAWhitening(mode="patch", patch_size=3, standardize="image").fit(X)
    np.testing.assert_allclose(zca.transform(shifted)[:, 3:10, 4:11],
                               zca.transform(X)[:, 1:8, 1:8], atol=1e-12)


@pytest.mark.parametrize("mode", ["image", "patch"])
def test_statistics_come_from_the_training_images_only(mode):
    X = _images(n=30)
    Y = _images(n=10, seed=1) * 3.0
    zca = ZCAWhitening(mode=mode).fit(X)
    expected = ZCAWhitening(mode=mode).fit(X).transform(Y)
    # transforming the test images does not change the fitted statistics
    np.testing.assert_array_equal(zca.transform(Y), expected)
    np.testing.assert_array_equal(zca.transform(X[:4]), zca.transform(X)[:4])
    refit = ZCAWhitening(mode=mode).fit(np.concatenate([X, Y]))
    assert not np.allclose(refit.transform(Y), expected)


def test_formats_and_dtypes():
    X = _images(n=20, c=1)
    zca = ZCAWhitening(mode="patch").fit(X)
    out = zca.transform(X)
    np.testing.assert_allclose(zca.transform(X[..., 0]), out[..., 0])
    flat = ZCAWhitening(mode="patch", image_shape=(7, 6)).fit(X.reshape(20, -1))
    np.testing.assert_allclose(flat.transform(X.reshape(20, -1)), out.reshape(20, -1))
    assert zca.transform(X.astype(np.float32)).dtype == np.float32
    pf = PatchFeatures(n_filters=5, patch_size=3, random_state=0).fit(X)
    assert pf.transform(X).shape == (20, 7, 6, 5)
    assert pf.transform(X[..., 0]).shape == (20, 7, 6, 5)
    assert pf.output_shape_ == (7, 6, 5)
    flat = PatchFeatures(n_filters=5, patch_size=3, random_state=0, image_shape=(7, 6, 1))
    np.testing.assert_allclose(flat.fit(X.reshape(20, -1)).transform(X.reshape(20, -1)),
                               pf.transform(X).reshape(20, -1))
    assert pf.transform(X.astype(np.float32)).dtype == np.float32


def test_errors():
    X = _images(n=5, h=4, w=4)
    with pytest.raises(ValueError, match="patch_size=5 does not fit"):
        ZCAWhitening(mode="patch", patch_size=5).fit(X)
    with pytest.raises(ValueError, match="patch_size=5 does not fit"):
        PatchFeatures(patch_size=5).fit(X)
    with pytest.raises(ValueError, match="mode"):
        ZCAWhitening(mode="pixel").fit(X)
    with pytest.raises(ValueError, match="activation"):
        PatchFeatures(activation="tanh").fit(X)
    zca = ZCAWhitening().fit(X)
    with pytest.raises(ValueError, match="expecting 32 features"):
        zca.transform(_images(n=2, h=5, w=4))


def _slow_patch_features(pf, x):
    """PatchFeatures' definition, one pixel at a time, on one image x (H, W, C)."""
    p = pf.patch_size
    H, W, C = x.shape
    lo = p // 2
    padded = np.zeros((H + p - 1, W + p - 1, C))
    padded[lo:lo + H, lo:lo + W] = x
    out = []
    for y in range(H):
        for u in range(W):
            v = padded[y:y + p, u:u + p].transpose(2, 0, 1).ravel()
            v = (v - v.mean()) / np.sqrt(v.var() + pf.contrast_eps_)
            v = pf.whitening_ @ (v - pf.mean_)
            if pf.activation == "triangle":
                z = np.linalg.norm(v - pf.dictionary_, axis=1)
                out.append(np.maximum(z.mean() - z, 0))
            else:
                s = pf.dictionary_ @ v
                r = np.maximum(s - pf.threshold, 0)
                if pf.activation == "split":
                    neg = np.maximum(-s - pf.threshold, 0)
                    m = len(s) // 2
                    r = (np.concatenate([r[:m], neg, r[m:]]) if pf.flip_equivariant
                         else np.concatenate([r, neg]))
                out.append(r)
    return np.array(out).reshape(H, W, -1)


@pytest.mark.parametrize("dictionary,activation", [
    ("kmeans", "triangle"), ("random", "relu"), ("random", "split"),
])
def test_patch_features_match_definition(dictionary, activation):
    X = _images(n=25, c=2)
    pf = PatchFeatures(n_filters=6, patch_size=3, dictionary=dictionary, activation=activation,
                       threshold=0.1, n_patches=400, random_state=0).fit(X)
    out = pf.transform(X[:3])
    for i in range(3):
        np.testing.assert_allclose(out[i], _slow_patch_features(pf, X[i]), rtol=1e-7,
                                   atol=1e-9)
    assert out.shape[-1] == (12 if activation == "split" else 6)
    if activation != "triangle":
        np.testing.assert_allclose(np.linalg.norm(pf.dictionary_, axis=1), 1.0)


def test_patch_features_whitening_and_dictionary():
    X = _images(n=40, c=1)
    pf = PatchFeatures(n_filters=4, patch_size=3, n_patches=10 ** 6, random_state=0).fit(X)
    # all interior patches were used: the ZCA of the normalised patches, by definition
    P = np.concatenate([_slow_patches(x, 3) for x in X])
    P = (P - P.mean(1, keepdims=True)) / np.sqrt(P.var(1, keepdims=True) + pf.contrast_eps_)
    np.testing.assert_allclose(pf.mean_, P.mean(0), atol=1e-12)
    cov = np.cov(P, rowvar=False, bias=True)
    np.testing.assert_allclose(pf.whitening_, _slow_zca(cov, 0.1), rtol=1e-6, atol=1e-8)
    # k-means centroids lie in the whitened patch cloud: each is a mean of whitened patches
    Pw = (P - pf.mean_) @ pf.whitening_
    assert np.linalg.norm(pf.dictionary_.mean(0) - Pw.mean(0)) < np.linalg.norm(Pw, axis=1).mean()
    # the random dictionary is made of whitened training patches
    rnd = PatchFeatures(n_filters=4, patch_size=3, dictionary="random", n_patches=10 ** 6,
                        random_state=0).fit(X)
    d2 = ((rnd.dictionary_[:, None, :] - Pw[None]) ** 2).sum(-1).min(axis=1)
    np.testing.assert_allclose(d2, 0, atol=1e-16)


# -- flip_equivariant=True -------------------------------------------------------

def _flip_pair(n_train=30, n_test=6, c=3):
    """Generic training and test images (9 x 8: even width, so no column is its own
    mirror)."""
    return _images(n=n_train, h=9, w=8, c=c), _images(n=n_test, h=9, w=8, c=c, seed=1)


@pytest.mark.parametrize("activation", ["triangle", "relu", "split"])
@pytest.mark.parametrize("dictionary", ["kmeans", "random"])
@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("p", [3, 5])
def test_flip_equivariant_patch_features_commute_with_flips(activation, dictionary, whiten, p):
    """transform(flip x) == transform(x) with the width and the channel order reversed."""
    X, Y = _flip_pair()
    params = dict(n_filters=6, patch_size=p, dictionary=dictionary, activation=activation,
                  whiten=whiten, threshold=0.1, n_patches=2000, random_state=0)
    pf = PatchFeatures(flip_equivariant=True, **params).fit(X)
    F = pf.transform(Y)
    assert F.shape == (6, 9, 8, 12 if activation == "split" else 6)
    assert 0.2 < np.mean(F > 0) < 0.8  # responses, neither all zero nor all positive
    np.testing.assert_allclose(pf.transform(Y[:, :, ::-1]), F[:, :, ::-1, ::-1], rtol=1e-12,
                               atol=1e-13 * np.abs(F).max())
    # float32 too, to its rounding
    F32 = pf.transform(Y.astype(np.float32))
    np.testing.assert_allclose(pf.transform(Y[:, :, ::-1].astype(np.float32)),
                               F32[:, :, ::-1, ::-1], rtol=1e-4, atol=1e-5 * np.abs(F).max())
    # flat rows: the same identity on the (H, W, F) images they hold
    flat = PatchFeatures(flip_equivariant=True, image_shape=(9, 8, 3), **params).fit(
        X.reshape(30, -1))
    np.testing.assert_allclose(flat.transform(Y.reshape(6, -1)), F.reshape(6, -1))
    # without flip_equivariant the identity fails on the same data (so this test can fail)
    plain = PatchFeatures(**params).fit(X)
    G = plain.transform(Y)
    assert np.abs(plain.transform(Y[:, :, ::-1]) - G[:, :, ::-1, ::-1]).max() > 0.1 * np.abs(
        G).max()


def test_flip_equivariant_statistics_use_the_mirror_images_of_the_patches():
    X = _images(n=40, c=2)
    C, p = 2, 3
    pf = PatchFeatures(n_filters=4, patch_size=p, n_patches=10 ** 6, flip_equivariant=True,
                       random_state=0).fit(X)
    # every interior patch and its mirror image (the patches of the flipped images)
    P = np.concatenate([_slow_patches(x, p) for x in np.concatenate([X, X[:, :, ::-1]])])
    P = (P - P.mean(1, keepdims=True)) / np.sqrt(P.var(1, keepdims=True) + pf.contrast_eps_)
    np.testing.assert_allclose(pf.mean_, P.mean(0), atol=1e-12)
    cov = np.cov(P, rowvar=False, bias=True)
    np.testing.assert_allclose(pf.whitening_, _slow_zca(cov, 0.1), rtol=1e-6, atol=1e-8)
    # patch_mirror reverses the width of the (channel, dy, dx) layout; the statistics
    # commute with it exactly and dictionary row k - 1 - j is the mirror of row j
    m = patch_mirror(C, p)
    rows = np.arange(C * p * p).reshape(1, C, p, p)
    np.testing.assert_array_equal(rows.reshape(1, -1)[:, m], rows[..., ::-1].reshape(1, -1))
    np.testing.assert_array_equal(pf.mean_[m], pf.mean_)
    np.testing.assert_array_equal(pf.whitening_[np.ix_(m, m)], pf.whitening_)
    D = pf.dictionary_.reshape(4, C, p, p)
    np.testing.assert_array_equal(D[::-1, :, :, ::-1], D)
    assert not np.allclose(D[0], D[0][..., ::-1])  # the atoms are not symmetric themselves
    # the transform is still the definition, with the split channels reordered
    for activation in ("triangle", "relu", "split"):
        pf.set_params(activation=activation).fit(X)
        out = pf.transform(X[:2])
        for i in range(2):
            np.testing.assert_allclose(out[i], _slow_patch_features(pf, X[i]), rtol=1e-7,
                                       atol=1e-9)


@pytest.mark.parametrize("n_filters, use", [(7, "n_filters=6 or 8"), (1, "n_filters=2")])
def test_flip_equivariant_needs_an_even_n_filters_and_an_odd_patch_size(n_filters, use):
    X = _images(n=5, h=6, w=6)
    with pytest.raises(ValueError, match=f"flip_equivariant=True needs an even n_filters.*"
                                         f"got n_filters={n_filters}; use {use}"):
        PatchFeatures(n_filters=n_filters, patch_size=3, flip_equivariant=True).fit(X)
    with pytest.raises(ValueError, match="needs an odd patch_size.*got patch_size=4; use "
                                         "patch_size=3 or 5"):
        PatchFeatures(n_filters=4, patch_size=4, flip_equivariant=True).fit(X)
    PatchFeatures(n_filters=n_filters, patch_size=4, n_patches=50).fit(X)  # fine without it


@parametrize_with_checks([PatchFeatures(n_filters=4, patch_size=1, activation="split",
                                        n_patches=200, flip_equivariant=True,
                                        image_shape=(1, -1), random_state=0)])
def test_sklearn_compatible_when_flip_equivariant(estimator, check):
    check(estimator)


def test_pipeline_into_an_exact_kernel():
    rng = np.random.default_rng(0)
    X = rng.random((24, 8, 8, 1))
    y = np.arange(24) % 2
    pf = PatchFeatures(n_filters=8, patch_size=3, random_state=0)
    pipe = make_pipeline(ZCAWhitening(mode="patch"), pf,
                         CNTKClassifier(depth=2, gap=False, cache=None)).fit(X, y)
    assert pipe.predict(X[:5]).shape == (5,)
    # the kernel of the pipeline is that of the transformed images
    Z = pipe[:-1].transform(X[:5])
    K = conv_kernel(Z, Z, architecture=pipe[-1].architecture_, kind="ntk")
    assert Z.shape == (5, 8, 8, 8) and np.all(np.isfinite(K))
