"""Kervolution layers (optional PyTorch): exactness of the linear kernel, each kernel
against a slow direct loop over positions, and ``kernelize``."""

import importlib
import sys

import numpy as np
import pytest


def test_module_imports_without_torch(monkeypatch):
    # make "import torch" fail (None in sys.modules), then re-run the module's code
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "sklearn_convkernel.kervolution._torch", raising=False)
    kv = importlib.reload(importlib.import_module("sklearn_convkernel.kervolution"))
    assert "gaussian" in kv.KERVOLUTION_KERNELS
    with pytest.raises(ImportError, match=r"pip install sklearn-convkernel\[torch\]"):
        kv.KernelConv2d
    with pytest.raises(ImportError, match=r"pip install sklearn-convkernel\[torch\]"):
        kv.kernelize(None, "linear")
    with pytest.raises(AttributeError):
        kv.NoSuchThing


try:
    import torch
except ImportError:  # the tests below are skipped; the one above still runs
    torch = None
else:
    F = torch.nn.functional
    from sklearn_convkernel.kervolution import KernelConv2d, kernelize

needs_torch = pytest.mark.skipif(
    torch is None, reason="PyTorch is not installed (pip install sklearn-convkernel[torch])")


def _pads(padding, n, k, s, d):
    """(before, after) pads of one axis for the direct reference."""
    if padding == "valid":
        return 0, 0
    if padding == "same":  # output ceil(n / s); the odd pixel after
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        return total // 2, total - total // 2
    return padding, padding


def direct(x, layer, kfun):
    """The definition: a loop over images, output channels and positions."""
    x = x.detach().double().numpy()
    w = layer.weight.detach().double().numpy()
    b = None if layer.bias is None else layer.bias.detach().double().numpy()
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    g = layer.groups
    (sh, sw), (dh, dw) = layer.stride, layer.dilation
    pad = layer.padding
    ph = _pads(pad if isinstance(pad, str) else pad[0], H, kh, sh, dh)
    pw = _pads(pad if isinstance(pad, str) else pad[1], W, kw, sw, dw)
    xp = np.pad(x, ((0, 0), (0, 0), ph, pw))
    Ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    Wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            grp = o // (O // g)
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[n, grp * Cg:(grp + 1) * Cg,
                               i * sh:i * sh + dh * (kh - 1) + 1:dh,
                               j * sw:j * sw + dw * (kw - 1) + 1:dw]
                    out[n, o, i, j] = kfun(patch.ravel(), w[o].ravel())
            if b is not None:
                out[n, o] += b[o]
    return out


KERNEL_FUNS = {
    "linear": (dict(), lambda p, w: p @ w),
    "polynomial": (dict(c=0.5, degree=3), lambda p, w: (p @ w + 0.5) ** 3),
    "gaussian": (dict(gamma=0.3), lambda p, w: np.exp(-0.3 * np.sum((p - w) ** 2))),
    "sigmoid": (dict(alpha=0.7, c=0.1), lambda p, w: np.tanh(0.7 * (p @ w) + 0.1)),
    "manhattan": (dict(), lambda p, w: -np.sum(np.abs(p - w))),
}

CONFIGS = [
    # (in, out, kernel_size, stride, padding, dilation, groups, bias, input H x W)
    (3, 4, 3, 1, 0, 1, 1, True, (7, 9)),
    (4, 6, (3, 2), 2, 1, 1, 2, False, (8, 11)),
    (2, 4, 3, 1, "same", 2, 1, True, (6, 10)),
    (6, 3, (2, 3), (2, 1), "same", 1, 3, True, (9, 7)),
    (3, 3, 5, 1, "valid", 1, 3, True, (8, 8)),
]


@needs_torch
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("kernel", sorted(KERNEL_FUNS))
def test_kernels_match_direct_loop(cfg, kernel):
    cin, cout, k, s, p, d, g, bias, (H, W) = cfg
    params, kfun = KERNEL_FUNS[kernel]
    torch.manual_seed(0)
    layer = KernelConv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias,
                         kernel=kernel, dtype=torch.float64, **params)
    x = torch.randn(2, cin, H, W, dtype=torch.float64) * 0.5
    got = layer(x).detach().numpy()
    want = direct(x, layer, kfun)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@needs_torch
