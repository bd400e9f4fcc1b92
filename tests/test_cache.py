"""The kernel cache: explicit sharing (``cache="auto"``), release, concurrency, compile memo."""

import gc
import threading
import weakref

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from sklearn_convkernel import (
    CNTKClassifier,
    ConvKernel,
    KernelCache,
    conv_kernel,
    get_default_cache,
)
from sklearn_convkernel import _base, _cache
from sklearn_convkernel.arch import AvgPool, Conv, Dense, GlobalAvgPool, ReLU, Sequential

# guards against a deadlock in the tests below; never reached when the code is right
TIMEOUT = 60


@pytest.fixture
def images():
    X = np.random.default_rng(0).random((16, 7, 6, 2))
    return X, np.arange(16) % 2


def small_arch():
    return Sequential(Conv(3), ReLU(), AvgPool(2), Conv(2), ReLU(), GlobalAvgPool(), Dense())


def _flat(X):
    return np.ascontiguousarray(X.reshape(len(X), -1))


def _computer(cache):
    return _base.KernelComputer(small_arch(), (7, 6, 2), "nngp", np.float64, cache=cache)


# ---------------------------------------------------------------------------
# cache="auto": one cache per estimator lineage
# ---------------------------------------------------------------------------


def test_auto_cache_is_shared_by_clones_only(images):
    X, y = images
    est = CNTKClassifier(depth=2)
    assert est.get_params()["cache"] == "auto"
    a = clone(est).fit(X[:8], y[:8])
    b = clone(est).fit(X[4:12], y[4:12])
    assert isinstance(a.cache_, KernelCache)
    assert a.cache_ is b.cache_ is est.fit(X[:4], y[:4]).cache_
    assert clone(a).fit(X[:4], y[:4]).cache_ is a.cache_  # a clone of a clone too
    # pairs within X[:8], then those within X[4:12] not among X[4:8]; nothing more
    assert a.cache_.computed_pairs_ == 8 * 7 // 2 + (8 * 7 // 2 - 4 * 3 // 2)
    other = CNTKClassifier(depth=2).fit(X[:8], y[:8])
    assert other.cache_ is not a.cache_
    assert other.cache_ is not get_default_cache()
    assert other.cache_.computed_pairs_ == 8 * 7 // 2
    # an explicit cache is used as given; None disables caching
    mine = KernelCache()
    assert clone(est).set_params(cache=mine).fit(X[:4], y[:4]).cache_ is mine
    assert clone(est).set_params(cache=None).fit(X[:4], y[:4]).cache_ is None
    ck = ConvKernel(small_arch())
    assert clone(ck).fit(X[:3]).cache_ is clone(ck).fit(X[:5]).cache_


def test_auto_cache_shares_a_search_and_matches_no_cache(images):
    X, y = images
    n = len(X)
    grid = {"depth": [1, 2, 3], "alpha": [1e-4, 1e-1]}
    search = GridSearchCV(CNTKClassifier(max_depth=3), grid, cv=KFold(4)).fit(X, y)
    assert search.best_estimator_.cache_.computed_pairs_ == n * (n - 1) // 2
    ref = GridSearchCV(CNTKClassifier(max_depth=3, cache=None), grid, cv=KFold(4)).fit(X, y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  ref.cv_results_["mean_test_score"])
    # cross_val_score clones too
    est = CNTKClassifier(depth=2)
    cross_val_score(est, X, y, cv=KFold(4))
    assert est._resolve_cache().computed_pairs_ == n * (n - 1) // 2


def test_auto_cache_is_freed_with_its_estimators(images):
    X, y = images
    est = CNTKClassifier(depth=2)
    fitted = clone(est).fit(X[:6], y[:6])
    ref = weakref.ref(fitted.cache_)
    del fitted
    gc.collect()
    assert ref() is not None  # est still holds it for its future clones
    del est
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------
# concurrency: no lock held while computing, each entry computed once
# ---------------------------------------------------------------------------


