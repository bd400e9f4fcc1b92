"""Full Fashion-MNIST through ConvNystroem + a linear model: accuracy, wall time, peak memory.

Run (the full 60 000 / 10 000 run and its accuracy curve over n_components):

    python benchmarks/full_dataset_nystroem.py --n-components 1000,2000,5000

Training set: the first ``--n-train`` images of the official training split
(default: all 60 000); evaluation set: the first ``--n-test`` official test
images (default: all 10 000), read from the IDX files in ``--data`` (default
``/usr/share/datasets/fashion-mnist``).  ``--holdout K`` evaluates on the
*last* K official training images instead (they must not overlap the
training images): use it to choose the architecture on training data only,
never on the test set, e.g.

    python benchmarks/full_dataset_nystroem.py --n-train 10000 --holdout 2000 \\
        --n-components 2000 --architecture cnngp:depth=5,kernel_size=7 --kind nngp

``--subset`` uses the 2000 / 1000 images shipped with the package instead (a
quick check).

Model: the features of ``ConvNystroem(architecture, kind, n_components=m,
random_state=0)`` -- ``K(X, landmarks) K_mm^{-1/2}`` with the same landmarks
and the same rank rule (:func:`sklearn_convkernel._conv_nystroem.pinv_sqrt_psd`)
-- followed by ``RidgeClassifierCV`` (the ridge penalty chosen by
leave-one-out on the training features, over ``--alphas``).  The landmarks
are a uniformly random permutation prefix, so those of every smaller m are the
first m of the largest M: the kernel between the training (and evaluation)
images and the M landmarks is computed once, by ``conv_kernel`` in blocks of
``--block-size`` landmarks, and each m of the curve uses its first m columns
(``K_mm`` is a sub-block of ``K_nm``: the landmarks are training images).
Every block lives in resumable stores under ``--store-dir``: an interrupted
run, started again with the same arguments, computes only the missing tiles,
and a later run with a larger M computes only the new blocks.

Prints one row per m (evaluation accuracy, alpha, time) and appends them as
JSON lines to ``--results``, together with the kernel time, the process CPU
time (user + system, all threads) and the load average, so that a run on a
busy machine can be read: on an idle 2-core machine the wall time of the
kernel part is about its CPU time / 2.  The time of a block is recorded when
it is computed (``*.timing.json`` next to its stores) and reused when the
block is.
"""

import argparse
import hashlib
import json
import os
import resource
import sys
import time

import numpy as np
from sklearn.linear_model import RidgeClassifierCV
from sklearn.utils import check_random_state

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name  # noqa: E402

from sklearn_convkernel import __version__, conv_kernel  # noqa: E402
from sklearn_convkernel._conv_nystroem import pinv_sqrt_psd  # noqa: E402
from sklearn_convkernel._serialize import parse_architecture  # noqa: E402
from sklearn_convkernel.datasets import load_fashion_mnist  # noqa: E402


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # kB on Linux


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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
    p.add_argument("--holdout", type=int, default=0,
                   help="evaluate on the last K official training images, not on the test set")
    p.add_argument("--subset", action="store_true",
                   help="the shipped 2000/1000-image subset instead of the full IDX files")
    p.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--alphas", default="1e-6,1e-5,1e-4,1e-3,1e-2,1e-1,1")
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--block-size", type=int, default=2000,
                   help="landmarks per kernel store: a larger --n-components later reuses "
                   "the finished blocks (default: %(default)s)")
    p.add_argument("--store-dir", default="nystroem_stores")
    p.add_argument("--results", default="benchmarks/results/full_dataset_nystroem.jsonl")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        args.ms = sorted({int(v) for v in args.n_components.split(",")})
    except ValueError:
        p.error(f"--n-components must be comma-separated integers, got {args.n_components!r}")
    if args.ms[0] < 1:
        p.error("--n-components values must be >= 1")
    if args.holdout < 0:
        p.error("--holdout must be >= 0")
    if args.block_size < 1:
        p.error("--block-size must be >= 1")
    return args


def load(args):
    """(X_train, y_train, X_eval, y_eval, name of the evaluation set)."""
    X_train, y_train, X_test, y_test = load_fashion_mnist(
        subset=args.subset, path=args.data, dtype=np.float32)
    if args.holdout:
        n_total = len(X_train)
        n_train = args.n_train if args.n_train is not None else n_total - args.holdout
        if n_train + args.holdout > n_total:
            raise SystemExit(
                f"--n-train {n_train} + --holdout {args.holdout} exceeds the {n_total} "
                "training images; lower one of them (the two sets must not overlap).")
        X_eval, y_eval = X_train[n_total - args.holdout:], y_train[n_total - args.holdout:]
        return (X_train[:n_train], y_train[:n_train], X_eval, y_eval,
                f"hold-out: last {args.holdout} training images")
    X_train, y_train = X_train[: args.n_train], y_train[: args.n_train]
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    return X_train, y_train, X_test, y_test, "test"


