"""A 100-image Gram on 28x28x1 images, timed, and checked entry by entry against the oracle.

Run:  python benchmarks/gram_vs_reference.py [--n 100] [--check 12] [--n-jobs -1]

Architecture: [Conv(3, "same"), ReLU()] x 3 + GlobalAvgPool() (full spatial
path), float64, NNGP and NTK.  ``--check`` random entries (and diagonal
entries) are recomputed by the slow NumPy oracle ``_reference.reference_gram``.
"""

import argparse
import time

import numpy as np

from sklearn_convkernel import conv_kernel
from sklearn_convkernel._reference import reference_gram
from sklearn_convkernel.arch import Conv, GlobalAvgPool, ReLU, Sequential


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--check", type=int, default=12)
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.random((args.n, 28, 28, 1))
    arch = Sequential(*[Conv(3), ReLU()] * 3, GlobalAvgPool())
    for kind in ("nngp", "ntk"):
        t = time.perf_counter()
        K = conv_kernel(X, architecture=arch, kind=kind, n_jobs=args.n_jobs)
        dt = time.perf_counter() - t
        n_entries = args.n * (args.n + 1) // 2
        ii = rng.integers(0, args.n, args.check)
        jj = rng.integers(0, args.n, args.check)
        worst = 0.0
        for i, j in zip(ii, jj):
            ref = reference_gram(X[i:i + 1], X[j:j + 1] if i != j else None,
                                 architecture=arch, kind=kind)[0, 0]
            worst = max(worst, abs(K[i, j] - ref) / abs(ref))
        print(f"{kind}: {args.n}x{args.n} Gram in {dt:.2f} s ({n_entries / dt:.1f} unique "
              f"entries/s); max relative deviation from the oracle on {args.check} entries: "
              f"{worst:.2e}")


if __name__ == "__main__":
    main()