def test_concurrent_fits_compute_at_the_same_time(images, monkeypatch):
    # Each thread's pair computation waits at a barrier that only opens when
    # the other thread is computing too: with a lock held through the
    # computation the second thread could never get there.
    X, y = images
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    real = _cache.pair_values

    def pair_values(*args, **kwargs):
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(_cache, "pair_values", pair_values)
    cache = KernelCache()
    parts = [X[:8], X[8:]]
    results, errors = [None, None], []

    def fit(i):
        try:
            results[i] = ConvKernel(small_arch(), cache=cache).fit_transform(parts[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert cache.computed_pairs_ == 2 * (8 * 7 // 2)
    for part, K in zip(parts, results):
        np.testing.assert_array_equal(K, conv_kernel(part, architecture=small_arch()))


def test_concurrent_requests_for_the_same_entries_compute_them_once(images, monkeypatch):
    X, _ = images
    Xf = _flat(X)
    n = len(Xf)
    computing, release = threading.Event(), threading.Event()
    pairs_computed, images_computed = [], []
    real_pairs, real_self = _cache.pair_values, _cache.self_passes

    def pair_values(prog, X, tx, Y, ty, ii, jj, n_jobs=None, verbose=0):
        pairs_computed.append(len(ii))
        computing.set()
        assert release.wait(TIMEOUT)
        return real_pairs(prog, X, tx, Y, ty, ii, jj, n_jobs)

    def self_passes(prog, Xf, n_jobs=None, verbose=0):
        images_computed.append(len(Xf))
        return real_self(prog, Xf, n_jobs)

    monkeypatch.setattr(_cache, "pair_values", pair_values)
    monkeypatch.setattr(_cache, "self_passes", self_passes)
    cache = KernelCache()
    waiting = threading.Event()
    real_wait = cache._wait

    def wait():
        waiting.set()
        real_wait()

    cache._wait = wait
    comp = _computer(cache)
    results = [None, None]

    def request(i):
        results[i] = comp.kernel(Xf)

    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert computing.wait(TIMEOUT)  # the first request is computing the pairs...
    second = threading.Thread(target=request, args=(1,))
    second.start()
    assert waiting.wait(TIMEOUT)  # ...and the second one waits for them
    release.set()
    first.join(TIMEOUT)
    second.join(TIMEOUT)
    assert pairs_computed == [n * (n - 1) // 2]
    assert images_computed == [n]
    assert cache.computed_pairs_ == n * (n - 1) // 2
    assert cache.requested_entries_ == 2 * n * n
    ref = _computer(None).kernel(Xf)
    np.testing.assert_array_equal(results[0], ref)
    np.testing.assert_array_equal(results[1], ref)


def test_a_failed_computation_releases_its_claims(images, monkeypatch):
    X, _ = images
    Xf = _flat(X[:6])
    real = _cache.pair_values
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_cache, "pair_values", flaky)
    cache = KernelCache()
    comp = _computer(cache)
    with pytest.raises(KeyboardInterrupt):
        comp.kernel(Xf)
    assert cache.computed_pairs_ == 0
    (store,) = cache._stores.values()
    assert not store.claimed.any() and not store.pending
    np.testing.assert_array_equal(comp.kernel(Xf), _computer(None).kernel(Xf))
    assert cache.computed_pairs_ == 6 * 5 // 2


# ---------------------------------------------------------------------------
# the compile memo
# ---------------------------------------------------------------------------


def test_compile_memo_is_a_bounded_lru_keyed_on_the_architecture():
    prog1, _, key1 = _base.compiled(small_arch(), (7, 6, 2), "nngp", np.float64)
    # an equal architecture built anew: the same compiled program
    prog2, _, key2 = _base.compiled(small_arch(), [7, 6, 2], "nngp", "float64")
    assert prog2 is prog1 and key2 == key1
    prog3, _, _ = _base.compiled(small_arch(), (7, 6, 2), "nngp", np.float32)
    assert prog3 is not prog1
    info = _base._compile_memo.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize
