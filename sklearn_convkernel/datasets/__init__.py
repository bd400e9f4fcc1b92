"""Datasets: a shipped Fashion-MNIST subset and a loader for the full IDX files."""

from sklearn_convkernel.datasets._fashion_mnist import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
)

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]
