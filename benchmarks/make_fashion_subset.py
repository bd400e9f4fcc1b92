"""Build the Fashion-MNIST subset shipped in sklearn_convkernel/datasets/data/.

Draws, with a fixed seed, 200 training images per class from the official
training split and 100 test images per class from the official test split,
and stores them as uint8 together with their indices in the official splits:

    X_train (2000, 28, 28) uint8   y_train (2000,) uint8   idx_train (2000,) int64
    X_test  (1000, 28, 28) uint8   y_test  (1000,) uint8   idx_test  (1000,) int64

Rows are ordered so that every prefix of length 10*k holds exactly k images
of each class (each consecutive block of 10 rows is a random permutation of
the 10 classes), so ``X_train[:500]`` is a balanced 500-image subset.

Usage (needs the official IDX files, e.g. from Debian's
``dataset-fashion-mnist`` package)::

    python benchmarks/make_fashion_subset.py [--path DIR] [--out FILE]

Re-running it with the same inputs produces identical arrays.
"""

import argparse
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _import_loader():
    # Load the IDX reader from the source tree by file path, so that this
    # script needs neither a built nor an installed sklearn_convkernel.
    path = REPO / "sklearn_convkernel" / "datasets" / "_fashion_mnist.py"
    spec = importlib.util.spec_from_file_location("_fashion_mnist_src", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED = 20240601
N_TRAIN_PER_CLASS = 200
N_TEST_PER_CLASS = 100
N_CLASSES = 10

DEFAULT_OUT = REPO / "sklearn_convkernel" / "datasets" / "data" / "fashion_mnist_subset.npz"


def stratified_indices(labels, n_per_class, rng):
    """Indices of `n_per_class` images per class, interleaved by class.

    Row ``r * N_CLASSES + j`` holds the ``r``-th pick of class ``perm_r[j]``,
    where ``perm_r`` is a random permutation of the classes.
    """
    picks = []
    for c in range(N_CLASSES):
        members = np.flatnonzero(labels == c)
        if members.size < n_per_class:
            raise ValueError(f"class {c} has only {members.size} images")
        picks.append(rng.choice(members, size=n_per_class, replace=False))
    picks = np.stack(picks)  # (n_classes, n_per_class)
    rows = [picks[rng.permutation(N_CLASSES), r] for r in range(n_per_class)]
    return np.concatenate(rows).astype(np.int64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default=None, help="directory with the IDX .gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    X_train, y_train, X_test, y_test = _import_loader()._load_fashion_mnist_uint8(args.path)
    rng = np.random.default_rng(SEED)
    idx_train = stratified_indices(y_train, N_TRAIN_PER_CLASS, rng)
    idx_test = stratified_indices(y_test, N_TEST_PER_CLASS, rng)

    arrays = {
        "X_train": X_train[idx_train],
        "y_train": y_train[idx_train],
        "idx_train": idx_train,
        "X_test": X_test[idx_test],
        "y_test": y_test[idx_test],
        "idx_test": idx_test,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)

    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(f"sha256 of the arrays' contents: {digest.hexdigest()}")


if __name__ == "__main__":
    main()
