"""Nyström CKN features: agreement with the exact CKN kernel, determinism, shapes, pipelines."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from sklearn_convkernel import conv_kernel
from sklearn_convkernel._nystrom import (
    CKNFeatures,
    extract_patches,
    patches_adjoint,
    pool,
    pool_adjoint,
    pool_matrices,
    spherical_kmeans,
)
from sklearn_convkernel.datasets import load_fashion_mnist
from sklearn_convkernel.presets import from_ckn_kernel


@pytest.fixture(scope="module")
def crops():
    """12x12 crops of the shipped Fashion-MNIST subset: 80 to fit, 6 to evaluate."""
    Xtr, _, Xte, _ = load_fashion_mnist()
    return Xtr[:80, 8:20, 8:20, :], Xte[:6, 8:20, 8:20, :]


def _rel_err(F, K):
    return np.linalg.norm(F @ F.T - K) / np.linalg.norm(K)


@pytest.mark.parametrize("depth", [1, 2])
def test_error_vs_exact_kernel_decreases_with_filters(crops, depth):
    X, Xe = crops
    errors = []
    K = None
    for nf in (8, 32, 128):
        ckn = CKNFeatures(n_filters=(nf,) * depth, patch_sizes=(3,) * depth,
                          subsamplings=(2,) * depth, sigma=0.6, random_state=0).fit(X)
        if K is None:
            assert ckn.architecture_ == from_ckn_kernel(ckn.ckn_model_)
            K = conv_kernel(Xe, architecture=ckn.architecture_)
        errors.append(_rel_err(ckn.transform(Xe), K))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < (5e-4 if depth == 1 else 4e-3), errors


@pytest.mark.parametrize("pooling", ["gaussian", "average", "strided"])
@pytest.mark.parametrize("patch", [2, 3])
def test_exact_for_finite_dimensional_kernel(pooling, patch):
    # kappa(u) = u**2 on d-dim patches has a d(d+1)/2-dim RKHS: with more anchors than
    # that the Nyström map is exact, which pins down every convention (channel sum,
    # zero padding, even patches reaching up/left, pooling matrices, trace read-out)
    # on non-square multi-channel images.
    rng = np.random.default_rng(0)
    X = rng.random((5, 9, 11, 2)) - 0.3
    d = 2 * patch * patch
    ckn = CKNFeatures(n_filters=d * (d + 1) // 2 + 10, patch_sizes=patch, subsamplings=2,
                      pooling=pooling, kernel="poly2", regularization=1e-12, n_patches=2000,
                      random_state=0).fit(X)
    F = ckn.transform(X)
    K = conv_kernel(X, architecture=ckn.architecture_)
    np.testing.assert_allclose(F @ F.T, K, rtol=1e-8, atol=1e-8 * np.abs(K).max())


def test_shapes_and_attributes(crops):
    X, _ = crops
    ckn = CKNFeatures(n_filters=(4, 6), patch_sizes=(3, 2), subsamplings=(2, 2),
                      pooling=("gaussian", "average"), random_state=0).fit(X)
    # 12 -> gaussian d=2: 12 // 2 - 1 = 5 -> average d=2: 5 // 2 = 2
    assert ckn.feature_map_shape_ == (2, 2, 6)
    assert ckn.transform(X[:3]).shape == (3, 24)
    assert ckn.transform(X[:3].reshape(3, -1)).shape == (3, 24)  # flat square rows
    assert ckn.get_feature_names_out()[0] == "cknfeatures0"
    assert [layer.anchors.shape for layer in ckn.layers_] == [(9, 4), (16, 6)]
    for layer in ckn.layers_:
        np.testing.assert_allclose(np.linalg.norm(layer.anchors, axis=0), 1.0)
    assert ckn.ckn_model_[1] == {"npatch": 2, "subsampling": 2, "pooling": "average",
                                 "kernel": "exp", "sigma": 0.6}


def test_flat_rows_with_image_shape():
    rng = np.random.default_rng(1)
    X = rng.random((8, 6 * 10 * 2))
    ckn = CKNFeatures(n_filters=5, patch_sizes=3, subsamplings=2, image_shape=(6, 10, 2),
                      random_state=0).fit(X)
    assert ckn.image_shape_ == (6, 10, 2)
    np.testing.assert_array_equal(ckn.transform(X), ckn.transform(X.reshape(8, 6, 10, 2)))
    with pytest.raises(ValueError, match="shape"):
        ckn.transform(rng.random((2, 10, 6, 2)))


def test_determinism_and_seed(crops):
    X, Xe = crops
    kw = dict(n_filters=(8, 12), patch_sizes=(3, 3), subsamplings=(2, 2))
    a = CKNFeatures(random_state=3, **kw).fit(X).transform(Xe)
    b = CKNFeatures(random_state=3, **kw).fit(X).transform(Xe)
    c = CKNFeatures(random_state=4, **kw).fit(X).transform(Xe)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_batches_threads_and_dtypes(crops):
    X, Xe = crops
    kw = dict(n_filters=(8, 12), patch_sizes=(3, 3), subsamplings=(2, 2), random_state=0)
    ref = CKNFeatures(batch_size=64, **kw).fit(X)
    F = ref.transform(Xe)
    assert F.dtype == np.float64
    for params in (dict(batch_size=1), dict(batch_size=2, n_jobs=2)):
        np.testing.assert_allclose(ref.set_params(**params).transform(Xe), F, rtol=1e-12,
                                   atol=1e-14)
    F32 = ref.transform(Xe.astype(np.float32))
    assert F32.dtype == np.float32
    np.testing.assert_allclose(F32, F, rtol=1e-4, atol=1e-5 * np.abs(F).max())
    assert ref.set_params(dtype="float32").transform(Xe).dtype == np.float32


def test_zero_images_give_zero_features():
    X = np.zeros((3, 8, 8, 1))
    X[0, 2:5, 3:6, 0] = 1.0
    ckn = CKNFeatures(n_filters=6, patch_sizes=3, subsamplings=2, random_state=0).fit(X)
    F = ckn.transform(X)
    assert np.all(np.isfinite(F)) and np.all(F[1:] == 0)


def test_linear_models_in_pipelines():
    Xtr, ytr, Xte, yte = load_fashion_mnist()
    Xtr, ytr, Xte, yte = Xtr[:300], ytr[:300], Xte[:200], yte[:200]
    ckn = CKNFeatures(n_filters=(8, 16), subsamplings=(2, 3), random_state=0)
    for clf in (RidgeClassifier(alpha=1.0), make_pipeline(StandardScaler(),
                                                          LinearSVC(C=0.01))):
        model = make_pipeline(ckn, clf).fit(Xtr, ytr)
        assert model.score(Xte, yte) > 0.6


def test_parameter_errors(crops):
    X, _ = crops
    with pytest.raises(ValueError, match="patch_sizes has 2 entries"):
        CKNFeatures(n_filters=(4,), patch_sizes=(3, 3), subsamplings=2).fit(X)
    with pytest.raises(ValueError, match="too small for gaussian pooling even with subsampling 1"):
        CKNFeatures(n_filters=(4, 4, 4), patch_sizes=3, subsamplings=2).fit(X[:, :4, :4])
    with pytest.raises(ValueError, match="kernel must be one of"):
        CKNFeatures(n_filters=(4, 4), subsamplings=(2, 2), kernel=("exp", "rbf")).fit(X)


def test_spherical_kmeans_finds_clusters():
    rng = np.random.default_rng(0)
    centers = np.eye(5)[:3]
    P = np.repeat(centers, 50, axis=0) + 0.05 * rng.standard_normal((150, 5))
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    Z = spherical_kmeans(P, 3, np.random.RandomState(0), n_iter=20)
    assert np.allclose(np.linalg.norm(Z, axis=0), 1.0)
    assert np.sort(np.max(centers @ Z, axis=1))[0] > 0.99
    # fewer patches than anchors: the rest are random unit vectors
    Z = spherical_kmeans(P[:2], 4, np.random.RandomState(0))
    assert Z.shape == (5, 4) and np.allclose(np.linalg.norm(Z, axis=0), 1.0)


def test_patch_and_pool_adjoints():
    rng = np.random.default_rng(2)
    for p in (1, 2, 3, 4):
        X = rng.standard_normal((2, 5, 7, 3))
        E = extract_patches(X, p)
        G = rng.standard_normal(E.shape)
        assert np.isclose(np.sum(E * G), np.sum(X * patches_adjoint(G, X.shape, p)))
    U = rng.standard_normal((2, 9, 11, 4))
    Ah, Aw = pool_matrices("gaussian", 2, (9, 11))
    V = pool(U, Ah, Aw)
    G = rng.standard_normal(V.shape)
    assert np.isclose(np.sum(V * G), np.sum(U * pool_adjoint(G, Ah, Aw)))
