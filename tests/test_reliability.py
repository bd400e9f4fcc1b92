"""Reliability cases: exact coincident points, bad inputs, cache files, small images.

Each test reproduces one case found by adversarial use of the package (a
silent wrong value or an unhelpful error) and checks the fixed behaviour
against definitions (identical inputs, closed forms), not recorded outputs.
"""

import json
import zipfile

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_convkernel import (
    CKNClassifier,
    CKNFeatures,
    CKNRegressor,
    CNNGPClassifier,
    CNNGPRegressor,
    CNTKClassifier,
    CNTKRegressor,
    ConvKernel,
    KernelCache,
    SupervisedCKNClassifier,
    ckn_architecture,
    cnngp_architecture,
    cntk_architecture,
    conv_kernel,
)
from sklearn_convkernel._reference import reference_gram
from sklearn_convkernel.arch import (
    ArcCosKernel,
    ArchitectureError,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    ReLU,
    Sequential,
)


def bias_ntk_arch():
    return Sequential(Conv(3, weight_var=2.0, bias_var=1.0), ReLU(),
                      Conv(3, weight_var=2.0, bias_var=1.0), ReLU(), Flatten(),
                      Dense(bias_var=1.0))


# ---------------------------------------------------------------------------
# coincident points: identical images give identical entries
# ---------------------------------------------------------------------------

def _identical_pairs_rel_spread(K, groups):
    """Largest relative spread of the entries that must be equal (identical images)."""
    worst = 0.0
    for g in groups:
        block = K[np.ix_(g, g)]
        worst = max(worst, float((block.max() - block.min()) / np.abs(block).max()))
    return worst


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_identical_images_give_identical_entries_with_bias(dtype, tol, kind):
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 10, 10, 1)), rng.random((1, 10, 10, 1))
    X = np.concatenate([np.zeros((2, 10, 10, 1)), a, a, a, b, b])
    K = conv_kernel(X, architecture=bias_ntk_arch(), kind=kind, dtype=dtype)
    assert _identical_pairs_rel_spread(K, [[0, 1], [2, 3, 4], [5, 6]]) <= tol


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 1e-6)])
@pytest.mark.parametrize("nonlin", [ReLU(), ArcCosKernel(1)])
def test_identical_images_identical_entries_deep_gap(dtype, tol, nonlin):
    arch = Sequential(*[Conv(3, weight_var=2.0, bias_var=0.5), nonlin] * 3, GlobalAvgPool(),
                      Dense(bias_var=0.3))
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1, 7, 6, 2))
    X = np.concatenate([a, a, 3.0 * a, rng.random((1, 7, 6, 2))])
    K = conv_kernel(X, architecture=arch, kind="ntk", dtype=dtype)
    assert _identical_pairs_rel_spread(K, [[0, 1]]) <= tol


def test_reference_identical_images_give_identical_entries():
    X = np.zeros((2, 6, 6, 1))
    X[:, 2, 3, 0] = 0.7
    K = reference_gram(X, architecture=bias_ntk_arch(), kind="ntk")
    assert abs(K[0, 0] - K[0, 1]) <= 1e-13 * abs(K[0, 0])


def test_distinct_nearby_images_still_differ():
    """Snapping rho to 1 only absorbs rounding: images differing in the 6th digit differ."""
    rng = np.random.default_rng(2)
    a = rng.random((1, 8, 8, 1))
    X = np.concatenate([a, a * (1 + 1e-6 * rng.standard_normal(a.shape))])
    arch = bias_ntk_arch()
    K = conv_kernel(X, architecture=arch, kind="ntk")
    R = reference_gram(X, architecture=arch, kind="ntk")
    np.testing.assert_allclose(K, R, rtol=1e-9)
    assert K[0, 0] != K[0, 1]


# ---------------------------------------------------------------------------
# architectures and presets
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [cntk_architecture, cnngp_architecture, ckn_architecture])
@pytest.mark.parametrize("depth", [0, -3, 1.5, True])
def test_presets_refuse_nonpositive_depths(factory, depth):
    with pytest.raises(ValueError, match="depth must be an int >= 1"):
        factory(depth)


