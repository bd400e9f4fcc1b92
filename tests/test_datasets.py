import gzip
import struct

import numpy as np
import pytest

from sklearn_convkernel.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from sklearn_convkernel.datasets import _fashion_mnist as fm

FULL_FILES_PRESENT = all(
    (fm.DEFAULT_FASHION_MNIST_DIR / name).is_file()
    for names in fm._FILES.values()
    for name in names
)


def _idx_bytes(array, type_code=0x08, dtype=">u1"):
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def _write(path, payload, compress):
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def _make_full_dir(tmp_path, n_train=4, n_test=3, image_side=28):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, image_side, image_side), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        images_name, labels_name = fm._FILES[split]
        _write(tmp_path / images_name, _idx_bytes(images), compress=True)
        _write(tmp_path / labels_name, _idx_bytes(labels), compress=True)
        arrays[split] = (images, labels)
    return arrays


# --- the shipped subset -----------------------------------------------------


def test_classes():
    assert len(FASHION_MNIST_CLASSES) == 10
    assert FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_subset_shapes_dtypes_range(dtype):
    X_train, y_train, X_test, y_test = load_fashion_mnist(dtype=dtype)
    assert X_train.shape == (2000, 28, 28, 1)
    assert X_test.shape == (1000, 28, 28, 1)
    assert y_train.shape == (2000,)
    assert y_test.shape == (1000,)
    assert X_train.dtype == dtype and X_test.dtype == dtype
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    for X in (X_train, X_test):
        assert X.flags.c_contiguous
        assert X.min() == 0.0
        assert X.max() == 1.0
        # pixel values are k / 255 for integers k
        np.testing.assert_allclose(X * 255, np.round(X * 255), atol=1e-4)


def test_subset_default_is_float64():
    X_train = load_fashion_mnist()[0]
    assert X_train.dtype == np.float64


def test_subset_class_balance():
    _, y_train, _, y_test = load_fashion_mnist()
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [200] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [100] * 10)
    # every prefix of length 10 * k is balanced
    for y in (y_train, y_test):
        blocks = y.reshape(-1, 10)
        np.testing.assert_array_equal(
            np.sort(blocks, axis=1), np.tile(np.arange(10), (len(blocks), 1))
        )


def test_subset_indices():
    *_, idx_train, idx_test = load_fashion_mnist(return_indices=True)
    assert idx_train.dtype == np.int64 and idx_test.dtype == np.int64
    assert len(np.unique(idx_train)) == 2000
    assert len(np.unique(idx_test)) == 1000
    assert 0 <= idx_train.min() and idx_train.max() < 60000
    assert 0 <= idx_test.min() and idx_test.max() < 10000


def test_subset_file_needs_no_pickle():
    with np.load(fm._SUBSET_PATH, allow_pickle=False) as data:
        assert set(data.files) == set(fm._SUBSET_KEYS)
        assert data["X_train"].dtype == np.uint8
        assert data["X_test"].dtype == np.uint8
    assert fm._SUBSET_PATH.stat().st_size < 5 * 2**20


@pytest.mark.skipif(
    not FULL_FILES_PRESENT,
    reason="official Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)",
)
def test_subset_equals_official_images_at_recorded_indices():
    X_train, y_train, X_test, y_test = fm._load_fashion_mnist_uint8()
    assert X_train.shape == (60000, 28, 28) and X_test.shape == (10000, 28, 28)
    with np.load(fm._SUBSET_PATH, allow_pickle=False) as sub:
        np.testing.assert_array_equal(sub["X_train"], X_train[sub["idx_train"]])
        np.testing.assert_array_equal(sub["y_train"], y_train[sub["idx_train"]])
        np.testing.assert_array_equal(sub["X_test"], X_test[sub["idx_test"]])
        np.testing.assert_array_equal(sub["y_test"], y_test[sub["idx_test"]])


@pytest.mark.skipif(
    not FULL_FILES_PRESENT,
    reason="official Fashion-MNIST files absent (apt-get install dataset-fashion-mnist)",
)
def test_full_set_loads():
    X_train, y_train, X_test, y_test, idx_train, idx_test = load_fashion_mnist(
        subset=False, dtype=np.float32, return_indices=True
    )
    assert X_train.shape == (60000, 28, 28, 1) and X_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test), [1000] * 10)
    np.testing.assert_array_equal(idx_train, np.arange(60000))
    np.testing.assert_array_equal(idx_test, np.arange(10000))


# --- the IDX parser ----------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_ubyte(tmp_path, compress):
    expected = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "tiny.idx", _idx_bytes(expected), compress)
    got = fm._read_idx(path)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_read_idx_hand_written_bytes(tmp_path):
    # magic 0x00000801 (ubyte, 1 dim), length 3, then the data
    path = _write(tmp_path / "labels", b"\x00\x00\x08\x01\x00\x00\x00\x03\x07\x00\x09", False)
    np.testing.assert_array_equal(fm._read_idx(path), [7, 0, 9])


