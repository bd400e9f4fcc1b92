"""The scikit-learn surface: ConvKernel, the estimators, the cache and depth sweeps."""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

from sklearn_convkernel import (
    CKNClassifier,
    CKNRegressor,
    CNNGPClassifier,
    CNNGPRegressor,
    CNTKClassifier,
    CNTKRegressor,
    ConvKernel,
    KernelCache,
    ckn_architecture,
    cnngp_architecture,
    cntk_architecture,
    conv_kernel,
)
from sklearn_convkernel.arch import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, ReLU, Sequential


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    X = rng.random((24, 9, 8, 2))
    y = np.arange(24) % 3
    return X, y


def small_arch():
    return Sequential(Conv(3, weight_var=2.0), ReLU(), AvgPool(2), Conv(2), ReLU(),
                      GlobalAvgPool(), Dense())


# ---------------------------------------------------------------------------
# ConvKernel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [None, "fresh"])
def test_convkernel_matches_conv_kernel(images, cache):
    X, _ = images
    cache = KernelCache() if cache == "fresh" else None
    arch = small_arch()
    ck = ConvKernel(arch, kind="ntk", cache=cache)
    K = ck.fit_transform(X[:15])
    np.testing.assert_allclose(K, conv_kernel(X[:15], architecture=arch, kind="ntk"), rtol=1e-13)
    Kt = ck.transform(X[15:])
    np.testing.assert_allclose(Kt, conv_kernel(X[15:], X[:15], architecture=arch, kind="ntk"),
                               rtol=1e-13)
    assert Kt.shape == (9, 15)
    np.testing.assert_allclose(ck.self_kernel(X[:15]), np.diag(K), rtol=1e-13)
    # fit + transform on the training set equals fit_transform
    np.testing.assert_allclose(ConvKernel(arch, kind="ntk", cache=cache).fit(X[:15]).transform(X[:15]),
                               K, rtol=1e-9)


def test_convkernel_flat_rows_and_image_shape(images):
    X, _ = images
    flat = X.reshape(len(X), -1)
    K4 = ConvKernel(cache=None).fit_transform(X)
    Kf = ConvKernel(image_shape=(9, 8, 2), cache=None).fit_transform(flat)
    Kinf = ConvKernel(image_shape=(9, -1, 2), cache=None).fit_transform(flat)
    np.testing.assert_array_equal(K4, Kf)
    np.testing.assert_array_equal(K4, Kinf)
    with pytest.raises(ValueError, match="image_shape"):
        ConvKernel(cache=None).fit(flat[:, :143])  # not a square single-channel image
    # 144 = 12 x 12 features without image_shape: read as a 12 x 12 x 1 image
    assert ConvKernel(cache=None).fit(flat).image_shape_ == (12, 12, 1)
    with pytest.raises(ValueError, match="holds 100 values"):
        ConvKernel(image_shape=(10, 10), cache=None).fit(flat)
    ck = ConvKernel(cache=None).fit(X)
    with pytest.raises(ValueError, match="fitted on images of shape"):
        ck.transform(np.random.default_rng(0).random((2, 8, 9, 2)))


def test_convkernel_output_selects_tap(images):
    X, _ = images
    arch, out = cntk_architecture(2, gap=False, max_depth=3)
    full = conv_kernel(X[:6], architecture=arch, kind="ntk")
    for o in range(full.shape[0]):
        K = ConvKernel(arch, kind="ntk", output=o, cache=None).fit_transform(X[:6])
        np.testing.assert_array_equal(K, full[o])
    with pytest.raises(ValueError, match="out of range"):
        ConvKernel(arch, kind="ntk", output=5, cache=None).fit(X[:6])


def test_pipeline_svc_in_gridsearch_equals_precomputed(images):
    X, y = images
    arch = small_arch()
    pipe = make_pipeline(ConvKernel(arch, kind="ntk", cache=KernelCache()), SVC(kernel="precomputed"))
    search = GridSearchCV(pipe, {"svc__C": [0.1, 10.0]}, cv=3).fit(X[:18], y[:18])
    # the same model by hand on conv_kernel
    K = conv_kernel(X, architecture=arch, kind="ntk")
    svc = SVC(kernel="precomputed", C=search.best_params_["svc__C"]).fit(K[:18, :18], y[:18])
    np.testing.assert_array_equal(search.predict(X[18:]), svc.predict(K[18:, :18]))


# ---------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------


