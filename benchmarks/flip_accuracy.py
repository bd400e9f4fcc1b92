"""Accuracy and wall time of flip averaging (augment="hflip") on the shipped Fashion-MNIST subset.

Model: ``CNTKClassifier(gap=False, depth=DEPTH)`` (Arora et al.'s vanilla
CNTK), ``alpha`` chosen by 3-fold cross-validation (stratified, shuffled with
seed 0) on the first ``--n`` training images of the shipped subset only, then
refitted on them and scored once on the subset's 1000 test images; with and
without ``augment="hflip"``.  Each setting runs with its own empty
``KernelCache`` (so each time is the full cost of its search + refit + test
prediction; the test kernel goes without the cache; the CPU time counts every
thread of the process, so it is less sensitive than the wall time to other
load on a shared machine).  float32 kernels, ``--n-jobs`` threads (default 2).

Run from the repository root::

    python3 benchmarks/flip_accuracy.py                # n = 1000, depth 3
    python3 benchmarks/flip_accuracy.py --n 500 --depth 5
"""

import argparse
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sklearn_convkernel import CNTKClassifier, KernelCache
from sklearn_convkernel.datasets import load_fashion_mnist
from _machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path)


def run(augment, X, y, X_test, y_test, depth, n_jobs, alphas):
    t0, c0 = time.perf_counter(), time.process_time()
    cache = KernelCache(max_bytes=8 * 1024**3)
    est = CNTKClassifier(depth=depth, gap=False, augment=augment, dtype="float32",
                         n_jobs=n_jobs, cache=cache)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(est, {"alpha": alphas}, cv=cv).fit(X, y)
    t_search = time.perf_counter() - t0
    best = search.best_estimator_.set_params(cache=None)
    acc = float(np.mean(best.predict(X_test) == y_test))
    return {
        "augment": augment, "alpha": search.best_params_["alpha"],
        "cv": float(search.best_score_), "test": acc, "pairs": cache.computed_pairs_,
        "search_s": t_search, "total_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="training images (<= 2000)")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    X_train, y_train, X_test, y_test = load_fashion_mnist(dtype=np.float32)
    X, y = X_train[:args.n], y_train[:args.n]
    alphas = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    print(f"CPU: {cpu_name()}; n_jobs={args.n_jobs}; n_train={len(X)}, n_test={len(X_test)}; "
          f"CNTKClassifier(gap=False, depth={args.depth}), float32, alpha in {alphas}",
          flush=True)
    print("| augment | alpha (3-fold CV) | CV accuracy | test accuracy | pairs computed "
          "in the search | search s | total s (wall) | total CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for augment in (None, "hflip"):
        r = run(augment, X, y, X_test, y_test, args.depth, args.n_jobs, alphas)
        print(f"| {r['augment']} | {r['alpha']:g} | {r['cv']:.4f} | {r['test']:.4f} | "
              f"{r['pairs']} | {r['search_s']:.1f} | {r['total_s']:.1f} | {r['cpu_s']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
