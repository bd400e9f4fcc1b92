"""Tests of the slow reference oracle (``sklearn_convkernel._reference``).

Every expected value here is derived independently of the oracle: by hand
(border counts, pooling matrices written out entry by entry), from explicit
feature maps of linear networks, from textbook closed forms (arc-cosine /
ReLU expectation in Cho & Saul's form, erf), from structural identities of
the recursion, or by Monte-Carlo over finite random networks.
"""

import math

import numpy as np
import pytest

from sklearn_convkernel.arch import (
    ArcCosKernel,
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
    Identity,
    LinearKernel,
    PolyKernel,
    ReLU,
    Sequential,
    StridedPool,
    Sum,
    Tap,
    Trace,
)
from sklearn_convkernel.testing import empirical_kernel, sample_network
from sklearn_convkernel._reference import reference_gram

PI = math.pi


def images(seed, n, H, W, C, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal((n, H, W, C))
    return rng.uniform(0.0, 1.0, (n, H, W, C))


def relu_expectation(a, b, c):
    """E[relu(u) relu(v)] for (u, v) ~ N(0, [[a, c], [c, b]]) (Cho & Saul's form)."""
    r = np.sqrt(a * b)
    angle = np.arccos(np.clip(c / r, -1, 1))
    return (np.sqrt(np.maximum(a * b - c * c, 0.0)) + c * (PI - angle)) / (2 * PI)


def delta_images(H, W):
    """All H*W one-hot single-channel images, flattened index p = i * W + j."""
    X = np.zeros((H * W, H, W, 1))
    for p in range(H * W):
        X[p, p // W, p % W, 0] = 1.0
    return X


def explicit_conv_features(F, size, stride, dilation, pads, out, circular, weight_var, bias_var):
    """Feature map of a linear Conv layer, written with explicit loops.

    For per-position features F (n, H, W, D) whose inner products are the
    kernel, the Conv layer's features at output position a are
    ``sqrt(w / (kh kw)) * concat_delta F~[s a + d delta - lo]`` plus a constant
    ``sqrt(b)`` feature, so that their inner products are ``w A[K] + b``.
    ``pads`` and ``out`` are given by hand.
    """
    n, H, W, D = F.shape
    (kh, kw), (sh, sw), (dh, dw) = size, stride, dilation
    (lo_h, _), (lo_w, _) = pads
    oh, ow = out
    G = np.zeros((n, oh, ow, kh * kw * D + 1))
    for a in range(oh):
        for b in range(ow):
            feats = []
            for th in range(kh):
                for tw in range(kw):
                    i = sh * a + dh * th - lo_h
                    j = sw * b + dw * tw - lo_w
                    if circular:
                        feats.append(F[:, i % H, j % W])
                    elif 0 <= i < H and 0 <= j < W:
                        feats.append(F[:, i, j])
                    else:
                        feats.append(np.zeros((n, D)))
            G[:, a, b, :-1] = math.sqrt(weight_var / (kh * kw)) * np.concatenate(feats, axis=1)
            G[:, a, b, -1] = math.sqrt(bias_var)
    return G


def gram_flatten(Fx, Fy):
    return np.einsum("nijd,mijd->nm", Fx, Fy) / (Fx.shape[1] * Fx.shape[2])


def gram_gap(Fx, Fy):
    return Fx.mean(axis=(1, 2)) @ Fy.mean(axis=(1, 2)).T


def assert_close(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(), 1e-300)
    err = np.abs(actual - expected).max() / scale
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.1e}"


# ---------------------------------------------------------------------------
# linear networks: explicit feature maps, hand-computed pads
# ---------------------------------------------------------------------------

# (Conv kwargs, image (H, W), hand-computed ((lo_h, hi_h), (lo_w, hi_w)), output (oh, ow), circular)
CONV_CASES = [
    (dict(size=3), (5, 4), ((1, 1), (1, 1)), (5, 4), False),
    (dict(size=2), (5, 4), ((0, 1), (0, 1)), (5, 4), False),  # even SAME: extra pad down/right
    (dict(size=(2, 4)), (4, 6), ((0, 1), (1, 2)), (4, 6), False),
    (dict(size=(3, 2), stride=2), (5, 4), ((1, 1), (0, 0)), (3, 2), False),
    (dict(size=2, stride=2), (5, 5), ((0, 1), (0, 1)), (3, 3), False),
    (dict(size=1, stride=(2, 3)), (5, 7), ((0, 0), (0, 0)), (3, 3), False),
    (dict(size=3, dilation=2), (5, 6), ((2, 2), (2, 2)), (5, 6), False),
    (dict(size=3, padding="valid"), (5, 4), ((0, 0), (0, 0)), (3, 2), False),
    (dict(size=2, padding=((1, 0), (0, 2))), (5, 4), ((1, 0), (0, 2)), (5, 5), False),
    (dict(size=3, stride=2, dilation=2, padding=1), (6, 5), ((1, 1), (1, 1)), (2, 2), False),
    (dict(size=3, padding="circular"), (4, 5), ((1, 1), (1, 1)), (4, 5), True),
    (dict(size=4, stride=2, padding="circular"), (5, 3), ((1, 2), (1, 2)), (3, 2), True),
    (dict(size=9, padding="circular"), (3, 4), ((4, 4), (4, 4)), (3, 4), True),  # wraps twice
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("second", [False, True], ids=["one-conv", "two-convs"])
def test_linear_conv_matches_explicit_features(case, second):
    kwargs, (H, W), pads, out, circular = case
    C = 2
    X, Y = images(1, 3, H, W, C), images(2, 2, H, W, C)
    w, b = 1.7, 0.3
    conv = Conv(**kwargs, weight_var=w, bias_var=b)
    Fx = explicit_conv_features(X / math.sqrt(C), conv.size, conv.stride, conv.dilation, pads,
                                out, circular, w, b)
    Fy = explicit_conv_features(Y / math.sqrt(C), conv.size, conv.stride, conv.dilation, pads,
                                out, circular, w, b)
    layers = [conv]
    if second:  # Conv(3, "same") always pads (1, 1) and keeps the size
        w2, b2 = 0.7, 0.2
        layers.append(Conv(3, weight_var=w2, bias_var=b2))
        same3 = ((3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)), out, False, w2, b2)
        Fx = explicit_conv_features(Fx, *same3)
        Fy = explicit_conv_features(Fy, *same3)
    for readout, gram in ((Flatten(), gram_flatten), (GlobalAvgPool(), gram_gap)):
        K = reference_gram(X, Y, architecture=Sequential(*layers, readout))
        assert_close(K, gram(Fx, Fy))


def test_conv1_gap_closed_form():
    X, Y = images(3, 3, 4, 5, 3), images(4, 2, 4, 5, 3)
    w = 2.5
    K = reference_gram(X, Y, architecture=Sequential(Conv(1, weight_var=w), GlobalAvgPool()))
    mx, my = X.mean(axis=(1, 2)), Y.mean(axis=(1, 2))
    assert_close(K, w * mx @ my.T / 3)
    # and the "sum" input normalisation drops the 1/C
    K = reference_gram(X, Y, architecture=Sequential(Conv(1, weight_var=w), GlobalAvgPool(),
                                                     input_norm="sum"))
    assert_close(K, w * mx @ my.T)


def test_conv3_same_flatten_3x3_by_hand():
    # each pixel is covered by (rows covering it) x (cols covering it) windows
    counts = np.outer([2, 3, 2], [2, 3, 2])
    X, Y = images(5, 2, 3, 3, 2), images(6, 3, 3, 3, 2)
    w, b = 1.3, 0.4
    K = reference_gram(X, Y, architecture=Sequential(Conv(3, weight_var=w, bias_var=b), Flatten()))
    pix = np.einsum("nijc,mijc,ij->nm", X, Y, counts) / 2  # channel mean
    assert_close(K, w * pix / 81 + b)


# (Conv kwargs, (H, W), hand-counted coverage of each row, of each column, taps, output positions)
BORDER_CASES = [
    (dict(size=3), (3, 3), [2, 3, 2], [2, 3, 2], 9, 9),
    (dict(size=2), (3, 4), [1, 2, 2], [1, 2, 2, 2], 4, 12),  # SAME even: pad after
    (dict(size=4), (4, 4), [2, 3, 4, 3], [2, 3, 4, 3], 16, 16),
    (dict(size=2, padding=((1, 0), (1, 0))), (3, 3), [2, 2, 1], [2, 2, 1], 4, 9),  # ckn: before
    (dict(size=3, stride=2), (5, 6), [1, 2, 1, 2, 1], [1, 1, 2, 1, 2, 1], 9, 9),
    (dict(size=2, dilation=2, padding="valid"), (5, 5), [1, 1, 2, 1, 1], [1, 1, 2, 1, 1], 4, 9),
    (dict(size=3, dilation=2), (5, 4), [2, 2, 3, 2, 2], [2, 2, 2, 2], 9, 20),
    (dict(size=3, padding="circular"), (4, 3), [3, 3, 3, 3], [3, 3, 3], 9, 12),
    (dict(size=5, padding="circular"), (3, 4), [5, 5, 5], [5, 5, 5, 5], 25, 12),
    (dict(size=(1, 3), padding=((0, 0), (2, 0))), (2, 4), [1, 1], [3, 3, 2, 1], 3, 8),
]


@pytest.mark.parametrize("case", BORDER_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_conv_border_counts_by_hand(case):
    kwargs, (H, W), rows, cols, taps, n_out = case
    w, b = 1.5, 0.25
    X = delta_images(H, W)
    G = reference_gram(X, architecture=Sequential(Conv(**kwargs, weight_var=w, bias_var=b),
                                                  Flatten()))
    expected = b + np.diag(w * np.outer(rows, cols).ravel() / (taps * n_out))
    assert_close(G, expected)


# ---------------------------------------------------------------------------
# pools: matrices written out by hand (DESIGN §5.1, §5.4)
# ---------------------------------------------------------------------------

_Z2 = 1 + 2 * math.exp(-0.25) + 2 * math.exp(-1.0)  # gaussian, p = 2: k = -2..2, exp(-k^2/4)
F0, F1, F2 = 1 / _Z2, math.exp(-0.25) / _Z2, math.exp(-1.0) / _Z2
_Z1 = 1 + 2 * math.exp(-1.0)  # gaussian, p = 1: k = -1..1, exp(-k^2)
G0, G1 = 1 / _Z1, math.exp(-1.0) / _Z1
h, t = 0.5, 1 / 3

POOL_CASES = [
    ("gauss2", GaussianPool(2), (6, 5),
     [[F2, F1, F0, F1, F2, 0], [0, 0, F2, F1, F0, F1]],  # centres 2, 4; tap at 6 truncated
     [[F2, F1, F0, F1, F2]]),
    ("gauss1", GaussianPool(1), (4, 5),
     [[G1, G0, G1, 0], [0, G1, G0, G1], [0, 0, G1, G0]],  # drops row 0 too
     [[G1, G0, G1, 0, 0], [0, G1, G0, G1, 0], [0, 0, G1, G0, G1], [0, 0, 0, G1, G0]]),
    ("gauss2p1", GaussianPool(2, poolfactor=1), (6, 7),
     [[G1, G0, G1, 0, 0, 0], [0, 0, G1, G0, G1, 0]],
     [[G1, G0, G1, 0, 0, 0, 0], [0, 0, G1, G0, G1, 0, 0]]),
    ("box2", BoxPool(2), (7, 5),
     [[h, h, 0, 0, 0, 0, 0], [0, 0, h, h, 0, 0, 0], [0, 0, 0, 0, h, h, 0]],
     [[h, h, 0, 0, 0], [0, 0, h, h, 0]]),
    ("box2p3", BoxPool(2, poolfactor=3), (6, 5),
     [[t, t, t, 0, 0, 0], [0, 0, t, t, t, 0], [0, 0, 0, 0, t, t]],  # truncated, not renormalised
     [[t, t, t, 0, 0], [0, 0, t, t, t]]),
    ("strided2", StridedPool(2), (7, 5),
     [[0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0]],
     [[0, 0, 1, 0, 0]]),
    ("strided1", StridedPool(1), (3, 4),
     [[0, 1, 0], [0, 0, 1]],
     [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    ("avg2", AvgPool(2), (4, 3),
     [[h, h, 0, 0], [0, h, h, 0], [0, 0, h, h]],
     [[h, h, 0], [0, h, h]]),
    ("avg3same", AvgPool(3, padding="same"), (4, 3),  # edges divided by the full window
     [[t, t, 0, 0], [t, t, t, 0], [0, t, t, t], [0, 0, t, t]],
     [[t, t, 0], [t, t, t], [0, t, t]]),
    ("avg2same", AvgPool(2, padding="same"), (3, 4),  # even window: pad after
     [[h, h, 0], [0, h, h], [0, 0, h]],
     [[h, h, 0, 0], [0, h, h, 0], [0, 0, h, h], [0, 0, 0, h]]),
    ("avg2s2same", AvgPool(2, stride=2, padding="same"), (5, 4),
     [[h, h, 0, 0, 0], [0, 0, h, h, 0], [0, 0, 0, 0, h]],
     [[h, h, 0, 0], [0, 0, h, h]]),
    ("avg3circ", AvgPool(3, padding="circular"), (4, 3),
     [[t, t, 0, t], [t, t, t, 0], [0, t, t, t], [t, 0, t, t]],
     [[t, t, t], [t, t, t], [t, t, t]]),
    ("avg-explicit", AvgPool((2, 3), stride=(1, 2), padding=((1, 0), (0, 1))), (3, 5),
     [[h, 0, 0], [h, h, 0], [0, h, h]],
     [[t, t, t, 0, 0], [0, 0, t, t, t]]),
    ("avg2pad1", AvgPool(2, padding=1), (3, 3),
     [[h, 0, 0], [h, h, 0], [0, h, h], [0, 0, h]],
     [[h, 0, 0], [h, h, 0], [0, h, h], [0, 0, h]]),
    ("gap", GlobalAvgPool(), (2, 3), [[h, h]], [[t, t, t]]),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: c[0])
def test_pool_matrices_by_hand(case):
    _, pool, (H, W), Ph, Pw = case
    P = np.kron(np.array(Ph, float), np.array(Pw, float))  # rows: output positions
    X = delta_images(H, W)
    G = reference_gram(X, architecture=Sequential(Conv(1), pool, Flatten()))
    # Flatten after the pool: mean over output positions of (P e_p)(a) (P e_q)(a)
    assert_close(G, P.T @ P / P.shape[0])
    # and the pool's outputs are positioned as written: a following GAP sees P's row sums
    G = reference_gram(X, architecture=Sequential(Conv(1), pool, GlobalAvgPool()))
    m = P.mean(axis=0)
    assert_close(G, np.outer(m, m))


def test_pool_rows_positioned_as_written():
    """A pool followed by a row-mixing AvgPool distinguishes the order of P's rows."""
    X = delta_images(4, 2)
    G = reference_gram(X, architecture=Sequential(Conv(1), StridedPool(1), AvgPool((2, 1)),
                                                  Flatten()))
    # StridedPool(1): rows in(1), in(2), in(3), column in(1); AvgPool((2,1)): rows
    # (in1 + in2)/2, (in2 + in3)/2
    P = np.kron([[0, h, h, 0], [0, 0, h, h]], [[0, 1]])
    assert_close(G, P.T @ P / 2)


# ---------------------------------------------------------------------------
# closed forms of nonlinear layers on 1x1 convolutions
# ---------------------------------------------------------------------------


def pixel_covariances(X, Y, w, b):
    """Per-pixel (a, b, c) = (K(x,x), K(y,y), K(x,y)) after Conv(1, w, b), channel mean."""
    C = X.shape[3]
    a = w * np.einsum("nijc,nijc->nij", X, X)[:, None] / C + b
    bb = w * np.einsum("mijc,mijc->mij", Y, Y)[None] / C + b
    c = w * np.einsum("nijc,mijc->nmij", X, Y) / C + b
    return a, bb, c


@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_relu_1x1_closed_form(bias):
    X, Y = images(7, 3, 4, 3, 2), images(8, 2, 4, 3, 2)
    w = 1.8
    arch = Sequential(Conv(1, weight_var=w, bias_var=bias), ReLU(), Flatten())
    a, b, c = pixel_covariances(X, Y, w, bias)
    assert_close(reference_gram(X, Y, architecture=arch),
                 relu_expectation(a, b, c).mean(axis=(2, 3)))
    # NTK: Theta1 = K1 (trained conv), then Theta1 * (pi - angle) / (2 pi)
    theta = c * (PI - np.arccos(c / np.sqrt(a * b))) / (2 * PI)
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"), theta.mean(axis=(2, 3)))


def test_homogeneous_kernels_1x1_closed_forms():
    X, Y = images(9, 3, 3, 4, 2), images(10, 2, 3, 4, 2)
    w, bias = 1.4, 0.2
    a, b, c = pixel_covariances(X, Y, w, bias)
    nrm = np.sqrt(a * b)
    rho = c / nrm
    ang = np.arccos(rho)
    expected = {
        ArcCosKernel(1): nrm * (np.sin(ang) + (PI - ang) * np.cos(ang)) / PI,
        ArcCosKernel(0): nrm * (1 - ang / PI),
        ExpKernel(0.7): nrm * np.exp((rho - 1) / 0.49),
        PolyKernel(3): nrm * rho**3,
        LinearKernel(): c,
        Erf(): 2 / PI * np.arcsin(2 * c / np.sqrt((1 + 2 * a) * (1 + 2 * b))),
    }
    expected_ntk = {  # Theta1 = c (trained conv) times kappa'
        ArcCosKernel(1): c * (1 - ang / PI),
        ExpKernel(0.7): c * np.exp((rho - 1) / 0.49) / 0.49,
        PolyKernel(3): c * 3 * rho**2,
        LinearKernel(): c,
        Erf(): c * 4 / PI / np.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c),
    }
    for layer, value in expected.items():
        arch = Sequential(Conv(1, weight_var=w, bias_var=bias), layer, Flatten())
        assert_close(reference_gram(X, Y, architecture=arch), value.mean(axis=(2, 3)))
        if layer in expected_ntk:
            assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                         expected_ntk[layer].mean(axis=(2, 3)))


def test_arccos1_is_twice_relu():
    X = images(11, 4, 5, 4, 3, kind="uniform")
    for kind in ("nngp", "ntk"):
        a = reference_gram(X, architecture=Sequential(Conv(3, bias_var=0.1), ReLU(), Conv(2),
                                                      ReLU(), GlobalAvgPool()), kind=kind)
        b = reference_gram(X, architecture=Sequential(Conv(3, bias_var=0.1), ArcCosKernel(1),
                                                      Conv(2), ArcCosKernel(1), GlobalAvgPool()),
                           kind=kind)
        assert_close(b, 4 * a)


def test_zero_variance_gives_zero():
    X = images(12, 2, 4, 4, 1)
    X[0, :2] = 0.0  # zero top rows: zero variance there after a bias-free 1x1 conv
    for layer in (ReLU(), ArcCosKernel(0), ExpKernel(), PolyKernel(2), Erf()):
        for kind in ("nngp", "ntk"):
            if isinstance(layer, ArcCosKernel) and kind == "ntk":
                continue
            arch = Sequential(Conv(1), layer, GlobalAvgPool())
            G = reference_gram(X, architecture=arch, kind=kind)
            assert np.all(np.isfinite(G))
            # only the 8 bottom pixels of image 0 contribute: 64 of the 256 pairs
            bottom = reference_gram(X[:1, 2:], architecture=arch, kind=kind)[0, 0]
            assert_close(G[0, 0], 0.25 * bottom)


# ---------------------------------------------------------------------------
# NTK structure
# ---------------------------------------------------------------------------


def test_ntk_equals_nngp_when_only_the_readout_is_trained():
    X, Y = images(13, 3, 6, 5, 2), images(14, 2, 6, 5, 2)
    arch = Sequential(Conv(3, weight_var=2, bias_var=0.1, trainable=False), ReLU(),
                      AvgPool(2), Conv(3, weight_var=2, trainable=False), Erf(),
                      GlobalAvgPool(), Dense(weight_var=1.5, bias_var=0.2))
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                 reference_gram(X, Y, architecture=arch))


def test_ntk_of_single_trained_linear_layer_equals_nngp():
    X, Y = images(15, 3, 5, 5, 2), images(16, 2, 5, 5, 2)
    for arch in (Sequential(Conv(3, weight_var=2, bias_var=0.3), Flatten()),
                 Sequential(Conv(2, stride=2, bias_var=0.1), GaussianPool(1), Trace()),
                 Sequential(GlobalAvgPool(), Dense(weight_var=3, bias_var=1))):
        assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                     reference_gram(X, Y, architecture=arch))


