"""Per-entry cost model of the benchmark workloads: flops and bytes by operation.

Derived from the architectures alone (layers, window sizes, image size), not
from the engine's code: what an exact evaluation of one kernel entry k(x, y)
has to compute, counted per *position pair*.  A full spatial path (GAP or
pooling read-outs) carries the 4-D tensors over all (p, q) pairs, (H W)^2 of
them; a diagonal path (Flatten or a read-out conv covering the whole map)
needs only the pairs (p, p), H W of them.

One multiply, add, FMA-half or square root = 1 flop; compares, selects,
min/max and abs are free.  Operations (per pair and per tensor):

  input        K0 = x_p . y_q / C                                   2C - 1
  window sum   k x k window, separable (k-1 adds along the height taps,
               k-1 along the width taps) and one multiply by the weight
               variance / k^2                                   2(k-1) + 1
               (+1 add per bias, +1 add for Theta += K of an NTK layer)
  ReLU         arc-cosine of degree 1 on the normalised correlation:
               rho = K inv_p inv_q 2, arccos 34 (degree-12 polynomial core,
               reflections), s = sq_p sq_q 1, sin 4, K'' = s(sin + (pi-th)rho)/2pi 5
               = 46 for the NNGP; the NTK adds Kdot 1 and Theta'' 1 = 48
  exp          ckn_kernel's exp((rho - 1) / sigma^2) on normalised patches:
               rho 2, affine 2, exp EXP_FLOPS, times the norms 2
  pooling      separable strided window (ckn_kernel's gaussian filter of
               2 d + 1 taps, stride d, output side h // d - 1), one axis of the
               4-D tensor at a time: 2 flops per tap and output value
  read-out     GAP or Flatten: 1 add per pair and tensor; ckn's trace: 1 add
               per remaining diagonal position

EXP_FLOPS is a nominal cost of one vectorised exponential (range reduction
and a degree-6 polynomial, about 14 flops).  The self passes (O(N) per Gram)
and the shorter windows at the borders are ignored.

Bytes: the *streaming* model -- every operation reads its input tensors and
writes its output tensors once through memory (itemsize bytes per pair and
tensor).  A fused, cache-blocked engine moves far less; the ratio flops/bytes
says how much reuse an operation offers, not what the engine moves.
"""

from __future__ import annotations

from collections import OrderedDict

EXP_FLOPS = 14
ACOS_FLOPS = 34
RELU_NNGP = 2 + ACOS_FLOPS + 1 + 4 + 5   # 46
RELU_NTK = RELU_NNGP + 2                # 48
EXP_NNGP = 2 + 2 + EXP_FLOPS + 2         # 20

CATEGORIES = ("input", "window sums", "nonlinearity", "pooling", "read-out")


class Cost:
    """Flops and streamed bytes of one kernel entry, by operation category."""

    def __init__(self, name, itemsize):
        self.name, self.itemsize = name, itemsize
        self.flops = OrderedDict((c, 0.0) for c in CATEGORIES)
        self.bytes = OrderedDict((c, 0.0) for c in CATEGORIES)

    def add(self, category, values, flops_per_value, tensors_in, tensors_out, out_values=None):
        """Account an operation producing ``values`` outputs per tensor."""
        out_values = values if out_values is None else out_values
        self.flops[category] += values * flops_per_value
        self.bytes[category] += self.itemsize * (values * tensors_in + out_values * tensors_out)

    @property
    def total_flops(self):
        return sum(self.flops.values())

    @property
    def total_bytes(self):
        return sum(self.bytes.values())

    def breakdown(self):
        """'window sums 31%, nonlinearity 60%, ...' (flops shares)."""
        tot = self.total_flops
        return ", ".join(f"{c} {100 * f / tot:.0f}%" for c, f in self.flops.items() if f > 0)


def _window(k):
    return 2 * (k - 1) + 1


def cntk(H, W, C, depth, readout, itemsize, k=3):
    """[Conv(k) ReLU] x depth + GAP (full path) or Flatten (diagonal path), NTK."""
    pairs = (H * W) ** 2 if readout == "gap" else H * W
    c = Cost(f"CNTK {readout} d{depth}", itemsize)
    c.add("input", pairs, 2 * C - 1, 0, 1)
    for layer in range(depth):
        if layer == 0:   # Theta_in = 0: Theta' = K' costs nothing
            c.add("window sums", pairs, _window(k), 1, 2)
        else:
            c.add("window sums", pairs, _window(k) + _window(k) + 1, 2, 2)
        c.add("nonlinearity", pairs, RELU_NTK, 2, 2)
    c.add("read-out", pairs, 2, 2, 0)
    return c


def cnn_gp_convnet(H, W, C, n_layers, k, itemsize):
    """cnn_gp's ConvNet-GP: [Conv(k, same, bias) ReLU] x n, read-out conv over the map."""
    pos = H * W   # diagonal path
    c = Cost(f"ConvNet-GP {n_layers}x{k}x{k}", itemsize)
    c.add("input", pos, 2 * C - 1, 0, 1)
    for _ in range(n_layers):
        c.add("window sums", pos, _window(k) + 1, 1, 1)
        c.add("nonlinearity", pos, RELU_NNGP, 1, 1)
    c.add("read-out", pos, 1, 1, 0)
    return c


def ckn_layer_sides(H, layers):
    """ckn_kernel's map sides per layer: (conv side, pooled side), zero-padded patches."""
    sides, h = [], H
    for layer in layers:
        sub = layer["subsampling"]
        pooled = h // sub - 1 if layer.get("pooling", "gaussian") != "average" else h // sub
        sides.append((h, pooled))
        h = pooled
    return sides


def ckn(H, W, C, layers, ntk, itemsize):
    """ckn_kernel's CKN (exp) or ReLU NTK: patches, nonlinearity, gaussian pooling, trace."""
    if H != W:
        raise ValueError("square images only")
    tensors = 2 if ntk else 1
    c = Cost(f"CKN {'relu-NTK' if ntk else 'exp'} {len(layers)} layers", itemsize)
    sides = ckn_layer_sides(H, layers)
    c.add("input", H ** 4, 2 * C - 1, 0, 1)
    for i, (layer, (h, hp)) in enumerate(zip(layers, sides)):
        pairs, k = h ** 4, layer["npatch"]
        win = 2 * (k - 1)
        if ntk and i > 0:
            c.add("window sums", pairs, 2 * win + 1, 2, 2)
        else:
            c.add("window sums", pairs, win, 1, tensors)
        c.add("nonlinearity", pairs, RELU_NTK if ntk else EXP_NNGP, tensors, tensors)
        taps = 2 * layer.get("poolfactor", layer["subsampling"]) + 1
        # one axis at a time: h^4 -> h^3 hp -> h^2 hp^2 -> h hp^3 -> hp^4
        for a in range(4):
            n_in, n_out = h ** (4 - a) * hp ** a, h ** (3 - a) * hp ** (a + 1)
            c.add("pooling", n_out, 2 * taps * tensors, 0, 0)
            c.bytes["pooling"] += itemsize * tensors * (n_in + n_out)
    c.add("read-out", sides[-1][1] ** 2, tensors, tensors, 0)
    return c