def _block_timing(path):
    """The recorded time of a finished block of landmarks, or None."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    X_train, y_train, X_eval, y_eval, eval_name = load(args)
    arch = parse_architecture(args.architecture, X_train.shape[1:])
    alphas = [float(a) for a in args.alphas.split(",")]
    os.makedirs(args.store_dir, exist_ok=True)
    if os.path.dirname(args.results):
        os.makedirs(os.path.dirname(args.results), exist_ok=True)
    print(f"sklearn-convkernel {__version__}; CPU: {cpu_name()} ({os.cpu_count()} logical); "
          f"n_jobs={args.n_jobs}; load average {os.getloadavg()[0]:.1f}")
    print(f"{len(X_train)} train / {len(X_eval)} evaluation images ({eval_name}); "
          f"{args.architecture} {args.kind} {args.dtype}", flush=True)
    M = min(args.ms[-1], len(X_train))
    # the landmarks of ConvNystroem(n_components=M, random_state=0): a random
    # permutation prefix, so those of every m <= M are the first m
    idx = check_random_state(0).permutation(len(X_train))[:M]
    landmarks = X_train[idx]
    # one store per block of landmarks and computation (the store refuses reuse
    # for another computation); a later, larger M reuses the finished blocks
    digest = hashlib.sha1(f"{arch!r} {args.kind} {args.dtype}".encode()).hexdigest()[:10]
    where = f"h{args.holdout}" if args.holdout else "test"
    parts_nm, parts_em, t_kernel, c_kernel = [], [], 0.0, 0.0
    for b0 in range(0, M, args.block_size):
        b1 = min(b0 + args.block_size, M)
        stem = os.path.join(args.store_dir, f"{digest}_{len(X_train)}_{b0}-{b1}")
        timing = _block_timing(stem + f"_{where}.timing.json")
        t0, c0 = time.perf_counter(), cpu_seconds()
        common = dict(architecture=arch, kind=args.kind, dtype=args.dtype, n_jobs=args.n_jobs,
                      verbose=0 if args.quiet else 1)
        parts_nm.append(conv_kernel(X_train, landmarks[b0:b1], out=stem + "_Knm.npy", **common))
        parts_em.append(conv_kernel(X_eval, landmarks[b0:b1], out=stem + f"_K{where}.npy",
                                    **common))
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
        if timing is None:  # computed now (or resumed: then only this session's share)
            timing = {"wall_s": round(t, 1), "cpu_s": round(c, 1),
                      "loadavg_1min": round(os.getloadavg()[0], 2), "cpu": cpu_name()}
            with open(stem + f"_{where}.timing.json", "w") as f:
                json.dump(timing, f)
        print(f"landmarks {b0}-{b1}: {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s "
              f"CPU (load average {timing['loadavg_1min']})", flush=True)
        t_kernel += timing["wall_s"]
        c_kernel += timing["cpu_s"]
    K_nm = np.hstack([np.asarray(P, dtype=np.float64) for P in parts_nm])
    K_em = np.hstack([np.asarray(P, dtype=np.float64) for P in parts_em])
    del parts_nm, parts_em
    loadavg = os.getloadavg()
    print(f"kernels: {K_nm.size + K_em.size:,} entries in {t_kernel:.0f} s wall, "
          f"{c_kernel:.0f} s CPU", flush=True)
    rows = []
    for m in (m for m in args.ms if m <= M):
        t1 = time.perf_counter()
        R, rank = pinv_sqrt_psd(K_nm[idx[:m], :m], dtype=args.dtype)  # ConvNystroem's rule
        clf = RidgeClassifierCV(alphas=alphas).fit(K_nm[:, :m] @ R, y_train)
        accuracy = clf.score(K_em[:, :m] @ R, y_eval)
        t_linear = time.perf_counter() - t1
        kernel_share = t_kernel * m / M  # the kernel time is linear in the columns
        row = {
            "architecture": args.architecture, "kind": args.kind, "dtype": args.dtype,
            "n_train": len(X_train), "evaluation": eval_name, "n_eval": len(X_eval),
            "n_components": m, "rank": rank, "alpha": float(clf.alpha_),
            "accuracy": float(accuracy),
            "kernel_s_all_m": round(t_kernel, 1), "kernel_cpu_s_all_m": round(c_kernel, 1),
            "kernel_s_this_m_est": round(kernel_share, 1),
            "linear_s": round(t_linear, 1), "peak_rss_gb": round(peak_rss_gb(), 2),
            "loadavg_1min_after_kernel": round(loadavg[0], 2),
            "n_jobs": args.n_jobs, "cpu": cpu_name(), "version": __version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        rows.append(row)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"m={m}: {eval_name} accuracy {accuracy:.4f} (alpha {clf.alpha_:g}, rank {rank}); "
              f"linear model {t_linear:.0f} s; kernel for this m ~{kernel_share:.0f} s "
              f"(m/M of the shared kernel); peak RSS {row['peak_rss_gb']:.2f} GB", flush=True)
    return rows


if __name__ == "__main__":
    main()