def _ridge_by_hand(K_train, Y, K_test, alpha):
    reg = alpha * np.mean(np.diag(K_train))
    return K_test @ np.linalg.solve(K_train + reg * np.eye(len(K_train)), Y)


@pytest.mark.parametrize(
    "est, arch, kind",
    [
        (CNTKClassifier(depth=3, gap=True, alpha=1e-2), cntk_architecture(3, True)[0], "ntk"),
        (CNNGPClassifier(depth=2, kernel_size=3, alpha=1e-2),
         cnngp_architecture(2, 3)[0], "nngp"),
        (CKNClassifier(depth=2, subsampling=(2, 1), alpha=1e-2),
         ckn_architecture(2, subsampling=(2, 1))[0], "nngp"),
    ],
)
def test_classifier_is_one_hot_kernel_ridge(images, est, arch, kind):
    X, y = images
    est = clone(est).set_params(cache=None).fit(X[:18], y[:18])
    K = conv_kernel(X, architecture=arch, kind=kind)
    Y = np.eye(3)[y[:18]]
    scores = _ridge_by_hand(K[:18, :18], Y, K[18:, :18], 1e-2)
    np.testing.assert_allclose(est.decision_function(X[18:]), scores, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(est.predict(X[18:]), np.argmax(scores, axis=1))


def test_regressor_and_gp_std(images):
    X, y = images
    yr = np.sin(np.arange(len(X)))
    arch = cnngp_architecture(2, 3)[0]
    est = CNNGPRegressor(depth=2, kernel_size=3, alpha=1e-3, cache=None).fit(X[:18], yr[:18])
    mean, std = est.predict(X[18:], return_std=True)
    K = conv_kernel(X, architecture=arch)
    A = K[:18, :18] + 1e-3 * np.mean(np.diag(K[:18, :18])) * np.eye(18)
    Ks = K[18:, :18]
    np.testing.assert_allclose(mean, Ks @ np.linalg.solve(A, yr[:18]), rtol=1e-7)
    var = np.diag(K)[18:] - np.einsum("ij,ji->i", Ks, np.linalg.solve(A, Ks.T))
    np.testing.assert_allclose(std, np.sqrt(np.maximum(var, 0)), rtol=1e-6)
    assert np.all(std > 0)
    # multi-output regression keeps the 2-D shape
    Y2 = np.stack([yr, -yr], axis=1)
    pred2 = CNTKRegressor(depth=2, cache=None).fit(X[:18], Y2[:18]).predict(X[18:])
    assert pred2.shape == (6, 2)
    pred1 = CNTKRegressor(depth=2, cache=None).fit(X[:18], yr[:18]).predict(X[18:])
    np.testing.assert_allclose(pred2[:, 0], pred1, rtol=1e-10)
    np.testing.assert_allclose(pred2[:, 1], -pred1, rtol=1e-10)


def test_interpolation_with_singular_gram_warns_and_stays_finite(images):
    X, y = images
    Xd = np.concatenate([X[:10], X[:10]])  # duplicated images: a singular Gram
    yd = np.concatenate([y[:10], y[:10]])
    est = CNTKClassifier(depth=2, alpha=0.0, cache=None)
    with pytest.warns(RuntimeWarning, match="singular|positive definite"):
        est.fit(Xd, yd)
    assert np.all(np.isfinite(est.dual_coef_))
    np.testing.assert_array_equal(est.predict(X[:10]), y[:10])
    # alpha = 0 on a well-conditioned Gram: exact interpolation, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reg = CNTKRegressor(depth=2, alpha=0.0, cache=None).fit(X[:10], np.arange(10.0))
    np.testing.assert_allclose(reg.predict(X[:10]), np.arange(10.0), atol=1e-6)


def test_indefinite_gram_is_solved_with_its_negative_spectrum_clipped():
    # An indefinite K (as ShiftAverage(one_sided=True) gives, far beyond
    # rounding): the solver must not put huge weights on K's negative
    # directions (it floored them at 1e-10 of the largest eigenvalue, and a
    # one-sided LAP classifier predicted at chance level); it solves with the
    # nearest positive semi-definite matrix instead, and says so.
    from sklearn_convkernel._estimators import _Factor

    rng = np.random.default_rng(0)
    B = rng.standard_normal((30, 8))
    u = rng.standard_normal(30)
    u /= np.linalg.norm(u)
    K = B @ B.T - 3.0 * np.outer(u, u)  # eigenvalue ~ -3, mean diagonal ~ 8
    alpha = 1e-3
    with pytest.warns(RuntimeWarning, match="not positive semi-definite.*clipped"):
        f = _Factor(K, alpha)
    wK, V = np.linalg.eigh(K)
    assert wK.min() < -1.0
    reg = alpha * np.mean(np.diag(K))
    b = rng.standard_normal((30, 3))
    expected = V @ ((V.T @ b) / (np.maximum(wK, 0.0) + reg)[:, None])
    np.testing.assert_allclose(f.solve(b), expected, rtol=1e-8, atol=1e-10)
    q = np.sum(((V.T @ b) ** 2) / (np.maximum(wK, 0.0) + reg)[:, None], axis=0)
    np.testing.assert_allclose(f.quad(b.T), q, rtol=1e-8)


def test_explicit_architecture_overrides_shorthand(images):
    X, y = images
    arch = small_arch()
    a = CNTKRegressor(depth=5, architecture=arch, cache=None).fit(X[:12], y[:12])
    assert a.architecture_ is arch
    K = conv_kernel(X[:12], architecture=arch, kind="ntk")
    np.testing.assert_allclose(a.predict(X[:12]), _ridge_by_hand(K, y[:12], K, 1e-3), rtol=1e-7)


def test_parameter_errors(images):
    X, y = images
    with pytest.raises(ValueError, match="max_depth"):
        CNTKClassifier(depth=4, max_depth=3).fit(X, y)
    with pytest.raises(ValueError, match="kernel"):
        CKNClassifier(kernel="gauss").fit(X, y)
    with pytest.raises(ValueError, match="patch_size has 1 entries"):
        CKNClassifier(depth=2, patch_size=(3,)).fit(X, y)
    with pytest.raises(ValueError, match="alpha"):
        CNTKClassifier(alpha=-1.0).fit(X, y)
    with pytest.raises(ValueError, match="cache"):
        CNTKClassifier(cache="yes").fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        CNTKClassifier(depth=2, cache=None).fit(X[:3], np.zeros(3))


def test_estimators_pickle_round_trip(images):
    X, y = images
    est = CKNRegressor(depth=1, pooling="average", subsampling=1, cache=None).fit(X[:10], y[:10])
    est2 = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(est.predict(X[10:]), est2.predict(X[10:]))


# ---------------------------------------------------------------------------
# depth sweeps and the cache
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, depths, kind",
    [
        (lambda d, m: cntk_architecture(d, gap=True, max_depth=m), range(1, 5), "ntk"),
        (lambda d, m: cntk_architecture(d, gap=False, fix=True, max_depth=m), range(1, 5), "ntk"),
        (lambda d, m: cnngp_architecture(d, 3, max_depth=m), range(1, 5), "nngp"),
        (lambda d, m: ckn_architecture(d, subsampling=1, pooling="average", max_depth=m),
         range(1, 4), "nngp"),
        (lambda d, m: ckn_architecture(d, kernel="relu", subsampling=1, pooling="gaussian",
                                       kind="ntk", max_depth=m), range(1, 3), "ntk"),
    ],
)
def test_depth_sweep_read_outs_equal_single_depth_kernels(images, build, depths, kind):
    X, _ = images
    X = X[:5]
    top = max(depths)
    swept, _ = build(top, top)
    all_k = conv_kernel(X, architecture=swept, kind=kind)
    for d in depths:
        arch_d, out_d = build(d, None)
        assert out_d == 0
        arch_s, idx = build(d, top)
        assert arch_s == swept  # one architecture (one cache store) for every depth
        ref = conv_kernel(X, architecture=arch_d, kind=kind)
        np.testing.assert_allclose(all_k[idx], ref, rtol=1e-12)


