"""Tiled Gram matrices: per-image self passes, then pair passes over tiles.

Data flow: architecture --(_plan.make_plan)--> program --(_core)--> tiles of
the Gram matrix, run by joblib threads (the core releases the GIL) that write
into one preallocated output.  For ``K(X, X)`` only the upper tiles are
computed; the diagonal comes from the self passes and the lower triangle is
mirrored.
"""

from __future__ import annotations

import numbers
import os
import time

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs

from sklearn_convkernel import arch as A
from sklearn_convkernel._plan import KINDS, SPATIAL_MODES, make_plan
from sklearn_convkernel._validation import check_images, resolve_dtype

__all__ = ["conv_kernel", "compile_architecture", "self_passes", "pair_values", "gram"]

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
    # Threads by default (the core releases the GIL); a joblib backend chosen by
    # the caller (parallel_config(backend="loky"|"dask"...)) takes precedence,
    # so every task below is a module-level function of picklable arguments
    # that returns its result instead of writing into shared memory.
    return Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator_unordered")


def _self_task(prog, Xf, start):
    n = Xf.shape[0]
    tapes = np.empty((n, prog.tape_len), dtype=Xf.dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=Xf.dtype)
    prog.self_pass(Xf, tapes, self_out)
    return start, tapes, self_out


def self_passes(prog, Xf, n_jobs=None, chunk=None):
    """Per-image self passes: tapes (n, tape_len) and self kernels (n, n_outputs)."""
    n = Xf.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    if chunk is None:
        chunk = max(1, min(32, -(-n // (4 * n_jobs))))
    tapes = np.empty((n, prog.tape_len), dtype=Xf.dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=Xf.dtype)
    tasks = (delayed(_self_task)(prog, Xf[a:b], a) for a, b in _chunks(n, chunk))
    for a, t, s in _parallel(n_jobs)(tasks):
        tapes[a:a + len(t)] = t
        self_out[a:a + len(s)] = s
    return tapes, self_out


def _tile_task(prog, Xr, tr, r0, Yc, tc, c0, upper_only):
    block = np.zeros((prog.n_outputs, Xr.shape[0], Yc.shape[0]), dtype=Xr.dtype)
    prog.pair_tile(Xr, tr, r0, Yc, tc, c0, block, upper_only)
    return r0, c0, block


def _list_task(prog, X, tx, Y, ty, ii, jj, start):
    out = np.empty((ii.shape[0], prog.n_outputs), dtype=X.dtype)
    prog.pair_list(X, tx, Y, ty, ii, jj, out)
    return start, out


def pair_values(prog, X, tx, Y, ty, ii, jj, n_jobs=None, chunk=None):
    """Kernel outputs of the pairs (X[ii[t]], Y[jj[t]]): array (n_pairs, n_outputs)."""
    ii = np.ascontiguousarray(ii, dtype=np.int64)
    jj = np.ascontiguousarray(jj, dtype=np.int64)
    n = ii.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    out = np.empty((n, prog.n_outputs), dtype=X.dtype)
    if n == 0:
        return out
    if chunk is None:
        chunk = max(1, min(1024, -(-n // (8 * n_jobs))))
    tasks = (
        delayed(_list_task)(prog, X, tx, Y, ty, ii[a:b], jj[a:b], a) for a, b in _chunks(n, chunk)
    )
    for a, vals in _parallel(n_jobs)(tasks):
        out[a:a + len(vals)] = vals
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


def gram(prog, Xf, tx, sx=None, Yf=None, ty=None, *, n_jobs=None, tile_size=None,
         verbose=0, out=None):
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

    Returns
    -------
    out : ndarray (n_outputs, n_X, n_Y)
    """
    symmetric = Yf is None
    if symmetric:
        Yf, ty = Xf, tx
    nx, ny = Xf.shape[0], Yf.shape[0]
    n_jobs = effective_n_jobs(n_jobs)
    if tile_size is None:
        tile = default_tile_size(nx, ny, symmetric, n_jobs)
    else:
        tile = int(tile_size)
    if out is None:
        out = np.empty((prog.n_outputs, nx, ny), dtype=Xf.dtype)
    # for K(X, X) keep only tiles holding some pair i < j (the rest is mirrored)
    tiles = [
        (r, c)
        for r in _chunks(nx, tile)
        for c in _chunks(ny, tile)
        if not symmetric or c[1] - 1 > r[0]
    ]
    tasks = (
        delayed(_tile_task)(prog, Xf[r0:r1], tx[r0:r1], r0, Yf[c0:c1], ty[c0:c1], c0, symmetric)
        for (r0, r1), (c0, c1) in tiles
    )
    t0 = time.perf_counter()
    n_tiles = len(tiles)
    step = max(1, n_tiles // 10)
    for done, (r0, c0, block) in enumerate(_parallel(n_jobs)(tasks), start=1):
        r1, c1 = r0 + block.shape[1], c0 + block.shape[2]
        if symmetric:
            # only the entries with i < j were computed in this block
            upper = np.arange(r0, r1)[:, None] < np.arange(c0, c1)[None, :]
            for o in range(prog.n_outputs):
                out[o, r0:r1, c0:c1][upper] = block[o][upper]
        else:
            out[:, r0:r1, c0:c1] = block
        if verbose and (done % step == 0 or done == n_tiles):
            print(f"[sklearn_convkernel] {done}/{n_tiles} tiles, "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
    if symmetric:
        iu = np.triu_indices(nx, 1)
        for o in range(prog.n_outputs):
            K = out[o]
            K[iu[1], iu[0]] = K[iu]
            K[np.diag_indices(nx)] = sx[:, o]
    return out


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
        Print progress when > 0.
    out : ndarray, str or path-like, default=None
        Where to write the result: a preallocated array of the result's shape
        and dtype (e.g. a ``numpy.memmap``), or the path of a ``.npy`` file
        created as a memory map (for Gram matrices larger than memory).
        Tiles are written as they finish.

    Returns
    -------
    K : ndarray of shape (n_X, n_Y), or (n_outputs, n_X, n_Y)
        The kernel matrix; when the architecture contains :class:`~.arch.Tap`
        read-outs, one matrix per output (taps first, final output last).
        ``out`` itself when given.

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
    dt = resolve_dtype(dtype)
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
    t0 = time.perf_counter()
    Xf = X.reshape(X.shape[0], -1)
    tx, sx = self_passes(prog, Xf, n_jobs)
    Yf = ty = None
    if not symmetric:
        Yf = Y.reshape(Y.shape[0], -1)
        ty, _ = self_passes(prog, Yf, n_jobs)
    if verbose:
        print(f"[sklearn_convkernel] self passes done in {time.perf_counter() - t0:.2f}s "
              f"({'diagonal-only' if plan.diagonal_only else 'full spatial'} path)", flush=True)
    shape = (X.shape[0], X.shape[0] if symmetric else Y.shape[0])
    if plan.n_outputs > 1:
        shape = (plan.n_outputs,) + shape
    result = _output_array(out, shape, dt)
    target = result if plan.n_outputs > 1 else result[np.newaxis]
    gram(prog, Xf, tx, sx, Yf, ty, n_jobs=n_jobs, tile_size=tile_size, verbose=verbose,
         out=target)
    if isinstance(result, np.memmap):
        result.flush()
    return result


def _output_array(out, shape, dtype):
    """The array conv_kernel writes into: new, given, or a new .npy memory map."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    if isinstance(out, (str, os.PathLike)):
        return np.lib.format.open_memmap(os.fspath(out), mode="w+", dtype=dtype, shape=shape)
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
