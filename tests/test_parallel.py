"""One parallel policy: a user's ``joblib.parallel_config`` backend is honoured everywhere."""

import numpy as np
import pytest
from joblib import parallel_config, register_parallel_backend
from joblib.parallel import ThreadingBackend
from threadpoolctl import threadpool_info

from sklearn_convkernel import CKNFeatures, SupervisedCKNClassifier, conv_kernel
from sklearn_convkernel._parallel import BLAS_THREADED_MIN_SIZE, blas_limit
from sklearn_convkernel.arch import Conv, Dense, GlobalAvgPool, ReLU, Sequential


class RecordingBackend(ThreadingBackend):
    """The threading backend, counting the Parallel runs it serves."""

    runs = 0

    def configure(self, *args, **kwargs):
        type(self).runs += 1
        return super().configure(*args, **kwargs)


register_parallel_backend("sklearn-convkernel-recording", RecordingBackend)


@pytest.fixture
def recording():
    RecordingBackend.runs = 0
    with parallel_config(backend="sklearn-convkernel-recording"):
        yield RecordingBackend


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.random((12, 8, 8, 1)), np.arange(12) % 2


FEATURES = dict(n_filters=(4,), patch_sizes=(3,), subsamplings=(2,), pooling="average",
                n_patches=100, random_state=0, batch_size=4)


def test_kernel_uses_the_configured_backend(images, recording):
    X, _ = images
    arch = Sequential(Conv(3), ReLU(), GlobalAvgPool(), Dense())
    conv_kernel(X, architecture=arch, n_jobs=2)
    assert recording.runs > 0


def test_ckn_features_use_the_configured_backend(images, recording):
    X, _ = images
    CKNFeatures(n_jobs=2, **FEATURES).fit(X).transform(X)
    assert recording.runs > 0


def test_supervised_ckn_uses_the_configured_backend(images, recording):
    X, y = images
    SupervisedCKNClassifier(n_jobs=2, max_iter=1, **FEATURES).fit(X, y)
    assert recording.runs > 0


def test_process_backend_without_generators_equals_sequential(images):
    # process workers return their results (nothing is written into shared
    # memory), and a backend without result generators gets a list
    X, _ = images
    ckn = CKNFeatures(n_jobs=1, **FEATURES).fit(X)
    ref = ckn.transform(X)
    arch = Sequential(Conv(3), ReLU(), GlobalAvgPool(), Dense())
    K = conv_kernel(X, architecture=arch, n_jobs=1)
    with parallel_config(backend="multiprocessing", n_jobs=2):
        np.testing.assert_array_equal(ckn.set_params(n_jobs=None).transform(X), ref)
        np.testing.assert_array_equal(conv_kernel(X, architecture=arch), K)


def _blas_threads():
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


def test_blas_policy():
    with blas_limit():
        assert all(n == 1 for n in _blas_threads())
    with blas_limit(BLAS_THREADED_MIN_SIZE - 1):
        assert all(n == 1 for n in _blas_threads())
    outside = _blas_threads()
    with blas_limit(BLAS_THREADED_MIN_SIZE):
        assert _blas_threads() == outside