def test_cache_gridsearch_computes_each_pair_once(images):
    X, y = images
    n = len(X)
    cache = KernelCache()
    search = GridSearchCV(
        CNTKClassifier(max_depth=4, gap=True, cache=cache),
        {"depth": [1, 2, 3, 4], "alpha": [1e-4, 1e-1]},
        cv=KFold(4),
    ).fit(X, y)
    # every unordered pair once (diagonal entries come from the self passes)
    assert cache.computed_pairs_ == n * (n - 1) // 2
    # the cached search equals the same search without the cache
    ref = GridSearchCV(
        CNTKClassifier(max_depth=4, gap=True, cache=None),
        {"depth": [1, 2, 3, 4], "alpha": [1e-4, 1e-1]},
        cv=KFold(4),
    ).fit(X, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"])
    assert search.best_params_ == ref.best_params_


@pytest.mark.parametrize(
    "est, build",
    [
        (CNTKClassifier(depth=2, max_depth=4, gap=False, max_shift=1),
         lambda d, m: cntk_architecture(d, gap=False, max_depth=m, max_shift=1)),
        (CNNGPRegressor(depth=1, max_depth=3, kernel_size=3),
         lambda d, m: cnngp_architecture(d, 3, max_depth=m)),
        (CKNClassifier(depth=1, max_depth=2),  # subsampling lowered to fit 9x8 images
         lambda d, m: ckn_architecture(d, subsampling=(2, 1), max_depth=m)),
    ],
)
def test_truncated_predicts_as_full_depth_without_recomputing(images, est, build):
    X, y = images
    cache = KernelCache()
    full = clone(est).set_params(cache=cache).fit(X[:16], y[:16])
    train_pairs = 16 * 15 // 2
    assert cache.computed_pairs_ == train_pairs
    short = full.truncated()
    d = full.depth
    assert short.max_depth is None and short.depth == d
    assert short.architecture_ == build(d, None)[0] and short.output_index_ == 0
    # the fit is taken over, not redone: no training pair computed again
    assert short.dual_coef_ is full.dual_coef_ and short.X_fit_ is full.X_fit_
    # the full model is unchanged
    assert full.max_depth is not None and full.architecture_ == build(d, full.max_depth)[0]
    classifier = hasattr(full, "classes_")
    if classifier:
        np.testing.assert_array_equal(short.classes_, full.classes_)
        labels, ref = full.predict(X[16:]), full.decision_function(X[16:])
    else:
        ref = full.predict(X[16:], return_std=True)
    # the 8 x 16 test pairs of each network are the only new entries
    assert cache.computed_pairs_ == train_pairs + 8 * 16
    if classifier:
        np.testing.assert_array_equal(short.predict(X[16:]), labels)
        got = short.decision_function(X[16:])
    else:
        got = short.predict(X[16:], return_std=True)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    assert cache.computed_pairs_ == train_pairs + 2 * 8 * 16
    short.set_params(cache=None).predict(X[16:])
    assert cache.computed_pairs_ == train_pairs + 2 * 8 * 16
    # fitting the truncated model fits the depth-d network (same model to rounding)
    refit = clone(short).set_params(cache=None).fit(X[:16], y[:16])
    np.testing.assert_allclose(refit.dual_coef_, full.dual_coef_, rtol=1e-8, atol=1e-10)


def test_truncated_search_refit_comes_from_the_cache(images):
    # a depth search refits its best model from the cached Gram; truncated()
    # then predicts with the depth-d network without recomputing that Gram
    X, y = images
    cache = KernelCache()
    search = GridSearchCV(
        CNTKClassifier(max_depth=4, gap=False, cache=cache, dtype="float32"),
        {"depth": [2, 3, 4], "alpha": [1e-3, 1e-1]}, cv=KFold(3),
    ).fit(X[:18], y[:18])
    assert cache.computed_pairs_ == 18 * 17 // 2  # the refit on all 18 images included
    best = search.best_estimator_
    short = best.truncated()
    assert cache.computed_pairs_ == 18 * 17 // 2  # nothing computed to truncate
    assert short.max_depth is None and short.depth == search.best_params_["depth"] == 3
    best.set_params(cache=None)
    short.set_params(cache=None)
    np.testing.assert_array_equal(short.predict(X[18:]), best.predict(X[18:]))
    np.testing.assert_allclose(short.decision_function(X[18:]), best.decision_function(X[18:]),
                               rtol=1e-5, atol=1e-6)
    assert cache.computed_pairs_ == 18 * 17 // 2


def test_truncated_refuses_unfitted_and_explicit_architecture(images):
    from sklearn.exceptions import NotFittedError

    X, y = images
    with pytest.raises(NotFittedError):
        CNTKClassifier(depth=2, max_depth=3).truncated()
    est = CNTKClassifier(architecture=small_arch(), cache=None).fit(X[:8], y[:8])
    with pytest.raises(ValueError, match="explicit architecture"):
        est.truncated()
    # without max_depth it is the same network
    plain = CNTKClassifier(depth=2, cache=None).fit(X[:8], y[:8])
    np.testing.assert_array_equal(plain.truncated().predict(X[8:12]), plain.predict(X[8:12]))


def test_cache_is_shared_by_clone_and_keyed_by_content(images):
    X, y = images
    cache = KernelCache()
    est = CNTKClassifier(depth=2, cache=cache)
    assert clone(est).cache is cache
    est.fit(X[:10], y[:10])
    first = cache.computed_pairs_
    assert first == 45
    # the same images in another order and as a copy: nothing new to compute
    perm = np.random.default_rng(1).permutation(10)
    clone(est).fit(X[:10][perm].copy(), y[:10][perm])
    assert cache.computed_pairs_ == first
    # a changed image is a new image
    X2 = X[:10].copy()
    X2[0, 0, 0, 0] += 1e-9
    clone(est).fit(X2, y[:10])
    assert cache.computed_pairs_ == first + 9
    # different dtype: a different store
    clone(est).set_params(dtype="float32").fit(X[:10], y[:10])
    assert cache.computed_pairs_ == first + 9 + 45
    cache.clear()
    assert cache.nbytes == 0


def test_cache_budget_bypass_warns_and_is_correct(images):
    X, _ = images
    tiny = KernelCache(max_bytes=1000)
    ck = ConvKernel(small_arch(), cache=tiny)
    with pytest.warns(RuntimeWarning, match="do not fit"):
        K = ck.fit_transform(X[:8])
    np.testing.assert_allclose(K, conv_kernel(X[:8], architecture=small_arch()), rtol=1e-13)


def test_conv_kernel_writes_into_out_and_memmap(images, tmp_path):
    X, _ = images
    arch = small_arch()
    ref = conv_kernel(X[:7], architecture=arch)
    buf = np.full((7, 7), np.nan)
    res = conv_kernel(X[:7], architecture=arch, out=buf, tile_size=3)
    assert res is buf
    np.testing.assert_array_equal(buf, ref)
    path = tmp_path / "gram.npy"
    mm = conv_kernel(X[:7], X[7:10], architecture=arch, out=path)
    np.testing.assert_array_equal(np.load(path), conv_kernel(X[:7], X[7:10], architecture=arch))
    assert isinstance(mm, np.memmap)
    tapped = cntk_architecture(2, max_depth=3)[0]
    assert conv_kernel(X[:4], architecture=tapped, kind="ntk", out=tmp_path / "t.npy").shape == (3, 4, 4)
    with pytest.raises(ValueError, match="needs shape"):
        conv_kernel(X[:7], architecture=arch, out=np.empty((7, 6)))
    with pytest.raises(ValueError, match="needs shape"):
        conv_kernel(X[:7], architecture=arch, out=np.empty((7, 7), dtype=np.float32))


def test_cache_save_and_load_resume_without_recomputing(images, tmp_path):
    X, y = images
    cache = KernelCache()
    est = CNTKClassifier(depth=2, max_depth=3, cache=cache).fit(X[:16], y[:16])
    pred = est.predict(X[16:])
    path = tmp_path / "cache.npz"
    cache.save(path)
    loaded = KernelCache.load(path)
    assert loaded.nbytes > 0
    est2 = clone(est).set_params(cache=loaded, depth=3).fit(X[:16], y[:16])
    assert loaded.computed_pairs_ == 0  # every training pair came from the file
    est2.set_params(depth=2)
    np.testing.assert_array_equal(est2.fit(X[:16], y[:16]).predict(X[16:]), pred)
    assert loaded.computed_pairs_ == 0
    # new images extend the loaded store
    est2.fit(X, y)
    assert loaded.computed_pairs_ == 24 * 23 // 2 - 16 * 15 // 2 - 16 * 8


def test_cache_budget_counts_only_new_images(images):
    X, _ = images
    X = np.concatenate([X, X[:, ::-1]])[:40]  # 40 distinct images
    probe = KernelCache()
    ConvKernel(small_arch(), cache=probe).fit_transform(X)
    budget = probe.nbytes  # exactly one store of capacity 64
    cache = KernelCache(max_bytes=budget)
    ck = ConvKernel(small_arch(), cache=cache)
    ck.fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bypass would warn
        K = ck.transform(X[:30])
    assert cache.computed_pairs_ == 40 * 39 // 2
    np.testing.assert_allclose(K, conv_kernel(X[:30], X, architecture=small_arch()), rtol=1e-13)
