"""ConvNystroem: Nyström features of exact convolutional kernels."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline

from sklearn_convkernel import ConvNystroem, cntk_architecture, conv_kernel, load_gram
from sklearn_convkernel._conv_nystroem import pinv_sqrt_psd
from sklearn_convkernel.arch import Conv, Dense, Flatten, GlobalAvgPool, ReLU, Sequential, Tap

ARCH = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(),
                  GlobalAvgPool(), Dense())


def _images(n, seed=0):
    return np.random.default_rng(seed).random((n, 7, 6, 1))


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_all_images_as_landmarks_reproduce_the_exact_kernel(kind):
    X, T = _images(14), _images(5, seed=1)
    ny = ConvNystroem(ARCH, kind=kind, n_components=14, random_state=0)
    F = ny.fit_transform(X)
    assert F.shape == (14, 14) and ny.rank_ == 14
    assert sorted(ny.component_indices_) == list(range(14))
    K = conv_kernel(X, architecture=ARCH, kind=kind)
    np.testing.assert_allclose(F @ F.T, K, rtol=1e-9, atol=1e-9 * np.abs(K).max())
    np.testing.assert_allclose(ny.transform(X) @ F.T, K, rtol=1e-8, atol=1e-9 * np.abs(K).max())
    # new images: K(T, X) K^-1 K(X, X) = K(T, X)
    np.testing.assert_allclose(ny.transform(T) @ F.T, conv_kernel(T, X, architecture=ARCH,
                                                                   kind=kind),
                               rtol=1e-8, atol=1e-9 * np.abs(K).max())


FLAT = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(), Flatten())


@pytest.mark.parametrize("arch", [ARCH, FLAT], ids=["gap", "flatten"])
def test_flip_augmented_features_reproduce_the_flip_averaged_kernel(arch):
    X, T = _images(12), _images(4, seed=2)
    ny = ConvNystroem(arch, kind="ntk", n_components=12, random_state=0, augment="hflip")
    F = ny.fit_transform(X)
    # the definition, from the plain kernel and numpy-flipped images
    K = 0.5 * (conv_kernel(X, architecture=arch, kind="ntk")
               + conv_kernel(X, X[:, :, ::-1], architecture=arch, kind="ntk"))
    scale = np.abs(K).max()
    np.testing.assert_allclose(F @ F.T, K, rtol=1e-8, atol=1e-9 * scale)
    K_T = 0.5 * (conv_kernel(T, X, architecture=arch, kind="ntk")
                 + conv_kernel(T, X[:, :, ::-1], architecture=arch, kind="ntk"))
    np.testing.assert_allclose(ny.transform(T) @ F.T, K_T, rtol=1e-8, atol=1e-9 * scale)
    assert not np.allclose(K, conv_kernel(X, architecture=arch, kind="ntk"), rtol=1e-3)


def test_features_are_the_nystroem_approximation():
    X = _images(20)
    ny = ConvNystroem(ARCH, n_components=6, random_state=3).fit(X)
    idx = ny.component_indices_
    assert len(set(idx)) == 6
    np.testing.assert_array_equal(ny.components_, X[idx].reshape(6, -1))
    K = conv_kernel(X, architecture=ARCH)
    # the definition, by plain numpy: K_nm K_mm^-1 K_mn
    approx = K[:, idx] @ np.linalg.solve(K[np.ix_(idx, idx)], K[idx, :])
    F = ny.transform(X)
    np.testing.assert_allclose(F @ F.T, approx, rtol=1e-8, atol=1e-10 * np.abs(K).max())
    np.testing.assert_allclose(ny.fit_transform(X), F, rtol=1e-12, atol=1e-13)


def test_pinv_sqrt_drops_null_directions():
    rng = np.random.default_rng(0)
    B = rng.standard_normal((6, 3))
    K = B @ B.T  # rank 3
    R, rank = pinv_sqrt_psd(K)
    assert rank == 3
    np.testing.assert_allclose(R @ K @ R, np.linalg.pinv(K) @ K, atol=1e-10)
    np.testing.assert_allclose(R @ R, np.linalg.pinv(K), rtol=1e-8, atol=1e-10)


def test_pinv_sqrt_keeps_slowly_decaying_spectra_above_float32_noise():
    # a kernel-like spectrum from 1 down to 1e-5 (a float32 CNTK on 1 500
    # Fashion-MNIST images ends at 2e-5), then 100 null directions, stored in
    # float32: every real direction is far above float32 rounding noise and
    # must be kept; the null ones must not come back as noise.
    rng = np.random.default_rng(1)
    Q, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    lam = np.concatenate([np.logspace(0, -5, 300), np.zeros(100)])
    K32 = ((Q * lam) @ Q.T).astype(np.float32)
    R, rank = pinv_sqrt_psd(K32)
    assert rank == 300
    K = K32.astype(np.float64)
    # R K R is the projector on the kept directions: it reproduces K on them
    np.testing.assert_allclose(K @ R @ R @ K, K, atol=1e-6)
    # a float64 copy of a float32 kernel gets the float32 rule through dtype=
    assert pinv_sqrt_psd(K, dtype=np.float32)[1] == 300


def test_pipeline_with_ridge_classifier_and_flat_rows():
    rng = np.random.default_rng(0)
    X = rng.random((40, 6, 6, 1)) * 0.2
    y = np.arange(40) % 2
    X[y == 0, :3] += 1.0  # class 0: bright top, class 1: bright bottom
    X[y == 1, 3:] += 1.0
    model = make_pipeline(ConvNystroem(cntk_architecture(2, gap=False)[0], kind="ntk",
                                       n_components=10, random_state=0,
                                       image_shape=(6, 6, 1)),
                          RidgeClassifier(alpha=1e-3))
    model.fit(X.reshape(40, -1), y)
    assert model.score(X.reshape(40, -1), y) == 1.0
    assert model[0].get_feature_names_out()[0] == "convnystroem0"


def test_tapped_architectures_use_the_final_readout():
    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Tap(GlobalAvgPool(), Dense()), Conv(3),
                      ReLU(), Flatten(), Dense())
    X = _images(8)
    F = ConvNystroem(arch, n_components=8, random_state=0).fit_transform(X)
    K = conv_kernel(X, architecture=arch)[-1]
    np.testing.assert_allclose(F @ F.T, K, rtol=1e-9, atol=1e-12)


def test_more_components_than_images_warns():
    with pytest.warns(UserWarning, match="n_components=30 > n_samples=9"):
        F = ConvNystroem(ARCH, n_components=30).fit_transform(_images(9))
    assert F.shape == (9, 9)


def test_float32_kernel():
    X = _images(12)
    F = ConvNystroem(ARCH, n_components=12, dtype="float32", random_state=0).fit_transform(X)
    K = conv_kernel(X, architecture=ARCH)
    np.testing.assert_allclose(F @ F.T, K, rtol=1e-4, atol=1e-5 * np.abs(K).max())


def test_out_store_resumes_and_is_uniform_only(tmp_path, monkeypatch):
    X = _images(12)
    path = tmp_path / "Knm.npy"
    ny = ConvNystroem(ARCH, n_components=5, random_state=0, out=path)
    F = ny.fit_transform(X)
    Knm = load_gram(path)
    np.testing.assert_array_equal(Knm, conv_kernel(X, X[ny.component_indices_],
                                                   architecture=ARCH))
    from sklearn_convkernel import _gram

    calls = []
    monkeypatch.setattr(_gram, "_store_tile_task", lambda *a: calls.append(a))
    np.testing.assert_array_equal(ny.fit_transform(X), F)  # complete store: nothing computed
    assert calls == []
    with pytest.raises(ValueError, match="different computation"):
        ConvNystroem(ARCH, n_components=5, random_state=1, out=path).fit(X)


def test_verbose_fit_reports_progress(capsys):
    X = _images(10)
    ConvNystroem(ARCH, n_components=4, random_state=0).fit(X)
    assert capsys.readouterr().err == ""
    ConvNystroem(ARCH, n_components=4, random_state=0, verbose=1).fit(X)
    assert "kernel entries" in capsys.readouterr().err
