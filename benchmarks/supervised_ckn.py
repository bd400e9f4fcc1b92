"""Supervised CKN against its unsupervised warm start (CKNFeatures + ridge) on Fashion-MNIST.

Data (``--data``):

``subset`` (default)
    training images: the first ``--n-train`` (default 1000) of the shipped
    subset (balanced prefixes); test images: its 1000 test images.
``full``
    the official Fashion-MNIST split (``/usr/share/datasets/fashion-mnist``):
    training images: the first ``--n-train`` official training images; test
    images: the first ``--n-test`` (default all 10 000) official test
    images.  With ``--val-pool V`` the models are also scored on the official
    training images 50 000 .. 50 000 + V - 1 (never used for training): the
    column on which settings are chosen (training images only, never the
    test images).

Models, both with ``random_state=0``, the same network (``--n-filters``,
``--subsamplings``, ``--patch-sizes``):

``CKNFeatures(n_filters) + RidgeClassifierCV()``
    the unsupervised Nyström CKN and a ridge classifier whose penalty is
    chosen by leave-one-out on the training images, on the grid ``--alphas``
    (default: ``SupervisedCKNClassifier``'s default, 1e-3 .. 10; the
    figures published before that default, with ``RidgeClassifierCV``'s
    0.1, 1, 10, are reproduced with ``--alphas 0.1 1 10``); with
    ``--train-flips``, anchors and ridge trained on the training images and
    their left-right flips (``FlipTrainedRidge`` below: penalty by grouped
    5-fold, memory-light float64 normal equations, so it runs at 60 000);
``SupervisedCKNClassifier(n_filters, ...)``
    the same network and head as its warm start, anchors then trained end to
    end with a validation-based early stop (20 % of the training images held
    out), options ``--learning-rate``, ``--max-iter``, ``--augment-shift``,
    ``--augment-flip``, ``--batch-size``, ``--loss``, ``--n-iter-no-change``, ``--alphas``.

Both run in float32 with ``--n-jobs`` threads.  Wall time is fit + predict
(the test images and the validation pool).

With ``--data full`` and the whole test set, every model's result is
appended as a JSON line to ``--out`` (default
``benchmarks/results/ckn_fashion_mnist.jsonl``: model, network, options,
training images, accuracies, ridge alpha, wall time, CPU, date, version),
which ``examples/plot_4_accuracy_results.py`` plots.

Commands used for the published figures: see
``benchmarks/results/preprocessing_supervised.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocessing_fashion import cpu_name  # noqa: E402

VAL_POOL_START = 50_000
N_TEST = 10_000
RESULTS = Path(__file__).resolve().parent / "results" / "ckn_fashion_mnist.jsonl"


class FlipTrainedRidge:
    """CKNFeatures + a ridge classifier trained on the images and their left-right flips.

    The anchors (k-means) and the ridge head both see the 2n training images; the
    penalty is chosen by grouped 5-fold accuracy (an image and its flip always in the
    same fold) and the head is fitted in float64 from chunked sums
    (``_grouped_ridge.py``), so 2 x 60 000 rows of 9 216 float32 features fit in memory.
    Test images are scored as they are (averaging the scores of an image and its flip
    did not help: n = 5000, (64, 256), validation pool 0.8920 -> 0.8895).
    """

    def __init__(self, ckn, alphas):
        self.ckn, self.alphas = ckn, alphas

    def fit(self, X, y):
        from _grouped_ridge import grouped_ridge_classifier

        n = len(X)
        X2 = np.concatenate([X, X[:, :, ::-1]])
        self.ckn.fit(X2)
        F = self.ckn.transform(X2)
        del X2
        print(f"features of the {len(F)} training images and flips: {F.shape[1]} each",
              flush=True)
        self.model_ = grouped_ridge_classifier(
            F, np.concatenate([y, y]), np.concatenate([np.arange(n)] * 2), self.alphas,
            log=lambda msg: print(msg, flush=True))
        self.alpha_ = self.model_["alpha"]
        return self

    def score(self, X, y):
        from _grouped_ridge import predict

        return float(np.mean(predict(self.model_, self.ckn.transform(X)) == y))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=("subset", "full"), default="subset")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=N_TEST, help="--data full only")
    p.add_argument("--val-pool", type=int, default=0,
                   help="--data full: also score on official training images 50000.. (size)")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-supervised", action="store_true")
    p.add_argument("--n-filters", type=int, nargs="+", default=[64, 256],
                   help="anchors per layer of both models (default: their default, 64 256)")
    p.add_argument("--subsamplings", type=int, nargs="+", default=None,
                   help="pooling subsampling per layer of both models (default: theirs, 2 3)")
    p.add_argument("--patch-sizes", type=int, nargs="+", default=None,
                   help="patch side per layer of both models (default: theirs, 3 3)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="ridge penalties of both heads (default: SupervisedCKNClassifier's, "
                   "1e-3 1e-2 0.1 1 10)")
    p.add_argument("--n-iter-no-change", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--loss", choices=("squared_hinge", "squared"), default=None)
    p.add_argument("--augment-shift", type=int, default=None)
    p.add_argument("--augment-flip", type=int, choices=(0, 1), default=None)
    p.add_argument("--train-flips", action="store_true",
                   help="CKNFeatures + ridge only: train the ridge on the features of the "
                   "training images and of their left-right flips (penalty by grouped "
                   "5-fold, an image and its flip in one fold)")
    p.add_argument("--out", default=str(RESULTS),
                   help="JSON-lines file the results of --data full on all 10 000 test images "
                   "are appended to (default: benchmarks/results/ckn_fashion_mnist.jsonl)")
    args = p.parse_args(argv)

    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline

    from sklearn_convkernel import CKNFeatures, SupervisedCKNClassifier
    from sklearn_convkernel.datasets import load_fashion_mnist

    Xva = yva = None
    if args.data == "subset":
        Xtr, ytr, Xte, yte = load_fashion_mnist(dtype=np.float32)
        Xtr, ytr = Xtr[: args.n_train], ytr[: args.n_train]
    else:
        X, y, Xte, yte = load_fashion_mnist(subset=False, dtype=np.float32)
        if args.val_pool and args.n_train > VAL_POOL_START:
            raise SystemExit(f"--n-train must be <= {VAL_POOL_START} with --val-pool (the "
                             "validation pool starts there)")
        if args.n_train > len(X):
            raise SystemExit(f"--n-train must be <= {len(X)} (the official training images)")
        Xtr, ytr = X[: args.n_train], y[: args.n_train]
        Xte, yte = Xte[: args.n_test], yte[: args.n_test]
        if args.val_pool:
            Xva = X[VAL_POOL_START: VAL_POOL_START + args.val_pool]
            yva = y[VAL_POOL_START: VAL_POOL_START + args.val_pool]
    load = os.getloadavg()[0]
    print(f"CPU: {cpu_name()}, load average {load:.1f}; data {args.data}: {len(Xtr)} training"
          f" / {len(Xte)} test images" + (f" / {len(Xva)} validation-pool images"
                                          if Xva is not None else "")
          + f"; n_jobs={args.n_jobs}", flush=True)
    nf = tuple(args.n_filters)
    net_kw = {k: tuple(getattr(args, k)) for k in ("subsamplings", "patch_sizes")
              if getattr(args, k) is not None}
    net_txt = "".join(f", {k}={v}" for k, v in net_kw.items())
    # both heads on one grid (the supervised classifier's default unless --alphas), so that
    # the baseline is the supervised model's warm start
    alphas = tuple(args.alphas) if args.alphas else SupervisedCKNClassifier().alphas
    head_kw = {"alphas": alphas}
    alphas_txt = f"alphas={alphas}"
    rows = []

    def record(name, model, t0, key, options=None):
        acc = model.score(Xte, yte)
        val = model.score(Xva, yva) if Xva is not None else None
        rows.append((name, val, acc, time.perf_counter() - t0))
        vtxt = f"validation-pool accuracy {val:.4f}, " if val is not None else ""
        head = model[-1] if hasattr(model, "steps") else model
        alpha = float(head.alpha_) if hasattr(head, "alpha_") else None
        atxt = f", ridge alpha {alpha:g}" if alpha is not None else ""
        print(f"{name}: {vtxt}test accuracy {acc:.4f} ({rows[-1][3]:.0f} s{atxt})", flush=True)
        if args.data == "full" and len(Xte) == N_TEST:
            from sklearn_convkernel import __version__

            row = {"model": key, "label": name, "n_filters": list(nf), "options": options or {},
                   "alphas": list(alphas), "n_train": len(Xtr), "accuracy": acc,
                   "val_pool": len(Xva) if Xva is not None else 0, "val_accuracy": val,
                   "alpha": alpha, "wall_s": rows[-1][3], "n_jobs": args.n_jobs,
                   "cpu": cpu_name(), "load_start": load, "version": __version__,
                   "date": time.strftime("%Y-%m-%d %H:%M")}
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    if not args.skip_baseline:
        t0 = time.perf_counter()
        ckn = CKNFeatures(nf, dtype="float32", n_jobs=args.n_jobs, random_state=0, **net_kw)
        if args.train_flips:
            base = FlipTrainedRidge(ckn, alphas).fit(Xtr, ytr)
            record(f"CKNFeatures({nf}{net_txt}) + ridge({alphas_txt}), trained on the images "
                   "and their flips", base, t0, "ckn-features-flips",
                   {"train_flips": True, **{k: list(v) for k, v in net_kw.items()}})
        else:
            base = make_pipeline(ckn, RidgeClassifierCV(**head_kw)).fit(Xtr, ytr)
            record(f"CKNFeatures({nf}{net_txt}) + RidgeClassifierCV({alphas_txt})", base, t0,
                   "ckn-features", {k: list(v) for k, v in net_kw.items()})
    if not args.skip_supervised:
        kw = {k: getattr(args, k) for k in ("learning_rate", "max_iter", "batch_size",
                                             "augment_shift", "loss", "n_iter_no_change")
              if getattr(args, k) is not None}
        if args.alphas:
            kw.update(head_kw)
        if args.augment_flip is not None:
            kw["augment_flip"] = bool(args.augment_flip)
        t0 = time.perf_counter()
        clf = SupervisedCKNClassifier(nf, n_jobs=args.n_jobs, random_state=0, verbose=1,
                                      **net_kw, **kw).fit(Xtr, ytr)
        extra = "".join(f", {k}={v}" for k, v in kw.items())
        record(f"SupervisedCKNClassifier({nf}{net_txt}{extra})", clf, t0, "supervised-ckn",
               {**{k: list(v) for k, v in net_kw.items()}, **kw})
        print(f"validation accuracy per epoch (held-out training images) "
              f"{[round(v, 4) for v in clf.validation_scores_]}, kept epoch "
              f"{clf.best_iteration_}", flush=True)
    print(f"\n| model | {'validation-pool accuracy | ' if Xva is not None else ''}"
          f"test accuracy | wall time (s) |\n|---|{'---|' if Xva is not None else ''}---|---|")
    for name, val, acc, dt in rows:
        vcol = f"{val:.4f} | " if Xva is not None else ""
        print(f"| {name} | {vcol}{acc:.4f} | {dt:.0f} |")


if __name__ == "__main__":
    main()
