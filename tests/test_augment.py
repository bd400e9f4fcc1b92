"""Flip averaging (augment="hflip" and "hflip_reverse_channels"): oracle, symmetry/PSD, the
equivariance check, reuse."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_convkernel import (
    CNNGPRegressor,
    CNTKClassifier,
    ConvKernel,
    KernelCache,
    PatchFeatures,
    cntk_architecture,
    conv_kernel,
)
from sklearn_convkernel import _abi, _plan
from sklearn_convkernel._augment import AUGMENTS, FlipPlan, check_flip_equivariant
from sklearn_convkernel._gram import compile_architecture, self_passes
from sklearn_convkernel._reference import reference_gram
from sklearn_convkernel.arch import (
    ArchitectureError,
    AvgPool,
    BoxPool,
    Conv,
    Dense,
    Erf,
    ExpKernel,
    Flatten,
    GaussianPool,
    GlobalAvgPool,
    ReLU,
    Sequential,
    ShiftAverage,
    StridedPool,
    Sum,
    Tap,
    Trace,
)

# flip-equivariant architectures on width 7 (diagonal path, pooled full path,
# slab path with GAP, taps + residual branch + circular padding + erf, the
# displacement path of a ShiftAverage read-out)
EQUIVARIANT = {
    "flatten": Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0, bias_var=0.1),
                          ReLU(), Flatten(), Dense()),
    "avgpool": Sequential(Conv(3, weight_var=2.0), ReLU(), AvgPool(2), Conv((2, 3)), ReLU(),
                          Flatten(), Dense()),
    "gap": Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(),
                      GlobalAvgPool(), Dense()),
    "taps": Sequential(Conv(3, weight_var=2.0), ReLU(), Tap(GlobalAvgPool(), Dense()),
                       Sum(Sequential(), Sequential(Conv(3, padding="circular"), Erf())),
                       Conv(3, stride=2), ReLU(), Tap(Flatten()), Flatten(), Dense()),
    "shift": Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(),
                        ShiftAverage(1), Dense()),
}

NEW = "hflip_reverse_channels"


def _images(n, seed, shape=(5, 7, 3)):
    return np.random.default_rng(seed).normal(size=(n,) + shape)


def _flip(X, augment="hflip"):
    """The mirror images of X: width reversed (and channel order, for NEW)."""
    return X[:, :, ::-1] if augment == "hflip" else X[:, :, ::-1, ::-1]


def _oracle(X, Y, arch, kind, augment="hflip"):
    """(ref(X, Y) + ref(X, flip Y)) / 2 on explicitly flipped images."""
    Y_ = X if Y is None else Y
    return 0.5 * (reference_gram(X, Y, architecture=arch, kind=kind)
                  + reference_gram(X, _flip(Y_, augment), architecture=arch, kind=kind))


@pytest.mark.parametrize("augment", AUGMENTS)
@pytest.mark.parametrize("name", sorted(EQUIVARIANT))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_augmented_kernel_matches_oracle_on_flipped_images(name, kind, augment):
    arch = EQUIVARIANT[name]
    X, Y = _images(4, 0), _images(3, 1)
    for dtype, rtol in ((np.float64, 1e-10), (np.float32, 2e-4)):
        K = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype, augment=augment,
                        n_jobs=2)
        np.testing.assert_allclose(K, _oracle(X, None, arch, kind, augment), rtol=rtol,
                                   atol=rtol * np.abs(K).max())
        Kxy = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype, augment=augment)
        np.testing.assert_allclose(Kxy, _oracle(X, Y, arch, kind, augment), rtol=rtol,
                                   atol=rtol * np.abs(Kxy).max())


@pytest.mark.parametrize("name", ["flatten", "shift", "taps"])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
def test_channel_reversing_augment_is_the_average_over_the_mirrored_images(name, kind, dtype,
                                                                           rtol):
    """conv_kernel(A, B, augment=NEW) = (K(A, B) + K(A, B[:, :, ::-1, ::-1])) / 2."""
    arch = EQUIVARIANT[name]
    A, B = _images(5, 20), _images(4, 21)
    args = dict(architecture=arch, kind=kind, dtype=dtype)
    K = conv_kernel(A, B, augment=NEW, **args)
    expected = 0.5 * (conv_kernel(A, B, **args) + conv_kernel(A, B[:, :, ::-1, ::-1], **args))
    np.testing.assert_allclose(K, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    # the symmetric Gram is the cross kernel of X with itself
    G = conv_kernel(A, augment=NEW, **args)
    np.testing.assert_allclose(G, conv_kernel(A, A, augment=NEW, **args), rtol=rtol,
                               atol=rtol * np.abs(G).max())
    # reversing the channels matters: the plain flip gives another kernel
    hflip = conv_kernel(A, B, augment="hflip", **args)
    assert not np.allclose(K, hflip, rtol=1e-3)


@pytest.mark.parametrize("augment", AUGMENTS)
@pytest.mark.parametrize("name", sorted(EQUIVARIANT))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_augmented_gram_is_symmetric_psd_and_flip_invariant(name, kind, dtype, augment):
    arch = EQUIVARIANT[name]
    X = _images(9, 2)
    K = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype, augment=augment,
                    tile_size=2, n_jobs=2)
    K = K if K.ndim == 3 else K[None]
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for G in K:
        np.testing.assert_array_equal(G, G.T)  # upper tiles mirrored
        w = np.linalg.eigvalsh(G.astype(np.float64))
        assert w.min() > -tol * w.max()
    # invariance: mirroring either argument leaves the averaged kernel unchanged
    Y = _images(3, 3)
    base = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype, augment=augment)
    fX, fY = _flip(X, augment), _flip(Y, augment)
    for A, B in ((X, fY), (fX, Y), (fX, fY)):
        np.testing.assert_allclose(
            conv_kernel(A, B, architecture=arch, kind=kind, dtype=dtype, augment=augment),
            base, rtol=tol, atol=tol * np.abs(base).max())
    # the plain kernel is not mirror invariant (else this test would prove nothing)
    plain = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype)
    assert not np.allclose(plain, conv_kernel(X, fY, architecture=arch, kind=kind,
                                              dtype=dtype), rtol=1e-3)


@pytest.mark.parametrize("augment", AUGMENTS)
@pytest.mark.parametrize("name", sorted(EQUIVARIANT))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("spatial", ["auto", "full"])
def test_flipped_tapes_equal_recomputed_self_passes(name, kind, spatial, augment):
    """The reused tapes of the mirrored images are those of a real self pass on them
    (for NEW: the channel sum of the input layer is order-free, to rounding)."""
    arch = EQUIVARIANT[name]
    X = _images(5, 4)
    for dtype in (np.float64, np.float32):
        Xf = np.ascontiguousarray(X.reshape(5, -1), dtype=dtype)
        prog, plan = compile_architecture(arch, X.shape[1:], kind, spatial)
        flip = FlipPlan(plan, arch, augment)
        tx, sx = self_passes(prog, Xf)
        tf, sf = self_passes(prog, flip.images(Xf))
        # the window sums of a flipped image run in reversed order: equal to
        # rounding, not bitwise
        rtol = 1e-14 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(flip.tapes(tx), tf, rtol=rtol)
        np.testing.assert_allclose(sx, sf, rtol=rtol)
        assert not np.allclose(tx, tf, rtol=1e-3)  # the reversal matters


def test_augmented_gram_into_a_memory_map(tmp_path):
    arch = EQUIVARIANT["taps"]
    X = _images(6, 14)
    K = conv_kernel(X, architecture=arch, augment="hflip")
    M = conv_kernel(X, architecture=arch, augment="hflip", out=tmp_path / "k.npy", tile_size=2)
    np.testing.assert_array_equal(np.load(tmp_path / "k.npy"), K)
    assert isinstance(M, np.memmap)


def test_flip_images_reverses_the_width_axis():
    X = _images(2, 5, shape=(3, 4, 3))
    prog, plan = compile_architecture(EQUIVARIANT["flatten"], X.shape[1:])
    Ff = FlipPlan(plan).images(X.reshape(2, -1))
    np.testing.assert_array_equal(Ff.reshape(X.shape), X[:, :, ::-1, :])
    # and the channel order too for NEW
    Fc = FlipPlan(plan, augment=NEW).images(X.reshape(2, -1))
    np.testing.assert_array_equal(Fc.reshape(X.shape), X[:, :, ::-1, ::-1])


# -- the equivariance check ---------------------------------------------------

def _is_flip_equivariant(arch, shape, spatial):
    """Numerically: K(flip x, flip y) = K(x, y) and every stage's self-variances
    (the tapes) of flip x are those of x reversed along the width."""
    X, Y = _images(2, 6, shape), _images(2, 7, shape)
    K = conv_kernel(X, Y, architecture=arch, spatial=spatial)
    Kf = conv_kernel(_flip(X), _flip(Y), architecture=arch, spatial=spatial)
    prog, plan = compile_architecture(arch, shape, "nngp", spatial)
    Xf = X.reshape(2, -1)
    tx, _ = self_passes(prog, Xf)
    tf, _ = self_passes(prog, np.ascontiguousarray(_flip(X).reshape(2, -1)))
    flip_tx = tx.copy()
    for row in plan.ops:
        if row[0] == _abi.OP_NONLIN:  # two H x W maps at the tape offset (abi.hpp)
            h, w, off = row[1], row[2], row[9]
            flip_tx[:, off:off + 2 * h * w] = (
                tx[:, off:off + 2 * h * w].reshape(2, 2, h, w)[..., ::-1].reshape(2, -1))
    return (np.allclose(K, Kf, rtol=1e-9, atol=0)
            and np.allclose(flip_tx, tf, rtol=1e-9, atol=1e-300))


CANDIDATES = [
    (Conv((1, size), stride=(1, stride), dilation=(1, dil), padding=pad), width)
    for size in (1, 2, 3, 4)
    for stride in (1, 2, 3)
    for dil in (1, 2)
    for pad in ("same", "valid", "circular", ((0, 0), (1, 0)), ((0, 0), (1, 1)))
    for width in (6, 7)
] + [
    (pool, width)
    for pool in (AvgPool(2), AvgPool(3, stride=2), AvgPool(2, stride=2), GaussianPool(2),
                 BoxPool(2), BoxPool(3, poolfactor=3), StridedPool(2), StridedPool(3),
                 GlobalAvgPool())
    for width in (6, 7, 9)
]


@pytest.mark.parametrize("spatial", ["auto", "full"])
def test_equivariance_check_agrees_with_the_computed_kernel(spatial):
    """check_flip_equivariant passes exactly when every stage is equivariant numerically."""
    seen = set()
    for layer, width in CANDIDATES:
        try:
            # a nonlinearity right after the layer records its output's variances
            arch = Sequential(Conv(1), ReLU(), layer, Conv(1, padding="valid"), ReLU(),
                              Flatten(), Dense())
            plan = _plan.make_plan(arch, (2, width, 1), spatial=spatial)
        except ArchitectureError:
            continue  # does not fit this width
        try:
            check_flip_equivariant(plan, arch)
            passes = True
        except ArchitectureError:
            passes = False
        assert passes == _is_flip_equivariant(arch, (2, width, 1), spatial), (layer, width)
        seen.add(passes)
    assert seen == {True, False}


@pytest.mark.parametrize(
    "arch, width, match",
    [
        (Sequential(Conv(2), ReLU(), Flatten()), None,
         r"Conv\(size=\(2, 2\).*pads 0 left / 1 right.*use an odd window"),
        (Sequential(Conv(3), ReLU(), Conv(3, stride=2), ReLU(), Flatten()), 8,
         r"Conv\(size=\(3, 3\), stride=\(2, 2\).*pads 0 left / 1 right.*stride 2"),
        (Sequential(Conv(3, padding="valid", stride=2), ReLU(), Flatten()), 8,
         r"leaves the last 1 column\(s\) unused"),
        (Sequential(Conv(3), ExpKernel(), GaussianPool(2), Trace()), 8,
         r"GaussianPool\(subsampling=2.*not mirror-symmetric.*columns 0\.\.4, the last "
         r"reads 4\.\.7 \(mirrored: 0\.\.3\)"),
    ],
)
def test_non_equivariant_architectures_raise_naming_the_layer(arch, width, match):
    X = _images(2, 8, (4, width or 8, 1))
    with pytest.raises(ArchitectureError, match=match):
        conv_kernel(X, architecture=arch, augment="hflip")
    with pytest.raises(ArchitectureError, match=match):
        ConvKernel(arch, augment="hflip").fit(X)
    with pytest.raises(ArchitectureError, match=match):
        CNNGPRegressor(architecture=arch, augment="hflip").fit(X, [0.0, 1.0])
    with pytest.raises(ArchitectureError, match="augment='hflip_reverse_channels' needs"):
        conv_kernel(X, architecture=arch, augment=NEW)
    if width is not None:  # the same layers on an odd width are fine
        conv_kernel(_images(2, 8, (4, width - 1, 1)), architecture=arch, augment="hflip")


def test_unknown_op_codes_are_not_trusted():
    plan = _plan.make_plan(EQUIVARIANT["flatten"], (5, 7, 1))
    plan.ops = plan.ops.copy()
    plan.ops[2, 0] = 99
    with pytest.raises(ArchitectureError, match="op code 99 is not checked.*_augment.py"):
        check_flip_equivariant(plan)


def test_bad_augment_values():
    X = _images(2, 9)
    with pytest.raises(ValueError, match="augment must be None .* or one of 'hflip' .*; "
                                         "'hflip_reverse_channels' .*; got 'vflip'"):
        conv_kernel(X, architecture=EQUIVARIANT["flatten"], augment="vflip")
    with pytest.raises(ValueError, match="augment"):
        ConvKernel(augment=True).fit(X)
    with pytest.raises(ValueError, match="augment"):
        ConvKernel(augment="hflip_channels").fit(X)
    with pytest.raises(ValueError, match="needs an augment value"):
        FlipPlan(_plan.make_plan(EQUIVARIANT["flatten"], (5, 7, 3)), augment=None)


# -- estimators, cache and search -----------------------------------------------

def test_transformer_and_estimators_use_the_augmented_kernel():
    arch = EQUIVARIANT["gap"]
    X, Y = _images(40, 10), _images(5, 11)
    Kref = conv_kernel(X, architecture=arch, augment="hflip")
    Kxy = conv_kernel(Y, X, architecture=arch, augment="hflip")
    for cache in (None, KernelCache()):
        ck = ConvKernel(arch, augment="hflip", cache=cache)
        K = ck.fit_transform(X)
        np.testing.assert_array_equal(K, K.T)
        np.testing.assert_allclose(K, Kref, rtol=1e-12)
        np.testing.assert_allclose(ck.transform(Y), Kxy, rtol=1e-12)
        np.testing.assert_allclose(ck.self_kernel(X), np.diag(Kref), rtol=1e-12)
    # the GP regressor's variance uses the flip-averaged prior variance too
    y = np.sin(X.sum(axis=(1, 2, 3)))
    gp = CNNGPRegressor(architecture=arch, augment="hflip", alpha=1e-2, cache=None).fit(X, y)
    mean, std = gp.predict(Y, return_std=True)
    reg = 1e-2 * np.mean(np.diag(Kref))
    sol = np.linalg.solve(Kref + reg * np.eye(40), np.c_[y, Kxy.T])
    np.testing.assert_allclose(mean, Kxy @ sol[:, 0], rtol=1e-8)
    kyy = np.diag(conv_kernel(Y, architecture=arch, augment="hflip"))
    np.testing.assert_allclose(std ** 2, kyy - np.sum(Kxy * sol[:, 1:].T, axis=1), rtol=1e-7)


def test_cache_requests_each_flipped_pair_about_once_and_reuses_the_plain_entries():
    arch = EQUIVARIANT["flatten"]
    n = 40
    X = _images(n, 12)
    cache = KernelCache()
    ConvKernel(arch, cache=cache).fit_transform(X)
    plain = cache.computed_pairs_
    assert plain == n * (n - 1) // 2
    ConvKernel(arch, cache=cache, augment="hflip").fit_transform(X)
    flip_pairs = cache.computed_pairs_ - plain
    # rows in hash-ordered groups of 16: the upper triangle with the diagonal,
    # plus the lower half of each group's own block
    assert flip_pairs == n * (n + 1) // 2 + 2 * (16 * 15 // 2) + 8 * 7 // 2
    # a subset (a CV fold) only needs pairs within its own groups, in the other order
    before = cache.computed_pairs_
    ConvKernel(arch, cache=cache, augment="hflip").fit_transform(X[5:30])
    assert cache.computed_pairs_ - before <= 16 * 15 // 2 + 9 * 8 // 2
    # its cross-kernel against the rest (the plain part is known): only pairs in
    # the hash range of their row group (at most 16 per row) can be new
    before = cache.computed_pairs_
    ConvKernel(arch, cache=cache, augment="hflip").fit(X[5:30]).transform(X[30:])
    assert cache.computed_pairs_ - before <= 10 * 16
    before = cache.computed_pairs_
    ConvKernel(arch, cache=cache, augment="hflip").fit(X[5:30]).transform(X[30:])
    assert cache.computed_pairs_ == before


def test_a_cache_shared_by_both_mirrors_gives_each_its_own_kernel():
    """Cache entries are kernels of image pairs: the flipped and the channel-reversed
    mirror images are different images, so one augment never reads the other's pairs."""
    arch = EQUIVARIANT["flatten"]
    X, Y = _images(12, 15), _images(5, 16)
    expected = {a: (conv_kernel(X, architecture=arch, augment=a),
                    conv_kernel(Y, X, architecture=arch, augment=a)) for a in AUGMENTS}
    assert not np.allclose(*(K for K, _ in expected.values()), rtol=1e-3)
    for order in (AUGMENTS, AUGMENTS[::-1]):
        cache = KernelCache()
        plain = ConvKernel(arch, cache=cache).fit_transform(X)
        for augment in order:
            before = cache.computed_pairs_
            ck = ConvKernel(arch, cache=cache, augment=augment)
            np.testing.assert_allclose(ck.fit_transform(X), expected[augment][0], rtol=1e-12)
            np.testing.assert_allclose(ck.transform(Y), expected[augment][1], rtol=1e-12)
            # the mirrored pairs of this augment are new entries (about half a block)
            assert cache.computed_pairs_ - before >= 12 * 13 // 2
        np.testing.assert_array_equal(ConvKernel(arch, cache=cache).fit_transform(X), plain)


