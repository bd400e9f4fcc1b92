"""The compiled engine (``conv_kernel``) against the slow reference oracle.

Every layer type and option, NNGP and NTK, signed and non-negative inputs,
1 and 3 channels, non-square images, X != Y and Y = None.  The oracle
(``sklearn_convkernel._reference``) is itself tested in test_reference.py.
"""

import numpy as np
import pytest

from sklearn_convkernel import conv_kernel
from sklearn_convkernel._reference import reference_gram
from sklearn_convkernel.arch import (
    ArcCosKernel,
    AvgPool,
    BoxPool,
    Conv,
    Dense,
    Erf,
    ExpKernel,
    Flatten,
    GaussianPool,
    GlobalAvgPool,
    Identity,
    LinearKernel,
    PolyKernel,
    ReLU,
    Sequential,
    ShiftAverage,
    StridedPool,
    Sum,
    Tap,
    Trace,
)

# Architectures that fit both 7x5 and 6x9 images.  ``pools`` marks the ones
# with position-mixing layers (the others admit the diagonal-only path).
S = Sequential
ARCHS = {
    # --- convolutions: paddings, sizes, strides, dilation ----------------
    "conv3-same": S(Conv(3, weight_var=2, bias_var=0.1), ReLU(), Flatten(),
                    Dense(bias_var=0.05)),
    "conv-even-same": S(Conv(2, weight_var=2), ReLU(), Conv(4, weight_var=2, bias_var=0.2),
                        ReLU(), Flatten(), Dense()),
    "conv-valid": S(Conv(3, padding="valid", weight_var=2, bias_var=0.2), ReLU(),
                    Conv(2, padding="valid"), Flatten()),
    "conv-int-pad": S(Conv(3, padding=2, weight_var=2), ReLU(), Conv((2, 3), padding=1),
                      ReLU(), Flatten()),
    "conv-explicit-pad": S(Conv(2, padding=((1, 0), (0, 1)), weight_var=2), ReLU(),
                           Conv(3, padding=((2, 0), (0, 2)), weight_var=2), ReLU(), Flatten(),
                           Dense()),
    "conv-rect": S(Conv((3, 1), weight_var=2), ReLU(), Conv((1, 4), bias_var=0.3), ReLU(),
                   Trace()),
    "stride": S(Conv(3, stride=2, weight_var=2, bias_var=0.1), ReLU(),
                Conv(2, stride=(1, 2)), ReLU(), Flatten(), Dense()),
    "stride-valid": S(Conv(3, stride=(2, 1), padding="valid", weight_var=2), ReLU(),
                      Conv(2, stride=2, padding=1), Flatten()),
    "dilation": S(Conv(3, dilation=2, weight_var=2), ReLU(),
                  Conv(2, dilation=(1, 2), padding="valid", bias_var=0.1), ReLU(), Flatten()),
    "dilation-stride": S(Conv(2, dilation=2, stride=2, weight_var=2), ReLU(), Flatten(), Dense()),
    "circular-diag": S(Conv(3, padding="circular", weight_var=2, bias_var=0.1), ReLU(),
                       Conv(2, padding="circular"), ReLU(), Flatten()),
    "circular-gap": S(Conv(3, padding="circular", weight_var=2), ReLU(),
                      Conv(4, padding="circular", stride=2), ReLU(), GlobalAvgPool(), Dense()),
    "circular-big": S(Conv(7, padding="circular", weight_var=2), ReLU(), Flatten()),
    "untrained": S(Conv(3, weight_var=2, trainable=False), ReLU(), Conv(3, weight_var=2),
                   ReLU(), Conv(1, trainable=False), Flatten(), Dense(trainable=False)),
    "dense-on-map": S(Conv(3), ReLU(), Dense(weight_var=2, bias_var=0.1), ReLU(), Flatten()),
    "linear": S(Conv(3, bias_var=0.2), Conv(2, stride=2), Flatten(), Dense()),
    "deep": S(*[layer for _ in range(4) for layer in (Conv(3, weight_var=2, bias_var=0.05),
                                                     ReLU())], Flatten(), Dense()),
    # --- nonlinearities ---------------------------------------------------
    "erf": S(Conv(3, weight_var=3, bias_var=0.2), Erf(), Conv(3, weight_var=2), Erf(),
             Flatten(), Dense()),
    "exp": S(Conv(3, weight_var=9), ExpKernel(0.6), Conv(2, weight_var=4), ExpKernel(1.2),
             Trace(), input_norm="sum"),
    "arccos1": S(Conv(3), ArcCosKernel(1), Conv(3), ArcCosKernel(1), Flatten()),
    "arccos0": S(Conv(3), ArcCosKernel(0), Conv(3), ArcCosKernel(1), Flatten()),
    "poly": S(Conv(3, bias_var=0.5), PolyKernel(2), Conv(1), PolyKernel(3), Conv(2),
              LinearKernel(), Flatten()),
    # --- pools ------------------------------------------------------------
    "avgpool": S(Conv(3, weight_var=2), ReLU(), AvgPool(2), Conv(3, bias_var=0.1), ReLU(),
                 GlobalAvgPool(), Dense()),
    "avgpool-same-stride": S(Conv(3, weight_var=2), ReLU(), AvgPool(3, stride=2, padding="same"),
                             Conv(2), ReLU(), Flatten(), Dense()),
    "avgpool-padding": S(Conv(3, weight_var=2), ReLU(), AvgPool((2, 3), padding=1), Conv(1),
                         ReLU(), AvgPool(2, padding=((1, 0), (0, 1))), Flatten()),
    "avgpool-circular": S(Conv(2, weight_var=2), Erf(), AvgPool(3, padding="circular"),
                          Conv(3), ReLU(), Trace()),
    "gaussianpool": S(Conv(3, weight_var=9), ExpKernel(0.6), GaussianPool(2),
                      Conv(2, weight_var=4, padding=((1, 0), (1, 0))), ArcCosKernel(1), Trace(),
                      input_norm="sum"),
    "gaussianpool-factor": S(Conv(3, weight_var=2), ReLU(), GaussianPool(1, poolfactor=2),
                             Conv(3), ReLU(), GaussianPool(1), Flatten(), Dense()),
    "boxpool": S(Conv(3, weight_var=2), ReLU(), BoxPool(2), Conv(2), ReLU(),
                 BoxPool(1, poolfactor=2), Trace()),
    "boxpool-factor": S(Conv(3, weight_var=9), ArcCosKernel(1), BoxPool(2, poolfactor=3),
                        Conv(2, weight_var=4), ArcCosKernel(1), Trace(), input_norm="sum"),
    "stridedpool": S(Conv(3, weight_var=2), ReLU(), StridedPool(2), Conv(1), ReLU(),
                     Flatten(), Dense()),
    "stridedpool-1": S(Conv(3, weight_var=2), ReLU(), StridedPool(1), Conv(3), ReLU(),
                       GlobalAvgPool()),
    # --- readouts ---------------------------------------------------------
    "gap-dense-relu-dense": S(Conv(3, weight_var=2), ReLU(), GlobalAvgPool(),
                              Dense(weight_var=2, bias_var=0.1), ReLU(), Dense(bias_var=0.2)),
    "flatten-dense-erf-dense": S(Conv(3, weight_var=2), ReLU(), Flatten(), Dense(weight_var=2),
                                 Erf(), Dense()),
    "trace-sum": S(Conv(3, weight_var=9), ReLU(), Conv(3, weight_var=9), ReLU(), Trace(),
                   input_norm="sum"),
    "gap-linear": S(Conv(3, weight_var=2), GlobalAvgPool(), Dense()),
    # --- residual sums ----------------------------------------------------
    "residual": S(Conv(3), Sum(Identity(), S(ReLU(), Conv(3, weight_var=2))), ReLU(),
                  Flatten(), Dense()),
    "sum-after-relu": S(Conv(3, weight_var=2), ReLU(),
                        Sum(Identity(), S(Conv(3, weight_var=2), ReLU(), Conv(1))),
                        GlobalAvgPool(), Dense()),
    "sum-three-branches": S(Conv(3, weight_var=2), ReLU(),
                            Sum(AvgPool(3, padding="same"), S(Conv(3), ReLU()),
                                Conv(1, bias_var=0.2)),
                            Flatten(), Dense()),
    "sum-strided-projection": S(Conv(3), ReLU(),
                                Sum(Conv(1, stride=2), S(Conv(3, stride=2, weight_var=2), ReLU(),
                                                         Conv(3))),
                                ReLU(), Flatten(), Dense()),
    # --- taps ---------------------------------------------------------------
    "taps": S(Conv(3, weight_var=2), ReLU(), Tap(Flatten()), Conv(3, weight_var=2), ReLU(),
              Tap(GlobalAvgPool(), Dense(bias_var=0.1)), AvgPool(2),
              Sum(Identity(), S(Conv(3), ReLU(), Tap(Trace()))), Flatten(), Dense()),
    "taps-diag": S(Conv(3, weight_var=2), ReLU(), Tap(Flatten(), Dense()), Conv(3, weight_var=2),
                   ReLU(), Tap(Conv(2), Erf(), Trace()), Flatten()),
    # --- the slab-major path: same-size stride-1 convs, nonlinearities, 1x1 read-outs ---
    "slab-gap-taps": S(Conv(3, weight_var=2), ReLU(), Tap(GlobalAvgPool(), Dense(bias_var=0.1)),
                       Conv(2, weight_var=2, bias_var=0.2), Erf(),
                       Tap(GlobalAvgPool(), Dense(weight_var=2), ReLU(), Dense()),
                       Conv((3, 1), dilation=2, weight_var=2, trainable=False), ReLU(),
                       GlobalAvgPool(), Dense()),
    "slab-kernels": S(Conv(3, padding=((2, 0), (0, 2)), weight_var=2), ExpKernel(0.8),
                      Conv(3, weight_var=3), ArcCosKernel(1), Conv(1, bias_var=0.3),
                      PolyKernel(2), GlobalAvgPool(), Dense()),
    # --- shift-averaged read-outs (slab path, interpreter, taps, circular, one-sided) ---
    "shift-slab": S(Conv(3, weight_var=2, bias_var=0.1), ReLU(), Conv(3, weight_var=2), ReLU(),
                    ShiftAverage(1), Dense(bias_var=0.1)),
    "shift-slab-taps": S(Conv(3, weight_var=2), ReLU(), Tap(ShiftAverage((2, 1)), Dense()),
                         Conv(2, weight_var=2), Erf(), Tap(GlobalAvgPool()),
                         ShiftAverage(1, one_sided=True), Dense()),
    "shift-circular": S(Conv(3, padding="circular", weight_var=2), ReLU(),
                        Conv(3, padding="circular", weight_var=2, bias_var=0.2), ReLU(),
                        ShiftAverage(2, circular=True), Dense()),
    "shift-after-pool": S(Conv(3, weight_var=2), ReLU(), AvgPool(2), Conv(3), ReLU(),
                          ShiftAverage((1, 3), one_sided=True), Dense(weight_var=2), ReLU(),
                          Dense()),
    "shift-zero": S(Conv(3, weight_var=2), ReLU(), ShiftAverage(0), Dense()),
}

