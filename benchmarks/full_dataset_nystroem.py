"""Full Fashion-MNIST through ConvNystroem + a linear model: accuracy, wall time, peak memory.

Run (the full 60 000 / 10 000 run; about n_train * m kernel entries):

    python benchmarks/full_dataset_nystroem.py --n-components 2000

Training set: the first ``--n-train`` images of the official training split
(default: all 60 000), test set: the first ``--n-test`` official test images
(default: all 10 000), read from the IDX files in ``--data`` (default
``/usr/share/datasets/fashion-mnist``); ``--subset`` uses the 2000 / 1000
images shipped with the package instead (a quick check).

For each ``m`` in ``--n-components`` (e.g. ``1000,2000,5000``: the accuracy
curve), the model is ``ConvNystroem(architecture, kind, n_components=m,
random_state=0)`` followed by ``RidgeClassifierCV`` (the ridge penalty chosen
by leave-one-out on the training features, over ``--alphas``).  The kernel
between the training images and the landmarks is kept in a resumable store
``--store-dir/Knm_<m>.npy``: an interrupted run, started again with the same
arguments, computes only the missing tiles.  The landmarks of a smaller m are
a prefix of those of a larger one (same random_state), but each m computes
its own K_nm.

Prints one row per m (test accuracy, wall time of fit + test prediction, peak
resident memory of the process so far) and appends them as JSON lines to
``--results``.
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
from sklearn.linear_model import RidgeClassifierCV

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tile_cost import cpu_name  # noqa: E402

from sklearn_convkernel import ConvNystroem, __version__  # noqa: E402
from sklearn_convkernel._serialize import parse_architecture  # noqa: E402
from sklearn_convkernel.datasets import load_fashion_mnist  # noqa: E402


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--architecture", default="cntk:depth=5,gap=false",
                   help="preset[:key=value,...] or JSON, as for sklearn-convkernel gram "
                   "(default: %(default)s)")
    p.add_argument("--kind", choices=("nngp", "ntk"), default="ntk")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--n-components", default="2000",
                   help="comma-separated numbers of landmarks (default: %(default)s)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--subset", action="store_true",
                   help="the shipped 2000/1000-image subset instead of the full IDX files")
    p.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--alphas", default="1e-6,1e-5,1e-4,1e-3,1e-2,1e-1,1")
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--store-dir", default="nystroem_stores")
    p.add_argument("--results", default="benchmarks/results/full_dataset_nystroem.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    X_train, y_train, X_test, y_test = load_fashion_mnist(
        subset=args.subset, path=args.data, dtype=np.float32)
    X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    arch = parse_architecture(args.architecture, X_train.shape[1:])
    alphas = [float(a) for a in args.alphas.split(",")]
    os.makedirs(args.store_dir, exist_ok=True)
    if os.path.dirname(args.results):
        os.makedirs(os.path.dirname(args.results), exist_ok=True)
    print(f"sklearn-convkernel {__version__}; CPU: {cpu_name()} ({os.cpu_count()} logical); "
          f"n_jobs={args.n_jobs}")
    print(f"{len(X_train)} train / {len(X_test)} test images; {args.architecture} "
          f"{args.kind} {args.dtype}", flush=True)
    rows = []
    for m in (int(v) for v in args.n_components.split(",")):
        t0 = time.perf_counter()
        ny = ConvNystroem(arch, kind=args.kind, n_components=m, dtype=args.dtype,
                          n_jobs=args.n_jobs, random_state=0, verbose=0 if args.quiet else 1,
                          out=os.path.join(args.store_dir, f"Knm_{m}.npy"))
        F = ny.fit_transform(X_train)
        t_features = time.perf_counter() - t0
        clf = RidgeClassifierCV(alphas=alphas).fit(F, y_train)
        del F
        t_fit = time.perf_counter() - t0
        accuracy = clf.score(ny.transform(X_test), y_test)
        wall = time.perf_counter() - t0
        row = {
            "architecture": args.architecture, "kind": args.kind, "dtype": args.dtype,
            "n_train": len(X_train), "n_test": len(X_test),
            "n_components": len(ny.component_indices_), "rank": ny.rank_,
            "alpha": float(clf.alpha_), "test_accuracy": float(accuracy),
            "train_features_s": round(t_features, 1), "fit_s": round(t_fit, 1),
            "wall_s": round(wall, 1), "peak_rss_gb": round(peak_rss_gb(), 2),
            "n_jobs": args.n_jobs, "cpu": cpu_name(), "version": __version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        rows.append(row)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"m={row['n_components']}: test accuracy {accuracy:.4f} (alpha {clf.alpha_:g}), "
              f"wall {wall:.0f} s (train features {t_features:.0f} s), "
              f"peak RSS {row['peak_rss_gb']:.2f} GB", flush=True)
    return rows


if __name__ == "__main__":
    main()
