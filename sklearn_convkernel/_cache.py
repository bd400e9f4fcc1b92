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
import zipfile
from collections import OrderedDict

import numpy as np

from sklearn_convkernel._gram import pair_values, self_passes

__all__ = ["KernelCache", "get_default_cache", "DEFAULT_MAX_BYTES"]

#: Memory budget of a :class:`KernelCache` created without ``max_bytes``
#: (each ``cache="auto"`` estimator lineage has one such cache).
DEFAULT_MAX_BYTES = 2 * 1024**3


_KEY_BYTES = 16
_FORMAT = "sklearn-convkernel KernelCache 2"


def _image_keys(Xf):
    """A content hash per image (row of Xf)."""
    return [hashlib.blake2b(np.ascontiguousarray(row).tobytes(),
                            digest_size=_KEY_BYTES).digest() for row in Xf]


def _checksum(entry, block):
    """Hash binding a saved store's metadata (key, sizes) to its arrays."""
    h = hashlib.blake2b(digest_size=32)
    fixed = {k: entry[k] for k in ("key", "n_outputs", "tape_len", "n")}
    h.update(json.dumps(fixed, sort_keys=True).encode())
    for name in ("X", "tapes", "K", "known", "keys"):
        a = np.ascontiguousarray(block[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _load_store(data, k, m, path):
    """(key, _Store) of saved store k with metadata m, after checking it."""
    where = f"KernelCache.load: {path!r}, store {k}"
    try:
        a, shape, kind, dtype, spatial = m["key"]
        key = (str(a), tuple(int(v) for v in shape), str(kind), str(dtype), str(spatial))
        n, n_out, L = int(m["n"]), int(m["n_outputs"]), int(m["tape_len"])
        checksum = str(m["checksum"])
        block = {name: data[f"{name}{k}"] for name in ("X", "tapes", "K", "known", "keys")}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: missing or malformed entry ({exc}).") from exc
    dt = np.dtype(key[3]) if key[3] in ("float64", "float32") else None
    n_features = int(np.prod(key[1])) if len(key[1]) == 3 else -1
    expected = {"X": ((n, n_features), dt), "tapes": ((n, L), dt), "K": ((n_out, n, n), dt),
                "known": ((n, n), np.dtype(bool)), "keys": ((n, _KEY_BYTES), np.dtype(np.uint8))}
    for name, (shp, t) in expected.items():
        arr = block[name]
        if t is None or arr.shape != shp or arr.dtype != t:
            raise ValueError(
                f"{where}: {name} has shape {arr.shape} and dtype {arr.dtype}, expected "
                f"{shp} and {t}; the file is damaged or was not written by KernelCache.save."
            )
    if _checksum(m, block) != checksum:
        raise ValueError(f"{where}: checksum mismatch; the file is damaged or was altered.")
    keys = [bytes(h) for h in block["keys"]]
    if keys != _image_keys(block["X"]):
        raise ValueError(f"{where}: the image hashes do not match the stored images.")
    if not np.isfinite(block["K"][:, block["known"]]).all():
        raise ValueError(f"{where}: non-finite kernel entries.")
    st = _Store(None, dt.type, n_features, n_out, L)
    st._grow(n)
    st.X[:n] = block["X"]
    st.tapes[:n] = block["tapes"]
    st.K[:, :n, :n] = block["K"]
    st.known[:n, :n] = block["known"]
    st.index = {h: s for s, h in enumerate(keys)}
    st.n = n
    return key, st


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

    def verify(self, prog, key):
        """Check loaded entries against ``prog``: recomputed self passes and a few pairs."""
        n = self.n
        if n == 0:
            return
        if (prog.n_outputs, prog.tape_len) != (self.n_outputs, self.tape_len):
            raise ValueError(
                "KernelCache: loaded entries do not match the architecture they are keyed "
                f"by ({self.n_outputs} outputs and tape {self.tape_len}, the program has "
                f"{prog.n_outputs} and {prog.tape_len}); the cache file is not trustworthy."
            )
        X, T = self.X[:n], self.tapes[:n]
        tapes, self_out = self_passes(prog, X, 1)
        lo, hi = np.nonzero(np.triu(self.known[:n, :n], 1))
        pick = np.linspace(0, lo.size - 1, min(lo.size, 8)).astype(np.int64) if lo.size else lo
        vals = pair_values(prog, X, T, X, T, lo[pick], hi[pick], 1)
        rtol = 1e-9 if self.dtype == np.float64 else 1e-4
        idx = np.arange(n)
        checks = ((tapes, T), (self_out.T, self.K[:, idx, idx]),
                  (vals.T, self.K[:, lo[pick], hi[pick]]))
        for got, stored in checks:
            scale = np.maximum(np.abs(got), np.abs(stored)).max(initial=0.0)
            if not np.allclose(got, stored, rtol=rtol, atol=rtol * scale):
                raise ValueError(
                    "KernelCache: loaded entries do not match the architecture they are "
                    f"keyed by ({key[0][:80]}..., kind={key[2]!r}): recomputed self "
                    "passes or pairs differ from the stored values; the cache file is not "
                    "trustworthy."
                )

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
            store.verify(prog, key)
            store.prog = prog
        self._stores.move_to_end(key)
        return store

    def save(self, path):
        """Write every entry to ``path`` (a compressed ``.npz`` archive; no pickle).

        The file is written exactly at ``path`` (no suffix is added) and
        replaced atomically.  A later :meth:`load` resumes from it: a long
        search or Gram computation interrupted after a save loses nothing
        computed before.  Each store's entries are bound, by a checksum, to
        its key (architecture, kind, dtype, image shape), to the content of
        its images and to the package version that computed them.
        """
        from sklearn_convkernel import __version__

        with self._lock:
            arrays, meta = {}, []
            for k, (key, st) in enumerate(self._stores.items()):
                n = st.n
                order = sorted(st.index.items(), key=lambda kv: kv[1])
                block = {
                    "X": np.ascontiguousarray(st.X[:n]),
                    "tapes": np.ascontiguousarray(st.tapes[:n]),
                    "K": np.ascontiguousarray(st.K[:, :n, :n]),
                    "known": np.ascontiguousarray(st.known[:n, :n]),
                    "keys": np.frombuffer(b"".join(h for h, _ in order),
                                          dtype=np.uint8).reshape(n, _KEY_BYTES),
                }
                entry = {"key": [key[0], list(key[1]), key[2], key[3], key[4]],
                         "n_outputs": st.n_outputs, "tape_len": st.tape_len, "n": n}
                entry["checksum"] = _checksum(entry, block)
                meta.append(entry)
                arrays.update({f"{name}{k}": v for name, v in block.items()})
            header = {"format": _FORMAT, "version": __version__, "stores": meta}
            arrays["meta"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
            path = os.fspath(path)
            tmp = f"{path}.tmp{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **arrays)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)

    @classmethod
    def load(cls, path, max_bytes=2 * 1024**3):
        """A cache holding the entries saved by :meth:`save` at ``path``.

        The file is checked before anything is used: it must be an archive
        written by :meth:`save` (never unpickled), every store's checksum
        must match its key, images and entries, every image's key must be the
        hash of its content and every known entry must be finite.  When a
        store is first used, the self passes of its images are recomputed and
        must reproduce the stored tapes and diagonal (and a few stored pairs),
        so that entries are never reused for another architecture.  Stores
        written by another package version are skipped with a warning.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            The file is not a cache file, or its contents fail a check.
        """
        from sklearn_convkernel import __version__

        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"KernelCache.load: no file {path!r}.")
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"KernelCache.load: {path!r} is not a file written by KernelCache.save "
                "(not an .npz archive)."
            )
        cache = cls(max_bytes=max_bytes)
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files:
                raise ValueError(
                    f"KernelCache.load: {path!r} is an .npz archive but not a KernelCache "
                    "file (no 'meta' entry)."
                )
            try:
                header = json.loads(bytes(np.asarray(data["meta"], dtype=np.uint8)).decode())
                if header.get("format") != _FORMAT:
                    raise ValueError(f"format {header.get('format')!r}, expected {_FORMAT!r}")
                version, stores = header["version"], list(header["stores"])
            except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"KernelCache.load: {path!r} has unreadable metadata ({exc}); it was not "
                    "written by this version's KernelCache.save."
                ) from exc
            if version != __version__:
                if stores:
                    warnings.warn(
                        f"KernelCache.load: {path!r} was written by sklearn-convkernel "
                        f"{version}, this is {__version__}; its entries are not used "
                        "(kernel definitions may differ between versions).",
                        RuntimeWarning, stacklevel=2,
                    )
                return cache
            for k, m in enumerate(stores):
                key, st = _load_store(data, k, m, path)
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