def test_ntk_of_bias_free_linear_net_is_depth_times_nngp():
    # Theta_l = w Theta_{l-1} + K_l with K_l = w K_{l-1}: Theta_L = L K_L
    X, Y = images(17, 3, 6, 5, 2), images(18, 2, 6, 5, 2)
    arch = Sequential(Conv(3, weight_var=2), AvgPool(2), Conv(2, weight_var=0.5),
                      GlobalAvgPool(), Dense(weight_var=3))
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                 3 * reference_gram(X, Y, architecture=arch))
    arch = Sequential(Conv(3), Conv(3, trainable=False), Flatten(), Dense())
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                 2 * reference_gram(X, Y, architecture=arch))


def test_ntk_conv_flatten_dense_is_twice_nngp_minus_bias():
    X, Y = images(19, 3, 4, 5, 3), images(20, 2, 4, 5, 3)
    arch = Sequential(Conv(3, weight_var=1.5), Flatten(), Dense(weight_var=2, bias_var=0.7))
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"),
                 2 * reference_gram(X, Y, architecture=arch) - 0.7)


def test_ntk_conv_relu_flatten_dense_by_hand():
    C, H, W = 2, 4, 5
    X, Y = images(21, 3, H, W, C), images(22, 2, H, W, C)
    w1, b1, w2, b2 = 2.0, 0.1, 1.5, 0.3
    arch = Sequential(Conv(3, weight_var=w1, bias_var=b1), ReLU(), Flatten(),
                      Dense(weight_var=w2, bias_var=b2))
    pads, out = ((1, 1), (1, 1)), (H, W)
    Fx = explicit_conv_features(X / math.sqrt(C), (3, 3), (1, 1), (1, 1), pads, out, False, w1, b1)
    Fy = explicit_conv_features(Y / math.sqrt(C), (3, 3), (1, 1), (1, 1), pads, out, False, w1, b1)
    a = np.einsum("nijd,nijd->nij", Fx, Fx)[:, None]
    b = np.einsum("mijd,mijd->mij", Fy, Fy)[None]
    c = np.einsum("nijd,mijd->nmij", Fx, Fy)
    K2 = relu_expectation(a, b, c)
    T2 = c * (PI - np.arccos(c / np.sqrt(a * b))) / (2 * PI)  # Theta1 = K1 = c
    K = w2 * K2.mean(axis=(2, 3)) + b2
    T = w2 * T2.mean(axis=(2, 3)) + K
    assert_close(reference_gram(X, Y, architecture=arch), K)
    assert_close(reference_gram(X, Y, architecture=arch, kind="ntk"), T)


