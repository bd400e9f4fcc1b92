"""Fashion-MNIST: a shipped stratified subset and a loader for the full IDX files."""

import gzip
from pathlib import Path

import numpy as np

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]

#: Class names, indexed by label (0..9), as published by Zalando Research.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_SUBSET_PATH = Path(__file__).resolve().parent / "data" / "fashion_mnist_subset.npz"
_SUBSET_KEYS = ("X_train", "y_train", "idx_train", "X_test", "y_test", "idx_test")

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a NumPy array.

    The IDX format (LeCun's MNIST format) is a 4-byte magic number
    ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian uint32
    dimensions, then the data in C order, big-endian.

    Parameters
    ----------
    path : str or os.PathLike
        File to read. Gzip compression is detected from the content, not the
        file name.

    Returns
    -------
    array : ndarray
        Array of the stored shape, in native byte order.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from exc
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (the first two bytes must be zero)"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{type_code:02x}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares zero dimensions")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header_len
    if actual != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} data bytes) "
            f"but the file holds {actual} data bytes"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _load_split(directory, split):
    images_name, labels_name = _FILES[split]
    images_path = directory / images_name
    labels_path = directory / labels_name
    images = _read_idx(images_path)
    labels = _read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"{images_path}: expected uint8 images of shape (n, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(
            f"{labels_path}: expected uint8 labels of shape (n,), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} "
            f"holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be in 0..9, found {labels.max()}")
    return images, labels


def _find_full_dir(path):
    directory = Path(path) if path is not None else DEFAULT_FASHION_MNIST_DIR
    missing = [
        name for names in _FILES.values() for name in names if not (directory / name).is_file()
    ]
    if missing:
        where = "the given path" if path is not None else "the default location"
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {where} {str(directory)!r}: "
            f"missing {', '.join(missing)}. On Debian/Ubuntu run "
            "'apt-get install dataset-fashion-mnist', or pass path= a directory "
            "holding the four *-ubyte.gz files."
        )
    return directory


def _load_subset():
    with np.load(_SUBSET_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in _SUBSET_KEYS}
    return arrays


def load_fashion_mnist(subset=True, path=None, *, dtype=np.float64, return_indices=False):
    """Load Fashion-MNIST as NHWC images in [0, 1].

    Parameters
    ----------
    subset : bool, default=True
        If True, load the stratified subset shipped with the package: 2000
        training images (200 per class) drawn from the official training
        split and 1000 test images (100 per class) drawn from the official
        test split. The images are stored so that every prefix of length
        ``10 * k`` holds exactly ``k`` images of each class, hence
        ``X_train[:500]`` is balanced.
        If False, load the full official splits (60000 / 10000 images) from
        the IDX files in `path`.
    path : str or os.PathLike, default=None
        Directory holding ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz``. Only used when ``subset=False``. The
        default is ``/usr/share/datasets/fashion-mnist``, where Debian's
        ``dataset-fashion-mnist`` package installs them.
    dtype : {np.float64, np.float32}, default=np.float64
        Floating dtype of the returned images.
    return_indices : bool, default=False
        If True, also return the positions of the returned images in the
        official training and test splits (for the full set, ``arange(n)``).

    Returns
    -------
    X_train : ndarray of shape (n_train, 28, 28, 1)
        Training images, pixel values divided by 255.
    y_train : ndarray of shape (n_train,), dtype int64
        Training labels in 0..9; see :data:`FASHION_MNIST_CLASSES`.
    X_test : ndarray of shape (n_test, 28, 28, 1)
        Test images.
    y_test : ndarray of shape (n_test,), dtype int64
        Test labels.
    idx_train, idx_test : ndarray of shape (n_train,) and (n_test,), dtype int64
        Only if ``return_indices=True``: indices into the official splits.

    Raises
    ------
    FileNotFoundError
        If ``subset=False`` and the IDX files are not found.
    ValueError
        If an IDX file is malformed.

    Notes
    -----
    Fashion-MNIST is by Zalando Research (Xiao, Rasul and Vollgraf, 2017) and
    is distributed under the MIT license.

    Examples
    --------
    >>> from sklearn_convkernel.datasets import load_fashion_mnist
    >>> X_train, y_train, X_test, y_test = load_fashion_mnist()
    >>> X_train.shape, X_test.shape
    ((2000, 28, 28, 1), (1000, 28, 28, 1))
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if subset:
        if path is not None:
            raise ValueError("path= is only used with subset=False")
        a = _load_subset()
        parts = [
            (a["X_train"], a["y_train"], a["idx_train"]),
            (a["X_test"], a["y_test"], a["idx_test"]),
        ]
    else:
        directory = _find_full_dir(path)
        parts = []
        for split in ("train", "test"):
            images, labels = _load_split(directory, split)
            parts.append((images, labels, np.arange(images.shape[0])))

    out, indices = [], []
    for images, labels, idx in parts:
        X = (images.astype(dtype) / dtype.type(255))[..., np.newaxis]
        out.extend([X, labels.astype(np.int64)])
        indices.append(np.asarray(idx, dtype=np.int64))
    if return_indices:
        out.extend(indices)
    return tuple(out)


def _load_fashion_mnist_uint8(path=None):
    """Full official splits as raw uint8 arrays (used to build the subset)."""
    directory = _find_full_dir(path)
    X_train, y_train = _load_split(directory, "train")
    X_test, y_test = _load_split(directory, "test")
    return X_train, y_train, X_test, y_test
