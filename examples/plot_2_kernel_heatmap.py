"""
Kernel heatmap: what a convolutional kernel sees
================================================

The normalised kernel ``K[i, j] / sqrt(K[i, i] K[j, j])`` of 200 images of
the shipped Fashion-MNIST subset (20 per class), sorted by class, for three
kernels: the linear kernel of the pixels, an RBF kernel of the pixels and the
CNN-GP kernel of Garriga-Alonso et al.'s ConvNet (7 layers of 7x7
convolutions). A good kernel for classification is large within the diagonal
blocks (same class) and small outside them.
"""

# %%
import time

import numpy as np
from sklearn.metrics.pairwise import rbf_kernel

from sklearn_convkernel import conv_kernel, cnngp_architecture
from sklearn_convkernel.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

X_train, y_train, _, _ = load_fashion_mnist()
per_class = 20
idx = np.concatenate([np.flatnonzero(y_train == c)[:per_class] for c in range(10)])
X, y = X_train[idx], y_train[idx]  # sorted by class
print(X.shape, np.bincount(y))

# %%
# The three kernels
# -----------------
# The CNN-GP architecture is the one :class:`~sklearn_convkernel.CNNGPClassifier`
# uses by default; :func:`~sklearn_convkernel.conv_kernel` computes its Gram
# matrix directly.
arch, _ = cnngp_architecture(depth=7, kernel_size=7)
t0 = time.perf_counter()
K_cnngp = conv_kernel(X, architecture=arch, kind="nngp", dtype="float32", n_jobs=1)
t = time.perf_counter() - t0
print(f"CNN-GP Gram {K_cnngp.shape}: {t:.1f} s, {len(X) * (len(X) + 1) / 2 / t:.0f} entries/s")

F = X.reshape(len(X), -1)
K_linear = F @ F.T
K_rbf = rbf_kernel(F, gamma=1.0 / (F.shape[1] * F.var()))


def normalise(K):
    d = np.sqrt(np.diag(K))
    return K / d[:, None] / d[None, :]


kernels = {
    "linear (pixels)": normalise(K_linear),
    "RBF (pixels)": normalise(K_rbf),
    "CNN-GP (ConvNet, 7 layers)": normalise(K_cnngp.astype(np.float64)),
}

# %%
# Block structure
# ---------------
# The mean normalised kernel within a class against the mean across classes;
# the centred kernel-target alignment (the cosine between the centred kernel
# and the "same class" matrix, insensitive to the kernel's offset and scale);
# and how often an image's nearest other image under the kernel's distance
# belongs to its class (1-NN).
same = y[:, None] == y[None, :]
off = ~np.eye(len(y), dtype=bool)
H = np.eye(len(y)) - 1.0 / len(y)
T = H @ same.astype(float) @ H
for name, K in kernels.items():
    Kc = H @ K @ H
    align = np.sum(Kc * T) / np.sqrt(np.sum(Kc * Kc) * np.sum(T * T))
    dist = np.diag(K)[:, None] + np.diag(K)[None, :] - 2 * K
    dist[~off] = np.inf
    nn = np.argmin(dist, axis=1)
    print(f"{name:28s} within {K[same & off].mean():.3f}  across {K[~same].mean():.3f}  "
          f"alignment {align:.3f}  1-NN {np.mean(y[nn] == y):.3f}")

# %%
# Heatmaps
# --------
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed: skipping the figure")

if plt is not None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    ticks = np.arange(per_class / 2, len(y), per_class)
    for ax, (name, K) in zip(axes, kernels.items()):
        # a common colour scale per panel: from the 2nd percentile to 1
        im = ax.imshow(K, cmap="viridis", vmin=np.percentile(K, 2), vmax=1.0)
        ax.set_title(name)
        ax.set_xticks(ticks, [c.split("/")[0] for c in FASHION_MNIST_CLASSES],
                      rotation=90, fontsize=7)
        ax.set_yticks(ticks, [c.split("/")[0] for c in FASHION_MNIST_CLASSES], fontsize=7)
        for b in range(1, 10):
            ax.axhline(b * per_class - 0.5, color="w", lw=0.4)
            ax.axvline(b * per_class - 0.5, color="w", lw=0.4)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    plt.show()
