"""Resumable, crash-safe Gram stores: ``conv_kernel(..., out="K.npy")``.

A store is the ``.npy`` file at ``PATH`` (a memory map of the final matrix)
plus a sidecar directory ``PATH + ".progress"`` holding

* ``key.json`` -- what the matrix is (content hashes of X and Y, the
  architecture, kind, dtype, spatial mode, shape, package version), how it
  is cut into tiles (tile size, symmetric or not) and the engine variant its
  tiles are computed with; written atomically (temporary file, fsync,
  rename) *after* the ``.npy`` file exists, and rewritten (atomically) only
  to record a second variant (below);
* ``tiles.log`` -- an append-only list of finished tile numbers, one per
  line.  A tile's number is appended only after its entries were written into
  the ``.npy`` file and flushed (``msync``); a final line ``complete`` is
  appended once the diagonal of a symmetric Gram is written and flushed.

A process killed at any moment therefore leaves a store whose logged tiles
are on disk; rerunning the same computation computes only the others (tiles
are deterministic, so the result is bitwise identical to an uninterrupted
run).  Engine variants (:mod:`._simd`) may differ in the last bits, so a
resumed store keeps computing with the variant it was started with
(``key.json``'s ``variant``) whatever this process would choose; only on a
CPU that cannot run that variant do the remaining tiles use another one,
with a warning, and ``key.json`` then lists both under ``variants``.  So
does a worker (process or dask backend) whose CPU cannot run it: its tasks
report the variant they ran with (``_gram.VariantCheck``), and ``variants``
lists that one before any tile of it is logged.  A store whose key differs
from the request is never reused, and :func:`load_gram` returns only
complete stores.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time

import numpy as np

__all__ = ["GramStore", "load_gram", "check_not_backing", "StoreError"]

_FORMAT = "sklearn-convkernel-gram-store"
_FORMAT_VERSION = 1
_COMPLETE = "complete"


class StoreError(ValueError):
    """A Gram store that cannot be used for the requested computation."""


def sidecar_path(path):
    """The sidecar directory of the store at ``path``."""
    return os.fspath(path) + ".progress"


def content_hash(A):
    """A hash of an array's shape, dtype and bytes (C order)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((A.shape, A.dtype.str)).encode())
    h.update(memoryview(np.ascontiguousarray(A)).cast("B"))
    return h.hexdigest()


def _package_version():
    from sklearn_convkernel import __version__

    return __version__


def make_key(X, Y, architecture, kind, dtype, spatial, augment=None):
    """The identity of a Gram: what must match for a store to be reused."""
    return {
        "augment": augment,
        "X": content_hash(X),
        "Y": None if Y is None else content_hash(Y),
        "architecture": repr(architecture),
        "kind": kind,
        "dtype": np.dtype(dtype).name,
        "spatial": spatial,
        "version": _package_version(),
    }


def _backing_files(a):
    """Files memory-mapped under ``a`` (walking its ``base`` chain)."""
    seen = []
    while a is not None:
        name = getattr(a, "filename", None)
        if isinstance(a, np.memmap) and name:
            seen.append(os.fspath(name))
        a = getattr(a, "base", None)
    return seen