POOLED = {"shift-slab", "shift-slab-taps", "shift-circular", "shift-after-pool","slab-gap-taps", "slab-kernels", "circular-gap", "avgpool", "avgpool-same-stride", "avgpool-padding",
          "avgpool-circular", "gaussianpool", "gaussianpool-factor", "boxpool", "boxpool-factor",
          "stridedpool", "stridedpool-1", "gap-dense-relu-dense", "gap-linear", "sum-after-relu",
          "sum-three-branches", "taps"}
NO_NTK = {"arccos0"}
# With one input channel, a zero-padded border window that covers a single pixel
# gives rho = +-1 exactly in exact arithmetic between *different* images; the
# NTK factor (pi - arccos rho) is sqrt(eps)-conditioned there, so any two
# implementations (and the exact value) differ by ~1e-10..1e-9.
RHO_ONE_WITH_ONE_CHANNEL = {"conv-even-same", "conv-int-pad", "conv-explicit-pad",
                            "dilation-stride"}

# (name, distribution, channels, (H, W)): a pairwise cover of sign x channels x shape
DATA = [
    ("signed-C3-7x5", "normal", 3, (7, 5)),
    ("signed-C1-6x9", "normal", 1, (6, 9)),
    ("nonneg-C1-7x5", "uniform", 1, (7, 5)),
    ("nonneg-C3-6x9", "uniform", 3, (6, 9)),
]


