"""Kernel-entry cache shared across fits: cross-validation folds and searches reuse entries.

Entries are keyed by the compiled architecture (its planned program, kind,
dtype and image shape) and by the *content* of the images (a hash of their
bytes), so that the Gram of a cross-validation fold, the cross-kernel of its
test part and the next parameter setting's fit all reuse what was computed
before.  A store per architecture key holds the registered images, their
self-pass tapes, the kernel entries computed so far and a mask of which are
known; only missing unique pairs are ever computed.

Concurrency: the cache's lock guards only its bookkeeping, never a
computation.  A request claims the images and pairs it will compute (images
in ``_Store.pending``, pairs in ``_Store.claimed``), computes them with the
lock released and commits them under the lock; a request that needs entries
claimed by another waits on the cache's condition until they are committed
(or released, when the other request failed).  So concurrent fits run at the
same time, and each entry is computed (and counted) once.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict

import numpy as np

from sklearn_convkernel._gram import pair_values, self_passes

__all__ = ["KernelCache", "get_default_cache", "DEFAULT_MAX_BYTES"]

#: Memory budget of a :class:`KernelCache` created without ``max_bytes``
#: (each ``cache="auto"`` estimator lineage has one such cache).
DEFAULT_MAX_BYTES = 2 * 1024**3


def _image_keys(Xf):
    """A content hash per image (row of Xf)."""
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in Xf]


class _Store:
    """Entries of one architecture key (guarded by the owning cache's lock)."""

    def __init__(self, prog, dtype, n_features, n_outputs=None, tape_len=None):
        self.prog = prog
        self.dtype = dtype
        self.n_features = n_features
        self.n_outputs = prog.n_outputs if prog is not None else n_outputs
        self.tape_len = prog.tape_len if prog is not None else tape_len
        self.index = {}
        self.pending = set()  # image keys whose self pass a request is computing
        self.n = 0
        self._alloc(0)

    def _alloc(self, cap):
        n_out, L = self.n_outputs, self.tape_len
        self.cap = cap
        self.X = np.empty((cap, self.n_features), dtype=self.dtype)
        self.tapes = np.empty((cap, L), dtype=self.dtype)
        self.K = np.empty((n_out, cap, cap), dtype=self.dtype)
        self.known = np.zeros((cap, cap), dtype=bool)
        self.claimed = np.zeros((cap, cap), dtype=bool)  # pairs being computed

    def nbytes(self, cap=None):
        cap = self.cap if cap is None else cap
        item = np.dtype(self.dtype).itemsize
        n_out, L = self.n_outputs, self.tape_len
        return cap * (self.n_features + L) * item + cap * cap * (n_out * item + 2)

    def _grow(self, need):
        if need <= self.cap:
            return
        cap = max(need, 2 * self.cap, 64)
        old = (self.X, self.tapes, self.K, self.known, self.claimed, self.n)
        self._alloc(cap)
        X, tapes, K, known, claimed, n = old
        self.X[:n] = X[:n]
        self.tapes[:n] = tapes[:n]
        self.K[:, :n, :n] = K[:, :n, :n]
        self.known[:n, :n] = known[:n, :n]
        self.claimed[:n, :n] = claimed[:n, :n]

    def count_new(self, *key_lists):
        """How many distinct images among the key lists are not registered yet."""
        return len({k for keys in key_lists for k in keys if k not in self.index})

    def claim_images(self, keys):
        """(slots or None, rows to compute, their keys); marks those keys pending.

        Slots are returned once every image is registered; otherwise the rows
        whose keys no request is computing yet are claimed (possibly none, when
        the caller must wait for other requests).
        """
        rows, new = [], []
        for r, k in enumerate(keys):
            if k not in self.index and k not in self.pending:
                self.pending.add(k)
                rows.append(r)
                new.append(k)
        if not rows and all(k in self.index for k in keys):
            return np.fromiter((self.index[k] for k in keys), np.int64, len(keys)), rows, new
        return None, rows, new

    def commit_images(self, rows, keys, tapes, self_out):
        """Register computed images (their self passes) at the next free slots."""
        m = len(keys)
        self._grow(self.n + m)
        sl = slice(self.n, self.n + m)
        self.X[sl] = rows
        self.tapes[sl] = tapes
        idx = np.arange(self.n, self.n + m)
        self.K[:, idx, idx] = self_out.T
        self.known[idx, idx] = True
        for k, s in zip(keys, idx):
            self.index[k] = int(s)
        self.n += m
        self.pending.difference_update(keys)

    def claim_pairs(self, ix, iy):
        """(done, lo, hi): the unknown unclaimed pairs among ix x iy, now claimed."""
        sub = self.known[np.ix_(ix, iy)]
        if sub.all():
            return True, None, None
        a, b = np.nonzero(~sub)
        s, t = ix[a], iy[b]
        lo, hi = np.minimum(s, t), np.maximum(s, t)
        code = np.unique(lo * self.cap + hi)
        lo, hi = code // self.cap, code % self.cap
        free = ~self.claimed[lo, hi]
        lo, hi = lo[free], hi[free]
        self.set_claimed(lo, hi, True)
        return False, lo, hi

    def set_claimed(self, lo, hi, value):
        self.claimed[lo, hi] = value
        self.claimed[hi, lo] = value

    def commit_pairs(self, lo, hi, vals):
        self.K[:, lo, hi] = vals.T
        self.K[:, hi, lo] = vals.T
        self.known[lo, hi] = True
        self.known[hi, lo] = True
        self.set_claimed(lo, hi, False)


class KernelCache:
    """In-memory cache of exact kernel entries, shared by transformers and estimators.

    :class:`~sklearn_convkernel.ConvKernel` and the estimators take a
    ``cache`` parameter: ``"auto"`` (the default) gives each estimator a cache
    of its own, which its clones share and which is freed with them; None
    disables caching and a ``KernelCache`` object is used as given.  Fitting
    on a cross-validation fold, predicting on its test part and refitting
    with another regulariser then cost only the kernel entries not computed
    before; with a depth sweep (``max_depth``), every depth is filled by the
    same pass.

    A cache object is shared, not copied, by :func:`sklearn.base.clone` (so a
    ``GridSearchCV`` shares it across its candidates).  It lives in one
    process: with process-based joblib backends each worker starts empty, so
    parallelise the kernel itself (``n_jobs`` of the estimator) instead.
    It is thread-safe, and no lock is held while kernels are computed:
    concurrent fits through one cache run at the same time, and an entry
    requested by several of them is computed once.

    :meth:`save` writes the entries to a file and :meth:`load` resumes from it
    (e.g. a long search in several sessions, or a Gram shared between runs).

    Parameters
    ----------
    max_bytes : int, default=2 GiB
        Memory budget (``DEFAULT_MAX_BYTES``).  Least recently used
        architecture stores are dropped to respect it; a request that does not
        fit on its own bypasses the cache (with a warning).

    Attributes
    ----------
    computed_pairs_ : int
        Unique off-diagonal pairs computed so far (the cost actually paid).
    requested_entries_ : int
        Kernel entries requested so far.
    """

    def __init__(self, max_bytes=DEFAULT_MAX_BYTES):
        self.max_bytes = int(max_bytes)
        self._stores = OrderedDict()
        self._lock = threading.RLock()
        # signalled whenever claimed images or pairs are committed or released
        self._changed = threading.Condition(self._lock)
        self.computed_pairs_ = 0
        self.requested_entries_ = 0

    # shared, never copied: clone() deep-copies non-estimator parameters
    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __reduce__(self):
        # in another process the cache starts empty
        return (KernelCache, (self.max_bytes,))

    def __repr__(self):
        return f"KernelCache(max_bytes={self.max_bytes})"

    @property
    def nbytes(self):
        """Memory held by the cache, in bytes."""
        return sum(s.nbytes() for s in self._stores.values())

    def clear(self):
        """Drop every entry."""
        with self._lock:
            self._stores.clear()
            self.computed_pairs_ = 0
            self.requested_entries_ = 0

    def _store(self, key, prog, dtype, n_features):
        store = self._stores.get(key)
        if store is None:
            store = _Store(prog, dtype, n_features)
            self._stores[key] = store
        elif store.prog is None:  # loaded from disk: attach the compiled program
            store.prog = prog
        self._stores.move_to_end(key)
        return store

    def save(self, path):
        """Write every entry to ``path`` (a compressed ``.npz``; no pickle).

        A later :meth:`load` resumes from it: a long search or Gram
        computation interrupted after a save loses nothing computed before.
        """
        with self._lock:
            arrays, meta = {}, []
            for k, (key, st) in enumerate(self._stores.items()):
                n = st.n
                order = sorted(st.index.items(), key=lambda kv: kv[1])
                arrays[f"X{k}"] = st.X[:n]
                arrays[f"tapes{k}"] = st.tapes[:n]
                arrays[f"K{k}"] = st.K[:, :n, :n]
                arrays[f"known{k}"] = st.known[:n, :n]
                arrays[f"keys{k}"] = np.frombuffer(b"".join(h for h, _ in order),
                                                   dtype=np.uint8).reshape(n, -1)
                meta.append({"key": [key[0], list(key[1]), key[2], key[3], key[4]],
                             "n_outputs": st.n_outputs, "tape_len": st.tape_len})
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
            np.savez_compressed(os.fspath(path), **arrays)

    @classmethod
    def load(cls, path, max_bytes=2 * 1024**3):
        """A cache holding the entries saved by :meth:`save` at ``path``."""
        cache = cls(max_bytes=max_bytes)
        with np.load(os.fspath(path), allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            for k, m in enumerate(meta):
                a, shape, kind, dtype, spatial = m["key"]
                key = (a, tuple(shape), kind, dtype, spatial)
                X = data[f"X{k}"]
                st = _Store(None, X.dtype, X.shape[1], m["n_outputs"], m["tape_len"])
                n = X.shape[0]
                st._grow(n)
                st.X[:n] = X
                st.tapes[:n] = data[f"tapes{k}"]
                st.K[:, :n, :n] = data[f"K{k}"]
                st.known[:n, :n] = data[f"known{k}"]
                st.index = {bytes(h): s for s, h in enumerate(data[f"keys{k}"])}
                st.n = n
                cache._stores[key] = st
        return cache

    def _make_room(self, store, extra_images):
        """Evict LRU stores so that `store` can grow; False if it cannot fit."""
        need = store.nbytes(max(store.n + extra_images, 2 * store.cap, 64)
                            if store.n + extra_images > store.cap else store.cap)
        if need > self.max_bytes:
            return False
        others = [k for k, s in self._stores.items() if s is not store]
        while others and self.nbytes - store.nbytes() + need > self.max_bytes:
            del self._stores[others.pop(0)]
        return True

    def kernel(self, key, prog, Xf, Yf=None, *, n_jobs=None, verbose=0):
        """All outputs of K(X, Y), shape (n_outputs, n_X, n_Y), using and filling the cache.

        ``key`` identifies the compiled program (architecture, kind, dtype,
        image shape); ``Xf``/``Yf`` are flattened C-contiguous images of the
        program's dtype.  ``Yf=None`` means ``Y = X``.  Returns None (after a
        warning) when the images do not fit in ``max_bytes``.
        """
        kx = _image_keys(Xf)
        ky = None if Yf is None else _image_keys(Yf)
        with self._lock:
            store = self._store(key, prog, Xf.dtype, Xf.shape[1])
            n_new = store.count_new(kx, ky or [])
            if not self._make_room(store, n_new):
                warnings.warn(
                    f"KernelCache: {n_new} images do not fit in max_bytes={self.max_bytes}; "
                    "computing without the cache. Raise max_bytes or pass cache=None.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
        ix = self._register(store, Xf, kx, n_jobs, verbose)
        iy = ix if Yf is None else self._register(store, Yf, ky, n_jobs, verbose)
        self._fill(store, ix, iy, n_jobs, verbose)
        with self._lock:
            self.requested_entries_ += len(ix) * len(iy)
            return store.K[:, ix][:, :, iy]

    def self_kernel(self, key, prog, Xf, *, n_jobs=None, verbose=0):
        """The self kernels k(x, x) of each image: (n_outputs, n_X)."""
        kx = _image_keys(Xf)
        with self._lock:
            store = self._store(key, prog, Xf.dtype, Xf.shape[1])
            if not self._make_room(store, store.count_new(kx)):
                return None
        ix = self._register(store, Xf, kx, n_jobs, verbose)
        with self._lock:
            return store.K[:, ix, ix]

    def _wait(self):
        """Wait (lock released) until another request commits or releases a claim."""
        self._changed.wait()

    def _register(self, store, Xf, keys, n_jobs, verbose=0):
        """Slots of the images Xf, computing the self passes of new ones outside the lock."""
        while True:
            with self._lock:
                slots, rows, new = store.claim_images(keys)
                if slots is not None:
                    return slots
                if not rows:  # every missing image is being computed by another request
                    self._wait()
                    continue
            try:
                X_new = Xf[rows]
                tapes, self_out = self_passes(store.prog, X_new, n_jobs, verbose=verbose)
            except BaseException:
                with self._lock:
                    store.pending.difference_update(new)
                    self._changed.notify_all()
                raise
            with self._lock:
                self._make_room(store, len(rows))
                store.commit_images(X_new, new, tapes, self_out)
                self._changed.notify_all()

    def _fill(self, store, ix, iy, n_jobs, verbose=0):
        """Compute the unknown entries among the pairs ix x iy, outside the lock."""
        while True:
            with self._lock:
                done, lo, hi = store.claim_pairs(ix, iy)
                if done:
                    return
                if len(lo) == 0:  # the missing pairs are being computed by others
                    self._wait()
                    continue
                X = store.X[: store.n]
                T = store.tapes[: store.n]
            try:
                vals = pair_values(store.prog, X, T, X, T, lo, hi, n_jobs, verbose=verbose)
            except BaseException:
                with self._lock:
                    store.set_claimed(lo, hi, False)
                    self._changed.notify_all()
                raise
            with self._lock:
                store.commit_pairs(lo, hi, vals)
                self.computed_pairs_ += len(lo)
                self._changed.notify_all()


class CacheParamMixin:
    """The ``cache`` parameter of transformers and estimators.

    ``cache="auto"`` is a :class:`KernelCache` (of ``DEFAULT_MAX_BYTES``)
    created for the estimator on first use and handed by
    :func:`sklearn.base.clone` to its clones, so the folds and candidates of a
    ``GridSearchCV`` or ``cross_val_score`` share entries; it is freed when
    the estimator and its clones are.  Estimators constructed independently
    do not share it (pass one ``KernelCache`` to share across them).
    """

    def _resolve_cache(self):
        """The :class:`KernelCache` to use, or None."""
        cache = self.cache
        if isinstance(cache, str) and cache == "auto":
            # dict.setdefault is atomic: concurrent first uses get one cache
            return self.__dict__.setdefault("_auto_cache", KernelCache())
        if cache is None or isinstance(cache, KernelCache):
            return cache
        raise ValueError(
            f"cache must be 'auto' (a cache shared by this estimator and its clones), None "
            f"(no caching) or a KernelCache, got {cache!r}."
        )

    def __sklearn_clone__(self):
        clone = super().__sklearn_clone__()
        if isinstance(self.cache, str) and self.cache == "auto":
            clone._auto_cache = self._resolve_cache()
        return clone


_DEFAULT_CACHE = KernelCache()


def get_default_cache():
    """A process-wide :class:`KernelCache`, for sharing entries between independent estimators.

    No estimator uses it unless given it explicitly (``cache=get_default_cache()``);
    ``cache="auto"`` gives each estimator lineage a cache of its own.
    """
    return _DEFAULT_CACHE