def check_not_backing(path, arrays):
    """Refuse to write ``path`` when one of ``arrays`` (name -> array) is a map of it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return
    for name, a in arrays.items():
        for f in _backing_files(a):
            try:
                same = os.path.samefile(f, path)
            except OSError:
                same = False
            if same:
                raise StoreError(
                    f"{name} is a memory map of out={path!r}, the file the Gram would be "
                    f"written to; writing it would destroy {name} while it is read. Pass "
                    f"another out path, or load {name} into memory first (np.load without "
                    "mmap_mode, or np.array(...))."
                )


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json_atomic(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def tile_list(nx, ny, tile, symmetric):
    """Tiles ((r0, r1), (c0, c1)) of a Gram, in a fixed order (their numbers).

    For ``K(X, X)`` only tiles holding some pair i < j (the upper triangle
    with the diagonal tiles) are listed.
    """
    rows = [(s, min(s + tile, nx)) for s in range(0, nx, tile)]
    cols = [(s, min(s + tile, ny)) for s in range(0, ny, tile)]
    return [(r, c) for r in rows for c in cols if not symmetric or c[1] - 1 > r[0]]


def _read_record(path):
    side = sidecar_path(path)
    key_file = os.path.join(side, "key.json")
    if not os.path.exists(key_file):
        return None, set(), False
    with open(key_file, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as exc:
            raise StoreError(
                f"{key_file} is not a valid store record ({exc}); delete {path!r} and "
                f"{side!r} to start over."
            ) from None
    if record.get("format") != _FORMAT:
        raise StoreError(f"{key_file} is not a sklearn-convkernel Gram store record.")
    done, complete = set(), False
    log = os.path.join(side, "tiles.log")
    if os.path.exists(log):
        with open(log, encoding="ascii", errors="replace") as f:
            text = f.read()
        # a line is valid only once its newline is written
        for line in text.split("\n")[:-1]:
            if line == _COMPLETE:
                complete = True
            elif line.isdigit():
                done.add(int(line))
    n_tiles = int(record["n_tiles"])
    done = {t for t in done if t < n_tiles}
    return record, done, complete and len(done) == n_tiles


def _open_array(path, mode="r+"):
    return np.load(os.fspath(path), mmap_mode=mode, allow_pickle=False)


class GramStore:
    """An open Gram store: the memory-mapped matrix and its progress log.

    Use :meth:`open`; then :meth:`mark` finished tiles (after their data is
    flushed), :meth:`finish`, and :meth:`close`.
    """

    def __init__(self, path, record, done, complete):
        self.path = os.fspath(path)
        self.record = record
        # stores written before the variant was recorded have none (None)
        self.variant = record.get("variant")
        self.done = done
        self.complete = complete
        self.tile_size = int(record["tile_size"])
        self.shape = tuple(record["shape"])
        self.dtype = np.dtype(record["key"]["dtype"])
        self._log_fd = None
        self._last_sync = time.monotonic()

    @classmethod
    def open(cls, path, key, shape, symmetric, tile_size, default_tile_size, variant=None):
        """Open (or create) the store at ``path`` for the Gram identified by ``key``.

        ``tile_size`` (or ``default_tile_size`` when None) is used for a new
        store; an existing store keeps its own (a different explicit tile size
        is an error).  ``variant`` (the engine variant computing the tiles) is
        recorded in a new store; an existing store's is :attr:`variant`.
        Raises :class:`StoreError` when an existing store holds another Gram.
        """
        path = os.fspath(path)
        side = sidecar_path(path)
        record, done, complete = _read_record(path)
        if record is not None and not os.path.exists(path):
            raise StoreError(
                f"the store record {side!r} exists but its matrix {path!r} is missing; "
                f"delete {side!r} to start over."
            )
        if record is not None:
            cls._check_record(path, record, key, shape, symmetric, tile_size)
            try:
                arr = _open_array(path, "r")
            except (ValueError, OSError) as exc:
                raise StoreError(
                    f"{path!r} is not a readable .npy file ({exc}); delete it and {side!r} "
                    "to start over."
                ) from None
            if arr.shape != tuple(shape) or arr.dtype != np.dtype(key["dtype"]):
                raise StoreError(
                    f"{path!r} holds an array of shape {arr.shape} and dtype {arr.dtype}, "
                    f"not the {tuple(shape)} {key['dtype']} its store record describes; "
                    f"delete it and {side!r} to start over."
                )
            del arr
        else:
            if tile_size is None:
                tile_size = default_tile_size
            # the matrix first (fully allocated and flushed), the record second:
            # a record therefore always describes an existing matrix
            os.makedirs(side, exist_ok=True)
            log = os.path.join(side, "tiles.log")
            if os.path.exists(log):
                os.remove(log)
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=key["dtype"],
                                            shape=tuple(shape))
            arr.flush()
            del arr
            record = {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "key": key,
                "shape": list(shape),
                "symmetric": bool(symmetric),
                "tile_size": int(tile_size),
                "n_tiles": len(tile_list(shape[-2], shape[-1], int(tile_size), symmetric)),
                "variant": variant,
            }
            _write_json_atomic(os.path.join(side, "key.json"), record)
            done, complete = set(), False
        store = cls(path, record, done, complete)
        store._open_log()
        return store

    @staticmethod
    def _check_record(path, record, key, shape, symmetric, tile_size):
        old = record.get("key", {})
        differ = [name for name in key if old.get(name) != key[name]]
        if list(record.get("shape", [])) != list(shape):
            differ.append("shape")
        if bool(record.get("symmetric")) != bool(symmetric):
            differ.append("Y (given or not)")
        if differ:
            what = {"X": "the content of X", "Y": "the content of Y"}
            names = ", ".join(what.get(d, d) for d in differ)
            raise StoreError(
                f"out={path!r} holds a Gram store of a different computation ({names} "
                f"differ{'s' if len(differ) == 1 else ''}); it is never reused for another "
                f"one. Pass another out path, or delete {path!r} and {sidecar_path(path)!r} "
                "to start over."
            )
        stored = record.get("variant")
        if stored is not None and not isinstance(stored, str):
            raise StoreError(
                f"{os.path.join(sidecar_path(path), 'key.json')} is not a valid store record "
                f"(variant {stored!r} is not a name); delete {path!r} and "
                f"{sidecar_path(path)!r} to start over."
            )
        if tile_size is not None and int(tile_size) != int(record["tile_size"]):
            raise StoreError(
                f"out={path!r} was started with tile_size={record['tile_size']}; resume it "
                f"with tile_size=None (or {record['tile_size']}), not {tile_size}."
            )

    def record_variant(self, variant):
        """Record (atomically, in ``key.json``) that ``variant`` computes entries too."""
        used = list(self.record.get("variants") or [self.variant])
        if variant not in used:
            used.append(variant)
            self.record = dict(self.record, variants=used)
            _write_json_atomic(os.path.join(sidecar_path(self.path), "key.json"), self.record)

    def _open_log(self):
        log = os.path.join(sidecar_path(self.path), "tiles.log")
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreError(
                    f"out={self.path!r} is being computed by another process right now; "
                    "wait for it (or stop it) before resuming."
                ) from None
            raise  # pragma: no cover
        # a torn last line (killed mid-write) is not a finished tile: drop it,
        # so that the next entry does not extend it into another number
        size = os.fstat(fd).st_size
        if size:
            with open(log, "rb") as f:
                text = f.read()
            keep = text.rfind(b"\n") + 1
            if keep < size:
                os.ftruncate(fd, keep)
        self._log_fd = fd

    @property
    def n_tiles(self):
        return int(self.record["n_tiles"])

    @property
    def symmetric(self):
        return bool(self.record["symmetric"])

    def tiles(self):
        """Every tile ((r0, r1), (c0, c1)) of the store, by number."""
        return tile_list(self.shape[-2], self.shape[-1], self.tile_size, self.symmetric)

    def mark(self, index):
        """Record tile ``index`` as finished (its data must already be flushed)."""
        os.write(self._log_fd, f"{int(index)}\n".encode("ascii"))
        self.done.add(int(index))
        now = time.monotonic()
        if now - self._last_sync > 1.0:
            os.fsync(self._log_fd)
            self._last_sync = now

    def finish(self, diagonal=None):
        """Write the diagonal (symmetric Grams), flush it, then mark the store complete."""
        if len(self.done) != self.n_tiles:
            raise RuntimeError("finish() before every tile is done")  # pragma: no cover
        if diagonal is not None:
            arr = _open_array(self.path, "r+")
            target = arr if arr.ndim == 3 else arr[np.newaxis]
            idx = np.arange(self.shape[-1])
            for o in range(target.shape[0]):
                target[o, idx, idx] = diagonal[:, o]
            arr.flush()
            del arr, target
        os.fsync(self._log_fd)
        os.write(self._log_fd, (_COMPLETE + "\n").encode("ascii"))
        os.fsync(self._log_fd)
        self.complete = True

    def close(self):
        if self._log_fd is not None:
            try:
                os.fsync(self._log_fd)
            finally:
                os.close(self._log_fd)  # releases the lock
                self._log_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Seconds between two flushes (and marks) of the tiles written in this process.
COMMIT_INTERVAL = 1.0


class BatchedTileWriter:
    """Writes the tiles computed *in this process* into a store, durable in batches.

    The tiles of a thread (or sequential) backend come back to the calling
    process, which places them in one memory map of the store kept open for
    the whole run.  At most once per ``interval`` seconds (default
    :data:`COMMIT_INTERVAL`) and at :meth:`close` it flushes the map and only
    then marks the tiles written since the last flush as finished: the store's rule (a tile is marked after
    its data is on disk) at one ``msync`` per batch instead of one per tile,
    which cost ~10 % of a 60 000 x 2 000 CNTK K_nm in 32 x 32 tiles.  Tiles
    of other backends (processes, a dask cluster) are written by the workers
    themselves with :func:`write_tile`.
    """

    def __init__(self, store, interval=None):
        self.store = store
        self.interval = float(COMMIT_INTERVAL if interval is None else interval)
        self._arr = _open_array(store.path, "r+")
        self._target = self._arr if self._arr.ndim == 3 else self._arr[np.newaxis]
        self._pending = []
        self._last = time.monotonic()

    def add(self, index, block, r0, c0):
        """Place tile ``index`` (its block at (r0, c0)); commit if a batch is due."""
        place_block(self._target, block, r0, c0, self.store.symmetric, mirror=True)
        self._pending.append(int(index))
        if time.monotonic() - self._last >= self.interval:
            self.commit()

    def commit(self):
        """Flush the data written so far, then mark its tiles finished."""
        if self._pending:
            self._arr.flush()
            for index in self._pending:
                self.store.mark(index)
            self._pending = []
        self._last = time.monotonic()

    def close(self):
        self.commit()
        self._target = self._arr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_tile(path, block, r0, c0, symmetric):
    """Write one tile's block (n_outputs, rows, cols) into the store at ``path`` and flush it.

    For a symmetric Gram only the entries i < j of the block are valid; they
    are written with their mirror images (j, i).
    """
    arr = _open_array(path, "r+")
    target = arr if arr.ndim == 3 else arr[np.newaxis]
    place_block(target, block, r0, c0, symmetric, mirror=True)
    arr.flush()
    del arr, target


def place_block(out, block, r0, c0, symmetric, mirror=False):
    """Copy a tile's block into ``out`` (n_outputs, n_X, n_Y).

    For a symmetric Gram only the entries i < j are copied, and, with
    ``mirror``, also their transposes.
    """
    r1, c1 = r0 + block.shape[1], c0 + block.shape[2]
    if not symmetric:
        out[:, r0:r1, c0:c1] = block
        return
    upper = np.arange(r0, r1)[:, None] < np.arange(c0, c1)[None, :]
    ii, jj = np.nonzero(upper)
    for o in range(out.shape[0]):
        b = block[o]
        if upper.all():
            out[o, r0:r1, c0:c1] = b
            if mirror:
                out[o, c0:c1, r0:r1] = b.T
        else:
            out[o, r0 + ii, c0 + jj] = b[ii, jj]
            if mirror:
                out[o, c0 + jj, r0 + ii] = b[ii, jj]


def load_gram(path, mmap_mode="r"):
    """Load a Gram matrix written by ``conv_kernel(..., out=path)``, if it is complete.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file given as ``out`` (or to ``sklearn-convkernel gram --out``).
    mmap_mode : {None, "r", "r+", "c"}, default="r"
        How to open the matrix (see :func:`numpy.load`); ``None`` reads it
        into memory.

    Returns
    -------
    K : ndarray or numpy.memmap of shape (n_X, n_Y) or (n_outputs, n_X, n_Y)

    Raises
    ------
    ValueError
        When the store is unfinished (saying how many tiles are missing and
        how to resume), has no store record, or does not match its record.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_convkernel import conv_kernel, load_gram
    >>> from sklearn_convkernel.arch import Sequential, Conv, ReLU, Flatten, Dense
    >>> arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())
    >>> X = np.random.default_rng(0).random((5, 8, 8, 1))
    >>> path = os.path.join(tempfile.mkdtemp(), "K.npy")
    >>> K = conv_kernel(X, architecture=arch, out=path)
    >>> bool(np.array_equal(load_gram(path), K))
    True
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no Gram store at {path!r}.")
    record, done, complete = _read_record(path)
    if record is None:
        raise StoreError(
            f"{path!r} has no store record ({sidecar_path(path)!r} is missing), so nothing "
            "says it is a finished Gram. Recompute it with conv_kernel(..., out=path), "
            "or, if you know the file is complete, read it with numpy.load."
        )
    if not complete:
        missing = record["n_tiles"] - len(done)
        what = f"{missing} of {record['n_tiles']} tiles are missing"
        if not missing:
            what = "every tile is done but the diagonal is not written yet"
        raise StoreError(
            f"the Gram store {path!r} is unfinished: {what}. Resume it by calling "
            "conv_kernel again with the same X, Y, architecture, kind and dtype and "
            f"out={path!r} (or by rerunning the same `sklearn-convkernel gram` command); "
            "only the missing tiles are computed."
        )
    arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    if arr.shape != tuple(record["shape"]) or arr.dtype != np.dtype(record["key"]["dtype"]):
        raise StoreError(
            f"{path!r} holds an array of shape {arr.shape} and dtype {arr.dtype}, not the "
            f"{tuple(record['shape'])} {record['key']['dtype']} its store record describes."
        )
    return arr