def make_data(dist, C, shape, n, seed):
    rng = np.random.default_rng(seed)
    size = (n, *shape, C)
    return rng.standard_normal(size) if dist == "normal" else rng.uniform(0.0, 1.0, size)


def cases(archs=ARCHS):
    out = []
    for name in archs:
        for kind in ("nngp", "ntk"):
            if kind == "ntk" and name in NO_NTK:
                continue
            out.append(pytest.param(name, kind, id=f"{name}-{kind}"))
    return out


def rel_err(actual, expected):
    """max |a - e| / max |e|, per output (taps) and maximised."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.ndim == 2:
        actual, expected = actual[None], expected[None]
    return max(np.abs(a - e).max() / np.abs(e).max() for a, e in zip(actual, expected))


@pytest.mark.parametrize("data", DATA, ids=lambda d: d[0])
@pytest.mark.parametrize("name, kind", cases())
def test_matches_reference(name, kind, data):
    arch = ARCHS[name]
    _, dist, C, shape = data
    X = make_data(dist, C, shape, 3, seed=1)
    Y = make_data(dist, C, shape, 2, seed=2)
    rtol = 1e-12
    if kind == "ntk" and C == 1 and name in RHO_ONE_WITH_ONE_CHANNEL:
        rtol = 1e-8
    expected = reference_gram(X, Y, architecture=arch, kind=kind)
    got = conv_kernel(X, Y, architecture=arch, kind=kind)
    assert got.dtype == np.float64
    assert got.shape == expected.shape
    assert rel_err(got, expected) <= rtol
    expected = reference_gram(X, architecture=arch, kind=kind)
    got = conv_kernel(X, architecture=arch, kind=kind)
    assert rel_err(got, expected) <= rtol


@pytest.mark.parametrize("name, kind", cases())
def test_auto_equals_full(name, kind):
    arch = ARCHS[name]
    for _, dist, C, shape in DATA[:2]:
        X = make_data(dist, C, shape, 3, seed=3)
        Y = make_data(dist, C, shape, 2, seed=4)
        full = conv_kernel(X, Y, architecture=arch, kind=kind, spatial="full")
        auto = conv_kernel(X, Y, architecture=arch, kind=kind, spatial="auto")
        assert rel_err(auto, full) <= 1e-12


@pytest.mark.parametrize("name, kind", cases())
def test_float32_close_to_float64(name, kind):
    arch = ARCHS[name]
    for _, dist, C, shape in (DATA[0], DATA[3]):
        X = make_data(dist, C, shape, 3, seed=5)
        Y = make_data(dist, C, shape, 2, seed=6)
        K64 = conv_kernel(X, Y, architecture=arch, kind=kind)
        K32 = conv_kernel(X.astype(np.float32), Y.astype(np.float32), architecture=arch,
                          kind=kind, dtype=np.float32)
        assert K32.dtype == np.float32
        assert rel_err(K32, K64) <= 1e-4


@pytest.mark.parametrize("data", [DATA[1], DATA[3]], ids=lambda d: d[0])
@pytest.mark.parametrize("name, kind", cases())
def test_gram_symmetry_and_exact_diagonal(name, kind, data):
    arch = ARCHS[name]
    _, dist, C, shape = data
    X = make_data(dist, C, shape, 4, seed=7)
    G = conv_kernel(X, architecture=arch, kind=kind)
    np.testing.assert_allclose(G, np.swapaxes(G, -1, -2), rtol=1e-14, atol=0)
    diag = np.diagonal(G, axis1=-2, axis2=-1)
    # the reference uses the exact coincident values on the diagonal
    ref = np.diagonal(reference_gram(X, architecture=arch, kind=kind), axis1=-2, axis2=-1)
    np.testing.assert_allclose(diag, ref, rtol=1e-12, atol=0)
    # the generic path on an equal copy agrees to ~sqrt(eps) (arccos near 1)
    G2 = conv_kernel(X, X.copy(), architecture=arch, kind=kind)
    np.testing.assert_allclose(np.diagonal(G2, axis1=-2, axis2=-1), diag, rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", ["taps", "deep", "sum-after-relu"])
def test_threads_and_tiles_do_not_change_the_result(name):
    arch = ARCHS[name]
    X = make_data("normal", 2, (7, 5), 5, seed=8)
    Y = make_data("normal", 2, (7, 5), 3, seed=9)
    for Yarg in (None, Y):
        base = conv_kernel(X, Yarg, architecture=arch, kind="ntk")
        other = conv_kernel(X, Yarg, architecture=arch, kind="ntk", n_jobs=2, tile_size=2)
        np.testing.assert_array_equal(base, other)


def test_output_shapes():
    X = make_data("normal", 2, (7, 5), 3, seed=10)
    Y = make_data("normal", 2, (7, 5), 2, seed=11)
    assert conv_kernel(X, Y, architecture=ARCHS["conv3-same"]).shape == (3, 2)
    assert conv_kernel(X, architecture=ARCHS["conv3-same"]).shape == (3, 3)
    assert conv_kernel(X, Y, architecture=ARCHS["taps"]).shape == (4, 3, 2)
    assert conv_kernel(X, architecture=ARCHS["taps-diag"], kind="ntk").shape == (3, 3, 3)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_bad_shapes():
    arch = ARCHS["conv3-same"]
    X = make_data("normal", 2, (7, 5), 3, seed=12)
    with pytest.raises(ValueError):
        conv_kernel(X.reshape(3, -1), architecture=arch)  # 2-D without an image shape
    with pytest.raises(ValueError, match="channel|shape"):
        conv_kernel(X, X[..., :1], architecture=arch)
    with pytest.raises(ValueError, match="shape"):
        conv_kernel(X, X[:, :6], architecture=arch)


def test_bad_kind():
    X = make_data("normal", 1, (7, 5), 2, seed=13)
    with pytest.raises(ValueError, match="kind"):
        conv_kernel(X, architecture=ARCHS["conv3-same"], kind="foo")


def test_arccos0_has_no_ntk():
    X = make_data("normal", 1, (7, 5), 2, seed=14)
    conv_kernel(X, architecture=ARCHS["arccos0"])
    with pytest.raises(ValueError, match="(?i)ntk"):
        conv_kernel(X, architecture=ARCHS["arccos0"], kind="ntk")


def test_architecture_without_readout_names_the_fix():
    X = make_data("normal", 1, (7, 5), 2, seed=15)
    with pytest.raises(ValueError, match="GlobalAvgPool|Flatten|Trace"):
        conv_kernel(X, architecture=Sequential(Conv(3), ReLU()))
    with pytest.raises(ValueError, match="Conv|Dense"):
        conv_kernel(X, architecture=Sequential(ReLU(), Flatten()))


# Kernels taller/wider than the number of taps the engine sums in registers
# (16), on an image large enough for all of them to be inside it at once.
TALL_KERNELS = {
    "tall-flatten": S(Conv((18, 3), weight_var=2, bias_var=0.1), ReLU(),
                      Conv((2, 17), padding="valid", weight_var=2), ReLU(), Flatten(), Dense()),
    "tall-gap": S(Conv((17, 2), weight_var=2), ReLU(), Conv((3, 18), bias_var=0.2), ReLU(),
                  GlobalAvgPool(), Dense()),
}


@pytest.mark.parametrize("name", sorted(TALL_KERNELS))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_kernels_with_many_taps_match_reference(name, kind):
    X = make_data("uniform", 1, (20, 19), 2, seed=5)
    Y = make_data("normal", 2, (20, 19), 1, seed=6)[..., :1]
    arch = TALL_KERNELS[name]
    expected = reference_gram(X, Y, architecture=arch, kind=kind)
    got = conv_kernel(X, Y, architecture=arch, kind=kind)
    assert rel_err(got, expected) <= 1e-12


# The arc-cosine and square-root approximations of the engine, over the whole
# range of the correlation: one ReLU layer between unit vectors x = (1, 0) and
# y = (rho, sqrt(1 - rho^2)) against the closed forms, as ratios to the
# self-kernel (scale-free).  The NTK factor (pi - arccos rho) is
# sqrt(eps)-conditioned at |rho| -> 1, so its grid stays 1e-6 away from +-1.
def _relu_closed_forms(rho):
    th = np.arccos(rho)
    k1 = (np.sqrt((1 - rho) * (1 + rho)) + (np.pi - th) * rho) / np.pi  # K / K(x, x)
    ntk = (rho * (np.pi - th) + np.sqrt((1 - rho) * (1 + rho)) + (np.pi - th) * rho) / (2 * np.pi)
    return k1, ntk


@pytest.mark.parametrize("dtype, tol", [(np.float64, 2e-15), (np.float32, 4e-7)])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_relu_layer_matches_closed_form_over_all_correlations(dtype, tol, kind):
    edge = 1e-9 if kind == "nngp" else 1e-6
    rho = np.concatenate([
        np.linspace(-1 + edge, 1 - edge, 4001),
        [0.0, 0.5, -0.5, 0.5 + 1e-13, 0.5 - 1e-13, -0.5 + 1e-13, -0.5 - 1e-13,
         1e-300, -1e-300, 1 - edge, -1 + edge, 1 - 10 * edge, -1 + 10 * edge],
    ])
    if dtype == np.float32:  # representable correlations of float32 inputs
        rho = np.unique(rho.astype(np.float32)).astype(np.float64)
    X = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    Y = np.stack([rho, np.sqrt((1 - rho) * (1 + rho))], axis=1).reshape(-1, 1, 1, 2)
    arch = S(Conv(1), ReLU(), Flatten(), Dense())
    K = conv_kernel(X.astype(dtype), Y.astype(dtype), architecture=arch, kind=kind,
                    dtype=dtype)[0].astype(np.float64)
    Kxx = conv_kernel(X.astype(dtype), architecture=arch, kind=kind, dtype=dtype)[0, 0]
    # the correlation the engine sees (y is a unit vector up to rounding)
    y = Y.reshape(-1, 2).astype(dtype).astype(np.float64)
    rho_eff = np.clip(y[:, 0] / np.sqrt((y ** 2).sum(1)), -1, 1)
    k1, ntk = _relu_closed_forms(rho_eff)
    expected = k1 if kind == "nngp" else ntk
    scale = np.sqrt((y ** 2).sum(1))  # |x| |y| with |x| = 1
    err = np.abs(K / float(Kxx) - expected * scale)
    bound = np.full_like(err, tol)
    if kind == "ntk":  # rho known to ~eps: arccos moves by eps / sin(arccos rho)
        bound += 4 * np.finfo(dtype).eps / np.sqrt((1 - rho_eff) * (1 + rho_eff))
    worst = np.argmax(err / bound)
    assert err[worst] <= bound[worst], (err[worst], rho_eff[worst])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 2e-15), (np.float32, 4e-7)])
@pytest.mark.parametrize("sigma", [0.3, 0.65, 1.0])
def test_exp_kernel_layer_matches_closed_form(dtype, tol, sigma):
    rho = np.concatenate([np.linspace(-1, 1, 2001), [0.5 + 1e-13, 1 - 1e-9]])
    X = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    Y = np.stack([rho, np.sqrt((1 - rho) * (1 + rho))], axis=1).reshape(-1, 1, 1, 2)
    arch = S(Conv(1), ExpKernel(sigma), Flatten())
    K = conv_kernel(X.astype(dtype), Y.astype(dtype), architecture=arch,
                    dtype=dtype)[0].astype(np.float64)
    Kxx = float(conv_kernel(X.astype(dtype), architecture=arch, dtype=dtype)[0, 0])
    y = Y.reshape(-1, 2).astype(dtype).astype(np.float64)
    norm = np.sqrt((y ** 2).sum(1))
    expected = norm * np.exp((np.clip(y[:, 0] / norm, -1, 1) - 1) / sigma ** 2)
    # rho is rounded to the dtype: the exponent moves by eps / sigma^2
    bound = tol + 2 * np.finfo(dtype).eps / sigma ** 2 * expected
    err = np.abs(K / Kxx - expected)
    worst = np.argmax(err / bound)
    assert err[worst] <= bound[worst], (err[worst], rho[worst])


@pytest.mark.parametrize("degree", [1, 2, 3, 5, 8, 13])
def test_poly_kernel_layer_matches_closed_form(degree):
    rho = np.linspace(-1, 1, 201)
    X = np.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    Y = np.stack([rho, np.sqrt((1 - rho) * (1 + rho))], axis=1).reshape(-1, 1, 1, 2)
    arch = S(Conv(1), PolyKernel(degree), Flatten())
    for kind in ("nngp", "ntk"):
        K = conv_kernel(X, Y, architecture=arch, kind=kind)[0]
        Kxx = conv_kernel(X, architecture=arch, kind=kind)[0, 0]
        y = Y.reshape(-1, 2)
        r = np.clip(y[:, 0] / np.sqrt((y ** 2).sum(1)), -1, 1)
        # NNGP: |y| rho^d; NTK: Theta_1 kappa'(rho) = (rho) (d rho^(d-1)), relative
        # to its value d at x = y: again rho^d (the Flatten read-out adds no layer)
        expected = r ** degree * np.sqrt((y ** 2).sum(1))
        np.testing.assert_allclose(K / Kxx, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("name", ["conv3-same", "deep", "avgpool", "shift-slab", "slab-gap-taps"])
def test_many_input_channels_match_reference(name, dtype, tol):
    # 19 channels: the diagonal path's input map is a vectorised dot product
    # over channels (8 partial sums and a tail), the full path's an axpy per channel
    X = make_data("normal", 19, (6, 5), 3, 11)
    Y = make_data("uniform", 19, (6, 5), 2, 12)
    for kind in ("nngp", "ntk"):
        expected = reference_gram(X, Y, architecture=ARCHS[name], kind=kind)
        actual = conv_kernel(X, Y, architecture=ARCHS[name], kind=kind, dtype=dtype)
        assert rel_err(actual, expected) <= tol


# The diagonal path's window sums (conv_diag): height taps straight from the
# map's rows into zero-margined padded rows (for 3 or more undilated taps as
# block prefix / suffix sums, groups of k windows from 2k - 1 rows, a zero row
# outside the map), then the width taps as strided sums.  Large windows (all
# rows are border rows, windows wider and taller than the map, output rows
# with no valid tap at all), asymmetric and "valid" paddings (output narrower
# than the input), output heights that are and are not multiples of k (the
# last group overlaps the one before it, or is the only one), dilation (direct
# sums), and convolutions of different geometry in a row (the padded layout
# is rebuilt), in float64 and float32 and every SIMD variant, against the
# oracle.
LARGE_WINDOWS = {
    "same-5-7-9": S(Conv(5, weight_var=2, bias_var=0.1), ReLU(), Conv(7, weight_var=2), ReLU(),
                    Conv(9, weight_var=2, bias_var=0.3), ReLU(), Flatten(), Dense()),
    "wider-than-map": S(Conv((3, 13), weight_var=2), ReLU(), Conv((11, 5), weight_var=2),
                        ReLU(), Flatten()),
    "valid-and-padded": S(Conv((5, 7), padding="valid", weight_var=2), ReLU(),
                          Conv(7, padding=((4, 1), (0, 5)), weight_var=2, bias_var=0.2), ReLU(),
                          Conv((2, 6), padding=3, weight_var=2), ReLU(), Flatten(), Dense()),
    "dilated": S(Conv(5, dilation=2, weight_var=2), ReLU(),
                 Conv((3, 4), dilation=(3, 1), padding="valid", weight_var=2), ReLU(), Flatten()),
    # 13 and 9 taps taller than the 11-row map (Ho < k: one group, spare rows)
    "taller-than-map": S(Conv((13, 3), weight_var=2, bias_var=0.1), ReLU(),
                         Conv((9, 13), padding=((8, 8), (6, 6)), weight_var=2), ReLU(),
                         Flatten(), Dense()),
    # padding beyond the window: output rows whose windows hold no map row
    # (all-zero sums, then only the bias) next to clipped ones
    "rows-without-taps": S(Conv((3, 5), padding=((5, 4), (2, 2)), weight_var=2, bias_var=0.2),
                           ReLU(), Conv((6, 3), padding=((7, 0), (1, 1)), weight_var=2),
                           ReLU(), Flatten(), Dense()),
    # valid / asymmetric 7 and 5 tap windows, output heights 5, 9, 4
    "valid-asymmetric": S(Conv((7, 3), padding="valid", weight_var=2), ReLU(),
                          Conv((5, 5), padding=((6, 2), (3, 1)), weight_var=2, bias_var=0.1),
                          ReLU(), Conv((6, 2), padding="valid", weight_var=2), ReLU(),
                          Flatten(), Dense()),
    # undilated axis next to a dilated one, and a dilated 5-tap axis (direct sums)
    "dilated-large": S(Conv((7, 5), dilation=(1, 2), weight_var=2), ReLU(),
                       Conv((5, 7), dilation=(2, 1), weight_var=2, bias_var=0.1), ReLU(),
                       Flatten()),
}


def _variant_gram(arch, X, Y, kind, dtype, variant):
    """The pair pass of one SIMD variant, shaped as reference_gram's result."""
    from sklearn_convkernel import _core
    from sklearn_convkernel._plan import make_plan

    plan = make_plan(arch, X.shape[1:], kind=kind)
    H, W, C = plan.input_shape
    prog = _core.CompiledProgram(plan.ops, plan.fops, plan.blob_i, plan.blob_f, H, W, C,
                                 plan.tape_len, plan.n_outputs, plan.kind == "ntk",
                                 variant=variant)
    Xf, Yf = (np.ascontiguousarray(A.reshape(len(A), -1), dtype=dtype) for A in (X, Y))
    tapes = []
    for A in (Xf, Yf):
        t = np.empty((len(A), plan.tape_len), dtype=dtype)
        prog.self_pass(A, t, np.empty((len(A), plan.n_outputs), dtype=dtype))
        tapes.append(t)
    out = np.zeros((plan.n_outputs, len(Xf), len(Yf)), dtype=dtype)
    prog.pair_tile(Xf, tapes[0], 0, Yf, tapes[1], 0, out, False)
    return out[0] if plan.n_outputs == 1 else out


