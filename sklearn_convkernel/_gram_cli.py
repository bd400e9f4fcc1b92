"""The ``gram`` subcommand: a resumable Gram matrix from ``.npy`` files."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

GRAM_HELP = "exact kernel matrix of .npy images into a resumable .npy store"
GRAM_EXAMPLE = "gram X.npy --architecture cntk:depth=5,gap=false --kind ntk --out K.npy"

GRAM_DESCRIPTION = """\
Compute the exact kernel matrix K(X, X) (or K(X, Y) with --y) of the images in
X.npy, shape (n, H, W, C) or (n, H, W), or flat rows (n, H*W*C) with
--image-shape, into the .npy file --out.  The file is a resumable store: rerun
the same command after an interruption (Ctrl-C, kill, a crash) and only the
unfinished tiles are computed; the result is bitwise identical to an
uninterrupted run.  Read the finished matrix in Python with
sklearn_convkernel.load_gram(PATH) (or numpy.load).

--architecture is a preset with optional parameters, NAME[:key=value,...],
a JSON description (sklearn_convkernel.architecture_to_json), or the path of
a .json file holding one.  Presets and their parameters:
"""


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or H,W,C, got {text!r}") from None
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W or H,W,C positive ints, got {text!r}")
    return shape


def add_gram_parser(sub, prog):
    """Add the ``gram`` subcommand to the subparsers ``sub``."""
    from sklearn_convkernel._augment import AUGMENTS
    from sklearn_convkernel._serialize import preset_usage

    description = GRAM_DESCRIPTION + "".join(f"  {line}\n" for line in preset_usage())
    p = sub.add_parser(
        "gram",
        help=GRAM_HELP,
        description=description,
        epilog=f"example:\n  {prog} {GRAM_EXAMPLE}\n  {prog} gram X.npy --y T.npy "
        "--architecture arch.json --kind nngp --dtype float32 --out KT.npy --n-jobs 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("x", metavar="X.npy", help="images, one per row (numpy .npy file)")
    p.add_argument("--y", metavar="Y.npy", default=None,
                   help="second set of images: compute K(X, Y) instead of K(X, X)")
    p.add_argument("--architecture", required=True, metavar="NAME_OR_JSON",
                   help="preset NAME[:key=value,...], JSON text, or a .json file")
    p.add_argument("--kind", choices=("nngp", "ntk"), default="nngp",
                   help="NNGP/CNN-GP/CKN covariance or neural tangent kernel "
                   "(default: %(default)s)")
    p.add_argument("--augment", choices=("none",) + AUGMENTS, default="none",
                   help="hflip: average the kernel over a left-right flip of one image, "
                   "(K(x, y) + K(x, flip y)) / 2; hflip_reverse_channels: the same with "
                   "the channel order of the flipped image reversed (for PatchFeatures("
                   "flip_equivariant=True) channels) (default: %(default)s)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="precision of the computation and of the file (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="K.npy",
                   help="the .npy file to write (its progress is kept in K.npy.progress/)")
    p.add_argument("--n-jobs", type=int, default=-1,
                   help="threads (or joblib workers); -1 = all cores (default: %(default)s)")
    p.add_argument("--image-shape", type=_shape, default=None, metavar="H,W[,C]",
                   help="shape of one image when X.npy holds flat rows")
    p.add_argument("--tile-size", type=int, default=None,
                   help="images per tile side of a new store (default: 32, smaller for "
                   "small matrices)")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="run the tiles on this dask.distributed scheduler (e.g. "
                   "tcp://host:8786; needs the [dask] extra); the workers write the tiles "
                   "into --out, which must be on a filesystem they share")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _backend(scheduler):
    """A context running joblib tasks on the dask scheduler (or a no-op)."""
    import contextlib

    if scheduler is None:
        return contextlib.nullcontext()
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed: pip install "
                         "'sklearn-convkernel[dask]'.") from None
    from joblib import parallel_config

    stack = contextlib.ExitStack()
    stack.enter_context(Client(scheduler))
    stack.enter_context(parallel_config(backend="dask"))
    return stack


def _load(path, name, image_shape):
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {name} from {path!r}: {exc}") from None
    if image_shape is not None and arr.ndim == 2:
        # flat rows -> images (conv_kernel validates and converts them)
        shape = tuple(int(v) for v in image_shape)
        shape = shape + (1,) if len(shape) == 2 else shape
        if len(shape) != 3 or arr.shape[1] != int(np.prod(shape)):
            raise ValueError(
                f"{name} has {arr.shape[1]} values per row, but --image-shape "
                f"{','.join(map(str, shape))} needs {int(np.prod(shape))}.")
        return np.asarray(arr).reshape((arr.shape[0],) + shape)
    return arr


def run_gram(args, prog):
    """Run the ``gram`` subcommand; returns the exit status."""
    from sklearn_convkernel import conv_kernel
    from sklearn_convkernel._serialize import parse_architecture
    from sklearn_convkernel._store import StoreError

    try:
        X = _load(args.x, "X", args.image_shape)
        Y = None if args.y is None else _load(args.y, "Y", args.image_shape)
        image_shape = X.shape[1:] if X.ndim >= 3 else args.image_shape
        architecture = parse_architecture(args.architecture, image_shape)
        if args.tile_size is not None and args.tile_size < 1:
            raise ValueError(f"--tile-size must be a positive int, got {args.tile_size}.")
        t0 = time.perf_counter()
        with _backend(args.scheduler):
            K = conv_kernel(X, Y, architecture=architecture, kind=args.kind, dtype=args.dtype,
                            n_jobs=None if args.scheduler else args.n_jobs,
                            tile_size=args.tile_size, verbose=0 if args.quiet else 1,
                            out=args.out, augment=None if args.augment == "none" else args.augment)
    except (ValueError, StoreError) as exc:
        print(f"{prog} gram: error: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    print(f"wrote {os.fspath(args.out)}: {args.kind} kernel, shape {K.shape}, {K.dtype}, "
          f"in {seconds:.1f} s; load it with sklearn_convkernel.load_gram"
          f"({os.fspath(args.out)!r})", flush=True)
    return 0