@pytest.mark.parametrize(
    "type_code, dtype, values",
    [
        (0x09, ">i1", [-128, 0, 127]),
        (0x0B, ">i2", [-30000, 1, 258]),
        (0x0C, ">i4", [-(2**31), 65536, 2**31 - 1]),
        (0x0D, ">f4", [0.5, -1.25, 3.0]),
        (0x0E, ">f8", [1e-300, -2.5, 1e300]),
    ],
)
def test_read_idx_big_endian_types(tmp_path, type_code, dtype, values):
    path = _write(tmp_path / "x.idx", _idx_bytes(values, type_code, dtype), False)
    got = fm._read_idx(path)
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, np.array(values, dtype=dtype))


def test_read_idx_bad_magic(tmp_path):
    payload = bytearray(_idx_bytes(np.zeros((2, 2), np.uint8)))
    payload[0] = 0x01
    path = _write(tmp_path / "bad.idx", bytes(payload), True)
    with pytest.raises(ValueError, match="magic"):
        fm._read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    path = _write(tmp_path / "bad.idx", _idx_bytes(np.zeros(3, np.uint8), type_code=0x07), False)
    with pytest.raises(ValueError, match="type code 0x07"):
        fm._read_idx(path)


@pytest.mark.parametrize("cut", [1, 5])
def test_read_idx_truncated_data(tmp_path, cut):
    payload = _idx_bytes(np.zeros((2, 3), np.uint8))
    path = _write(tmp_path / "short.idx", payload[:-cut], True)
    with pytest.raises(ValueError, match="data bytes"):
        fm._read_idx(path)


def test_read_idx_trailing_garbage(tmp_path):
    payload = _idx_bytes(np.zeros((2, 3), np.uint8)) + b"\x00"
    path = _write(tmp_path / "long.idx", payload, False)
    with pytest.raises(ValueError, match="data bytes"):
        fm._read_idx(path)


@pytest.mark.parametrize("payload", [b"", b"\x00\x00", b"\x00\x00\x08\x02\x00\x00\x00\x01"])
def test_read_idx_truncated_header(tmp_path, payload):
    path = _write(tmp_path / "h.idx", payload, False)
    with pytest.raises(ValueError):
        fm._read_idx(path)


def test_read_idx_corrupt_gzip(tmp_path):
    payload = gzip.compress(_idx_bytes(np.zeros((4, 4), np.uint8)))[:-6]
    path = tmp_path / "corrupt.gz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="gzip"):
        fm._read_idx(path)


# --- the full-set loader on hand-made files ------------------------------------


def test_full_loader_on_hand_made_files(tmp_path):
    arrays = _make_full_dir(tmp_path)
    X_train, y_train, X_test, y_test = load_fashion_mnist(subset=False, path=tmp_path)
    assert X_train.shape == (4, 28, 28, 1) and X_test.shape == (3, 28, 28, 1)
    assert X_train.dtype == np.float64 and y_train.dtype == np.int64
    np.testing.assert_array_equal(X_train[..., 0], arrays["train"][0] / 255.0)
    np.testing.assert_array_equal(X_test[..., 0], arrays["test"][0] / 255.0)
    np.testing.assert_array_equal(y_train, arrays["train"][1])
    np.testing.assert_array_equal(y_test, arrays["test"][1])


def test_full_loader_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_fashion_mnist(subset=False, path=tmp_path / "nowhere")
    message = str(excinfo.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "path=" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_full_loader_one_file_missing(tmp_path):
    _make_full_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(subset=False, path=tmp_path)


def test_full_loader_wrong_image_size(tmp_path):
    _make_full_dir(tmp_path, image_side=27)
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        load_fashion_mnist(subset=False, path=tmp_path)


def test_full_loader_count_mismatch(tmp_path):
    _make_full_dir(tmp_path)
    labels = np.zeros(5, np.uint8)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(labels), True)
    with pytest.raises(ValueError, match="4 images but"):
        load_fashion_mnist(subset=False, path=tmp_path)


def test_full_loader_bad_label(tmp_path):
    _make_full_dir(tmp_path)
    labels = np.array([0, 1, 10, 2], np.uint8)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(labels), True)
    with pytest.raises(ValueError, match="0..9"):
        load_fashion_mnist(subset=False, path=tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="subset=False"):
        load_fashion_mnist(subset=True, path=tmp_path)
    with pytest.raises(ValueError, match="float32 or float64"):
        load_fashion_mnist(dtype=np.int32)
