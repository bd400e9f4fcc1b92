"""ShiftAverage (local average pooling): identities that define it.

* circular: the read-out of a circular network equals the Flatten kernel
  averaged over all shifts of both images (two-sided) or of one image
  (one-sided) -- data augmentation by translations, computed by the engine on
  the augmented images and compared with the engine on the original ones;
* ``max_shift = 0`` is Flatten; circular with ``2 m + 1 = n`` is
  GlobalAvgPool;
* zero padding: the read-out equals an average pooling over the zero-extended
  map followed by a sum (so it is PSD);
* Monte-Carlo: the finite network's empirical kernel converges to it.
"""

import numpy as np
import pytest

from sklearn_convkernel import conv_kernel
from sklearn_convkernel.testing import empirical_kernel
from sklearn_convkernel._reference import reference_gram
from sklearn_convkernel.arch import (
    ArchitectureError,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    ReLU,
    Sequential,
    ShiftAverage,
    Tap,
    Trace,
)

DTYPES = [(np.float64, 1e-13), (np.float32, 2e-6)]


def _body(padding):
    return [Conv(3, padding=padding, weight_var=2.0, bias_var=0.1), ReLU(),
            Conv(3, padding=padding, weight_var=2.0), ReLU()]


def _images(seed, n, H, W, C):
    return np.random.default_rng(seed).standard_normal((n, H, W, C))


def _shifts(m):
    return [(u, v) for u in range(-m[0], m[0] + 1) for v in range(-m[1], m[1] + 1)]


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("one_sided", [False, True])
def test_circular_read_out_is_the_shift_augmented_flatten_kernel(kind, one_sided, dtype, tol):
    m = (1, 2)
    body = _body("circular")
    lap = Sequential(*body, ShiftAverage(m, one_sided=one_sided, circular=True), Dense())
    flat = Sequential(*body, Flatten(), Dense())
    X, Y = _images(0, 3, 6, 7, 2), _images(1, 2, 6, 7, 2)
    K = conv_kernel(X, Y, architecture=lap, kind=kind, dtype=dtype)
    x_shifts = [(0, 0)] if one_sided else _shifts(m)
    acc = np.zeros(K.shape)
    for s in x_shifts:
        for t in _shifts(m):
            acc += conv_kernel(np.roll(X, s, axis=(1, 2)), np.roll(Y, t, axis=(1, 2)),
                               architecture=flat, kind=kind)
    expected = acc / (len(x_shifts) * len(_shifts(m)))
    assert np.abs(K - expected).max() <= tol * np.abs(expected).max()


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_symmetric_gram_of_one_sided_read_out_is_the_augmented_gram(kind):
    # K(X, X) takes the slab self pass (displacements d >= 0 counted twice)
    m = (2, 1)
    body = _body("circular")
    lap = Sequential(*body, ShiftAverage(m, one_sided=True, circular=True), Dense())
    flat = Sequential(*body, Flatten(), Dense())
    X = _images(2, 4, 5, 6, 1)
    K = conv_kernel(X, architecture=lap, kind=kind)
    expected = np.mean([conv_kernel(X, np.roll(X, t, axis=(1, 2)), architecture=flat, kind=kind)
                        for t in _shifts(m)], axis=0)
    assert np.abs(K - expected).max() <= 1e-13 * np.abs(expected).max()
    assert np.array_equal(K, K.T)


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("padding, circular", [("same", False), ("circular", True)])
def test_zero_shift_is_flatten(kind, padding, circular):
    body = _body(padding)
    X = _images(3, 3, 5, 6, 2)
    K = conv_kernel(X, architecture=Sequential(*body, ShiftAverage(0, circular=circular),
                                               Dense()), kind=kind)
    F = conv_kernel(X, architecture=Sequential(*body, Flatten(), Dense()), kind=kind)
    assert np.abs(K - F).max() <= 1e-14 * np.abs(F).max()


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_full_period_circular_shift_average_is_global_average_pooling(kind):
    body = _body("circular")
    X = _images(4, 3, 5, 7, 1)
    K = conv_kernel(X, architecture=Sequential(*body, ShiftAverage((2, 3), circular=True),
                                               Dense()), kind=kind)
    G = conv_kernel(X, architecture=Sequential(*body, GlobalAvgPool(), Dense()), kind=kind)
    assert np.abs(K - G).max() <= 1e-14 * np.abs(G).max()


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_zero_padded_read_out_is_a_full_average_pooling_then_sum(kind):
    # sum_{p,q} tri(q - p) K[p, q] / (H W) = sum_c (box * K * box)[c, c] / (H W)
    # over the zero-extended map: AvgPool(2m+1, padding=2m) then Trace, scaled.
    m, (H, W) = 1, (5, 6)
    body = _body("same")
    X = _images(5, 4, H, W, 2)
    K = conv_kernel(X, architecture=Sequential(*body, ShiftAverage(m), Dense()), kind=kind)
    P = conv_kernel(X, architecture=Sequential(*body, AvgPool(2 * m + 1, padding=2 * m), Trace(),
                                               Dense(weight_var=1.0 / (H * W))), kind=kind)
    if kind == "ntk":  # the Dense layer adds its own (unscaled) NNGP term: compare without it
        K = K - conv_kernel(X, architecture=Sequential(*body, ShiftAverage(m)), kind="nngp")
        P = P - conv_kernel(X, architecture=Sequential(*body, AvgPool(2 * m + 1, padding=2 * m),
                                                       Trace(), Dense(weight_var=1.0 / (H * W))),
                            kind="nngp")
    assert np.abs(K - P).max() <= 1e-13 * np.abs(P).max()
    assert np.linalg.eigvalsh(K).min() >= -1e-12 * np.abs(K).max()


