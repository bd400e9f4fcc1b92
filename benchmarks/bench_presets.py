"""Cost per kernel entry of the presets on 28x28 Fashion-MNIST images.

Run:  python3 benchmarks/bench_presets.py [--reps 3] [--seconds 1.0] [--dtype float32 float64]

Times ``conv_kernel(X, Y, architecture=..., kind=..., n_jobs=1)`` between
16 images X and m images Y of the shipped Fashion-MNIST subset, m grown
until one call takes about ``--seconds`` of CPU time; the best of ``--reps``
calls, divided by ``16 m``, is the cost per entry (the self passes of the
16 + m images are included, as in any Gram).  One thread (``n_jobs=1``), and
the cost is the process's CPU time, not the wall clock: on a machine shared
with other jobs the wall clock of a thread waiting for a core says more about
the load than about the kernel (both are printed).  Printed relative to the
flatten (vanilla) CNTK of the same depth and in entries per second, with the
CPU name; these are the figures in the docstring of
:func:`sklearn_convkernel.presets.li_lap` (``results/bench_presets.md``).
"""

import argparse
import time

import numpy as np

from sklearn_convkernel import conv_kernel, cntk_architecture
from sklearn_convkernel.datasets import load_fashion_mnist
from sklearn_convkernel.presets import li_lap

from _machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)

N_X = 16


def rows(depth):
    """(label, architecture, kind, augment); the first row is the reference."""
    return [
        (f"flatten CNTK, depth {depth} (reference)",
         cntk_architecture(depth, gap=False)[0], "ntk", None),
        (f"li_lap(depth={depth}, max_shift=1), ntk", li_lap(depth, 1), "ntk", None),
        (f"li_lap(depth={depth}, max_shift=1), nngp", li_lap(depth, 1), "nngp", None),
        (f"li_lap(depth={depth}, max_shift=1), ntk, hflip", li_lap(depth, 1), "ntk", "hflip"),
        (f"li_lap(depth={depth}, max_shift=1, one_sided=True), ntk",
         li_lap(depth, 1, one_sided=True), "ntk", None),
        (f"li_lap(depth={depth}, max_shift=2), ntk", li_lap(depth, 2), "ntk", None),
    ]


def seconds_per_entry(images, arch, kind, augment, dtype, reps, target):
    """(CPU seconds, wall seconds) per entry, best of ``reps``, and the Y size."""
    X = images[:N_X]

    def run(m):
        Y = images[N_X:N_X + m]
        t, c = time.perf_counter(), time.process_time()
        conv_kernel(X, Y, architecture=arch, kind=kind, dtype=dtype, n_jobs=1, augment=augment)
        return time.process_time() - c, time.perf_counter() - t

    m, limit = 4, len(images) - N_X
    while m < limit and run(m)[0] < target / 8:  # past the fixed overheads
        m *= 2
    m = int(np.clip(m * target / max(run(m)[0], 1e-9), 4, limit))
    times = [run(m) for _ in range(reps)]
    return min(t[0] for t in times) / (N_X * m), min(t[1] for t in times) / (N_X * m), m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.5,
                    help="target CPU time of one timed call (default: %(default)s)")
    ap.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    args = ap.parse_args()
    X_train, _, _, _ = load_fashion_mnist()
    print(f"CPU: {cpu_name()}; n_jobs=1; best of {args.reps}; 28x28x1 Fashion-MNIST images; "
          "entries/s from the CPU time of the process")
    print(f"{'kernel':<52} {'dtype':<8} {'Y images':>8} {'entries/s':>10} {'x flatten':>10} "
          f"{'wall entries/s':>15}")
    for dtype in args.dtype:
        images = X_train.astype(dtype)
        ref = None
        for label, arch, kind, augment in rows(args.depth):
            t, wall, m = seconds_per_entry(images, arch, kind, augment, dtype, args.reps,
                                           args.seconds)
            ref = t if ref is None else ref
            print(f"{label:<52} {dtype:<8} {m:>8} {1 / t:>10,.0f} {t / ref:>10.1f} "
                  f"{1 / wall:>15,.0f}", flush=True)


if __name__ == "__main__":
    main()
