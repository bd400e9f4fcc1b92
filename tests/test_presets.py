"""Presets reproduce the peer systems (ckn_kernel, Arora et al., cnn_gp, Myrtle).

Three kinds of evidence:

* hand-computed values from the written conventions on tiny images (patch
  anchors of even patches, pooling anchors and truncation at borders);
* small direct NumPy re-implementations of each peer's *own* recursion as it
  is described in docs/conventions.rst (ckn_kernel's M/Q recursion on patch
  sums, Arora's S/T recursion with its 2/9 factors, cnn_gp's diagonal-only
  propagation with its padding rule), independent of our layer mapping;
* identities between presets (Arora = C nt, = C H W nt; ckn relu-NTK with
  identity pooling = 9^(d-1) Arora vanilla) and Monte-Carlo agreement with
  sampled finite networks.
"""

import numpy as np
import pytest

from sklearn_convkernel import conv_kernel
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
    Sum,
)
from sklearn_convkernel.presets import (
    arora_cntk,
    cnn_gp,
    cnn_gp_convnet,
    cnn_gp_residual,
    cnn_gp_resnet32,
    from_ckn_kernel,
    li_lap,
    myrtle,
)

RTOL = 1e-12  # measured deviations are below 3e-15


def images(n, H, W, C, seed=0):
    return np.random.default_rng(seed).normal(size=(n, H, W, C))


def gram(X, Y=None, **kw):
    return conv_kernel(X, Y, dtype=np.float64, **kw)


# ---------------------------------------------------------------------------
# direct re-implementation of ckn_kernel's recursion (full 4-D tensors)
# ---------------------------------------------------------------------------


def _shift_both(G, oi, oj):
    """out[u, v] = G[u + o, v + o] (same offset on both sides), zero outside."""
    H, W = G.shape[:2]
    out = np.zeros_like(G)
    si = slice(max(oi, 0), H + min(oi, 0))
    di = slice(max(-oi, 0), H + min(-oi, 0))
    sj = slice(max(oj, 0), W + min(oj, 0))
    dj = slice(max(-oj, 0), W + min(-oj, 0))
    out[di, dj, di, dj] = G[si, sj, si, sj]
    return out


