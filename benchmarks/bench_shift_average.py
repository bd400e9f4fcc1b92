"""Cost of the shift-averaged read-out (ShiftAverage, Li et al.'s LAP) per image pair.

Run:  python3 benchmarks/bench_shift_average.py [--max-shift 2] [--depth 5] [--reps 3]

Single-thread engine time per pair, as thread CPU time (so that the ratios
hold on a loaded machine; upper triangle of a small Gram, after the self
passes; ``pair_tile`` called directly in this thread, no Python tiling) of the depth-5
3x3 CNTK on 28x28x1 random images with four read-outs: Flatten (diagonal
path), ShiftAverage two-sided and one-sided (displacement path: one diagonal
path per weighted displacement) and GlobalAvgPool (slab path, every
displacement).  The issue-13 budget is "at most 1.5 x (number of
displacements) x the Flatten time", i.e. at least ~10x (two-sided) and ~30x
(one-sided) cheaper than GlobalAvgPool for max_shift = 2 on 28x28.  The CPU
and the engine variant are printed with the figures.
"""

import argparse
import time

import numpy as np

from sklearn_convkernel._gram import compile_architecture
from sklearn_convkernel.arch import (
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    ReLU,
    Sequential,
    ShiftAverage,
)

from _machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)

IMAGE = (28, 28, 1)


def network(readout, depth):
    layers = []
    for _ in range(depth - 1):
        layers += [Conv(3, weight_var=2.0), ReLU()]
    return Sequential(*layers, readout, Dense())


def per_pair(arch, n, dtype, reps, kind="ntk"):
    prog, _ = compile_architecture(arch, IMAGE, kind=kind)
    X = np.random.default_rng(0).random((n, int(np.prod(IMAGE)))).astype(dtype)
    tapes = np.empty((n, prog.tape_len), dtype=dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=dtype)
    prog.self_pass(X, tapes, self_out)
    out = np.zeros((prog.n_outputs, n, n), dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.thread_time()
        prog.pair_tile(X, tapes, 0, X, tapes, 0, out, True)
        best = min(best, time.thread_time() - t)
    return best / (n * (n - 1) / 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-shift", type=int, default=2)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from sklearn_convkernel._core import simd_variant

    m, H, W = args.max_shift, IMAGE[0], IMAGE[1]
    rows = [
        ("Flatten", Flatten(), 1, 24),
        (f"ShiftAverage({m}) two-sided", ShiftAverage(m), (4 * m + 1) ** 2, 8),
        (f"ShiftAverage({m}) one-sided", ShiftAverage(m, one_sided=True), (2 * m + 1) ** 2, 8),
        ("GlobalAvgPool", GlobalAvgPool(), (2 * H - 1) * (2 * W - 1), 4),
    ]
    print(f"CPU: {cpu_name()}; engine '{simd_variant()}', one thread (thread CPU time); depth-{args.depth} 3x3 "
          f"CNTK (NTK), {H}x{W}x1 images")
    print(f"{'read-out':<28} {'dtype':<8} {'displ.':>6} {'ms/pair':>9} {'/ Flatten':>10} "
          f"{'/ (displ. x Flatten)':>21} {'GAP / this':>11}")
    for dtype in (np.float64, np.float32):
        times = {}
        for label, readout, n_disp, n in rows:
            times[label] = per_pair(network(readout, args.depth), n, dtype, args.reps)
        flat, gap = times["Flatten"], times["GlobalAvgPool"]
        for label, _, n_disp, _ in rows:
            t = times[label]
            print(f"{label:<28} {np.dtype(dtype).name:<8} {n_disp:>6} {t * 1e3:9.3f} "
                  f"{t / flat:10.1f} {t / (n_disp * flat):21.2f} {gap / t:11.1f}", flush=True)


if __name__ == "__main__":
    main()
