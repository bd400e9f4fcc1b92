"""Tiled Gram matrices: per-image self passes, then pair passes over tiles.

Data flow: architecture --(_plan.make_plan)--> program --(_core)--> tiles of
the Gram matrix, run by joblib threads (the core releases the GIL) that write
into one preallocated output.  For ``K(X, X)`` only the upper tiles are
computed; the diagonal comes from the self passes and the lower triangle is
mirrored.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import warnings

import numpy as np
from joblib import delayed, effective_n_jobs

from sklearn_convkernel import arch as A
from sklearn_convkernel._augment import FlipPlan, check_augment
from sklearn_convkernel._parallel import parallel
from sklearn_convkernel._plan import KINDS, SPATIAL_MODES, make_plan
from sklearn_convkernel._validation import check_images, resolve_dtype
from sklearn_convkernel._progress import progress
from sklearn_convkernel._simd import fallback_advice
from sklearn_convkernel._store import (
    BatchedTileWriter,
    GramStore,
    StoreError,
    check_not_backing,
    make_key,
    place_block,
    tile_list,
    write_tile,
)

__all__ = ["conv_kernel", "compile_architecture", "self_passes", "pair_values",
           "gram", "flip_arguments"]


def _core():
    try:
        from sklearn_convkernel import _core
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "sklearn_convkernel's compiled core is not built. Install the package "
            "with `pip install .` (or `pip install --no-build-isolation -e .` for "
            "development) and do not run Python from inside the source tree "
            "without it."
        ) from exc
    return _core


def compile_architecture(architecture, image_shape, kind="nngp", spatial="auto"):
    """Plan and compile ``architecture`` for images of shape (H, W, C).

    Returns the compiled program (an object of the private ``_core`` module)
    and the :class:`~sklearn_convkernel._plan.Plan`.
    """
    plan = make_plan(architecture, image_shape, kind=kind, spatial=spatial)
    H, W, C = plan.input_shape
    prog = _core().CompiledProgram(
        plan.ops, plan.fops, plan.blob_i, plan.blob_f, H, W, C,
        plan.tape_len, plan.n_outputs, plan.kind == "ntk",
    )
    return prog, plan


def _chunks(n, size):
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _parallel(n_jobs):
    # results in completion order; the backend policy is _parallel.parallel's,
    # so every task below is a module-level function of picklable arguments
    # that returns its result instead of writing into shared memory.  Each
    # task also returns the engine variant its program ran with (VariantCheck).
    return parallel(n_jobs, unordered=True)


class VariantCheck:
    """The engine variants a computation's tasks report back, checked against its program's.

    Every task returns the variant its program actually ran with: ``prog``'s,
    unless a worker (of a process or dask backend) unpickled it on a CPU that
    does not run that variant, where ``_core._restore_program`` takes the
    worker's own (with a warning in the worker).  Its results may then differ
    in the last bits.  Called with each reported variant, in the calling
    process, this warns once per other variant and records it in ``store``'s
    ``key.json`` (``variants``, :meth:`~._store.GramStore.record_variant`)
    before any result of it is logged as finished.  One check per computation.
    """

    def __init__(self, prog, store=None):
        self.variant = prog.variant
        self.store = store
        self._others = set()

    def __call__(self, used):
        if used == self.variant or used in self._others:
            return
        self._others.add(used)
        recorded = ""
        if self.store is not None:
            self.store.record_variant(used)
            recorded = (f" out={self.store.path!r} records it in its key.json "
                        "('variants').")
        warnings.warn(
            f"some tasks of this computation ran with the {used!r} engine variant instead "
            f"of {self.variant!r}: a worker's CPU does not run {self.variant!r}.{recorded} "
            + fallback_advice(self.variant, used),
            UserWarning, stacklevel=3,
        )


def _self_task(prog, Xf, start):
    n = Xf.shape[0]
    tapes = np.empty((n, prog.tape_len), dtype=Xf.dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=Xf.dtype)
    prog.self_pass(Xf, tapes, self_out)
    return start, tapes, self_out, prog.variant


def self_passes(prog, Xf, n_jobs=None, chunk=None, verbose=0, variant_check=None):
    """Per-image self passes: tapes (n, tape_len) and self kernels (n, n_outputs).

    ``variant_check`` (a :class:`VariantCheck` of ``prog``; a new one when
    None) is told the engine variant of every task.
    """
    n = Xf.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    check = VariantCheck(prog) if variant_check is None else variant_check
    if chunk is None:
        chunk = max(1, min(32, -(-n // (4 * n_jobs))))
    tapes = np.empty((n, prog.tape_len), dtype=Xf.dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=Xf.dtype)
    tasks = (delayed(_self_task)(prog, Xf[a:b], a) for a, b in _chunks(n, chunk))
    with progress(n, "self passes", verbose, unit="images") as bar:
        for a, t, s, variant in _parallel(n_jobs)(tasks):
            check(variant)
            tapes[a:a + len(t)] = t
            self_out[a:a + len(s)] = s
            bar.update(len(t))
    return tapes, self_out


def _tile_task(prog, Xr, tr, r0, Yc, tc, c0, upper_only, Fc=None, tfc=None):
    block = np.zeros((prog.n_outputs, Xr.shape[0], Yc.shape[0]), dtype=Xr.dtype)
    prog.pair_tile(Xr, tr, r0, Yc, tc, c0, block, upper_only)
    if Fc is not None:  # flip averaging: (K(x, y) + K(x, flip y)) / 2
        flip = np.zeros_like(block)
        prog.pair_tile(Xr, tr, r0, Fc, tfc, c0, flip, upper_only)
        block += flip
        block *= 0.5
    return r0, c0, block, prog.variant


def _list_task(prog, X, tx, Y, ty, ii, jj, start):
    out = np.empty((ii.shape[0], prog.n_outputs), dtype=X.dtype)
    prog.pair_list(X, tx, Y, ty, ii, jj, out)
    return start, out, prog.variant


def pair_values(prog, X, tx, Y, ty, ii, jj, n_jobs=None, chunk=None, verbose=0,
                variant_check=None):
    """Kernel outputs of the pairs (X[ii[t]], Y[jj[t]]): array (n_pairs, n_outputs).

    ``variant_check``: as for :func:`self_passes`.
    """
    ii = np.ascontiguousarray(ii, dtype=np.int64)
    jj = np.ascontiguousarray(jj, dtype=np.int64)
    n = ii.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    check = VariantCheck(prog) if variant_check is None else variant_check
    out = np.empty((n, prog.n_outputs), dtype=X.dtype)
    if n == 0:
        return out
    if chunk is None:
        chunk = max(1, min(1024, -(-n // (8 * n_jobs))))
    tasks = (
        delayed(_list_task)(prog, X, tx, Y, ty, ii[a:b], jj[a:b], a) for a, b in _chunks(n, chunk)
    )
    with progress(n, "kernel entries", verbose) as bar:
        for a, vals, variant in _parallel(n_jobs)(tasks):
            check(variant)
            out[a:a + len(vals)] = vals
            bar.update(len(vals))
    return out


def _n_tiles(nx, ny, tile, symmetric):
    tx, ty = -(-nx // tile), -(-ny // tile)
    return tx * (tx + 1) // 2 if symmetric else tx * ty


def default_tile_size(nx, ny, symmetric, n_jobs, max_tile=32):
    """Images per tile side: at most ``max_tile``, halved until there are at
    least 4 tasks per worker, so that a small Gram keeps every worker busy
    (a Gram of 10 images is otherwise one tile, computed by one thread)."""
    tile = max_tile
    while tile > 1 and _n_tiles(nx, ny, tile, symmetric) < 4 * n_jobs:
        tile //= 2
    return tile


def _tile_pairs(r0, r1, c0, c1, symmetric):
    """Kernel entries a tile computes (pairs i < j only, for a symmetric Gram)."""
    if symmetric and r0 == c0:
        m = r1 - r0
        return m * (m - 1) // 2
    return (r1 - r0) * (c1 - c0)


def _store_tile_task(prog, data, r0, c0, symmetric, path, index):
    # computes one tile: returns (index, variant, block).  With a ``path`` (a
    # worker of a process or dask backend, on a shared filesystem) it writes
    # the tile into the store file itself and only the tile's number and
    # engine variant travel back (block None); without one (threads of the
    # calling process) the block is returned, for BatchedTileWriter.  The
    # images and tapes come as one tuple, which joblib's dask backend ships
    # with the task instead of scattering it to some worker: a task whose
    # worker dies is then simply run again elsewhere (scattered data would die
    # with its worker and stall the run).
    _, _, block, variant = _tile_task(prog, data[0], data[1], r0, data[2], data[3], c0,
                                      symmetric, *data[4:])
    if path is None:
        return index, variant, block
    write_tile(path, block, r0, c0, symmetric)
    return index, variant, None


def gram(prog, Xf, tx, sx=None, Yf=None, ty=None, *, n_jobs=None, tile_size=None,
         verbose=0, out=None, flipped=None, store=None, variant_check=None):
    """Assemble K(X, Y) (or the symmetric K(X, X) when Yf is None) tile by tile.

    Parameters
    ----------
    prog : compiled program
    Xf, Yf : ndarray (n, H*W*C)
        Flattened images, C-contiguous, of the program's dtype.
    tx, ty : ndarray (n, tape_len)
        Their self-pass tapes.
    sx : ndarray (n_X, n_outputs)
        Self kernels of X (the Gram diagonal); required when Yf is None.
    out : ndarray (n_outputs, n_X, n_Y), optional
        Preallocated output (e.g. a numpy.memmap); allocated when None.
    flipped : (Ff, tf), optional
        The column images flipped left-right and their tapes: every entry is
        then ``(K(x, y) + K(x, flip y)) / 2`` (``sx`` must hold that average
        for the symmetric case; see :mod:`~sklearn_convkernel._augment`).
    store : GramStore, optional
        Compute only the store's unfinished tiles, written into its file by
        the tasks and logged as they finish (``out`` and ``tile_size`` are
        then ignored); returns None.
    variant_check : VariantCheck, optional
        Told the engine variant of every tile (a new one, of ``prog`` and
        ``store``, when None).

    Returns
    -------
    out : ndarray (n_outputs, n_X, n_Y)
    """
    symmetric = Yf is None
    if symmetric:
        Yf, ty = Xf, tx
    nx, ny = Xf.shape[0], Yf.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    check = VariantCheck(prog, store) if variant_check is None else variant_check
    if store is not None:
        return _gram_into_store(prog, Xf, tx, sx, Yf, ty, symmetric, n_jobs, verbose, store,
                                flipped, check)
    if tile_size is None:
        tile = default_tile_size(nx, ny, symmetric, n_jobs)
    else:
        tile = int(tile_size)
    if out is None:
        out = np.empty((prog.n_outputs, nx, ny), dtype=Xf.dtype)
    tiles = tile_list(nx, ny, tile, symmetric)
    tasks = (
        delayed(_tile_task)(prog, Xf[r0:r1], tx[r0:r1], r0, Yf[c0:c1], ty[c0:c1], c0, symmetric,
                            *_flipped_columns(flipped, c0, c1))
        for (r0, r1), (c0, c1) in tiles
    )
    total = sum(_tile_pairs(r0, r1, c0, c1, symmetric) for (r0, r1), (c0, c1) in tiles)
    with progress(total, "kernel entries", verbose) as bar:
        for r0, c0, block, variant in _parallel(n_jobs)(tasks):
            check(variant)
            place_block(out, block, r0, c0, symmetric)
            bar.update(_tile_pairs(r0, r0 + block.shape[1], c0, c0 + block.shape[2], symmetric))
    if symmetric:
        iu = np.triu_indices(nx, 1)
        for o in range(prog.n_outputs):
            K = out[o]
            K[iu[1], iu[0]] = K[iu]
            K[np.diag_indices(nx)] = sx[:, o]
    return out


def _flipped_columns(flipped, c0, c1):
    """The flipped column images and tapes of a tile, as extra task arguments."""
    return () if flipped is None else (flipped[0][c0:c1], flipped[1][c0:c1])


def flip_arguments(prog, flip, Xf, tx, sx=None, Yf=None, ty=None, n_jobs=None,
                   variant_check=None):
    """The ``flipped`` argument of :func:`gram` for flip averaging, and the Gram diagonal.

    The flipped column images (Y's, or X's when Yf is None) get their tapes by
    reversal of the unflipped ones (no self pass, see :class:`~._augment.FlipPlan`).
    For ``K(X, X)`` the diagonal becomes ``(k(x, x) + K(x, flip x)) / 2``
    (one pair pass per image); otherwise ``sx`` is returned unchanged.
    ``variant_check``: as for :func:`self_passes`.

    Returns
    -------
    flipped : (Ff, tf)
    sx : ndarray (n_X, n_outputs) or None
    """
    if Yf is None:
        Ff, tf = flip.images(Xf), flip.tapes(tx)
        idx = np.arange(Xf.shape[0])
        diag = pair_values(prog, Xf, tx, Ff, tf, idx, idx, n_jobs, variant_check=variant_check)
        return (Ff, tf), (sx + diag) * 0.5
    return (flip.images(Yf), flip.tapes(ty)), sx


def _gram_into_store(prog, Xf, tx, sx, Yf, ty, symmetric, n_jobs, verbose, store, flipped,
                     check):
    tiles = store.tiles()
    todo = [t for t in range(len(tiles)) if t not in store.done]
    total = sum(_tile_pairs(r0, r1, c0, c1, symmetric) for (r0, r1), (c0, c1) in tiles)
    left = sum(_tile_pairs(*tiles[t][0], *tiles[t][1], symmetric) for t in todo)
    runner = _parallel(n_jobs)
    # threads (or sequential): the tiles come back to this process, which
    # writes them in batches; other backends' workers write their own tiles
    in_process = getattr(runner._backend, "uses_threads", False)
    path = None if in_process else store.path
    tasks = (
        delayed(_store_tile_task)(prog, (Xf[r0:r1], tx[r0:r1], Yf[c0:c1], ty[c0:c1])
                                  + _flipped_columns(flipped, c0, c1), r0, c0,
                                  symmetric, path, t)
        for t, ((r0, r1), (c0, c1)) in ((t, tiles[t]) for t in todo)
    )
    writer = BatchedTileWriter(store) if in_process else contextlib.nullcontext()
    with progress(total, "kernel entries", verbose, initial=total - left) as bar, writer:
        for t, variant, block in runner(tasks):
            check(variant)  # recorded before the tile is logged
            (r0, r1), (c0, c1) = tiles[t]
            if in_process:
                writer.add(t, block, r0, c0)
            else:
                store.mark(t)
            bar.update(_tile_pairs(r0, r1, c0, c1, symmetric))
    store.finish(sx if symmetric else None)


def conv_kernel(
    X,
    Y=None,
    *,
    architecture,
    kind="nngp",
    dtype=np.float64,
    n_jobs=None,
    spatial="auto",
    tile_size=None,
    verbose=0,
    out=None,
    augment=None,
):
    """Exact convolutional kernel matrix between two sets of images.

    Parameters
    ----------
    X : array-like of shape (n_X, H, W, C) or (n_X, H, W)
        Images (channels last).  Non-square images are fine.
    Y : array-like of shape (n_Y, H, W, C), default=None
        Second set of images with the same (H, W, C); ``None`` computes the
        symmetric Gram matrix ``K(X, X)`` (only i <= j is computed).
    architecture : Layer
        The network, e.g. ``Sequential(Conv(3, weight_var=2), ReLU(),
        GlobalAvgPool(), Dense())`` (see :mod:`sklearn_convkernel.arch`).
    kind : {"nngp", "ntk"}, default="nngp"
        The NNGP / CNN-GP / CKN covariance, or the neural tangent kernel.
    dtype : {np.float64, np.float32, "float64", "float32"} or None, default=np.float64
        Storage and arithmetic precision of the tensors; ``None`` keeps
        float32 images in float32 and computes everything else in float64.
        The images must be finite in this dtype (values beyond the float32
        range are refused).  X and Y may be any array-like of numbers
        (lists, integer, boolean or object arrays, memory maps, any memory
        layout), as for the estimators.
    n_jobs : int, default=None
        Number of threads (joblib semantics: None = 1 unless in a
        ``joblib.parallel_backend`` context, -1 = all cores).
    spatial : {"auto", "full"}, default="auto"
        "auto" computes only the spatial diagonal of the covariance where that
        is exact (no position-mixing pooling downstream), "full" always
        carries the full tensors over pairs of positions (slow; for checks).
    tile_size : int, default=None
        Images per tile side.  The default is 32, halved for small
        matrices until every worker has at least 4 tiles.  Results do not
        depend on it.
    verbose : int, default=0
        Show a progress bar (kernel entries, rate, remaining time) on stderr
        when > 0.
    out : ndarray, str or path-like, default=None
        Where to write the result: a preallocated array of the result's shape
        and dtype (e.g. a ``numpy.memmap``), or the path of a ``.npy`` file:
        a resumable store (for Gram matrices larger than memory or than one
        session).  Each tile is written into the file, flushed, and only then
        logged as finished in ``out + ".progress"``; calling ``conv_kernel``
        again with the same inputs, architecture, kind, dtype and ``out``
        after an interruption (even ``kill -9``) computes only the
        unfinished tiles, with a bitwise identical result.  A store of a
        different computation raises an error; :func:`load_gram` reads a
        finished store.  ``X`` and ``Y`` must not be memory maps of ``out``.
        With a process or dask joblib backend the workers write the tiles
        into the file themselves (a shared filesystem is needed).
    augment : {None, "hflip", "hflip_reverse_channels"}, default=None
        "hflip" averages over a left-right flip of the second argument:
        ``K(x, y) <- (K(x, y) + K(x, flip y)) / 2`` (flip = reversal of the
        width axis, ``y[:, :, ::-1]``), for every read-out.  This is a
        symmetric positive semi-definite kernel, invariant to flipping
        either image, when the architecture is flip-equivariant (symmetric
        padding and pooling along the width); other architectures raise an
        :class:`~.arch.ArchitectureError` that names the offending layer.
        "hflip_reverse_channels" reverses the channel order too
        (``y[:, :, ::-1, ::-1]``): the mirror image of the channels of
        :class:`~sklearn_convkernel.PatchFeatures` with
        ``flip_equivariant=True``, so that it averages over the flips of the
        images behind the patch features (see
        :mod:`~sklearn_convkernel._augment`).  Costs about twice the plain
        kernel (mirrored images need no self pass).

    Returns
    -------
    K : ndarray of shape (n_X, n_Y), or (n_outputs, n_X, n_Y)
        The kernel matrix; when the architecture contains :class:`~.arch.Tap`
        read-outs, one matrix per output (taps first, final output last).
        ``out`` itself when given; for a path, the file as a ``numpy.memmap``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_convkernel import conv_kernel
    >>> from sklearn_convkernel.arch import Sequential, Conv, ReLU, Flatten, Dense
    >>> arch = Sequential(Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())
    >>> X = np.random.default_rng(0).random((4, 8, 8, 1))
    >>> K = conv_kernel(X, architecture=arch, kind="ntk")
    >>> K.shape, bool(np.allclose(K, K.T))
    ((4, 4), True)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'nngp' or 'ntk', got {kind!r}.")
    if spatial not in SPATIAL_MODES:
        raise ValueError(f"spatial must be 'auto' or 'full', got {spatial!r}.")
    if not isinstance(architecture, A.Layer):
        raise ValueError(
            "architecture must be a layer built from sklearn_convkernel.arch, e.g. "
            f"Sequential(Conv(3), ReLU(), Flatten()); got {architecture!r}."
        )
    if tile_size is not None and (
        not isinstance(tile_size, numbers.Integral) or isinstance(tile_size, bool)
        or tile_size < 1
    ):
        raise ValueError(f"tile_size must be a positive int or None, got {tile_size!r}.")
    augment = check_augment(augment)
    dt = resolve_dtype(dtype)
    if isinstance(out, (str, os.PathLike)):
        check_not_backing(out, {"X": X, "Y": Y})
    X = check_images(X, "X", dt)
    symmetric = Y is None
    if not symmetric:
        Y = check_images(Y, "Y", dt)
        if Y.shape[1:] != X.shape[1:]:
            raise ValueError(
                f"X and Y must have images of the same shape (H, W, C); got {X.shape[1:]} "
                f"and {Y.shape[1:]}."
            )
    prog, plan = compile_architecture(architecture, X.shape[1:], kind, spatial)
    flip = FlipPlan(plan, architecture, augment) if augment else None
    shape = (X.shape[0], X.shape[0] if symmetric else Y.shape[0])
    if plan.n_outputs > 1:
        shape = (plan.n_outputs,) + shape
    if isinstance(out, (str, os.PathLike)):
        return _conv_kernel_store(prog, X, Y, architecture, kind, dt, spatial, n_jobs,
                                  tile_size, verbose, out, shape, flip, augment)
    Xf, tx, sx, Yf, ty = _flat_and_tapes(prog, X, Y, n_jobs, verbose)
    result = _output_array(out, shape, dt)
    target = result if plan.n_outputs > 1 else result[np.newaxis]
    flipped = None
    if flip is not None:
        flipped, sx = flip_arguments(prog, flip, Xf, tx, sx, Yf, ty, n_jobs)
    gram(prog, Xf, tx, sx, Yf, ty, n_jobs=n_jobs, tile_size=tile_size, verbose=verbose,
         out=target, flipped=flipped)
    if isinstance(result, np.memmap):
        result.flush()
    return result