def test_ntk_diagonal_is_depth_times_nngp_for_bias_free_relu_nets():
    # On coincident points Theta/K stays = number of trained layers (ReLU halves both)
    X = images(23, 4, 5, 6, 2, kind="uniform")
    arch = Sequential(Conv(3, weight_var=2), ReLU(), Conv(2, weight_var=2), ReLU(),
                      Conv(3, weight_var=2), ReLU(), Flatten(), Dense())
    K = reference_gram(X, architecture=arch)
    T = reference_gram(X, architecture=arch, kind="ntk")
    assert_close(np.diag(T), 4 * np.diag(K), rtol=1e-14)


def test_arccos0_has_no_ntk():
    X = images(24, 2, 4, 4, 1)
    arch = Sequential(Conv(3), ArcCosKernel(0), Flatten())
    reference_gram(X, architecture=arch)
    with pytest.raises(ValueError, match="NTK"):
        reference_gram(X, architecture=arch, kind="ntk")
    with pytest.raises(ValueError, match="NTK"):  # also inside a tap
        reference_gram(X, kind="ntk", architecture=Sequential(
            Conv(3), Tap(Conv(1), ArcCosKernel(0), Flatten()), ReLU(), Flatten()))


# ---------------------------------------------------------------------------
# structural identities
# ---------------------------------------------------------------------------