@pytest.mark.parametrize("cfg", [c for c in CONFIGS if not (c[4] == "same" and c[3] != 1)])
def test_linear_is_exactly_conv2d(cfg):
    cin, cout, k, s, p, d, g, bias, (H, W) = cfg
    torch.manual_seed(1)
    layer = KernelConv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
    x = torch.randn(3, cin, H, W)
    want = F.conv2d(x, layer.weight, layer.bias, layer.stride, p, layer.dilation, g)
    assert torch.equal(layer(x), want)


@needs_torch
def test_linear_same_with_stride_is_conv2d_on_padded_input():
    torch.manual_seed(2)
    layer = KernelConv2d(2, 5, 4, stride=3, padding="same", dilation=1)
    x = torch.randn(2, 2, 10, 13)
    # TF SAME: out = ceil(n / 3); total pad = (out-1)*3 + 4 - n
    want = F.conv2d(F.pad(x, (1, 2, 1, 2)), layer.weight, layer.bias, 3)
    assert layer(x).shape == (2, 5, 4, 5)
    torch.testing.assert_close(layer(x), want, rtol=0, atol=0)


@needs_torch
@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
@pytest.mark.parametrize("kernel", ["linear", "gaussian", "manhattan"])
def test_padding_modes(mode, kernel):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, dtype=torch.float64)
    layer = KernelConv2d.from_conv(conv, kernel)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    xp = F.pad(x, (1, 1, 1, 1), mode=mode)
    ref = KernelConv2d.from_conv(
        torch.nn.Conv2d(3, 4, 3, padding=0, dtype=torch.float64), kernel)
    ref.load_state_dict(layer.state_dict())
    if kernel == "linear":
        assert torch.equal(layer(x), conv(x))
    torch.testing.assert_close(layer(x), ref(xp))


@needs_torch
def test_gradients_flow_and_learnable_parameters():
    torch.manual_seed(4)
    layer = KernelConv2d(2, 2, 3, padding=1, kernel="gaussian", gamma=0.5, learnable=True,
                         dtype=torch.float64)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp).sum(), (x,))
    layer(x).sum().backward()
    assert layer.gamma.grad is not None and layer.weight.grad is not None
    m = KernelConv2d(2, 3, 3, kernel="manhattan", dtype=torch.float64)
    y = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    m(y).sum().backward()
    assert m.weight.grad is not None and y.grad is not None


@needs_torch
def test_manhattan_chunks_do_not_change_results(monkeypatch):
    torch.manual_seed(5)
    layer = KernelConv2d(3, 4, 3, padding=1, kernel="manhattan", dtype=torch.float64)
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    full = layer(x)
    monkeypatch.setattr("sklearn_convkernel.kervolution._torch._MANHATTAN_CHUNK", 1)
    torch.testing.assert_close(layer(x), full, rtol=0, atol=0)


@needs_torch
def test_kernelize_keeps_weights_and_outputs():
    torch.manual_seed(6)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding="same"), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Conv2d(4, 6, (3, 2), stride=2, groups=2, bias=False)),
        torch.nn.Flatten(),
    ).eval()
    x = torch.randn(2, 1, 9, 8)
    before = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    out = kernelize(net, "linear")
    assert out is net
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(isinstance(m, KernelConv2d) for m in convs)
    assert not net.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])
    assert torch.equal(net(x), before)
    # a second conversion leaves kervolutions alone; a polynomial one changes outputs
    kernelize(net, "polynomial", c=1.0, degree=2)
    assert all(m.kernel == "linear" for m in convs)
    single = kernelize(torch.nn.Conv2d(2, 2, 1), "gaussian", gamma=2.0)
    assert isinstance(single, KernelConv2d) and float(single.gamma) == 2.0


@needs_torch
def test_errors():
    with pytest.raises(ValueError, match="kernel must be one of"):
        KernelConv2d(1, 1, 3, kernel="rbf")
    with pytest.raises(ValueError, match="degree"):
        KernelConv2d(1, 1, 3, kernel="polynomial", degree=0)
    with pytest.raises(ValueError, match="kernel must be one of"):
        kernelize(torch.nn.Conv2d(1, 1, 1), "rbf")
