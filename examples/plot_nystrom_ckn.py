"""
=========================================================
Nyström CKN features converge to the exact CKN kernel
=========================================================

:class:`~sklearn_convkernel.CKNFeatures` maps images to finite feature
vectors ``psi(x)`` (Mairal's unsupervised convolutional kernel network): at
every layer, patches are projected on ``n_filters`` anchor points learnt by
spherical k-means, ``psi(x_u) = ||x_u|| K_ZZ^{-1/2} kappa(Z^T x_u / ||x_u||)``,
then pooled.  The inner products ``psi(x) . psi(y)`` approximate the exact
kernel of the same network, which :func:`~sklearn_convkernel.conv_kernel`
computes (the fitted transformer gives that architecture as
``architecture_``, built by
:func:`~sklearn_convkernel.presets.from_ckn_kernel`).

We measure the relative Frobenius error of the approximate Gram matrix
against the exact one on 12x12 crops of Fashion-MNIST as the number of
filters grows, for one and two layers (3x3 patches, Gaussian pooling with
subsampling 2, exponential kernel with sigma = 0.6).  At layer two the exact
kernel sees the infinite-dimensional layer-one map while the approximation
sees its projection, so the error is larger but still falls steadily.
"""

# %%
import time

import numpy as np

from sklearn_convkernel import CKNFeatures, conv_kernel
from sklearn_convkernel.datasets import load_fashion_mnist

X_train, _, X_test, _ = load_fashion_mnist()
X_fit = X_train[:200, 8:20, 8:20, :]  # anchors are learnt on these crops
X_eval = X_test[:20, 8:20, 8:20, :]  # the Gram matrices are compared on these

FILTERS = [32, 64, 128, 256, 512, 1024]
REGULARIZATION = 1e-6  # small, so that it does not floor the error at 1024 filters

errors = {}
for depth in (1, 2):
    K_exact = None
    errors[depth] = []
    for n in FILTERS:
        t0 = time.perf_counter()
        ckn = CKNFeatures(n_filters=(n,) * depth, patch_sizes=(3,) * depth,
                          subsamplings=(2,) * depth, sigma=0.6, regularization=REGULARIZATION,
                          n_patches=10000, random_state=0).fit(X_fit)
        F = ckn.transform(X_eval)
        if K_exact is None:
            K_exact = conv_kernel(X_eval, architecture=ckn.architecture_)
        err = np.linalg.norm(F @ F.T - K_exact) / np.linalg.norm(K_exact)
        errors[depth].append(err)
        print(f"{depth} layer(s), {n:5d} filters: relative error {err:.2e} "
              f"({time.perf_counter() - t0:.1f} s)")

# %%
# Plot the two curves (if matplotlib is available).
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None

if plt is not None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for depth, label in ((1, "1 layer"), (2, "2 layers")):
        ax.loglog(FILTERS, errors[depth], "o-", label=label)
    ax.set_xlabel("number of filters per layer")
    ax.set_ylabel("relative error of the Gram matrix")
    ax.set_title("Nyström CKN vs exact CKN kernel")
    ax.legend()
    fig.tight_layout()
    plt.show()