def test_sum_of_branches_adds_kernels_before_a_linear_readout():
    X, Y = images(25, 3, 5, 6, 2), images(26, 2, 5, 6, 2)
    A = Sequential(Conv(3, weight_var=2, bias_var=0.1), ReLU(), Conv(3))
    B = Sequential(Conv(1, weight_var=0.5), Erf(), Conv(2, weight_var=3))
    pre = Sequential(Conv(3, bias_var=0.2), ReLU())
    for kind in ("nngp", "ntk"):
        arch = Sequential(pre, Sum(A, B, Identity()), GlobalAvgPool())
        summed = reference_gram(X, Y, kind=kind, architecture=arch)
        parts = [reference_gram(X, Y, kind=kind, architecture=Sequential(pre, br, GlobalAvgPool()))
                 for br in (A, B, Identity())]
        assert_close(summed, sum(parts))


def test_sum_feeds_variances_to_the_next_nonlinearity():
    # Sum(Identity, Identity) doubles K and Theta; ReLU is 1-homogeneous in (K, V)
    X = images(27, 3, 5, 4, 2)
    for kind in ("nngp", "ntk"):
        a = reference_gram(X, kind=kind, architecture=Sequential(
            Conv(3), Sum(Identity(), Identity()), ReLU(), Flatten()))
        b = reference_gram(X, kind=kind, architecture=Sequential(Conv(3), ReLU(), Flatten()))
        assert_close(a, 2 * b)