def _variants():
    from sklearn_convkernel import _core

    return _core.simd_variants()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("name", sorted(LARGE_WINDOWS))
def test_diagonal_window_sums_of_large_windows_match_reference(name, dtype, tol):
    arch = LARGE_WINDOWS[name]
    X = make_data("uniform", 1, (11, 9), 3, seed=21)
    Y = make_data("normal", 2, (11, 9), 2, seed=22)[..., :1]
    for kind in ("nngp", "ntk"):
        expected = reference_gram(X, Y, architecture=arch, kind=kind)
        got = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype)
        assert rel_err(got, expected) <= tol, (kind, rel_err(got, expected))
        for variant in _variants():
            got = _variant_gram(arch, X, Y, kind, dtype, variant)
            assert rel_err(got, expected) <= tol, (kind, variant, rel_err(got, expected))
        expected = reference_gram(X, architecture=arch, kind=kind)
        got = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype)
        assert rel_err(got, expected) <= tol, (kind, rel_err(got, expected))


# The full path's first window sums (Engine::op_input_conv): the conv of the
# input covariance as inner products of zero-padded patches, kh kw C terms per
# entry (more than 16: summed in chunks), any stride / dilation / padding, an
# untrained first conv (Theta stays 0), with and without a nonlinearity right
# after it, forced onto the full path, against the oracle.
FIRST_CONV = {
    "patch-27-terms": S(Conv(3, weight_var=2, bias_var=0.1), ReLU(), AvgPool(2), Flatten(),
                        Dense()),
    "patch-25-terms-stride": S(Conv(5, stride=2, weight_var=3), Erf(), Conv(2), ReLU(),
                               GlobalAvgPool()),
    "patch-dilated-valid": S(Conv((2, 3), dilation=(2, 1), padding="valid", weight_var=2),
                             ExpKernel(0.7), Trace(), input_norm="sum"),
    "patch-circular-untrained": S(Conv(3, padding="circular", weight_var=2, bias_var=0.2,
                                       trainable=False), ReLU(), Conv(3), ReLU(), Flatten(),
                                  Dense()),
    "patch-no-nonlinearity": S(Conv(3, padding=((2, 0), (0, 1)), bias_var=0.3), AvgPool(2),
                               Conv(2, weight_var=2), ReLU(), GlobalAvgPool()),
}


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("name", sorted(FIRST_CONV))
def test_first_conv_as_patch_products_matches_reference(name, dtype, tol):
    arch = FIRST_CONV[name]
    for C, seed in ((1, 31), (3, 32)):
        X = make_data("normal", C, (7, 6), 3, seed=seed)
        Y = make_data("uniform", C, (7, 6), 2, seed=seed + 10)
        for kind in ("nngp", "ntk"):
            expected = reference_gram(X, Y, architecture=arch, kind=kind)
            got = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype, spatial="full")
            assert rel_err(got, expected) <= tol, (C, kind, rel_err(got, expected))
            expected = reference_gram(X, architecture=arch, kind=kind)
            got = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype, spatial="full")
            assert rel_err(got, expected) <= tol, (C, kind, rel_err(got, expected))