def _flat_and_tapes(prog, X, Y, n_jobs, verbose=0, variant_check=None):
    """Flattened images and their self passes: (Xf, tx, sx, Yf, ty); Y-parts None for K(X, X)."""
    Xf = X.reshape(X.shape[0], -1)
    check = VariantCheck(prog) if variant_check is None else variant_check
    tx, sx = self_passes(prog, Xf, n_jobs, verbose=verbose, variant_check=check)
    Yf = ty = None
    if Y is not None:
        Yf = Y.reshape(Y.shape[0], -1)
        ty, _ = self_passes(prog, Yf, n_jobs, verbose=verbose, variant_check=check)
    return Xf, tx, sx, Yf, ty


def _conv_kernel_store(prog, X, Y, architecture, kind, dt, spatial, n_jobs, tile_size,
                       verbose, path, shape, flip=None, augment=None):
    """conv_kernel into the resumable store at ``path`` (see :mod:`._store`)."""
    symmetric = Y is None
    key = make_key(X, Y, architecture, kind, dt, spatial, augment)
    default = default_tile_size(shape[-2], shape[-1], symmetric, effective_n_jobs(n_jobs))
    with GramStore.open(path, key, shape, symmetric, tile_size, default,
                        variant=prog.variant) as store:
        if not store.complete:
            prog = resume_variant(prog, store)
            # one check for the whole computation: the self passes (the
            # diagonal, the tapes) and the tiles, recorded in the store
            check = VariantCheck(prog, store)
            Xf, tx, sx, Yf, ty = _flat_and_tapes(prog, X, Y, n_jobs, verbose, check)
            flipped = None
            if flip is not None:
                flipped, sx = flip_arguments(prog, flip, Xf, tx, sx, Yf, ty, n_jobs, check)
            gram(prog, Xf, tx, sx, Yf, ty, n_jobs=n_jobs, verbose=verbose, store=store,
                 flipped=flipped, variant_check=check)
    return np.load(os.fspath(path), mmap_mode="r+", allow_pickle=False)