def ckn_patch(G, s):
    """ckn_kernel's patch step: SUM over offsets -(s//2) .. s-1-s//2 (zero padded)."""
    offs = range(-(s // 2), s - s // 2)
    return sum(_shift_both(G, oi, oj) for oi in offs for oj in offs)


def ckn_pool_matrix(n, kind, d, p):
    if kind == "gaussian":
        ks = np.arange(-p, p + 1)
        f = np.exp(-ks ** 2 / p ** 2)
        f /= f.sum()
        m = np.zeros((n // d - 1, n))
        for i in range(m.shape[0]):
            for k, fk in zip(ks, f):
                if d * i + p + k < n:
                    m[i, d * i + p + k] += fk
    elif kind == "average":
        m = np.zeros((n // d, n))
        for i in range(m.shape[0]):
            for k in range(p):
                if d * i + k < n:
                    m[i, d * i + k] += 1.0 / p
    else:
        m = np.zeros((n // d - 1, n))
        for i in range(m.shape[0]):
            m[i, d * (i + 1)] = 1.0
    return m


def ckn_kappa(kernel, c, sigma):
    if kernel == "exp":
        return np.exp((c - 1) / sigma ** 2)
    if kernel == "relu":
        c = np.clip(c, -1, 1)
        return (np.sqrt(1 - c ** 2) + c * (np.pi - np.arccos(c))) / np.pi
    if kernel == "linear":
        return sigma * c
    return c ** int(kernel[-1])


def _coincident(G):
    H, W = G.shape[:2]
    return np.eye(H * W, dtype=bool).reshape(H, W, H, W)


def ckn_direct(x, y, model, ntk=False, same=False):
    """ckn_kernel's value for one pair, recomputed from its conventions (float64).

    Self pairs (``same``) use the exact cosine 1 at coincident positions.
    """
    Gxy = np.einsum("ijc,klc->ijkl", x, y)
    Gxx = np.einsum("ijc,klc->ijkl", x, x)
    Gyy = np.einsum("ijc,klc->ijkl", y, y)
    Q = None
    for layer in model:
        s, d = layer["npatch"], layer["subsampling"]
        p = layer.get("poolfactor", d)
        kind, kernel = layer.get("pooling", "gaussian"), layer.get("kernel", "exp")
        sigma = layer.get("sigma", 1.0)
        Pxy, Pxx, Pyy = (ckn_patch(G, s) for G in (Gxy, Gxx, Gyy))
        H, W = Pxy.shape[:2]
        nx = np.sqrt(np.einsum("ijij->ij", Pxx))
        ny = np.sqrt(np.einsum("ijij->ij", Pyy))

        def homog(P, na, nb, self_pair):
            den = na[:, :, None, None] * nb[None, None, :, :]
            c = np.where(den > 0, P / np.where(den > 0, den, 1), 0.0)
            if self_pair:
                c[_coincident(P) & (den > 0)] = 1.0
            return den * ckn_kappa(kernel, c, sigma), c

        Mxy, c = homog(Pxy, nx, ny, same)
        Mxx, _ = homog(Pxx, nx, nx, True)
        Myy, _ = homog(Pyy, ny, ny, True)
        if ntk:
            T = Pxy if Q is None else ckn_patch(Q, s)
            Qn = T * (np.pi - np.arccos(np.clip(c, -1, 1))) / np.pi + Mxy
        Ph = ckn_pool_matrix(H, kind, d, p)
        Pw = ckn_pool_matrix(W, kind, d, p)

        def pool(G):
            return np.einsum("ai,bj,ijkl,ck,dl->abcd", Ph, Pw, G, Ph, Pw)

        Gxy, Gxx, Gyy = pool(Mxy), pool(Mxx), pool(Myy)
        if ntk:
            Q = pool(Qn)
    return np.einsum("ijij->", Q if ntk else Gxy)


def ckn_direct_gram(X, model, ntk=False):
    return np.array([[ckn_direct(x, y, model, ntk, i == j) for j, y in enumerate(X)]
                     for i, x in enumerate(X)])


# ---------------------------------------------------------------------------
# ckn_kernel: hand-computed cases
# ---------------------------------------------------------------------------


def _int_images(H, W, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-3, 4, size=(2, H, W, 1)).astype(float)


def test_ckn_even_patch_reaches_up_left_hand_computed():
    # one linear layer, 2x2 patches, identity pooling ("average", d = p = 1):
    # K = sum_u sum_{o in {-1,0}^2} x(u+o) y(u+o) = sum_p c(p_i) c(p_j) x(p) y(p),
    # c = how many windows contain the pixel: [2, 2, 1] on 3 rows (not [1, 2, 2]).
    X = _int_images(3, 4, seed=1)
    model = [{"npatch": 2, "subsampling": 1, "pooling": "average", "kernel": "linear"}]
    K = gram(X, architecture=from_ckn_kernel(model))
    w = np.outer([2, 2, 1], [2, 2, 2, 1])
    x, y = X[0, :, :, 0], X[1, :, :, 0]
    assert K[0, 1] == pytest.approx(np.sum(w * x * y), rel=1e-13)
    assert K[0, 0] == pytest.approx(np.sum(w * x * x), rel=1e-13)
    # the mirrored anchor would give a different value on this pair
    assert not np.isclose(K[0, 1], np.sum(np.outer([1, 2, 2], [1, 2, 2, 2]) * x * y))


def test_ckn_linear_sigma_scales_the_patch_kernel():
    X = _int_images(3, 4, seed=2)
    m1 = [{"npatch": 3, "subsampling": 1, "pooling": "average", "kernel": "linear"}]
    m2 = [dict(m1[0], sigma=0.3)]
    K1 = gram(X, architecture=from_ckn_kernel(m1))
    K2 = gram(X, architecture=from_ckn_kernel(m2))
    np.testing.assert_allclose(K2, 0.3 * K1, rtol=1e-13)


def test_ckn_gaussian_pool_anchor_and_truncation_hand_computed():
    # 1x1 linear patches; gaussian pooling d = p = 2 on a 4x5 image gives a single
    # output position: out = sum_{i,j} f[i] f[j] x(i, j) with f_k ~ exp(-k^2/4),
    # k = -2..2 anchored at d*0 + p = 2; row 4 does not exist (its tap is dropped,
    # not renormalised).
    X = _int_images(4, 5, seed=3)
    model = [{"npatch": 1, "subsampling": 2, "pooling": "gaussian", "kernel": "linear"}]
    K = gram(X, architecture=from_ckn_kernel(model))
    f = np.exp(-np.arange(-2, 3) ** 2 / 4.0)
    f /= f.sum()
    px = np.einsum("i,j,ij->", f[:4], f[:5], X[0, :, :, 0])
    py = np.einsum("i,j,ij->", f[:4], f[:5], X[1, :, :, 0])
    assert K[0, 1] == pytest.approx(px * py, rel=1e-13)


def test_ckn_gaussian_subsampling_one_drops_first_row_hand_computed():
    # d = p = 1 on 3 rows: out(i) = sum_{k=-1..1} f_k in(i + 1 + k), 2 outputs:
    # row 0 only enters through the first output's left tap.
    X = _int_images(3, 3, seed=5)
    model = [{"npatch": 1, "subsampling": 1, "pooling": "gaussian", "kernel": "linear"}]
    K = gram(X, architecture=from_ckn_kernel(model))
    f = np.exp(-np.arange(-1, 2) ** 2 / 1.0)
    f /= f.sum()
    P = np.array([[f[0], f[1], f[2]], [0.0, f[0], f[1]]])  # rows 0..2 -> 2 outputs
    px = P @ X[0, :, :, 0] @ P.T
    py = P @ X[1, :, :, 0] @ P.T
    assert K[0, 1] == pytest.approx(np.sum(px * py), rel=1e-13)


def test_ckn_average_pool_window_and_border_hand_computed():
    # average pooling d = 2, p = 3 on 6 rows: out(i) = (in(2i)+in(2i+1)+in(2i+2))/3,
    # three outputs, the last truncated at the border: (in4 + in5)/3.
    X = _int_images(6, 2, seed=6)
    model = [{"npatch": 1, "subsampling": 2, "poolfactor": 3, "pooling": "average",
              "kernel": "linear"}]
    K = gram(X, architecture=from_ckn_kernel(model))
    Ph = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1]]) / 3.0
    Pw = np.array([[1, 1]]) / 3.0  # 2 columns -> 1 output: taps 0, 1 (tap 2 truncated)
    px = Ph @ X[0, :, :, 0] @ Pw.T
    py = Ph @ X[1, :, :, 0] @ Pw.T
    assert K[0, 1] == pytest.approx(np.sum(px * py), rel=1e-13)


def test_ckn_strided_pool_hand_computed():
    # strided d = 2 on 5x6: rows {2}, columns {2, 4}.
    X = _int_images(5, 6, seed=7)
    model = [{"npatch": 1, "subsampling": 2, "pooling": "strided", "kernel": "linear",
              "poolfactor": 7}]  # poolfactor is ignored by strided pooling
    K = gram(X, architecture=from_ckn_kernel(model))
    x, y = X[0, :, :, 0], X[1, :, :, 0]
    assert K[0, 1] == pytest.approx(x[2, 2] * y[2, 2] + x[2, 4] * y[2, 4], rel=1e-13)


def test_ckn_one_relu_layer_closed_form():
    # 1x1 patches, identity pooling: per position u, P = <x_u, y_u> (channel sum),
    # NNGP = sum_u |x_u||y_u| k1(c_u), NTK = sum_u P_u k0(c_u) + |x_u||y_u| k1(c_u).
    X = images(2, 3, 4, 3, seed=8)
    model = [{"npatch": 1, "subsampling": 1, "pooling": "average", "kernel": "relu"}]
    arch = from_ckn_kernel(model, ntk=True)
    x, y = X[0], X[1]
    P = np.sum(x * y, axis=-1)
    n = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
    c = P / n
    k1 = (np.sqrt(1 - c ** 2) + c * (np.pi - np.arccos(c))) / np.pi
    k0 = (np.pi - np.arccos(c)) / np.pi
    assert gram(X, architecture=arch)[0, 1] == pytest.approx(np.sum(n * k1), rel=1e-12)
    assert gram(X, architecture=arch, kind="ntk")[0, 1] == pytest.approx(
        np.sum(P * k0 + n * k1), rel=1e-12)


# ---------------------------------------------------------------------------
# ckn_kernel: against the direct recursion, non-square images, both kinds
# ---------------------------------------------------------------------------

CKN_MODELS = [
    [{"npatch": 3, "subsampling": 2, "pooling": "gaussian", "kernel": "exp", "sigma": 0.6},
     {"npatch": 2, "subsampling": 1, "pooling": "gaussian", "kernel": "exp", "sigma": 0.6}],
    [{"npatch": 2, "subsampling": 1, "poolfactor": 2, "pooling": "gaussian", "kernel": "relu"},
     {"npatch": 3, "subsampling": 2, "pooling": "average", "kernel": "poly2"}],
    [{"npatch": 4, "subsampling": 2, "poolfactor": 3, "pooling": "average", "kernel": "exp",
      "sigma": 0.8},
     {"npatch": 1, "subsampling": 1, "pooling": "strided", "kernel": "linear", "sigma": 0.5}],
    [{"npatch": 3, "subsampling": 1, "pooling": "strided", "kernel": "poly3"},
     {"npatch": 2, "subsampling": 2, "pooling": "gaussian", "kernel": "poly4"}],
]


@pytest.mark.parametrize("model", CKN_MODELS)
def test_ckn_nngp_matches_direct_recursion(model):
    X = images(3, 7, 6, 2, seed=9)
    expected = ckn_direct_gram(X, model, ntk=False)
    np.testing.assert_allclose(gram(X, architecture=from_ckn_kernel(model)), expected,
                               rtol=RTOL)


@pytest.mark.parametrize("shape", [(7, 6), (6, 9)])
def test_ckn_relu_ntk_matches_direct_recursion(shape):
    model = [{"npatch": 2, "subsampling": 2, "pooling": "gaussian", "kernel": "relu"},
             {"npatch": 3, "subsampling": 1, "poolfactor": 2, "pooling": "average"},
             {"npatch": 1, "subsampling": 1, "pooling": "strided"}]
    X = images(3, *shape, 3, seed=10)
    arch = from_ckn_kernel(model, ntk=True)  # default kernel = relu when ntk
    relu = [dict(m, kernel="relu") for m in model]
    np.testing.assert_allclose(gram(X, architecture=arch, kind="ntk"),
                               ckn_direct_gram(X, relu, ntk=True), rtol=RTOL)
    np.testing.assert_allclose(gram(X, architecture=arch, kind="nngp"),
                               ckn_direct_gram(X, relu), rtol=RTOL)


def test_ckn_default_kernel_follows_ntk_flag():
    model = [{"npatch": 3, "subsampling": 2}]
    assert from_ckn_kernel(model) == from_ckn_kernel([dict(model[0], kernel="exp")])
    assert from_ckn_kernel(model, ntk=True) == from_ckn_kernel(
        [dict(model[0], kernel="relu", pooling="gaussian")])


def test_ckn_zero_patch_gives_zero():
    # an image that is zero on a whole region: zero norms contribute 0, not NaN
    X = images(2, 6, 6, 1, seed=11)
    X[0, :3] = 0.0
    model = [{"npatch": 3, "subsampling": 2, "kernel": "relu"}]
    for kind in ("nngp", "ntk"):
        K = gram(X, architecture=from_ckn_kernel(model, ntk=True), kind=kind)
        assert np.all(np.isfinite(K))
        np.testing.assert_allclose(K, ckn_direct_gram(X, model, ntk=kind == "ntk"), rtol=RTOL)


# ---------------------------------------------------------------------------
# Arora et al.: direct recursion and identities
# ---------------------------------------------------------------------------


def arora_direct(x, y, depth, gap, fix, same=False):
    """Arora et al.'s S/T recursion (window sums, 2/9 factors), any image size."""
    def conv3(G):
        return ckn_patch(G, 3)

    def diag(G):
        return np.einsum("ijij->ij", G)

    Sxy = conv3(np.einsum("ijc,klc->ijkl", x, y))
    Sxx = conv3(np.einsum("ijc,klc->ijkl", x, x))
    Syy = conv3(np.einsum("ijc,klc->ijkl", y, y))
    T = np.zeros_like(Sxy) if fix else Sxy.copy()
    for i in range(depth - 1):
        L, R = np.sqrt(diag(Sxx)), np.sqrt(diag(Syy))

        def trans(S, L, R, self_pair):
            LR = L[:, :, None, None] * R[None, None, :, :]
            c = np.clip(S / LR, -1, 1)
            if self_pair:
                c[_coincident(S)] = 1.0
            BS = (c * (np.pi - np.arccos(c)) + np.sqrt(1 - c ** 2)) * LR / (9 * np.pi)
            return BS, (np.pi - np.arccos(c)) / (9 * np.pi)

        BS, dS = trans(Sxy, L, R, same)
        T = T * dS + BS
        Sxy = BS
        Sxx, _ = trans(Sxx, L, L, True)
        Syy, _ = trans(Syy, R, R, True)
        if i < depth - 2:
            Sxy, Sxx, Syy, T = conv3(Sxy), conv3(Sxx), conv3(Syy), conv3(T)
    if fix:
        T = T - Sxy
    return T.mean() if gap else np.einsum("ijij->", T)


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("gap", [True, False])
@pytest.mark.parametrize("fix", [False, True])
def test_arora_matches_direct_recursion(depth, gap, fix):
    X = images(2, 5, 6, 3, seed=12)
    K = gram(X, architecture=arora_cntk(depth, gap=gap, fix=fix), kind="ntk")
    expected = np.array([[arora_direct(x, y, depth, gap, fix, i == j) for j, y in enumerate(X)]
                         for i, x in enumerate(X)])
    np.testing.assert_allclose(K, expected, rtol=RTOL)


@pytest.mark.parametrize("gap", [True, False])
def test_arora_equals_C_or_CHW_times_neural_tangents_net(gap):
    n, H, W, C = 3, 5, 7, 3
    X = images(n, H, W, C, seed=13)
    d = 4
    nt = Sequential(*[Conv(3, weight_var=2.0), ReLU()] * (d - 1),
                    GlobalAvgPool() if gap else Flatten(), Dense())
    factor = C if gap else C * H * W
    for kind in ("ntk", "nngp"):
        np.testing.assert_allclose(gram(X, architecture=arora_cntk(d, gap=gap), kind=kind),
                                   factor * gram(X, architecture=nt, kind=kind), rtol=RTOL)


def test_ckn_relu_ntk_identity_pooling_is_9_pow_layers_times_arora_vanilla():
    d = 4
    X = images(3, 6, 5, 2, seed=14)
    model = [{"npatch": 3, "subsampling": 1, "pooling": "average", "kernel": "relu"}] * (d - 1)
    ckn = gram(X, architecture=from_ckn_kernel(model, ntk=True), kind="ntk")
    arora = gram(X, architecture=arora_cntk(d, gap=False, fix=False), kind="ntk")
    np.testing.assert_allclose(ckn, 9.0 ** (d - 1) * arora, rtol=RTOL)


def test_arora_rejects_bad_depth():
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ArchitectureError, match="depth"):
            arora_cntk(bad)


# ---------------------------------------------------------------------------
# cnn_gp: direct diagonal-only propagation
# ---------------------------------------------------------------------------


def _cg_conv_map(m, k, stride, padding, dilation, V, B):
    """F.conv2d of one map with cnn_gp's buffer kernel, then + B."""
    if padding == "same":
        pad = dilation * (k // 2)
        taps = list(range(1, k + 1)) if k % 2 == 0 else list(range(k))  # row 0 zeroed
    else:
        pad = padding
        taps = list(range(k))
    mp = np.pad(m, ((pad, pad), (pad, pad)))
    ext = dilation * ((k + 1 if (padding == "same" and k % 2 == 0) else k) - 1) + 1
    oh = (mp.shape[0] - ext) // stride + 1
    ow = (mp.shape[1] - ext) // stride + 1
    out = np.zeros((oh, ow))
    for ti in taps:
        for tj in taps:
            out += mp[ti * dilation: ti * dilation + (oh - 1) * stride + 1: stride,
                      tj * dilation: tj * dilation + (ow - 1) * stride + 1: stride]
    return V * out / k ** 2 + B


def cg_direct(spec, kp, same=False):
    """Propagate (xy, xx, yy) maps through a cnn_gp-like spec, as cnn_gp does."""
    op = spec[0]
    if op == "conv":
        return tuple(_cg_conv_map(m, *spec[1:]) for m in kp)
    if op == "relu":
        xy, xx, yy = kp
        if same:  # cnn_gp replaces the same-image diagonal by xx / 2
            return xx / 2, xx / 2, yy / 2
        s = np.sqrt(xx * yy)
        c = np.clip(xy / s, -1, 1)
        th = np.arccos(c)
        return ((np.sqrt(np.clip(xx * yy - xy ** 2, 0, None)) + (np.pi - th) * xy)
                / (2 * np.pi), xx / 2, yy / 2)
    if op == "seq":
        for sub in spec[1]:
            kp = cg_direct(sub, kp, same)
        return kp
    if op == "sum":
        outs = [cg_direct(sub, kp, same) for sub in spec[1]]
        return tuple(sum(o[i] for o in outs) for i in range(3))
    raise ValueError(op)


def cg_direct_value(x, y, spec, same=False):
    xy = np.mean(x * y, axis=-1)
    xx, yy = np.mean(x * x, axis=-1), np.mean(y * y, axis=-1)
    out = cg_direct(spec, (xy, xx, yy), same=same)[0]
    assert out.shape == (1, 1)
    return out[0, 0]


def cg_direct_gram(X, spec):
    return np.array([[cg_direct_value(x, y, spec, i == j) for j, y in enumerate(X)]
                     for i, x in enumerate(X)])


def _conv(k, stride=1, padding="same", dilation=1, V=1.0, B=0.0):
    return ("conv", k, stride, padding, dilation, V, B)


def _block_spec(stride, projection):
    if stride == 1 and not projection:
        return ("sum", [("seq", []), ("seq", [("relu",), _conv(3, stride), ("relu",), _conv(3)])])
    return ("seq", [("relu",), ("sum", [_conv(1, stride),
                                        ("seq", [_conv(3, stride), ("relu",), _conv(3)])])])


def test_cnn_gp_convnet_matches_direct_propagation():
    vw, vb = 2.79, 7.86
    hidden = [s for _ in range(3) for s in (_conv(5, V=vw * 25, B=vb), ("relu",))]
    # square images: cnn_gp's own readout Conv2d(kernel_size=8, padding=0)
    X = images(3, 8, 8, 2, seed=15)
    spec = ("seq", hidden + [_conv(8, padding=0, V=vw, B=vb)])
    np.testing.assert_allclose(gram(X, architecture=cnn_gp_convnet((8, 8), n_layers=3,
                                                                   kernel_size=5)),
                               cg_direct_gram(X, spec), rtol=RTOL)
    # non-square images: the readout window is the whole 9x7 map, i.e.
    # var_weight * (mean over positions) + var_bias
    X = images(3, 9, 7, 2, seed=15)
    expected = np.array([[vw * np.mean(cg_direct(("seq", hidden), (
        np.mean(x * y, -1), np.mean(x * x, -1), np.mean(y * y, -1)), same=i == j)[0]) + vb
        for j, y in enumerate(X)] for i, x in enumerate(X)])
    np.testing.assert_allclose(gram(X, architecture=cnn_gp_convnet((9, 7), n_layers=3,
                                                                   kernel_size=5)),
                               expected, rtol=RTOL)


def test_cnn_gp_paper_convnet_default_is_config():
    arch = cnn_gp_convnet()
    X = images(2, 28, 28, 1, seed=24)
    vw, vb = 2.79, 7.86
    spec = ("seq", [s for _ in range(7) for s in (_conv(7, V=vw * 49, B=vb), ("relu",))]
            + [_conv(28, padding=0, V=vw, B=vb)])
    np.testing.assert_allclose(gram(X, architecture=arch), cg_direct_gram(X, spec), rtol=RTOL)
    convs = [layer for layer in arch if isinstance(layer, Conv)]
    assert len(convs) == 8
    assert convs[0] == Conv(7, padding=((3, 3), (3, 3)), weight_var=2.79 * 49, bias_var=7.86)
    assert convs[-1] == Conv(28, padding=0, weight_var=2.79, bias_var=7.86)


def test_cnn_gp_residual_matches_direct_propagation():
    H, W = 8, 8
    X = images(3, H, W, 1, seed=16)
    vw, vb, k = 7.27, 4.69, 4
    blk = ("sum", [("seq", []), ("seq", [_conv(k, V=vw * k * k, B=vb), ("relu",)])])
    spec = ("seq", [blk] * 3 + [_conv(k, V=vw * k * k, B=vb), ("relu",),
                                _conv(H, padding=0, V=vw, B=vb)])
    arch = cnn_gp_residual((H, W), n_blocks=3)
    np.testing.assert_allclose(gram(X, architecture=arch), cg_direct_gram(X, spec), rtol=RTOL)


def test_cnn_gp_resnet32_matches_direct_propagation():
    H = W = 12
    X = images(3, H, W, 1, seed=17)
    body = [_conv(3)]
    for stride in (1, 2, 2):
        body.append(_block_spec(stride, True))
        body += [_block_spec(1, False)] * 4
    spec = ("seq", body + [_conv(3, padding=0), ("relu",), _conv(1, padding=0)])  # 12->6->3
    np.testing.assert_allclose(gram(X, architecture=cnn_gp_resnet32((H, W))),
                               cg_direct_gram(X, spec), rtol=RTOL)
    assert cnn_gp_resnet32().output_shape((28, 28)) == (1, 1)


@pytest.mark.parametrize("k,stride,dilation", [(3, 2, 1), (4, 1, 1), (4, 2, 1), (4, 1, 2),
                                               (3, 1, 2), (2, 3, 1)])
def test_cnn_gp_conv2d_padding_rule(k, stride, dilation):
    X = images(3, 9, 9, 2, seed=18)
    conv = cnn_gp.Conv2d(k, stride=stride, dilation=dilation, var_weight=1.7, var_bias=0.3)
    h, w = Sequential(conv).output_shape((9, 9))
    arch = cnn_gp.Sequential(conv, cnn_gp.ReLU(), cnn_gp.Conv2d(h, padding=0))
    spec = ("seq", [_conv(k, stride, "same", dilation, 1.7, 0.3), ("relu",),
                    _conv(h, padding=0)])
    np.testing.assert_allclose(gram(X, architecture=arch), cg_direct_gram(X, spec), rtol=RTOL)


def test_cnn_gp_same_with_stride_is_not_tensorflow_same():
    X = images(2, 8, 8, 1, seed=19)
    cg = cnn_gp.Conv2d(3, stride=2)
    assert cg.padding == ((1, 1), (1, 1))
    tf = Conv(3, stride=2, padding="same")
    a = Sequential(cg, ReLU(), Conv(4, padding=0))
    b = Sequential(tf, ReLU(), Conv(4, padding=0))
    assert not np.allclose(gram(X, architecture=a), gram(X, architecture=b))


def test_cnn_gp_mirror_equals_hand_built_architecture():
    mirror = cnn_gp.Sequential(
        cnn_gp.Conv2d(kernel_size=4, padding="same", var_weight=3.0, var_bias=0.5),
        cnn_gp.ReLU(),
        cnn_gp.Sum([cnn_gp.Sequential(),
                    cnn_gp.Sequential(cnn_gp.Conv2d(3, var_weight=2.0), cnn_gp.ReLU())]),
        cnn_gp.Conv2d(1),
        cnn_gp.resnet_block(stride=2, projection_shortcut=True),
        cnn_gp.Conv2d(kernel_size=5, padding=0, var_weight=1.5, var_bias=0.1),
    )
    hand = Sequential(
        Conv(4, padding=((1, 2), (1, 2)), weight_var=3.0, bias_var=0.5),
        ReLU(),
        Sum(Sequential(), Sequential(Conv(3, padding=1, weight_var=2.0), ReLU())),
        Conv(1, padding=0),
        Sequential(ReLU(), Sum(Conv(1, stride=2, padding=0),
                               Sequential(Conv(3, stride=2, padding=1), ReLU(),
                                          Conv(3, padding=1)))),
        Conv(5, padding=0, weight_var=1.5, bias_var=0.1),
    )
    assert mirror == hand
    X = images(3, 10, 10, 2, seed=20)
    np.testing.assert_allclose(gram(X, architecture=mirror), gram(X, architecture=hand),
                               rtol=1e-14)


def test_cnn_gp_errors():
    with pytest.raises(ArchitectureError, match="padding"):
        cnn_gp.Conv2d(3, padding="valid")
    with pytest.raises(ArchitectureError, match="padding"):
        cnn_gp.Conv2d(3, padding=-1)
    with pytest.raises(ArchitectureError, match="list of branches"):
        cnn_gp.Sum(cnn_gp.ReLU())
    with pytest.raises(ArchitectureError, match="kernel_size"):
        cnn_gp.Conv2d(0)
    with pytest.raises(ArchitectureError, match="window"):
        gram(images(1, 20, 20, 1), architecture=cnn_gp_convnet())  # 28x28 readout


# ---------------------------------------------------------------------------
# Myrtle
# ---------------------------------------------------------------------------


def test_myrtle_global_equals_published_pools_on_32x32():
    X = images(2, 32, 32, 3, seed=21)
    for kind in ("nngp", "ntk"):
        np.testing.assert_allclose(gram(X, architecture=myrtle(5), kind=kind),
                                   gram(X, architecture=myrtle(5, final_pool="avg"), kind=kind),
                                   rtol=1e-12)


def test_myrtle_structure_and_small_inputs():
    arch = myrtle(7, final_pool="avg")
    expected = Sequential(
        *[Conv(3, weight_var=2.0), ReLU()] * 2, AvgPool(2, stride=2),
        *[Conv(3, weight_var=2.0), ReLU()] * 2, AvgPool(2, stride=2),
        *[Conv(3, weight_var=2.0), ReLU()] * 2,
        *[AvgPool(2, stride=2)] * 3, Flatten(), Dense(weight_var=2.0))
    assert arch == expected
    assert sum(isinstance(layer, Conv) for layer in myrtle(10)) == 9
    X = images(2, 8, 12, 3, seed=22)  # smallest supported, non-square
    K = gram(X, architecture=myrtle(5), kind="ntk")
    assert np.all(np.isfinite(K)) and np.all(np.linalg.eigvalsh(K) > 0)
    with pytest.raises(ArchitectureError, match="depth"):
        myrtle(6)
    with pytest.raises(ArchitectureError, match="final_pool"):
        myrtle(5, final_pool="max")


# ---------------------------------------------------------------------------
# Li et al.'s LAP network
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("one_sided", [False, True])
def test_li_lap_structure(one_sided):
    expected = Sequential(*[Conv(3, padding="same", weight_var=2.0), ReLU()] * 4,
                          ShiftAverage(2, one_sided=one_sided), Dense())
    assert li_lap(5, 2, one_sided=one_sided) == expected
    from sklearn_convkernel import cntk_architecture

    assert li_lap(5, 1) == cntk_architecture(5, gap=False, max_shift=1)[0]


@pytest.mark.parametrize("depth", [2, 4])
def test_li_lap_without_shifts_is_arora_vanilla_over_CHW(depth):
    # max_shift = 0 is the flatten read-out: Arora et al.'s vanilla CNTK, whose
    # own recursion is checked above, equals C * H * W times it
    X = images(3, 6, 5, 2, seed=31)
    K = gram(X, architecture=li_lap(depth, 0), kind="ntk")
    np.testing.assert_allclose(K * (6 * 5 * 2),
                               gram(X, architecture=arora_cntk(depth, gap=False), kind="ntk"),
                               rtol=RTOL)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_li_lap_with_flips_as_documented(kind):
    # augment="hflip" is (K(x, y) + K(x, flip y)) / 2 on the preset, which is
    # flip-equivariant: symmetric, positive semi-definite, flip-invariant
    X = images(5, 7, 6, 1, seed=32)
    arch = li_lap(3, 1)
    K = gram(X, architecture=arch, kind=kind, augment="hflip")
    flipped = X[:, :, ::-1, :]
    expected = (gram(X, architecture=arch, kind=kind)
                + gram(X, flipped, architecture=arch, kind=kind)) / 2
    np.testing.assert_allclose(K, expected, rtol=1e-12)
    np.testing.assert_allclose(K, K.T, rtol=1e-12)
    assert np.linalg.eigvalsh(K).min() > -1e-12 * np.abs(K).max()
    np.testing.assert_allclose(gram(X, flipped, architecture=arch, kind=kind, augment="hflip"),
                               K, rtol=1e-12)


def test_li_lap_errors():
    with pytest.raises(ArchitectureError, match="depth"):
        li_lap(1)
    with pytest.raises(ArchitectureError, match="depth"):
        li_lap(True)
    with pytest.raises(ArchitectureError, match="max_shift"):
        li_lap(5, -1)
    with pytest.raises(ArchitectureError, match="one_sided"):
        li_lap(5, 1, one_sided="yes")


# ---------------------------------------------------------------------------
# Monte-Carlo: presets against sampled finite networks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: arora_cntk(3, gap=True),
    lambda: from_ckn_kernel([{"npatch": 3, "subsampling": 2, "kernel": "relu"}]),
    lambda: cnn_gp.Sequential(cnn_gp.Conv2d(3, var_weight=2.0, var_bias=0.1),
                              cnn_gp.resnet_block(stride=2, projection_shortcut=True),
                              cnn_gp.Conv2d(3, padding=0, var_weight=1.0, var_bias=0.2)),
], ids=["arora", "ckn", "cnn_gp"])
def test_presets_nngp_agree_with_finite_networks(make):
    testing = pytest.importorskip("sklearn_convkernel.testing")
    arch = make()
    X = images(3, 6, 5, 2, seed=23)
    mean, stderr = testing.empirical_kernel(X, architecture=arch, width=384, n_networks=12,
                                            random_state=0)
    K = gram(X, architecture=arch)
    z = np.abs(mean - K) / (stderr + 1e-3 * np.abs(K))
    assert np.all(z < 5), z


# ---------------------------------------------------------------------------
# ckn_kernel: validation errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model,match", [
    ([{"npatch": 3, "subsampling": 2, "patch": 3}], "unknown key"),
    ([{"npatch": 3, "subsampling": 2, "pooling": "max"}], "pooling"),
    ([{"npatch": 3, "subsampling": 2, "kernel": "rbf"}], "'kernel' must be one of"),
    ([{"npatch": 3, "subsampling": 2, "kernel": "square"}], "square"),
    ([{"subsampling": 2}], "'npatch' is missing"),
    ([{"npatch": 3}], "'subsampling' is missing"),
    ([{"npatch": 0, "subsampling": 2}], "npatch"),
    ([{"npatch": 3.0, "subsampling": 2}], "npatch"),
    ([{"npatch": 3, "subsampling": 2, "poolfactor": 0}], "poolfactor"),
    ([{"npatch": 3, "subsampling": 2, "sigma": 0}], "sigma"),
    ([], "non-empty list"),
    ("exp", "non-empty list"),
    ([3], "expected a dict"),
])
def test_ckn_model_errors(model, match):
    with pytest.raises(ArchitectureError, match=match):
        from_ckn_kernel(model)


def test_ckn_ntk_only_for_relu():
    with pytest.raises(ArchitectureError, match="only for the 'relu' kernel"):
        from_ckn_kernel([{"npatch": 3, "subsampling": 2, "kernel": "exp"}], ntk=True)


def test_ckn_input_shape_validated_early():
    model = [{"npatch": 3, "subsampling": 5}, {"npatch": 3, "subsampling": 5}]
    with pytest.raises(ArchitectureError, match="pools to"):
        from_ckn_kernel(model, input_shape=(28, 28))
    # one layer: 28 // 5 - 1 = 4 positions, then the trace
    arch = from_ckn_kernel(model[:1], input_shape=(28, 28, 1))
    assert Sequential(*arch.layers[:3]).output_shape((28, 28)) == (4, 4)
