"""Single-thread engine time per image pair of the issue-5 workloads (no Python tiling).

Run:  python3 benchmarks/per_pair.py [--workloads W1,W3] [--reps 3]

Calls the compiled program's ``pair_tile`` directly on N random 28x28x1 images
(32x32x3 for W4c) after their self passes, and prints the best time per pair
(upper triangle) and the self-pass time per image, in float64 and float32.
Useful to compare engine changes side by side on one core; the full harness
with the peers and threads is ``run_benchmarks.py``.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_benchmarks import ours_arch  # noqa: E402

from sklearn_convkernel._gram import compile_architecture  # noqa: E402

WORKLOADS = {  # net, depth, image, kind, N
    "W1": ("cntk_gap", 5, (28, 28, 1), "ntk", 6),
    "W2": ("cntk_flat", 5, (28, 28, 1), "ntk", 40),
    "W3": ("cnn_gp_convnet", 8, (28, 28, 1), "nngp", 40),
    "W4": ("ckn_readme", 2, (28, 28, 1), "nngp", 8),
    "W4r": ("ckn_readme_relu", 2, (28, 28, 1), "ntk", 8),
    "W4c": ("ckn_cifar", 2, (32, 32, 3), "nngp", 6),
}


def measure(net, depth, image, kind, n, dtype, reps):
    prog, _ = compile_architecture(ours_arch(net, depth, image), image, kind=kind)
    X = np.random.default_rng(0).random((n, int(np.prod(image)))).astype(dtype)
    tapes = np.empty((n, prog.tape_len), dtype=dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=dtype)
    t = time.perf_counter()
    prog.self_pass(X, tapes, self_out)
    t_self = (time.perf_counter() - t) / n
    out = np.zeros((prog.n_outputs, n, n), dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        prog.pair_tile(X, tapes, 0, X, tapes, 0, out, True)
        best = min(best, time.perf_counter() - t)
    return best / (n * (n - 1) / 2), t_self


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from sklearn_convkernel._core import simd_variant

    print(f"engine '{simd_variant()}', one thread")
    print(f"{'workload':<8} {'dtype':<8} {'per pair':>12} {'self pass/image':>16}")
    for w in args.workloads.split(","):
        net, depth, image, kind, n = WORKLOADS[w]
        for dtype in (np.float64, np.float32):
            pair, slf = measure(net, depth, image, kind, n, dtype, args.reps)
            print(f"{w:<8} {np.dtype(dtype).name:<8} {pair * 1e3:9.4f} ms {slf * 1e3:13.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
