"""ZCA whitening and patch features in front of an exact kernel, on the shipped subset.

Training images: the first ``--n-train`` of the shipped Fashion-MNIST subset
(at most 2000, balanced prefixes); test images: the first ``--n-test`` of its
1000 test images.  The model is ``CNTKClassifier(gap=False)`` (Arora et al.'s
vanilla CNTK, 3x3 convolutions, flatten read-out) with ``depth`` 2..5 (one
pass, ``max_depth=5``) and ``alpha`` chosen by 3-fold cross-validation
(stratified, shuffled, seed 0) on the training images only; the selected
model is refitted on all training images and scored once on the test images.

Variants (``--variants``):

``raw``
    the pixels.
``zca-image``
    ``ZCAWhitening(mode="image")`` (regularisation 0.1 of the mean
    eigenvalue, per-image standardisation).
``zca-patch``
    ``ZCAWhitening(mode="patch", patch_size=3)``.
``zca-patch-nostd``
    the same without per-image standardisation (``standardize=None``).
``patches``
    ``PatchFeatures(n_filters=--n-filters, patch_size=5)`` (k-means
    dictionary, triangle activation): an image with ``--n-filters``
    channels.

The preprocessing is unsupervised and is fitted on the training images only
(once, on all of them, outside the cross-validation: it sees no labels and
no test image); the kernels go through one ``KernelCache`` per variant, so
the search costs about one training Gram.  Wall time covers preprocessing,
search, refit and test prediction.

``--channel-cost`` only times a depth-5 flatten CNTK Gram of 100 random 28x28
images against the number of input channels (1, 16, 64, 256).

Commands used for the published figures::

    python3 benchmarks/preprocessing_fashion.py --channel-cost --n-jobs 1

    python3 benchmarks/preprocessing_fashion.py --n-train 1000 --n-test 1000 \\
        --variants raw zca-image zca-patch patches --n-filters 16 --n-jobs 2
    python3 benchmarks/preprocessing_fashion.py --n-train 1000 --n-test 1000 \\
        --variants zca-patch-nostd patches --n-filters 32 --n-jobs 2
    python3 benchmarks/preprocessing_fashion.py --n-train 2000 --n-test 1000 \\
        --variants raw patches --n-filters 16 --n-jobs 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)

ALPHAS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def preprocessor(name, n_filters):
    from sklearn_convkernel import PatchFeatures, ZCAWhitening

    if name == "raw":
        return None
    if name == "zca-image":
        return ZCAWhitening(mode="image", regularization=0.1)
    if name == "zca-patch":
        return ZCAWhitening(mode="patch", patch_size=3, regularization=0.1)
    if name == "zca-patch-nostd":
        return ZCAWhitening(mode="patch", patch_size=3, regularization=0.1, standardize=None)
    if name == "patches":
        return PatchFeatures(n_filters=n_filters, patch_size=5, random_state=0)
    raise ValueError(f"unknown variant {name!r}")


def channel_cost(n_jobs, n=100):
    """Time of a depth-5 flatten CNTK Gram of n random 28x28 images with 1, 16, 64, 256 channels."""
    from sklearn_convkernel import cntk_architecture, conv_kernel

    arch = cntk_architecture(depth=5, gap=False)[0]
    rng = np.random.default_rng(0)
    base = None
    for C in (1, 16, 64, 256):
        X = rng.random((n, 28, 28, C)).astype(np.float32)
        conv_kernel(X[:4], architecture=arch, kind="ntk", dtype="float32", n_jobs=n_jobs)
        t0 = time.perf_counter()
        conv_kernel(X, architecture=arch, kind="ntk", dtype="float32", n_jobs=n_jobs)
        per_pair = (time.perf_counter() - t0) / (n * (n + 1) // 2)
        base = base or per_pair
        print(f"{C:4d} channels: {per_pair * 1e6:7.1f} us per pair ({per_pair / base:4.1f}x)",
              flush=True)


def run(name, Xtr, ytr, Xte, yte, args):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from sklearn_convkernel import CNTKClassifier, KernelCache

    t0 = time.perf_counter()
    pre = preprocessor(name, args.n_filters)
    if pre is not None:
        Xtr = pre.fit(Xtr).transform(Xtr)
        Xte = pre.transform(Xte)
    Xtr, Xte = Xtr.astype(np.float32), Xte.astype(np.float32)
    cache = KernelCache(max_bytes=2 * 1024**3)
    est = CNTKClassifier(gap=False, max_depth=5, dtype="float32", n_jobs=args.n_jobs,
                         cache=cache)
    search = GridSearchCV(est, {"depth": [2, 3, 4, 5], "alpha": ALPHAS},
                          cv=StratifiedKFold(3, shuffle=True, random_state=0))
    search.fit(Xtr, ytr)
    acc = search.score(Xte, yte)
    dt = time.perf_counter() - t0
    print(f"{name:10s} input {Xtr.shape[1:]}: test accuracy {acc:.4f}, CV {search.best_score_:.4f},"
          f" {search.best_params_}, {dt:.0f} s", flush=True)
    return acc, dt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--variants", nargs="+", default=["raw", "zca-image", "zca-patch", "patches"])
    p.add_argument("--n-filters", type=int, default=32)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--channel-cost", action="store_true",
                   help="only time the kernel per pair against the number of input channels")
    args = p.parse_args(argv)
    if args.channel_cost:
        print(f"CPU: {cpu_name()}; n_jobs={args.n_jobs}", flush=True)
        channel_cost(args.n_jobs)
        return

    from sklearn_convkernel.datasets import load_fashion_mnist

    Xtr, ytr, Xte, yte = load_fashion_mnist()
    Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    Xte, yte = Xte[: args.n_test], yte[: args.n_test]
    print(f"CPU: {cpu_name()}; {len(Xtr)} training / {len(Xte)} test images; "
          f"n_jobs={args.n_jobs}", flush=True)
    rows = [(v,) + run(v, Xtr, ytr, Xte, yte, args) for v in args.variants]
    print("\n| preprocessing | test accuracy | wall time (s) |\n|---|---|---|")
    for v, acc, dt in rows:
        print(f"| {v} | {acc:.4f} | {dt:.0f} |")


if __name__ == "__main__":
    main()