def test_taps_equal_truncated_networks():
    X, Y = images(28, 3, 6, 5, 2), images(29, 2, 6, 5, 2)
    A = [Conv(3, weight_var=2, bias_var=0.1), ReLU()]
    B = [Conv(3, weight_var=2), ReLU(), AvgPool(2)]
    R1 = [GlobalAvgPool(), Dense(bias_var=0.5)]
    R2 = [Flatten()]
    R3 = [Conv(2, weight_var=2), Erf(), Trace()]  # a tap with its own nonlinearity
    arch = Sequential(*A, Tap(*R1), Sum(Sequential(*B), Sequential(*B, Tap(*R2))), Tap(*R3),
                      Flatten(), Dense())
    for kind in ("nngp", "ntk"):
        G = reference_gram(X, Y, architecture=arch, kind=kind)
        SB = Sum(Sequential(*B), Sequential(*B))
        expected = [
            reference_gram(X, Y, kind=kind, architecture=Sequential(*A, *R1)),
            reference_gram(X, Y, kind=kind, architecture=Sequential(*A, *B, *R2)),
            reference_gram(X, Y, kind=kind, architecture=Sequential(*A, SB, *R3)),
            reference_gram(X, Y, kind=kind, architecture=Sequential(*A, SB, Flatten(), Dense())),
        ]
        assert G.shape == (4, 3, 2)
        for g, e in zip(G, expected):
            assert_close(g, e)