def test_grid_search_over_augment_shares_entries():
    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())
    rng = np.random.default_rng(13)
    X = rng.normal(size=(36, 5, 7, 1))
    y = (X[:, :, :3].sum(axis=(1, 2, 3)) > X[:, :, 4:].sum(axis=(1, 2, 3))).astype(int)
    cv = KFold(3)

    def search(cache, augment):
        grid = {"augment": augment, "alpha": [1e-3, 1e-1]}
        return GridSearchCV(CNTKClassifier(architecture=arch, cache=cache), grid, cv=cv).fit(X, y)

    n = len(X)
    warm = KernelCache()
    search(warm, [None])
    assert warm.computed_pairs_ == n * (n - 1) // 2
    search(warm, ["hflip"])
    flip_only = warm.computed_pairs_ - n * (n - 1) // 2
    # the augmented search reused every plain entry: alone it computes them too
    fresh = KernelCache()
    search(fresh, ["hflip"])
    assert fresh.computed_pairs_ == n * (n - 1) // 2 + flip_only
    # each flipped pair about once (the upper triangle, at most 16 more per image)
    assert flip_only <= n * (n + 1) // 2 + n * 16
    cold = KernelCache()
    both = search(cold, [None, "hflip"])
    assert cold.computed_pairs_ <= n * (n - 1) // 2 + n * (n + 1) // 2 + n * 16
    done = cold.computed_pairs_
    search(cold, [None, "hflip"])
    assert cold.computed_pairs_ == done
    assert set(both.cv_results_["param_augment"]) == {None, "hflip"}
    # scores equal those of uncached estimators
    for params, score in zip(both.cv_results_["params"], both.cv_results_["mean_test_score"]):
        est = CNTKClassifier(architecture=arch, cache=None, **params)
        scores = [est.fit(X[tr], y[tr]).score(X[te], y[te]) for tr, te in cv.split(X)]
        assert score == pytest.approx(np.mean(scores))