@pytest.mark.parametrize("kw", [{"stride": 2**70}, {"dilation": 2**31}, {"size": 2**40}])
def test_huge_conv_parameters_are_clear_errors(kw):
    name = next(iter(kw))
    args = {"size": 3, **kw}
    with pytest.raises(ArchitectureError, match=name):
        arch = Sequential(Conv(args.pop("size"), **args), ReLU(), Flatten(), Dense())
        conv_kernel(np.ones((2, 8, 8, 1)), architecture=arch)


def test_overflow_message_names_the_variances():
    arch = Sequential(Conv(3, weight_var=1e200), ReLU(), Conv(3, weight_var=1e200), ReLU(),
                      Flatten(), Dense())
    with pytest.raises(ValueError, match="weight_var") as exc:
        conv_kernel(np.ones((2, 8, 8, 1)), architecture=arch)
    assert "rescale" in str(exc.value)


# ---------------------------------------------------------------------------
# input validation: one rule everywhere
# ---------------------------------------------------------------------------

ESTIMATORS = [
    lambda: CKNClassifier(subsampling=(1, 1)),
    lambda: CKNRegressor(subsampling=(1, 1)),
    lambda: CNTKClassifier(depth=2),
    lambda: CNTKRegressor(depth=2),
    lambda: CNNGPClassifier(depth=2, kernel_size=3),
    lambda: CNNGPRegressor(depth=2, kernel_size=3),
    lambda: ConvKernel(),
    lambda: CKNFeatures(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,)),
    lambda: SupervisedCKNClassifier(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,), max_iter=1),
]


@pytest.mark.parametrize("make", ESTIMATORS)
@pytest.mark.parametrize("shape,match", [((0, 10, 10, 1), "no images"),
                                         ((2, 8, 8, 0), "at least one pixel and one channel")])
def test_empty_inputs_are_clear_errors_in_every_fit(make, shape, match):
    with pytest.raises(ValueError, match=match):
        make().fit(np.ones(shape), np.arange(shape[0]) % 2)


@pytest.mark.parametrize("shape,match", [((0, 10, 10, 1), "no images"),
                                         ((2, 8, 8, 0), "at least one pixel and one channel")])
def test_empty_inputs_conv_kernel_and_reference(shape, match):
    arch = Sequential(Conv(3), ReLU(), Flatten(), Dense())
    for fn in (conv_kernel, reference_gram):
        with pytest.raises(ValueError, match=match):
            fn(np.ones(shape), architecture=arch)


def test_conv_kernel_2d_input_hint_is_a_reshape():
    arch = Sequential(Conv(3), ReLU(), Flatten(), Dense())
    with pytest.raises(ValueError, match="reshape") as exc:
        conv_kernel(np.ones((3, 64)), architecture=arch)
    assert "image_shape" not in str(exc.value)


def test_object_arrays_one_rule():
    arch = Sequential(Conv(3), ReLU(), Flatten(), Dense())
    rng = np.random.default_rng(0)
    X = rng.random((6, 5, 5, 1))
    Xo = X.astype(object)
    np.testing.assert_array_equal(conv_kernel(Xo, architecture=arch),
                                  conv_kernel(X, architecture=arch))
    np.testing.assert_array_equal(reference_gram(Xo, architecture=arch),
                                  reference_gram(X, architecture=arch))
    est = ConvKernel(architecture=arch, cache=None)
    np.testing.assert_array_equal(est.fit_transform(Xo), conv_kernel(X, architecture=arch))
    bad = Xo.copy()
    bad[0, 0, 0, 0] = "pixel"
    with pytest.raises(ValueError):
        conv_kernel(bad, architecture=arch)
    with pytest.raises(ValueError):
        clone(est).fit(bad)


def test_float32_overflow_is_the_same_error_everywhere():
    X = np.random.default_rng(0).random((4, 6, 6, 1))
    X[0, 0, 0, 0] = 1e200
    arch = Sequential(Conv(3), ReLU(), Flatten(), Dense())
    msg = "beyond the float32 range"
    with pytest.raises(ValueError, match=msg):
        conv_kernel(X, architecture=arch, dtype=np.float32)
    with pytest.raises(ValueError, match=msg):
        ConvKernel(architecture=arch, dtype="float32", cache=None).fit(X)
    with pytest.raises(ValueError, match=msg):
        CKNFeatures(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,), dtype="float32").fit(X)
    X[0, 0, 0, 0] = 1e30  # finite in float32, but its square overflows
    with pytest.raises(ValueError, match="too large|overflow"):
        CKNFeatures(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,), dtype="float32").fit(X)