def test_nested_taps_are_numbered_in_order_of_appearance():
    # a tap inside a tap's read-out comes after the outer tap (pre-order)
    X = images(44, 2, 5, 4, 2)
    inner = [Conv(1, weight_var=3.0), Flatten()]
    outer = [Conv(3), ReLU(), GlobalAvgPool()]
    arch = Sequential(Conv(3), Tap(Conv(3), ReLU(), Tap(*inner), GlobalAvgPool()), Flatten())
    G = reference_gram(X, architecture=arch)
    assert_close(G[0], reference_gram(X, architecture=Sequential(Conv(3), *outer)))
    assert_close(G[1], reference_gram(X, architecture=Sequential(Conv(3), Conv(3), ReLU(), *inner)))
    assert_close(G[2], reference_gram(X, architecture=Sequential(Conv(3), Flatten())))


def test_dense_is_a_1x1_conv_and_readout_relations():
    X, Y = images(30, 3, 5, 4, 2), images(31, 2, 5, 4, 2)
    base = [Conv(3, weight_var=2, bias_var=0.1), ReLU()]
    for kind in ("nngp", "ntk"):
        def g(*layers):
            return reference_gram(X, Y, kind=kind, architecture=Sequential(*base, *layers))

        assert_close(g(Dense(weight_var=2, bias_var=0.3), ReLU(), GlobalAvgPool()),
                     g(Conv(1, padding="valid", weight_var=2, bias_var=0.3), ReLU(),
                       GlobalAvgPool()))
        assert_close(g(Trace()), 20 * g(Flatten()))
        assert_close(g(GlobalAvgPool()), g(AvgPool((5, 4)), Flatten()))
        assert_close(g(Flatten()), g(Conv((5, 4), padding="valid"), Flatten()) if kind == "nngp"
                     else g(Conv((5, 4), padding="valid", trainable=False), Flatten()))


def test_input_norm_sum_is_mean_on_rescaled_inputs():
    X, Y = images(32, 3, 5, 4, 3), images(33, 2, 5, 4, 3)
    layers = [Conv(3, weight_var=2, bias_var=0.1), ReLU(), GaussianPool(1), Conv(2), Erf(),
              Flatten(), Dense()]
    for kind in ("nngp", "ntk"):
        a = reference_gram(X, Y, kind=kind, architecture=Sequential(*layers, input_norm="sum"))
        b = reference_gram(math.sqrt(3) * X, math.sqrt(3) * Y, kind=kind,
                           architecture=Sequential(*layers))
        assert_close(a, b)


# ---------------------------------------------------------------------------
# invariants
# ---------------------------------------------------------------------------

INVARIANT_ARCHS = {
    "relu-flatten": Sequential(Conv(3, weight_var=2, bias_var=0.1), ReLU(),
                               Conv(3, weight_var=2, bias_var=0.1), ReLU(), Flatten(), Dense()),
    "pools": Sequential(Conv(2, weight_var=2), ReLU(), AvgPool(2, padding="same"),
                        Conv(3, stride=2, bias_var=0.2), Erf(), GlobalAvgPool(), Dense()),
    "ckn": Sequential(Conv(3, weight_var=9), ExpKernel(0.6), GaussianPool(1),
                      Conv(2, weight_var=4, padding=((1, 0), (1, 0))), ArcCosKernel(1),
                      BoxPool(2), Trace(), input_norm="sum"),
    "residual": Sequential(Conv(3), Sum(Identity(), Sequential(ReLU(), Conv(3, weight_var=2))),
                           ReLU(), StridedPool(1), Flatten(), Dense(bias_var=0.1)),
}