# -- behind PatchFeatures(flip_equivariant=True) ----------------------------------

# the benchmark's read-out (a 3x3 CNTK with ShiftAverage(1)) and the flatten CNTK
PATCH_ARCHS = {"shift": cntk_architecture(depth=3, gap=False, max_shift=1)[0],
               "flatten": cntk_architecture(depth=3, gap=False)[0]}


def _pixels(n, seed, shape=(7, 8, 2)):
    """Generic images with correlated neighbours (something for the patch layer)."""
    X = np.random.default_rng(seed).random((n,) + shape)
    return X + 0.5 * np.roll(X, 1, axis=2) + 0.3 * np.roll(X, 1, axis=1)


def _patch_layer(X):
    return PatchFeatures(n_filters=6, patch_size=3, flip_equivariant=True, n_patches=2000,
                         random_state=0).fit(X)


@pytest.mark.parametrize("name", sorted(PATCH_ARCHS))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_channel_reversing_augment_on_patch_features_averages_over_image_flips(name, kind,
                                                                              dtype, rtol):
    """With F = PatchFeatures(flip_equivariant=True): augment=NEW on F(X), F(Y) is
    (K(F X, F Y) + K(F X, F(flip Y))) / 2, flip averaging of the images behind F."""
    X, Y = _pixels(10, 30), _pixels(4, 31)
    F = _patch_layer(X)
    FX, FY = F.transform(X), F.transform(Y)
    args = dict(architecture=PATCH_ARCHS[name], kind=kind, dtype=dtype)
    K = conv_kernel(FX, FY, augment=NEW, **args)
    expected = 0.5 * (conv_kernel(FX, FY, **args)
                      + conv_kernel(FX, F.transform(Y[:, :, ::-1]), **args))
    np.testing.assert_allclose(K, expected, rtol=rtol, atol=rtol * np.abs(expected).max())
    # the symmetric Gram: the same identity, the cross version, symmetric and PSD
    G = conv_kernel(FX, augment=NEW, **args)
    G_expected = 0.5 * (conv_kernel(FX, **args)
                        + conv_kernel(FX, F.transform(X[:, :, ::-1]), **args))
    np.testing.assert_allclose(G, G_expected, rtol=rtol, atol=rtol * np.abs(G).max())
    np.testing.assert_allclose(G, conv_kernel(FX, FX, augment=NEW, **args), rtol=rtol,
                               atol=rtol * np.abs(G).max())
    np.testing.assert_array_equal(G, G.T)
    w = np.linalg.eigvalsh(G.astype(np.float64))
    assert w.min() > -10 * rtol * w.max()
    # "hflip" on the patch features is no flip of the images behind them
    hflip = conv_kernel(FX, FY, augment="hflip", **args)
    assert not np.allclose(hflip, expected, rtol=1e-3)