@pytest.mark.parametrize("scale", [1e170, 1e200])
def test_ckn_features_huge_values_raise_instead_of_nan(scale):
    X = np.random.default_rng(0).random((6, 12, 12, 1)) * scale
    with pytest.raises(ValueError, match="too large|overflow"):
        CKNFeatures(n_filters=(4, 4), subsamplings=(2, 2)).fit_transform(X)


def test_ckn_features_anchors_robust_to_an_outlier_pixel():
    """One 1e8 pixel must not make every normal patch look like background."""
    from sklearn_convkernel._nystrom import sample_patches

    rng = np.random.default_rng(0)
    X = rng.random((40, 10, 10, 1))
    X[7, 4, 4, 0] = 1e8
    P = sample_patches(X, 3, 500, np.random.default_rng(1))
    # only the 9 patches around the outlier can be dominated by it
    assert P.shape[0] == 500
    clean = X.copy()
    clean[7, 4, 4, 0] = 0.5
    feats = {}
    for name, data in (("clean", clean), ("outlier", X)):
        f = CKNFeatures(n_filters=(16,), patch_sizes=(3,), subsamplings=(2,),
                        random_state=0).fit(data)
        feats[name] = f
    test = rng.random((10, 10, 10, 1))
    errs = {}
    for name, f in feats.items():
        F = f.transform(test)
        K = conv_kernel(test, architecture=f.architecture_)
        errs[name] = np.linalg.norm(F @ F.T - K) / np.linalg.norm(K)
    assert errs["outlier"] < 2 * errs["clean"] + 0.02


# ---------------------------------------------------------------------------
# small images: CKNClassifier defaults on 8x8 digits
# ---------------------------------------------------------------------------

def test_ckn_classifier_defaults_run_on_8x8_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:60].reshape(-1, 8, 8, 1) / 16.0
    clf = CKNClassifier().fit(X[:40], y[:40])
    assert clf.subsampling_ == (2, 1)
    assert clf.predict(X[40:]).shape == (20,)
    # flat rows of 64 features are 8x8 images too
    clf2 = CKNClassifier().fit(X[:40].reshape(40, -1), y[:40])
    assert clf2.subsampling_ == (2, 1)


def test_ckn_features_and_supervised_ckn_defaults_run_on_8x8_digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X[:60].reshape(-1, 8, 8, 1) / 16.0
    ckn = CKNFeatures(n_filters=(8, 16), random_state=0).fit(X)
    # the defaults (2, 3) leave an empty second map on 8x8: the second is lowered
    assert ckn.subsamplings_ == (2, 1)
    assert [layer["subsampling"] for layer in ckn.ckn_model_] == [2, 1]
    # adapting is the same as asking for the fitted values
    explicit = CKNFeatures(n_filters=(8, 16), subsamplings=(2, 1), random_state=0).fit(X)
    np.testing.assert_array_equal(ckn.transform(X), explicit.transform(X))
    sup = SupervisedCKNClassifier(n_filters=(4, 8), max_iter=2, random_state=0).fit(X, y[:60])
    assert sup.subsamplings_ == (2, 1)
    assert sup.predict(X[:5]).shape == (5,)


def test_ckn_subsampling_kept_when_it_fits():
    X = np.random.default_rng(0).random((6, 28, 28, 1))
    est = CKNRegressor(cache=None).fit(X, np.arange(6.0))
    assert est.subsampling_ == (2, 5)


# ---------------------------------------------------------------------------
# KernelCache files
# ---------------------------------------------------------------------------

def _filled_cache():
    X = np.random.default_rng(0).random((6, 6, 6, 1))
    cache = KernelCache()
    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())
    est = ConvKernel(architecture=arch, cache=cache).fit(X)
    K = est.transform(X)
    return cache, est, X, K


def test_cache_save_load_exact_path_round_trip(tmp_path):
    cache, est, X, K = _filled_cache()
    path = tmp_path / "x.bin"
    cache.save(path)
    assert path.exists() and not (tmp_path / "x.bin.npz").exists()
    loaded = KernelCache.load(path)
    K2 = clone(est).set_params(cache=loaded).fit(X).transform(X)
    np.testing.assert_array_equal(K, K2)
    assert loaded.computed_pairs_ == 0