def resume_variant(prog, store):
    """``prog`` running with the engine variant ``store``'s tiles were computed with.

    Variants may differ in the last bits, so a resumed store stays bitwise
    equal to an uninterrupted run only with its own variant: that one is used
    whenever this CPU runs it.  Otherwise ``prog`` keeps its variant, with a
    warning, and the store records both.
    """
    stored = store.variant
    if stored is None or stored == prog.variant:
        return prog
    if stored not in _core().VARIANTS:
        raise StoreError(
            f"{store.path!r}'s store record names an engine variant {stored!r} this version "
            f"does not know (one of {list(_core().VARIANTS)}); the record is not trustworthy: "
            f"delete {store.path!r} and its .progress directory to start over."
        )
    if stored in _core().simd_variants():
        return prog.with_variant(stored)
    warnings.warn(
        f"out={store.path!r} was started with the {stored!r} engine variant, which this "
        f"CPU does not run; its remaining tiles are computed with {prog.variant!r}, whose "
        "rounding may differ in the last bits, so the Gram is not bitwise equal to an "
        f"uninterrupted run. Resume it on a CPU that runs {stored!r} for that.",
        UserWarning, stacklevel=4,
    )
    store.record_variant(prog.variant)
    return prog


def _output_array(out, shape, dtype):
    """The array conv_kernel writes into: new, given, or a new .npy memory map."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise ValueError(
            f"out must be None, an ndarray or a file path, got {type(out).__name__}."
        )
    if out.shape != shape or out.dtype != np.dtype(dtype):
        raise ValueError(
            f"out has shape {out.shape} and dtype {out.dtype}; this call needs shape "
            f"{shape} and dtype {np.dtype(dtype)}."
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only; pass a writeable array.")
    return out