def test_pipeline_with_flip_equivariant_patch_features_and_a_search_over_augment():
    X = _pixels(30, 32, shape=(7, 8, 1))
    y = (X[:, :, :3].sum(axis=(1, 2, 3)) > X[:, :, 5:].sum(axis=(1, 2, 3))).astype(int)
    X_test = _pixels(6, 33, shape=(7, 8, 1))
    pipe = make_pipeline(
        PatchFeatures(n_filters=4, patch_size=3, flip_equivariant=True, n_patches=1000,
                      random_state=0),
        CNTKClassifier(depth=2, gap=False, max_shift=1, cache=KernelCache()))
    search = GridSearchCV(pipe, {"cntkclassifier__augment": [None, "hflip", NEW]},
                          cv=KFold(3)).fit(X, y)
    assert list(search.cv_results_["param_cntkclassifier__augment"]) == [None, "hflip", NEW]
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    # with NEW the fitted model does not see flips of the test images (its kernel is
    # invariant to mirroring either argument); with "hflip" on the features it does
    model = pipe.set_params(cntkclassifier__augment=NEW).fit(X, y)
    assert model.predict(X_test).shape == (6,)
    d = model.decision_function(X_test)
    np.testing.assert_allclose(model.decision_function(X_test[:, :, ::-1]), d, rtol=1e-9,
                               atol=1e-9 * np.abs(d).max())
    plain = pipe.set_params(cntkclassifier__augment="hflip").fit(X, y)
    d = plain.decision_function(X_test)
    assert not np.allclose(plain.decision_function(X_test[:, :, ::-1]), d, rtol=1e-3)


@parametrize_with_checks(
    [CNTKClassifier(depth=2, augment="hflip", image_shape=(1, -1), cache=None),
     ConvKernel(kind="ntk", augment="hflip", image_shape=(1, -1), cache=None)])
def test_sklearn_compatible_with_augment(estimator, check):
    check(estimator)