def _rewrite(path, out, edit):
    """Copy the .npz at path to out with edit(dict of arrays) applied."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    with open(out, "wb") as f:
        np.savez(f, **arrays)


def _meta(arrays):
    return json.loads(bytes(arrays["meta"]).decode())


def _set_meta(arrays, meta):
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def test_cache_load_refuses_altered_entries(tmp_path):
    cache, est, X, K = _filled_cache()
    path = tmp_path / "c.npz"
    cache.save(path)

    def nan_entry(a):
        a["K0"] = a["K0"].copy()
        a["K0"][0, 0, 1] = np.nan

    def altered_entry(a):
        a["K0"] = a["K0"].copy()
        a["K0"][0, 0, 1] *= 1.01

    def wrong_size(a):
        a["K0"] = a["K0"][:, :-1, :-1].copy()

    for edit, match in ((nan_entry, "checksum|non-finite"), (altered_entry, "checksum"),
                        (wrong_size, "shape")):
        bad = tmp_path / f"{edit.__name__}.npz"
        _rewrite(path, bad, edit)
        with pytest.raises(ValueError, match=match):
            KernelCache.load(bad)


def test_cache_entries_never_reused_for_another_architecture(tmp_path):
    """Metadata naming another architecture (checksum recomputed): load or use refuses."""
    from sklearn_convkernel._cache import _checksum

    cache, est, X, K = _filled_cache()
    path = tmp_path / "c.npz"
    cache.save(path)
    other = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3), ReLU(), Flatten(), Dense())

    def rename(a):
        meta = _meta(a)
        entry = meta["stores"][0]
        entry["key"][0] = repr(other)
        block = {n: a[f"{n}0"] for n in ("X", "tapes", "K", "known", "keys")}
        entry["checksum"] = _checksum(entry, block)
        _set_meta(a, meta)

    bad = tmp_path / "renamed.npz"
    _rewrite(path, bad, rename)
    loaded = KernelCache.load(bad)
    with pytest.raises(ValueError, match="do not match the architecture"):
        ConvKernel(architecture=other, cache=loaded).fit(X).transform(X)


def test_cache_from_another_version_is_not_used(tmp_path):
    cache, est, X, K = _filled_cache()
    path = tmp_path / "c.npz"
    cache.save(path)

    def old_version(a):
        meta = _meta(a)
        meta["version"] = "0.0.1"
        _set_meta(a, meta)

    bad = tmp_path / "old.npz"
    _rewrite(path, bad, old_version)
    with pytest.warns(RuntimeWarning, match="0.0.1"):
        loaded = KernelCache.load(bad)
    assert loaded.nbytes == 0


def test_cache_load_clear_errors_for_foreign_files(tmp_path):
    npy = tmp_path / "plain.npy"
    np.save(npy, np.ones(3))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, a=np.ones(2))
    for p in (npy, text, other_npz):
        with pytest.raises(ValueError, match="not a (file written by )?KernelCache") as exc:
            KernelCache.load(p)
        assert "allow_pickle" not in str(exc.value)
    cache, *_ = _filled_cache()
    good = tmp_path / "c.npz"
    cache.save(good)
    bad_meta = tmp_path / "meta.npz"
    _rewrite(good, bad_meta, lambda a: a.__setitem__(
        "meta", np.frombuffer(b"{not json", dtype=np.uint8)))
    with pytest.raises(ValueError, match="unreadable metadata"):
        KernelCache.load(bad_meta)
    with pytest.raises(FileNotFoundError):
        KernelCache.load(tmp_path / "missing.npz")
    assert zipfile.is_zipfile(good)


def test_finite_networks_follow_the_same_input_rule():
    from sklearn_convkernel.testing import empirical_kernel

    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())
    X = np.random.default_rng(0).random((3, 5, 5))  # (n, H, W): one channel
    K, _ = empirical_kernel(X.astype(object), architecture=arch, width=8, n_networks=2,
                            random_state=0)
    K2, _ = empirical_kernel(X[..., None], architecture=arch, width=8, n_networks=2,
                             random_state=0)
    np.testing.assert_array_equal(K, K2)
    with pytest.raises(ValueError, match="no images"):
        empirical_kernel(np.ones((0, 5, 5, 1)), architecture=arch, width=8, n_networks=2)