@pytest.mark.parametrize("name", list(INVARIANT_ARCHS))
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_symmetry_and_psd(name, kind):
    arch = INVARIANT_ARCHS[name]
    X = images(34, 6, 5, 6, 2)
    G = reference_gram(X, architecture=arch, kind=kind)
    assert_close(G, G.T, rtol=1e-13)
    ev = np.linalg.eigvalsh((G + G.T) / 2)
    assert ev.min() >= -1e-10 * ev.max()
    Y = images(35, 2, 5, 6, 2)
    assert_close(reference_gram(X[:3], Y, architecture=arch, kind=kind),
                 reference_gram(Y, X[:3], architecture=arch, kind=kind).T, rtol=1e-13)
    # rows of a Gram do not depend on the other images of the batch
    assert_close(reference_gram(X[:3], Y, architecture=arch, kind=kind)[1:2],
                 reference_gram(X[1:2], Y, architecture=arch, kind=kind), rtol=1e-13)


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_homogeneity_of_bias_free_relu_nets(kind):
    X, Y = images(36, 3, 5, 5, 2), images(37, 2, 5, 5, 2)
    arch = Sequential(Conv(3, weight_var=2), ReLU(), AvgPool(2), Conv(2, weight_var=2), ReLU(),
                      Sum(Identity(), Sequential(Conv(1), ExpKernel(0.8))), GlobalAvgPool(),
                      Dense())
    K = reference_gram(X, Y, architecture=arch, kind=kind)
    for alpha in (0.5, 3.0):
        assert_close(reference_gram(alpha * X, alpha * Y, architecture=arch, kind=kind),
                     alpha**2 * K)
    # with a bias it is not homogeneous
    arch = Sequential(Conv(3, weight_var=2, bias_var=0.5), ReLU(), Flatten())
    K = reference_gram(X, Y, architecture=arch, kind=kind)
    assert not np.allclose(reference_gram(3 * X, 3 * Y, architecture=arch, kind=kind), 9 * K)


def test_coincident_diagonal_is_exact():
    # bias-free Conv(w=2) + ReLU keeps the self variance V -> 2 mean_window(V) / 2
    X = images(38, 4, 5, 4, 3, kind="uniform")
    arch = Sequential(Conv(1, weight_var=2), ReLU(), Conv(1, weight_var=2), ReLU(),
                      Conv(1, weight_var=2), ReLU(), Flatten())
    expected = np.einsum("nijc,nijc->n", X, X) / (3 * 20)
    G = reference_gram(X, architecture=arch)
    assert_close(np.diag(G), expected, rtol=1e-14)
    # generic arccos path on equal images agrees only to ~sqrt(eps) in Theta
    G2 = reference_gram(X, X.copy(), architecture=arch)
    assert_close(np.diag(G2), expected, rtol=1e-7)
    # the diagonal of a Gram is the single-image value
    for name in ("relu-flatten", "pools", "ckn"):
        arch = INVARIANT_ARCHS[name]
        for kind in ("nngp", "ntk"):
            G = reference_gram(X, architecture=arch, kind=kind)
            single = [reference_gram(X[i:i + 1], architecture=arch, kind=kind)[0, 0]
                      for i in range(len(X))]
            assert_close(np.diag(G), np.array(single), rtol=1e-14)
            G2 = reference_gram(X, X.copy(), architecture=arch, kind=kind)
            assert_close(np.diag(G2), np.diag(G), rtol=1e-6)


def test_coincident_closed_forms():
    # self kernel of Conv(1, w, b) + nonlinearity + Flatten, per pixel V = w |x|^2 / C + b
    X = images(45, 3, 4, 3, 2)
    w, b = 1.6, 0.2
    V = w * np.einsum("nijc,nijc->nij", X, X) / 2 + b
    cases = {  # layer: (K(x, x), Theta(x, x)) per pixel, Theta1 = V
        ReLU(): (V / 2, V / 2),
        ArcCosKernel(1): (V, V),
        ExpKernel(0.5): (V, V / 0.25),
        PolyKernel(4): (V, 4 * V),
        LinearKernel(): (V, V),
        Erf(): (2 / PI * np.arcsin(2 * V / (1 + 2 * V)), V * 4 / PI / np.sqrt(1 + 4 * V)),
    }
    for layer, (k, theta) in cases.items():
        arch = Sequential(Conv(1, weight_var=w, bias_var=b), layer, Flatten())
        assert_close(np.diag(reference_gram(X, architecture=arch)), k.mean(axis=(1, 2)),
                     rtol=1e-14)
        assert_close(np.diag(reference_gram(X, architecture=arch, kind="ntk")),
                     theta.mean(axis=(1, 2)), rtol=1e-14)


