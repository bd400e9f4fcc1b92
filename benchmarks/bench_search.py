"""Cost of a cross-validated hyper-parameter search relative to one Gram matrix.

Run:  python benchmarks/bench_search.py [--n 200] [--n-jobs 2]

With the shared KernelCache and a depth sweep (``max_depth``), a 5-fold
GridSearchCV over depth (and the ridge regulariser) should cost about one
n x n Gram at the largest depth; over sigma x depth, about one Gram per sigma.
Prints, per workload: the time of one Gram (a fit on all n images, fresh
cache), the search time (fresh cache), their ratio, and the unique pairs the
cache computed (n (n - 1) / 2 per distinct architecture is the minimum).
"""

import argparse
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from sklearn_convkernel import CKNClassifier, CNTKClassifier, KernelCache
from sklearn_convkernel.datasets import load_fashion_mnist


def run(name, make, grid, n_archs, X, y):
    cache = KernelCache()
    t = time.perf_counter()
    make(cache).fit(X, y)
    t_gram = time.perf_counter() - t
    cache = KernelCache()
    search = GridSearchCV(make(cache), grid, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    t = time.perf_counter()
    search.fit(X, y)
    t_search = time.perf_counter() - t
    n = len(X)
    n_fits = 5 * int(np.prod([len(v) for v in grid.values()])) + 1
    ratio = t_search / (n_archs * t_gram)
    print(f"{name:<44} {n:>5} {n_fits:>6} {t_gram:>9.2f} {t_search:>10.2f} {ratio:>14.2f} "
          f"{cache.computed_pairs_:>9} {n_archs * n * (n - 1) // 2:>9}   best={search.best_params_}")
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="training images (default 200)")
    parser.add_argument("--n-ckn", type=int, default=60, help="images for the CKN search")
    parser.add_argument("--n-jobs", type=int, default=-1)
    args = parser.parse_args()
    X, y, _, _ = load_fashion_mnist()
    print(f"{'workload':<44} {'n':>5} {'fits':>6} {'gram s':>9} {'search s':>10} "
          f"{'search/grams':>14} {'pairs':>9} {'minimum':>9}")
    run(
        "CNTK flatten, depth 1..5 x alpha 3 (1 arch)",
        lambda c: CNTKClassifier(depth=5, max_depth=5, gap=False, n_jobs=args.n_jobs, cache=c),
        {"depth": [1, 2, 3, 4, 5], "alpha": [1e-4, 1e-3, 1e-2]},
        1, X[: args.n], y[: args.n],
    )
    run(
        "CNTK GAP 14x14-crop, depth 1..4 (1 arch)",
        lambda c: CNTKClassifier(depth=4, max_depth=4, gap=True, n_jobs=args.n_jobs, cache=c),
        {"depth": [1, 2, 3, 4]},
        1, X[: args.n_ckn, 7:21, 7:21], y[: args.n_ckn],
    )
    run(
        "CKN exp, sigma 3 x depth 1..2 (3 archs)",
        lambda c: CKNClassifier(depth=2, max_depth=2, subsampling=(2, 5), n_jobs=args.n_jobs,
                                cache=c),
        {"sigma": [0.5, 0.65, 0.8], "depth": [1, 2]},
        3, X[: args.n_ckn], y[: args.n_ckn],
    )


if __name__ == "__main__":
    main()
