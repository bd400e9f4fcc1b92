"""Where each workload's instructions go, next to the per-entry cost model.

Run:  python3 benchmarks/profile_workloads.py [--workloads W1,W2,W3,W4,W4R] [--dtype float32]
      [--simd avx2] [--out benchmarks/results/profile_workloads.md]

Needs valgrind (``apt-get install valgrind``).  For each workload of
``run_benchmarks.py`` (W1 CNTK GAP depth 5, W2 the same with Flatten, W3
cnn_gp's ConvNet-GP, W4 ckn_kernel's README CKN with the exponential kernel,
W4R the same with ReLU as an NTK; 28x28x1 random images), a child process runs
the self passes of a few images, then one upper-triangle pair tile of them;
callgrind counts the instructions of ``pair_tile`` only
(``--toggle-collect='*pair_tile*'``; deterministic, independent of the load).
The engine's functions are grouped into the cost model's operations by name
(``CATEGORY_RULES``: window sums, nonlinearity, pooling, read-out; everything
else -- the interpreter, copies, fills, the tile loop -- is "other") and shown
as instructions per kernel entry and as shares, next to the flops per entry
and shares of ``_cost_model`` (what an exact evaluation has to compute).  An
instruction is not a flop (one AVX2 float instruction does 8 of them, a
compare or a load none), so compare the *shares*: an operation whose share of
instructions is far above its share of flops is where work is lost.

valgrind runs the engine variant of the CPU it emulates: it has no AVX-512,
so ``--simd`` defaults to ``avx2`` (``generic`` is the other choice).
Functions that the compiler inlined count in their caller, which is how the
categories are named (the engine keeps each operation in its own non-inlined
function: ``sum_rows`` / ``block_sums`` / ``conv_diag`` / ``op_conv`` are
window sums, ``nonlin_*`` / ``block_nonlin`` the dual activations, ...; the
full path's ``op_input_conv`` computes the input covariance and the first
convolution together as patch inner products and counts as "input").
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# workload -> (run_benchmarks network name, kind, images in the pair tile)
WORKLOADS = OrderedDict([
    ("W1", ("cntk_gap", "ntk", 4)),
    ("W2", ("cntk_flat", "ntk", 12)),
    ("W3", ("cnn_gp_convnet", "nngp", 12)),
    ("W4", ("ckn_readme", "nngp", 4)),
    ("W4R", ("ckn_readme_relu", "ntk", 4)),
])
IMAGE = (28, 28, 1)

# First matching rule wins; matched against the demangled function name.
CATEGORY_RULES = (
    ("nonlinearity", r"nonlin|dual|acos|asin|exp_|erf"),
    ("pooling", r"pool|wsum_rows"),
    # the full path computes the input covariance and the first convolution
    # together as patch inner products (op_input_conv): counted as input
    ("input", r"op_input|patch_dot|dot_channels"),
    ("window sums", r"sum_rows|block_sums|conv_diag|conv_block|disp_conv|op_conv|ConvAxis"),
    ("read-out", r"readout|read_out|sum8|reduce|trace"),
)
CATEGORIES = ("input", "window sums", "nonlinearity", "pooling", "read-out", "other")


def categorize(function):
    name = function.split("(")[0]
    for cat, pattern in CATEGORY_RULES:
        if re.search(pattern, name):
            return cat
    return "other"


def child(workload, dtype):
    """Self passes, then the pair tile that callgrind collects."""
    import numpy as np

    import run_benchmarks as rb
    from sklearn_convkernel._gram import compile_architecture

    net, kind, n = WORKLOADS[workload]
    prog, _ = compile_architecture(rb.ours_arch(net, 5, IMAGE), IMAGE, kind=kind)
    X = np.random.default_rng(0).random((n, int(np.prod(IMAGE)))).astype(dtype)
    tapes = np.empty((n, prog.tape_len), dtype=dtype)
    self_out = np.empty((n, prog.n_outputs), dtype=dtype)
    prog.self_pass(X, tapes, self_out)
    out = np.zeros((prog.n_outputs, n, n), dtype=dtype)
    prog.pair_tile(X, tapes, 0, X, tapes, 0, out, True)
    print(f"pairs={n * (n - 1) // 2} variant={prog.variant}")


LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def parse_annotate(text):
    """{function: instructions} from callgrind_annotate's per-function table."""
    costs = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        count = int(m.group(1).replace(",", ""))
        where = re.sub(r"\s\[[^\]]*\]$", "", m.group(2))  # drop the object file
        function = where.split(":", 1)[1] if ":" in where else where
        costs[function] = costs.get(function, 0) + count
    return costs


def profile(workload, dtype, simd, tmp):
    out = Path(tmp) / f"cg_{workload}_{dtype}.out"
    env = dict(os.environ, SKLEARN_CONVKERNEL_SIMD=simd)
    cmd = ["valgrind", "--tool=callgrind", "--collect-atstart=no",
           "--toggle-collect=*pair_tile*", f"--callgrind-out-file={out}",
           sys.executable, __file__, "--child", workload, dtype]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if res.returncode != 0:
        raise RuntimeError(f"callgrind of {workload} failed:\n{res.stderr[-2000:]}")
    info = dict(kv.split("=") for kv in res.stdout.split() if "=" in kv)
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", str(out)],
                         capture_output=True, text=True, check=True).stdout
    by_cat = OrderedDict((c, 0) for c in CATEGORIES)
    for function, count in parse_annotate(ann).items():
        by_cat[categorize(function)] += count
    return int(info["pairs"]), info["variant"], by_cat


def model(workload, itemsize):
    import run_benchmarks as rb

    cost = rb.net_cost(WORKLOADS[workload][0], IMAGE, itemsize)
    flops = OrderedDict((c, 0.0) for c in CATEGORIES)
    for cat, value in cost.flops.items():
        flops[cat if cat in flops else "other"] += value
    return flops


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--simd", default="avx2", choices=("avx2", "generic"))
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose among {', '.join(WORKLOADS)}")
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install valgrind")
    from _machine import cpu_name

    itemsize = 4 if args.dtype == "float32" else 8
    lines = [f"CPU: {cpu_name()}; engine variant under valgrind: {args.simd}; {args.dtype}; "
             f"callgrind instructions of pair_tile per kernel entry vs the cost model's flops "
             f"per entry (`python3 benchmarks/profile_workloads.py --dtype {args.dtype}`)", "",
             "| workload | operation | instructions / entry | share | model flops / entry | "
             "model share |", "|---|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for w in wanted:
            pairs, variant, by_cat = profile(w, args.dtype, args.simd, tmp)
            flops = model(w, itemsize)
            total_i, total_f = sum(by_cat.values()), sum(flops.values())
            first = len(lines)
            for cat in CATEGORIES:
                if by_cat[cat] == 0 and flops[cat] == 0:
                    continue
                lines.append(f"| {w} ({variant}) | {cat} | {by_cat[cat] / pairs:,.0f} | "
                             f"{by_cat[cat] / total_i:.0%} | {flops[cat]:,.0f} | "
                             f"{flops[cat] / total_f:.0%} |")
            lines.append(f"| {w} ({variant}) | **total** | **{total_i / pairs:,.0f}** | | "
                         f"**{total_f:,.0f}** | |")
            print("\n".join(lines[first:]), flush=True)
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
