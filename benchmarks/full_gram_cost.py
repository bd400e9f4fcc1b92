"""Cost of the exact Gram of all 70 000 Fashion-MNIST images, from a timed block.

Computes the exact kernel matrix of the first ``--n`` (default 5 000)
Fashion-MNIST images with the command line (``sklearn-convkernel gram``, the
resumable store) exactly as a user would, times it (wall clock and the CPU
time of the process and its children), checks the result (symmetric, finite,
positive diagonal, a few entries recomputed through ``conv_kernel``), and
extrapolates to the ``--total`` (default 70 000: training + test) images:
the Gram costs ``N (N + 1) / 2`` kernel entries (the self passes, ``O(N)``,
are negligible), so the predicted time is the block's time per entry times
``N (N + 1) / 2``.  Two predictions are printed: from the wall clock of this
run, and from its CPU time divided by the cores (what the run would take on
that many idle cores; on a shared machine the wall clock is inflated by the
other jobs, the CPU time much less).

The default architecture is cnn_gp's ConvNet-GP (``cnn_gp_convnet``: 7
convolutions 7x7 with biases and ReLU, read-out convolution over the whole
map; the diagonal path of the engine), in float32.

Command used for the published figure (from the repository root)::

    python3 benchmarks/full_gram_cost.py --n 5000

The result is appended to ``benchmarks/results/full_gram_cost.jsonl``
(one JSON object per run) and printed.  Needs the Fashion-MNIST IDX files
(Debian: ``apt-get install dataset-fashion-mnist``, or ``--data DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "full_gram_cost.jsonl"


def fmt(s):
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=5000, help="images in the timed block (default 5000)")
    p.add_argument("--total", type=int, default=70_000,
                   help="images of the extrapolated Gram (default 70000)")
    p.add_argument("--architecture", default="cnn_gp_convnet",
                   help="as for sklearn-convkernel gram (default cnn_gp_convnet)")
    p.add_argument("--kind", default="nngp", choices=("nngp", "ntk"))
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    p.add_argument("--workdir", default=None,
                   help="where the images and the store go (default: a temporary directory, "
                   "removed afterwards)")
    p.add_argument("--out", default=str(RESULTS), help="JSON lines file of the results")
    args = p.parse_args(argv)
    if args.n < 2 or args.total < args.n:
        p.error("--n must be at least 2 and --total at least --n")
    exe = shutil.which("sklearn-convkernel")
    if exe is None:
        p.error("the sklearn-convkernel command is not on PATH: install the package first")

    from sklearn_convkernel import __version__, conv_kernel, load_gram
    from sklearn_convkernel._serialize import parse_architecture
    from sklearn_convkernel.datasets import load_fashion_mnist

    X, _, X_test, _ = load_fashion_mnist(subset=False, path=args.data, dtype=np.float32)
    X = np.concatenate([X, X_test])[: args.n]
    tmp = tempfile.mkdtemp(prefix="gram_cost_") if args.workdir is None else args.workdir
    os.makedirs(tmp, exist_ok=True)
    try:
        xpath, kpath = os.path.join(tmp, "X.npy"), os.path.join(tmp, "K.npy")
        np.save(xpath, X)
        cmd = [exe, "gram", xpath, "--architecture", args.architecture, "--kind", args.kind,
               "--dtype", args.dtype, "--n-jobs", str(args.n_jobs), "--out", kpath]
        print("CPU:", cpu_name(), f"({os.cpu_count()} CPUs); load average before:",
              " ".join(f"{v:.1f}" for v in os.getloadavg()), flush=True)
        print("$", " ".join(cmd), flush=True)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        load = os.getloadavg()

        K = np.asarray(load_gram(kpath))
        if K.shape != (args.n, args.n) or not np.isfinite(K).all():
            raise SystemExit(f"bad Gram: shape {K.shape}, finite {np.isfinite(K).all()}")
        if not np.array_equal(K, K.T) or not (np.diag(K) > 0).all():
            raise SystemExit("bad Gram: not symmetric or a non-positive diagonal")
        arch = parse_architecture(args.architecture)
        idx = np.random.default_rng(0).choice(args.n, size=8, replace=False)
        ref = conv_kernel(X[idx], X[idx[::-1]], architecture=arch, kind=args.kind,
                          dtype=args.dtype, n_jobs=1)
        err = float(np.max(np.abs(ref - K[np.ix_(idx, idx[::-1])]) / np.abs(ref).max()))
        tol = 1e-5 if args.dtype == "float32" else 1e-12
        if err > tol:
            raise SystemExit(f"the stored Gram differs from conv_kernel by {err:.2e} (> {tol})")

        entries = args.n * (args.n + 1) / 2
        total = args.total * (args.total + 1) / 2
        row = {
            "date": time.strftime("%Y-%m-%d %H:%M"), "version": __version__,
            "cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "architecture": args.architecture, "kind": args.kind, "dtype": args.dtype,
            "n_jobs": args.n_jobs, "n": args.n, "total": args.total,
            "wall_s": wall, "cpu_s": cpu, "load_after": load[0],
            "entries_per_s_wall": entries / wall, "entries_per_cpu_s": entries / cpu,
            "predicted_wall_s": wall * total / entries,
            "predicted_idle_s": cpu / args.n_jobs * total / entries,
            "check_rel_err": err,
        }
        print(f"block {args.n} x {args.n}: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({entries / wall:,.0f} entries/s wall, {entries / cpu:,.0f} per CPU second); "
              f"load average after {load[0]:.1f}; 8x8 entries recomputed: max rel. diff "
              f"{err:.1e}")
        print(f"predicted {args.total} x {args.total} Gram ({total / 1e9:.2f} G entries): "
              f"{fmt(row['predicted_wall_s'])} at this run's wall rate, "
              f"{fmt(row['predicted_idle_s'])} on {args.n_jobs} idle cores (CPU time / "
              f"{args.n_jobs}); store size {total * np.dtype(args.dtype).itemsize * 2 / 2**30:.1f}"
              " GiB (full square matrix)")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