def test_coincident_ntk_uses_exact_half():
    # one ReLU with coincident points: Theta(x,x) = K1(x,x)/2 per position exactly
    X = images(39, 3, 4, 4, 2, kind="uniform")
    arch = Sequential(Conv(3, weight_var=2), ReLU(), Flatten())
    T = reference_gram(X, architecture=arch, kind="ntk")
    lin = reference_gram(X, architecture=Sequential(Conv(3, weight_var=2), Flatten()))
    assert_close(np.diag(T), np.diag(lin) / 2, rtol=1e-15)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def test_errors():
    X = images(40, 2, 5, 5, 2)
    arch = Sequential(Conv(3), ReLU(), Flatten())
    with pytest.raises(ValueError, match="kind"):
        reference_gram(X, architecture=arch, kind="foo")
    with pytest.raises(ValueError, match="shape"):  # one image of 2-D: no batch axis
        reference_gram(X[0, ..., 0], architecture=arch)
    with pytest.raises(ValueError, match="shape"):
        reference_gram(X, X[..., :1], architecture=arch)
    with pytest.raises(ArchitectureError, match="GlobalAvgPool"):
        reference_gram(X, architecture=Sequential(Conv(3), ReLU()))
    with pytest.raises(ArchitectureError, match="Conv"):
        reference_gram(X, architecture=Sequential(ReLU(), Flatten()))
    with pytest.raises(ArchitectureError):
        reference_gram(X, architecture=Sequential(Conv(3), GaussianPool(3), Flatten()))


# ---------------------------------------------------------------------------
# Monte-Carlo: wide finite random networks approach the kernel
# ---------------------------------------------------------------------------

MC_ARCHS = {
    "relu-x2-flatten-dense": Sequential(
        Conv(3, weight_var=2, bias_var=0.1), ReLU(), Conv(3, weight_var=2, bias_var=0.1), ReLU(),
        Flatten(), Dense(bias_var=0.05)),
    "avgpool-gap": Sequential(
        Conv(3, weight_var=1.5), ReLU(), AvgPool(2), Conv(2, weight_var=2), ReLU(),
        GlobalAvgPool(), Dense()),
    "residual": Sequential(
        Conv(3), Sum(Identity(), Sequential(ReLU(), Conv(3, weight_var=2, padding="circular"))),
        ReLU(), Flatten(), Dense()),
    "erf": Sequential(
        Conv(3, weight_var=3, bias_var=0.2), Erf(), Conv(3, stride=2, weight_var=2), Erf(),
        GlobalAvgPool(), Dense()),
    "ckn-sum": Sequential(
        Conv(2, weight_var=4, padding=((1, 0), (1, 0))), ArcCosKernel(1), GaussianPool(1),
        Conv(3, weight_var=9), ReLU(), Trace(), input_norm="sum"),
}


@pytest.mark.parametrize("name", list(MC_ARCHS))
def test_monte_carlo_finite_networks(name):
    arch = MC_ARCHS[name]
    X = images(41, 4, 5, 5, 2)
    ref = reference_gram(X, architecture=arch)
    scale = np.abs(ref).max()
    wide, se = empirical_kernel(X, architecture=arch, width=256, n_networks=24, random_state=0)
    assert np.all(np.abs(wide - ref) <= 4 * se + 0.02 * scale), (wide - ref) / se
    # typical error of a single network, sqrt(variance + bias^2): shrinks like 1/sqrt(width)
    narrow, se_narrow = empirical_kernel(X, architecture=arch, width=4, n_networks=24,
                                         random_state=0)
    err_narrow = np.sqrt(24 * se_narrow**2 + (narrow - ref) ** 2).mean()
    err_wide = np.sqrt(24 * se**2 + (wide - ref) ** 2).mean()
    assert err_narrow > 3 * err_wide  # ~8 = sqrt(256 / 4) expected


def test_monte_carlo_other_homogeneous_kernels():
    # random features of kappa applied to the normalised pre-activation (empirical norms)
    arch = Sequential(Conv(3, weight_var=2), ExpKernel(1.0), Conv(3), ArcCosKernel(0),
                      Conv(1), PolyKernel(2), GlobalAvgPool(), Dense())
    X = images(42, 3, 4, 4, 2)
    ref = reference_gram(X, architecture=arch)
    wide, se = empirical_kernel(X, architecture=arch, width=256, n_networks=16, random_state=1)
    assert np.all(np.abs(wide - ref) <= 4 * se + 0.03 * np.abs(ref).max()), (wide - ref) / se


def test_finite_network_api():
    arch = Sequential(Conv(3), ReLU(), Tap(Flatten()), GlobalAvgPool(), Dense())
    X = images(43, 3, 5, 4, 2)
    net = sample_network(arch, 2, 16, 0)
    out = net(X)
    assert out.shape == (3, 16)
    np.testing.assert_array_equal(out, sample_network(arch, 2, 16, 0)(X))
    assert not np.allclose(out, sample_network(arch, 2, 16, 1)(X))
    # one image at a time gives the same outputs (fixed parameters)
    np.testing.assert_allclose(net(X[1:2])[0], out[1], rtol=1e-13)
    with pytest.raises(ValueError, match="channels"):
        sample_network(Sequential(Sum(Identity(), Conv(1)), Flatten()), 2, 8, 0)(X)
    mean, se = empirical_kernel(X, X[:2], architecture=arch, width=8, n_networks=3,
                                random_state=0)
    assert mean.shape == se.shape == (3, 2)
