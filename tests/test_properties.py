"""Property-based tests (hypothesis): identities every exact kernel matrix satisfies.

Random small images and architectures; each property is a definition, not a
recorded output: symmetry and positive semi-definiteness of Gram matrices,
independence of n_jobs and tile size, positive homogeneity of bias-free ReLU
networks (K(cX, cX) = c^2 K(X, X) per ReLU-homogeneous layer), equivariance
to flips and circular translations (with circular padding and a position-
symmetric read-out), and invariance to the memory layout of the input.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklearn_convkernel import conv_kernel
from sklearn_convkernel.arch import (
    AvgPool,
    Conv,
    Dense,
    Erf,
    Flatten,
    GlobalAvgPool,
    ReLU,
    Sequential,
)

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def image_batches(draw, max_n=5, max_side=7, max_c=2, min_side=3):
    n = draw(st.integers(2, max_n))
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    c = draw(st.integers(1, max_c))
    seed = draw(st.integers(0, 2**32 - 1))
    X = np.random.default_rng(seed).standard_normal((n, h, w, c))
    return X


@st.composite
def architectures(draw, bias=True, padding="same"):
    depth = draw(st.integers(1, 3))
    layers = []
    for _ in range(depth):
        size = draw(st.sampled_from([1, 2, 3]))
        bv = draw(st.sampled_from([0.0, 0.5])) if bias else 0.0
        layers += [Conv(size, padding=padding, weight_var=draw(st.sampled_from([1.0, 2.0])),
                        bias_var=bv),
                   draw(st.sampled_from([ReLU(), Erf()])) if bias else ReLU()]
    layers += [draw(st.sampled_from([GlobalAvgPool(), Flatten()])), Dense()]
    return Sequential(*layers)


def _rel(A, B):
    return float(np.max(np.abs(A - B)) / np.max(np.abs(B)))


@SETTINGS
@given(X=image_batches(), arch=architectures(), kind=st.sampled_from(["nngp", "ntk"]))
def test_gram_is_symmetric_and_psd(X, arch, kind):
    K = conv_kernel(X, architecture=arch, kind=kind)
    np.testing.assert_array_equal(K, K.T)
    w = np.linalg.eigvalsh(K)
    assert w.min() >= -1e-10 * max(w.max(), 1e-300)


@SETTINGS
@given(X=image_batches(max_n=7), arch=architectures(), tile=st.integers(1, 4),
       n_jobs=st.sampled_from([1, 2]), kind=st.sampled_from(["nngp", "ntk"]))
def test_n_jobs_and_tile_size_do_not_change_the_result(X, arch, tile, n_jobs, kind):
    K1 = conv_kernel(X, architecture=arch, kind=kind, n_jobs=1)
    K2 = conv_kernel(X, architecture=arch, kind=kind, n_jobs=n_jobs, tile_size=tile)
    np.testing.assert_array_equal(K1, K2)
    Y = X[::-1][:2]
    C1 = conv_kernel(X, Y, architecture=arch, kind=kind, n_jobs=1)
    C2 = conv_kernel(X, Y, architecture=arch, kind=kind, n_jobs=n_jobs, tile_size=tile)
    np.testing.assert_array_equal(C1, C2)


@SETTINGS
@given(X=image_batches(), arch=architectures(bias=False), kind=st.sampled_from(["nngp", "ntk"]),
       c=st.sampled_from([0.25, 3.0, 1e3]))
def test_bias_free_relu_networks_are_positively_homogeneous(X, arch, kind, c):
    """K(cX, cX) = c^2 K(X, X): every layer maps the covariance linearly in c^2."""
    K = conv_kernel(X, architecture=arch, kind=kind)
    Kc = conv_kernel(c * X, architecture=arch, kind=kind)
    np.testing.assert_allclose(Kc, c * c * K, rtol=1e-12, atol=1e-12 * c * c * np.abs(K).max())


@SETTINGS
@given(X=image_batches(), arch=architectures(padding="circular"),
       kind=st.sampled_from(["nngp", "ntk"]), axis=st.sampled_from([1, 2]),
       shift=st.integers(1, 6))
def test_flip_and_circular_translation_equivariance(X, arch, kind, axis, shift):
    """With circular padding, a kernel of the translated or flipped images agrees
    with the original on every read-out that averages or sums over positions;
    Flatten read-outs (sum over positions of the diagonal) are symmetric too."""
    K = conv_kernel(X, architecture=arch, kind=kind)
    Xs = np.roll(X, shift, axis=axis)
    np.testing.assert_allclose(conv_kernel(Xs, architecture=arch, kind=kind), K, rtol=1e-11)
    # flips: a symmetric window (size 1 or 3) keeps the kernel; size 2 mirrors its offset
    if all(getattr(layer, "size", (1, 1))[0] % 2 == 1 for layer in arch.layers):
        Xf = np.flip(X, axis=axis)
        np.testing.assert_allclose(conv_kernel(Xf, architecture=arch, kind=kind), K,
                                   rtol=1e-11)


@SETTINGS
@given(X=image_batches(), arch=architectures(), layout=st.sampled_from(
    ["float32-in", "fortran", "strided", "noncontig-channels", "int", "memmap", "list"]))
def test_input_layout_does_not_change_the_result(X, arch, layout, tmp_path_factory):
    """The same values in any memory layout or numeric container give the same Gram."""
    Xq = np.round(X * 8) / 8  # exactly representable in float32 and as small ints / 8
    K = conv_kernel(Xq, architecture=arch)
    if layout == "float32-in":
        Z = Xq.astype(np.float32)
    elif layout == "fortran":
        Z = np.asfortranarray(Xq)
    elif layout == "strided":
        big = np.zeros((Xq.shape[0] * 2,) + Xq.shape[1:])
        big[::2] = Xq
        Z = big[::2]
    elif layout == "noncontig-channels":
        big = np.zeros(Xq.shape[:3] + (Xq.shape[3] * 2,))
        big[..., ::2] = Xq
        Z = big[..., ::2]
    elif layout == "int":
        np.testing.assert_array_equal(conv_kernel((Xq * 8).astype(np.int64), architecture=arch),
                                      conv_kernel(Xq * 8, architecture=arch))
        return
    elif layout == "memmap":
        path = tmp_path_factory.mktemp("mm") / "X.npy"
        np.save(path, Xq)
        Z = np.load(path, mmap_mode="r")
    else:
        Z = Xq.tolist()
    np.testing.assert_array_equal(conv_kernel(Z, architecture=arch), K)


@SETTINGS
@given(X=image_batches(max_n=4, min_side=4), kind=st.sampled_from(["nngp", "ntk"]))
def test_dtype_float32_agrees_with_float64(X, kind):
    arch = Sequential(Conv(3, weight_var=2.0), ReLU(), AvgPool(2), Conv(2), ReLU(),
                      GlobalAvgPool(), Dense())
    K64 = conv_kernel(X, architecture=arch, kind=kind)
    K32 = conv_kernel(X.astype(np.float32), architecture=arch, kind=kind, dtype=np.float32)
    assert K32.dtype == np.float32
    assert _rel(K32.astype(np.float64), K64) < 1e-4