def test_slab_path_skips_only_unweighted_displacements():
    # the same kernel with the displacement slabs computed (slab path) and with
    # every slab carried (spatial="full" keeps the layer-by-layer interpreter path
    # for this network too: compare both to the oracle)
    arch = Sequential(*_body("same"), ShiftAverage((1, 2)), Dense())
    X, Y = _images(6, 3, 8, 6, 1), _images(7, 2, 8, 6, 1)
    R = reference_gram(X, Y, architecture=arch, kind="ntk")
    K = conv_kernel(X, Y, architecture=arch, kind="ntk")
    assert np.abs(K - R).max() <= 1e-14 * np.abs(R).max()


@pytest.mark.parametrize("circular", [False, True])
def test_monte_carlo_finite_network(circular):
    padding = "circular" if circular else "same"
    arch = Sequential(Conv(3, padding=padding, weight_var=2.0), ReLU(),
                      ShiftAverage(1, circular=circular), Dense())
    X = _images(8, 4, 5, 5, 2)
    ref = reference_gram(X, architecture=arch)
    wide, se = empirical_kernel(X, architecture=arch, width=256, n_networks=16, random_state=0)
    assert np.all(np.abs(wide - ref) <= 4 * se + 0.02 * np.abs(ref).max()), (wide - ref) / se


def test_displacement_weights():
    wh, ww = ShiftAverage((1, 0)).displacement_weights((4, 3))
    # triangular (1, 2, 3, 2, 1) / 9 over |d| <= 2, divided by H = 4
    np.testing.assert_array_equal(wh * 4 * 9, [0, 1, 2, 3, 2, 1, 0])
    np.testing.assert_array_equal(ww * 3, [0, 0, 1, 0, 0])
    wh, _ = ShiftAverage(1, one_sided=True).displacement_weights((4, 4))
    np.testing.assert_allclose(wh * 4 * 3, [0, 0, 1, 1, 1, 0, 0])
    # circular: displacements d and d - n are the same shift
    wh, _ = ShiftAverage(1, circular=True).displacement_weights((3, 3))
    # residues 0: 3/9, 1: (2 + 1)/9 (d = 1 and d = -2), 2: (1 + 2)/9
    np.testing.assert_allclose(wh * 3 * 9, [3, 3, 3, 3, 3])