# Wide rows (40 columns: whole vectors and tails in every SIMD variant) and
# map heights around multiples of the tap count, for 3 to 16 taps.
@pytest.mark.parametrize("k", [3, 4, 5, 7, 9, 13, 16])
def test_block_window_sums_over_tap_counts_match_reference(k):
    arch = S(Conv((k, 3), weight_var=2, bias_var=0.1), ReLU(),
             Conv((k, 1), padding=((k - 2, 1), (0, 0)), weight_var=2), ReLU(), Flatten(), Dense())
    for h in sorted({2 * k - 1, 2 * k + 1, k + 2}):
        X = make_data("uniform", 1, (h, 40), 2, seed=k + h)
        Y = make_data("normal", 1, (h, 40), 1, seed=k * h)
        expected = reference_gram(X, Y, architecture=arch, kind="ntk")
        for dtype, tol in [(np.float64, 1e-12), (np.float32, 2e-6)]:
            for variant in _variants():
                got = _variant_gram(arch, X, Y, "ntk", dtype, variant)
                assert rel_err(got, expected) <= tol, (h, dtype, variant, rel_err(got, expected))


# Window sums add, never subtract: the exact zeros of a background stay
# exactly zero.  x has content only in its top rows, y only in its bottom
# rows, in the same columns; after three 7x7 / 7x7 / 5x5 layers their
# self-variance maps have disjoint supports (content spreads 8 rows), so
# that the cross map, hence the kernel, must be exactly 0.  The content
# spans 16 orders of magnitude: a running sum (add the entering row,
# subtract the leaving one) would leave rounding residues in x's background
# below its content, where y's self-variance is not 0, and K(x, y) would not
# be 0 (checked: it is not, with running sums in conv_diag's height taps).
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_zero_background_stays_exactly_zero(kind, dtype):
    rng = np.random.default_rng(31)
    def content(shape):
        return rng.choice([-1.0, 1.0], shape) * 10.0 ** rng.uniform(-8, 8, shape)
    X = np.zeros((2, 24, 26, 1))
    X[0, :4, :6, 0] = content((4, 6))
    X[1, 1:4, 10:26, 0] = content((3, 16))
    Y = np.zeros((2, 24, 26, 1))
    Y[0, -4:, :8, 0] = content((4, 8))
    Y[1, -3:, 5:20, 0] = content((3, 15))
    arch = S(Conv(7, weight_var=2), ReLU(), Conv(7, weight_var=2), ReLU(), Conv(5, weight_var=2),
             ReLU(), Flatten(), Dense())
    for variant in _variants():
        got = _variant_gram(arch, X, Y, kind, dtype, variant)
        assert np.all(got == 0), (variant, got)
    assert np.all(reference_gram(X, Y, architecture=arch, kind=kind) == 0)
    assert np.all(conv_kernel(X, architecture=arch, kind=kind, dtype=dtype) != 0)
