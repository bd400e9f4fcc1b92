"""Measured cost of one Gram tile on one core, and the projected time of a full exact Gram.

Run:  python benchmarks/tile_cost.py --architecture cntk:depth=5,gap=false --kind ntk

Takes 2*T images of the shipped Fashion-MNIST subset (28x28x1), runs their
self passes, then one off-diagonal T x T tile (T*T pairs) with the engine's
tile routine on one thread (best of --reps), and prints the time per pair and
per self pass, and the projected wall time of the exact N x N Gram
(N = --n, default 60 000: N(N-1)/2 pairs and N self passes) on 1, 8, 64 and
512 cores from the tile's CPU time (the thread's own time, so that other load
on a shared machine does not inflate it), assuming the tiles spread evenly over the cores (they are
independent; a dask cluster or joblib processes do that).  --architecture
takes the command line's syntax (a preset with parameters or JSON).
"""

import argparse
import time

import numpy as np

from sklearn_convkernel._gram import _tile_task, compile_architecture, self_passes
from sklearn_convkernel._serialize import parse_architecture
from sklearn_convkernel.datasets import load_fashion_mnist
from _machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)


def human(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", default="cntk:depth=5,gap=false")
    p.add_argument("--kind", choices=("nngp", "ntk"), default="ntk")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--tile", type=int, default=32, help="tile side T (default: %(default)s)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n", type=int, default=60000, help="images of the projected Gram")
    args = p.parse_args(argv)

    X, _, _, _ = load_fashion_mnist()
    X = X[: 2 * args.tile].astype(args.dtype)
    arch = parse_architecture(args.architecture, X.shape[1:])
    prog, plan = compile_architecture(arch, X.shape[1:], args.kind)
    Xf = X.reshape(len(X), -1)
    c0 = time.thread_time()  # n_jobs=1 runs in this thread
    tapes, _ = self_passes(prog, Xf, n_jobs=1)
    t_self = (time.thread_time() - c0) / len(X)
    T = args.tile
    best = wall = np.inf
    for _ in range(args.reps):
        t0, c0 = time.perf_counter(), time.thread_time()
        _tile_task(prog, Xf[:T], tapes[:T], 0, Xf[T:], tapes[T:], T, False)
        best = min(best, time.thread_time() - c0)
        wall = min(wall, time.perf_counter() - t0)
    t_pair = best / (T * T)
    N = args.n
    pairs = N * (N - 1) // 2
    total = pairs * t_pair + N * t_self
    print(f"CPU: {cpu_name()}")
    print(f"architecture: {args.architecture}, kind={args.kind}, dtype={args.dtype}, "
          f"28x28x1 images, {'diagonal-only' if plan.diagonal_only else 'full spatial'} path")
    print(f"one {T}x{T} tile on one core: {best:.3f} s CPU time ({wall:.3f} s wall) -> "
          f"{t_pair * 1e3:.3f} ms per pair; "
          f"self pass {t_self * 1e3:.3f} ms per image")
    print(f"exact {N} x {N} Gram: {pairs:.3g} pairs, {N * N * np.dtype(args.dtype).itemsize / 1e9:.1f}"
          f" GB on disk; projected wall time (tiles spread evenly):")
    for cores in (1, 8, 64, 512):
        print(f"  {cores:>4} cores: {human(total / cores)}")


if __name__ == "__main__":
    main()