def test_parameter_errors():
    with pytest.raises(ArchitectureError, match="max_shift"):
        ShiftAverage(-1)
    with pytest.raises(ArchitectureError, match="max_shift"):
        ShiftAverage(1.5)
    with pytest.raises(ArchitectureError, match="one_sided"):
        ShiftAverage(1, one_sided="yes")
    with pytest.raises(TypeError, match="one-sided"):
        empirical_kernel(_images(9, 2, 4, 4, 1), architecture=Sequential(
            Conv(3), ReLU(), ShiftAverage(1, one_sided=True), Dense()), width=4, n_networks=2)


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_flip_averaging_accepts_shift_average(kind):
    # the read-out weighs width displacements symmetrically: flip-equivariant
    arch = Sequential(*_body("same"), ShiftAverage((1, 2)), Dense())
    X, Y = _images(10, 3, 6, 7, 1), _images(11, 2, 6, 7, 1)
    K = conv_kernel(X, Y, architecture=arch, kind=kind, augment="hflip")
    R = 0.5 * (reference_gram(X, Y, architecture=arch, kind=kind)
               + reference_gram(X, Y[:, :, ::-1], architecture=arch, kind=kind))
    assert np.abs(K - R).max() <= 1e-13 * np.abs(R).max()


# The displacement path (every read-out a zero-padded ShiftAverage after
# same-size stride-1 convolutions) stores each displacement's map with the
# image's row stride W: the input covariance sums channel-major rows, the
# nonlinearities read both images' factors at flat offsets, a convolution
# whose width taps reach no further than the |dw| unused columns runs flat
# (the others, e.g. dw = 0 or a 5-wide kernel at |dw| = 1, pad their rows),
# and the read-outs skip the unused columns.  Checked against the oracle on
# odd widths (row tails), several channel counts (the channel passes of 8),
# taps reading out mid-network and dilated kernels.
def _disp_arch(m, one_sided, second):
    return Sequential(Conv(3, weight_var=2.0, bias_var=0.1), ReLU(),
                      Tap(ShiftAverage(m, one_sided=one_sided), Dense()),
                      second, ReLU(), ShiftAverage(m, one_sided=one_sided), Dense())


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("shape, m, second", [
    ((5, 7, 3), 1, Conv(5, weight_var=2.0)),
    ((9, 13, 16), (2, 3), Conv(3, dilation=(1, 2), weight_var=1.5, bias_var=0.2)),
    ((6, 11, 17), (1, 2), Conv((3, 5), weight_var=2.0)),
    ((7, 9, 8), 2, Conv(3, weight_var=2.0)),
    ((4, 5, 1), 3, Conv(3, weight_var=2.0)),
])
def test_displacement_path_matches_the_oracle(shape, m, second, one_sided, kind, dtype, tol):
    arch = _disp_arch(m, one_sided, second)
    H, W, C = shape
    X, Y = _images(12, 3, H, W, C), _images(13, 2, H, W, C)
    K = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype)
    R = reference_gram(X, Y, architecture=arch, kind=kind)
    assert np.abs(K - R).max() <= tol * np.abs(R).max()
    # the self pass (displacements d >= 0 counted twice) against pairs of copies
    S = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype)
    P = conv_kernel(X, X.copy(), architecture=arch, kind=kind, dtype=dtype)
    RS = reference_gram(X, architecture=arch, kind=kind)
    assert np.abs(S - RS).max() <= tol * np.abs(RS).max()
    assert np.abs(P - S).max() <= tol * np.abs(S).max()


@pytest.mark.parametrize("dtype, tol", DTYPES)
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("C", [1, 16])
def test_displacement_path_28x28_matches_the_oracle(C, kind, dtype, tol):
    body = []
    for _ in range(2):
        body += [Conv(3, weight_var=2.0), ReLU()]
    arch = Sequential(*body, ShiftAverage(1), Dense())
    X, Y = _images(14, 2, 28, 28, C), _images(15, 2, 28, 28, C)
    K = conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype)
    R = reference_gram(X, Y, architecture=arch, kind=kind)
    assert np.abs(K - R).max() <= tol * np.abs(R).max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("C", [1, 3, 16])
def test_displacement_path_keeps_exact_zeros(C, kind, dtype):
    # without biases a zero image has zero covariance with every image: its
    # row and column of the Gram are exact zeros (the unused columns of the
    # maps, which hold other values, never reach them)
    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(),
                      ShiftAverage(2), Dense())
    X = _images(16, 4, 7, 9, C)
    X[1] = 0.0
    K = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype)
    assert np.all(K[1] == 0) and np.all(K[:, 1] == 0)
    Kxy = conv_kernel(X, X[::-1].copy(), architecture=arch, kind=kind, dtype=dtype)
    assert np.all(Kxy[1] == 0) and np.all(Kxy[:, 2] == 0)
    assert np.all(K[[0, 2, 3]][:, [0, 2, 3]] > 0)
