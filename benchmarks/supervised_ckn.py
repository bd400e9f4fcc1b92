"""Supervised CKN against its unsupervised warm start, on the shipped Fashion-MNIST subset.

Training images: the first ``--n-train`` (default 1000) of the shipped
subset (balanced prefixes); test images: its 1000 test images.  Two models
with their default parameters and ``random_state=0``:

``CKNFeatures() + RidgeClassifierCV()``
    the unsupervised Nyström CKN (64 then 256 anchors) and a ridge
    classifier whose penalty is chosen by leave-one-out on the training
    images (``RidgeClassifierCV``'s default grid 0.1, 1, 10);
``SupervisedCKNClassifier()``
    the same network and head as its warm start, anchors then trained end to
    end with a validation-based early stop (20 % of the training images held
    out).

Both run in float32 with ``--n-jobs`` threads.  Wall time is fit + predict.

Commands used for the published figures::

    python3 benchmarks/supervised_ckn.py --n-train 1000 --n-jobs 2
    python3 benchmarks/supervised_ckn.py --n-train 1000 --n-jobs 2 --n-filters 16 64
    python3 benchmarks/supervised_ckn.py --n-train 1000 --n-jobs 2 --n-filters 16 64 \\
        --learning-rate 0.05 --skip-baseline
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocessing_fashion import cpu_name  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--n-filters", type=int, nargs="+", default=[64, 256],
                   help="anchors per layer of both models (default: their default, 64 256)")
    p.add_argument("--learning-rate", type=float, default=0.02)
    args = p.parse_args(argv)

    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline

    from sklearn_convkernel import CKNFeatures, SupervisedCKNClassifier
    from sklearn_convkernel.datasets import load_fashion_mnist

    Xtr, ytr, Xte, yte = load_fashion_mnist(dtype=np.float32)
    Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    print(f"CPU: {cpu_name()}; {len(Xtr)} training / {len(Xte)} test images; "
          f"n_jobs={args.n_jobs}", flush=True)
    rows = []
    if not args.skip_baseline:
        t0 = time.perf_counter()
        base = make_pipeline(CKNFeatures(tuple(args.n_filters), dtype="float32",
                                         n_jobs=args.n_jobs, random_state=0),
                             RidgeClassifierCV()).fit(Xtr, ytr)
        acc = base.score(Xte, yte)
        rows.append((f"CKNFeatures({tuple(args.n_filters)}) + RidgeClassifierCV()", acc,
                     time.perf_counter() - t0))
        print(f"{rows[-1][0]}: test accuracy {acc:.4f} ({rows[-1][2]:.0f} s)", flush=True)
    t0 = time.perf_counter()
    clf = SupervisedCKNClassifier(tuple(args.n_filters), learning_rate=args.learning_rate,
                                  n_jobs=args.n_jobs, random_state=0, verbose=1).fit(Xtr, ytr)
    acc = clf.score(Xte, yte)
    rows.append((f"SupervisedCKNClassifier({tuple(args.n_filters)}, learning_rate="
                 f"{args.learning_rate})", acc, time.perf_counter() - t0))
    print(f"{rows[-1][0]}: test accuracy {acc:.4f} ({rows[-1][2]:.0f} s); validation "
          f"accuracy per epoch {clf.validation_scores_}, kept epoch {clf.best_iteration_}",
          flush=True)
    print("\n| model | test accuracy | wall time (s) |\n|---|---|---|")
    for name, acc, dt in rows:
        print(f"| {name} | {acc:.4f} | {dt:.0f} |")


if __name__ == "__main__":
    main()
