"""
Quick start: a convolutional kernel in a scikit-learn pipeline
==============================================================

Classify Fashion-MNIST images (the subset shipped with the package) with an
exact convolutional kernel, in two ways:

1. :class:`~sklearn_convkernel.ConvKernel` as the first step of a pipeline
   ending in ``SVC(kernel="precomputed")``, with ``GridSearchCV`` choosing the
   kernel's kind and the SVC's ``C``;
2. :class:`~sklearn_convkernel.CNTKClassifier`, kernel ridge regression on the
   CNTK, with ``GridSearchCV`` choosing its depth and regulariser.

An RBF SVC on raw pixels is the baseline. Every kernel entry is cached, so
the cross-validation folds and candidates reuse each other's entries.
"""

# %%
# Data
# ----
# The shipped subset holds 2000 training and 1000 test images of 28x28x1 in
# [0, 1]; every prefix of ``10 * k`` training images is class-balanced.
import time

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from sklearn_convkernel import CNTKClassifier, ConvKernel, KernelCache
from sklearn_convkernel.arch import Conv, Dense, Flatten, ReLU, Sequential
from sklearn_convkernel.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

X_train, y_train, X_test, y_test = load_fashion_mnist()
n_train, n_test = 600, 600
X_train, y_train = X_train[:n_train], y_train[:n_train]
X_test, y_test = X_test[:n_test], y_test[:n_test]
print(f"train {X_train.shape}, test {X_test.shape}")

# %%
# Baseline: an RBF SVC on the pixels
# ----------------------------------
t0 = time.perf_counter()
rbf = GridSearchCV(SVC(kernel="rbf"), {"C": [1, 10, 100], "gamma": ["scale"]}, cv=3)
rbf.fit(X_train.reshape(n_train, -1), y_train)
acc_rbf = rbf.score(X_test.reshape(n_test, -1), y_test)
print(f"RBF SVC: test accuracy {acc_rbf:.3f} ({time.perf_counter() - t0:.1f} s), "
      f"{rbf.best_params_}")

# %%
# A pipeline: ConvKernel + SVC(kernel="precomputed")
# --------------------------------------------------
# The architecture is a 3-layer ReLU CNN with a flatten read-out (the
# "vanilla" CNTK of Arora et al. in neural-tangents scaling). ``ConvKernel``
# maps images to their kernel against the training images, so the pipeline
# works inside ``GridSearchCV``; ``kind`` switches between the NNGP kernel of
# the network at initialisation and its neural tangent kernel.
# ``n_jobs`` sets the threads of the kernel computation: one here, to keep
# the documentation build light on a shared machine (``n_jobs=-1`` uses every
# core).
arch = Sequential(*[Conv(3, weight_var=2.0), ReLU()] * 3, Flatten(), Dense())

pipe = Pipeline([
    ("kernel", ConvKernel(arch, dtype="float32", n_jobs=1)),
    ("svc", SVC(kernel="precomputed")),
])
grid = {"kernel__kind": ["nngp", "ntk"], "svc__C": [1, 10, 100]}

t0 = time.perf_counter()
search = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
acc_pipe = search.score(X_test, y_test)
print(f"ConvKernel + SVC: test accuracy {acc_pipe:.3f} "
      f"({time.perf_counter() - t0:.1f} s), {search.best_params_}")

# %%
# An estimator: CNTKClassifier with a depth search
# ------------------------------------------------
# ``max_depth=5`` builds the network once with a read-out after every depth,
# so the 4 depths x 4 regularisers x 3 folds share one set of kernel entries.
# A cache of our own lets us read how many were computed.
cache = KernelCache()
cntk = CNTKClassifier(gap=False, max_depth=5, dtype="float32", n_jobs=1, cache=cache)
grid = {"depth": [2, 3, 4, 5], "alpha": [1e-4, 1e-3, 1e-2, 1e-1]}

t0 = time.perf_counter()
search_cntk = GridSearchCV(cntk, grid, cv=3).fit(X_train, y_train)
pairs_search = cache.computed_pairs_
acc_cntk = search_cntk.score(X_test, y_test)
print(f"CNTKClassifier: test accuracy {acc_cntk:.3f} "
      f"({time.perf_counter() - t0:.1f} s), {search_cntk.best_params_}")
print(f"the search ({len(search_cntk.cv_results_['params'])} candidates x 3 folds) computed "
      f"{pairs_search} image pairs; one training Gram has {n_train * (n_train - 1) // 2}")

# %%
# Per-class accuracy
# ------------------
pred = search_cntk.predict(X_test)
per_class = np.array([np.mean(pred[y_test == c] == c) for c in range(10)])
for name, acc in zip(FASHION_MNIST_CLASSES, per_class):
    print(f"{name:12s} {acc:.2f}")

try:
    import matplotlib.pyplot as plt
except ImportError:  # the example still runs, without the figure
    plt = None
    print("matplotlib is not installed: skipping the figure")

if plt is not None:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[1, 2])
    names = ["RBF SVC", "ConvKernel\n+ SVC", "CNTK\nclassifier"]
    accs = [acc_rbf, acc_pipe, acc_cntk]
    ax0.bar(names, accs, color=["0.6", "C0", "C1"])
    ax0.set_ylim(min(accs) - 0.05, 1.0)
    ax0.set_ylabel("test accuracy")
    for i, a in enumerate(accs):
        ax0.text(i, a + 0.005, f"{a:.3f}", ha="center")
    ax1.barh(FASHION_MNIST_CLASSES, per_class, color="C1")
    ax1.set_xlim(0, 1)
    ax1.invert_yaxis()
    ax1.set_xlabel("CNTK classifier: accuracy per class")
    fig.tight_layout()
    plt.show()
