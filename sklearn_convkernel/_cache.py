"""Kernel-entry cache shared across fits: cross-validation folds and searches reuse entries.

Entries are keyed by the compiled architecture (its planned program, kind,
dtype and image shape) and by the *content* of the images (a hash of their
bytes), so that the Gram of a cross-validation fold, the cross-kernel of its
test part and the next parameter setting's fit all reuse what was computed
before.  A store per architecture key holds the registered images, their
self-pass tapes, the kernel entries computed so far and a mask of which are
known; only missing unique pairs are ever computed.
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

__all__ = ["KernelCache", "get_default_cache"]


def _image_keys(Xf):
    """A content hash per image (row of Xf)."""
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in Xf]


class _Store:
    """Entries of one architecture key."""

    def __init__(self, prog, dtype, n_features, n_outputs=None, tape_len=None):
        self.prog = prog
        self.dtype = dtype
        self.n_features = n_features
        self.n_outputs = prog.n_outputs if prog is not None else n_outputs
        self.tape_len = prog.tape_len if prog is not None else tape_len
        self.index = {}
        self.n = 0
        self._alloc(0)

    def _alloc(self, cap):
        n_out, L = self.n_outputs, self.tape_len
        self.cap = cap
        self.X = np.empty((cap, self.n_features), dtype=self.dtype)
        self.tapes = np.empty((cap, L), dtype=self.dtype)
        self.K = np.empty((n_out, cap, cap), dtype=self.dtype)
        self.known = np.zeros((cap, cap), dtype=bool)

    def nbytes(self, cap=None):
        cap = self.cap if cap is None else cap
        item = np.dtype(self.dtype).itemsize
        n_out, L = self.n_outputs, self.tape_len
        return cap * (self.n_features + L) * item + cap * cap * (n_out * item + 1)

    def _grow(self, need):
        if need <= self.cap:
            return
        cap = max(need, 2 * self.cap, 64)
        old = (self.X, self.tapes, self.K, self.known, self.n)
        self._alloc(cap)
        X, tapes, K, known, n = old
        self.X[:n] = X[:n]
        self.tapes[:n] = tapes[:n]
        self.K[:, :n, :n] = K[:, :n, :n]
        self.known[:n, :n] = known[:n, :n]

    def count_new(self, *key_lists):
        """How many distinct images among the key lists are not registered yet."""
        return len({k for keys in key_lists for k in keys if k not in self.index})

    def register(self, Xf, n_jobs, keys=None, verbose=0):
        """Slots of the images Xf, registering (and self-passing) new ones."""
        keys = _image_keys(Xf) if keys is None else keys
        slots = np.empty(len(keys), dtype=np.int64)
        new_rows, new_keys = [], []
        pending = {}
        for r, k in enumerate(keys):
            s = self.index.get(k)
            if s is None:
                s = pending.get(k)
                if s is None:
                    s = self.n + len(new_rows)
                    pending[k] = s
                    new_rows.append(r)
                    new_keys.append(k)
            slots[r] = s
        if new_rows:
            m = len(new_rows)
            self._grow(self.n + m)
            rows = Xf[new_rows]
            tapes, self_out = self_passes(self.prog, rows, n_jobs, verbose=verbose)
            sl = slice(self.n, self.n + m)
            self.X[sl] = rows
            self.tapes[sl] = tapes
            idx = np.arange(self.n, self.n + m)
            self.K[:, idx, idx] = self_out.T
            self.known[idx, idx] = True
            for k, s in zip(new_keys, idx):
                self.index[k] = int(s)
            self.n += m
        return slots

    def fill(self, ix, iy, n_jobs, verbose=0):
        """Compute the unknown entries among the pairs ix x iy."""
        sub = self.known[np.ix_(ix, iy)]
        if sub.all():
            return 0
        a, b = np.nonzero(~sub)
        s, t = ix[a], iy[b]
        lo, hi = np.minimum(s, t), np.maximum(s, t)
        code = np.unique(lo * self.cap + hi)
        lo, hi = code // self.cap, code % self.cap
        X = self.X[: self.n]
        T = self.tapes[: self.n]
        vals = pair_values(self.prog, X, T, X, T, lo, hi, n_jobs, verbose=verbose)
        self.K[:, lo, hi] = vals.T
        self.K[:, hi, lo] = vals.T
        self.known[lo, hi] = True
        self.known[hi, lo] = True
        return len(code)


class KernelCache:
    """In-memory cache of exact kernel entries, shared by transformers and estimators.

    Every :class:`~sklearn_convkernel.ConvKernel` and estimator uses the
    process-wide default cache unless given ``cache=None`` (no caching) or a
    cache of its own.  Fitting on a cross-validation fold, predicting on its
    test part and refitting with another regulariser then cost only the
    kernel entries not computed before; with a depth sweep
    (``max_depth``), every depth is filled by the same pass.

    The cache is shared, not copied, by :func:`sklearn.base.clone` (so a
    ``GridSearchCV`` shares it across its candidates).  It lives in one
    process: with process-based joblib backends each worker starts empty, so
    parallelise the kernel itself (``n_jobs`` of the estimator) instead.

    :meth:`save` writes the entries to a file and :meth:`load` resumes from it
    (e.g. a long search in several sessions, or a Gram shared between runs).

    Parameters
    ----------
    max_bytes : int, default=2 GiB
        Memory budget.  Least recently used architecture stores are dropped to
        respect it; a request that does not fit on its own bypasses the cache
        (with a warning).

    Attributes
    ----------
    computed_pairs_ : int
        Unique off-diagonal pairs computed so far (the cost actually paid).
    requested_entries_ : int
        Kernel entries requested so far.
    """

    def __init__(self, max_bytes=2 * 1024**3):
        self.max_bytes = int(max_bytes)
        self._stores = OrderedDict()
        self._lock = threading.RLock()
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
        program's dtype.  ``Yf=None`` means ``Y = X``.  ``verbose > 0`` shows
        the progress of the self passes and entries computed.
        """
        with self._lock:
            store = self._store(key, prog, Xf.dtype, Xf.shape[1])
            kx = _image_keys(Xf)
            ky = None if Yf is None else _image_keys(Yf)
            n_new = store.count_new(kx, ky or [])
            if not self._make_room(store, n_new):
                warnings.warn(
                    f"KernelCache: {n_new} images do not fit in max_bytes={self.max_bytes}; "
                    "computing without the cache. Raise max_bytes or pass cache=None.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            ix = store.register(Xf, n_jobs, kx, verbose=verbose)
            iy = ix if Yf is None else store.register(Yf, n_jobs, ky, verbose=verbose)
            self.requested_entries_ += len(ix) * len(iy)
            self.computed_pairs_ += store.fill(ix, iy, n_jobs, verbose=verbose)
            return store.K[:, ix][:, :, iy]

    def self_kernel(self, key, prog, Xf, *, n_jobs=None, verbose=0):
        """The self kernels k(x, x) of each image: (n_outputs, n_X)."""
        with self._lock:
            store = self._store(key, prog, Xf.dtype, Xf.shape[1])
            kx = _image_keys(Xf)
            if not self._make_room(store, store.count_new(kx)):
                return None
            ix = store.register(Xf, n_jobs, kx, verbose=verbose)
            return store.K[:, ix, ix]


_DEFAULT_CACHE = KernelCache()


def get_default_cache():
    """The process-wide :class:`KernelCache` used when ``cache="auto"``."""
    return _DEFAULT_CACHE
