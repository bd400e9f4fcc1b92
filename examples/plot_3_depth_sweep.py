"""
Accuracy against depth in one pass
==================================

How deep should the infinitely wide network be? With ``max_depth`` the CNTK
and CNN-GP estimators build the network once, with a read-out after every
depth (:class:`~sklearn_convkernel.arch.Tap`), so one pass over the image
pairs gives the kernel of every depth. A ``GridSearchCV`` over ``depth`` and
``alpha`` then costs about one Gram matrix: every fold and candidate reads its
entries from the shared :class:`~sklearn_convkernel.KernelCache`.

This example computes cross-validated and test accuracy against depth for the
vanilla CNTK (flatten read-out) and the CNN-GP, on 600 training and 600 test
images of the shipped Fashion-MNIST subset, and prints the cache's counts.
"""

# %%
import time

import numpy as np
from sklearn.model_selection import GridSearchCV

from sklearn_convkernel import CNNGPClassifier, CNTKClassifier, KernelCache
from sklearn_convkernel.datasets import load_fashion_mnist

X_train, y_train, X_test, y_test = load_fashion_mnist()
n_train, n_test = 600, 600
X_train, y_train = X_train[:n_train], y_train[:n_train]
X_test, y_test = X_test[:n_test], y_test[:n_test]
alphas = [1e-4, 1e-3, 1e-2, 1e-1]

models = {
    # Arora et al.'s depth counts the read-out: depth d has d - 1 conv layers
    "CNTK (flatten read-out)": (CNTKClassifier(gap=False), range(2, 9)),
    # the ConvNet GP of Garriga-Alonso et al. has 7 layers of 7x7 convolutions
    "CNN-GP (7x7 convolutions)": (CNNGPClassifier(kernel_size=7), range(1, 8)),
}

# %%
# One search per family
# ---------------------
# Each estimator gets its own cache so that we can count what it computed.
# One thread (``n_jobs=1``) keeps the documentation build light on a shared
# machine; ``n_jobs=-1`` runs the kernel on every core.
results = {}
for name, (est, depths) in models.items():
    depths = list(depths)
    cache = KernelCache()
    est.set_params(max_depth=max(depths), dtype="float32", n_jobs=1, cache=cache)
    search = GridSearchCV(est, {"depth": depths, "alpha": alphas}, cv=3)
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    t_search = time.perf_counter() - t0
    pairs_search = cache.computed_pairs_

    # cross-validated accuracy per depth (best alpha), from cv_results_
    cv = search.cv_results_
    cv_acc = [max(s for d, s in zip(cv["param_depth"], cv["mean_test_score"]) if d == depth)
              for depth in depths]

    # test accuracy per depth, each at its best alpha: the cross kernel of the
    # test images is computed once (for all depths) by the first prediction
    t0 = time.perf_counter()
    test_acc = []
    for depth, acc in zip(depths, cv_acc):
        best_alpha = max(
            (s, a) for d, a, s in zip(cv["param_depth"], cv["param_alpha"], cv["mean_test_score"])
            if d == depth
        )[1]
        model = est.set_params(depth=depth, alpha=best_alpha).fit(X_train, y_train)
        test_acc.append(model.score(X_test, y_test))
    t_test = time.perf_counter() - t0
    results[name] = (depths, cv_acc, test_acc)

    n_cand = len(cv["params"])
    print(f"{name}")
    print(f"  search: {n_cand} candidates x 3 folds in {t_search:.1f} s; "
          f"{pairs_search} image pairs computed (one Gram of the {n_train} training "
          f"images: {n_train * (n_train - 1) // 2})")
    print(f"  test kernels for all {len(depths)} depths: {t_test:.1f} s; "
          f"{cache.computed_pairs_ - pairs_search} new pairs "
          f"({n_test} x {n_train} = {n_test * n_train})")
    print(f"  selected by CV: {search.best_params_}, test accuracy "
          f"{search.score(X_test, y_test):.3f}")
    for depth, a, b in zip(depths, cv_acc, test_acc):
        print(f"    depth {depth}: CV {a:.3f}  test {b:.3f}")

# %%
# Plot
# ----
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed: skipping the figure")

if plt is not None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, (name, (depths, cv_acc, test_acc)) in zip(axes, results.items()):
        ax.plot(depths, cv_acc, "o-", label="3-fold CV (training images)")
        ax.plot(depths, test_acc, "s--", label="test")
        ax.set_title(name)
        ax.set_xlabel("depth")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend()
    fig.tight_layout()
    plt.show()
