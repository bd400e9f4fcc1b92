"""float32 vs float64 kernels on Fashion-MNIST images: relative deviation and speed.

Run:  python benchmarks/float32_accuracy.py [--n 20]
"""

import argparse
import time

import numpy as np

from sklearn_convkernel import cnngp_architecture, conv_kernel
from sklearn_convkernel.arch import Conv, Dense, GlobalAvgPool, ReLU, Sequential
from sklearn_convkernel.datasets import load_fashion_mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    X = load_fashion_mnist()[0][: args.n]
    nets = [
        ("CNTK-GAP 5 layers (ntk)",
         Sequential(*[Conv(3, weight_var=2.0), ReLU()] * 5, GlobalAvgPool(), Dense()), "ntk"),
        ("ConvNet GP (nngp)", cnngp_architecture()[0], "nngp"),
    ]
    print(f"{'network':<26} {'max rel dev':>12} {'f64 s':>8} {'f32 s':>8} {'speed-up':>9}")
    for name, arch, kind in nets:
        t = time.perf_counter()
        K64 = conv_kernel(X, architecture=arch, kind=kind, n_jobs=-1)
        t64 = time.perf_counter() - t
        t = time.perf_counter()
        K32 = conv_kernel(X, architecture=arch, kind=kind, dtype=np.float32, n_jobs=-1)
        t32 = time.perf_counter() - t
        dev = float(np.max(np.abs(K32 - K64) / np.abs(K64)))
        print(f"{name:<26} {dev:>12.2e} {t64:>8.2f} {t32:>8.2f} {t64 / t32:>9.2f}")


if __name__ == "__main__":
    main()
