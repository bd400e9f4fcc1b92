#!/usr/bin/env python3
"""Benchmark harness of issue 5: our exact convolutional kernels vs the peers.

Run (from anywhere; a plain ``python3`` with sklearn_convkernel installed)::

    python3 benchmarks/run_benchmarks.py [--quick] [--workloads W1,W2,...] [--csv out.csv]

Prints one row per (workload, N, dtype): wall time of ``conv_kernel`` (the
symmetric Gram K(X, X)), unique kernel entries per second (N(N+1)/2 / time),
the CPU cores actually kept busy, the peak RSS of the measuring process, and
where a peer exists its time on the same N and the ratio (peer time / our time).
Every measurement runs in a fresh subprocess, so the peak RSS is per workload.

Peers, all *measured in the same run*, each from its own environment under
/tmp (never dependencies of the package, never copied into this repository;
a missing peer is reported in its row and everything else still runs):

- neural-tangents (W1, W2), ``--nt-python`` (default /tmp/ntvenv/bin/python)::

    python3 -m venv /tmp/ntvenv && /tmp/ntvenv/bin/pip install neural-tangents==0.6.5 \\
        jax==0.4.25 jaxlib==0.4.25 numpy==1.26.4 scipy==1.12.0

- cnn_gp (W3, PyTorch) and ckn_kernel (W4, C++/Cython), ``--peer-python``
  (default /tmp/peervenv/bin/python) with ``--cnn-gp-src DIR`` and
  ``--ckn-kernel-src DIR``, their public sources built by
  ``benchmarks/peers/setup_peers.sh`` (see benchmarks/README.md).

After the table, the roofline: the CPU's double/single peak *measured* by an
FMA micro-benchmark (``_peak.py``; also the peak of each engine variant's
vector width, so that a variant's share of the CPU's true peak is stated)
and, per workload, the modelled flops and
bytes per kernel entry by operation (``_cost_model.py``) next to the
measured time.

See benchmarks/README.md for the workloads and how to read the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULT_TAG = "@@RESULT "
SEED = 0

# ---------------------------------------------------------------------------
# workloads: networks (ours and the neural-tangents twin)
# ---------------------------------------------------------------------------

# ckn_kernel's README model, its ReLU variant (used with ntk=True), and the
# model of its CIFAR-10 instructions (cifar10/README.md: "exp_sigma_06_pool",
# exp sigma=0.6, 3x3 patches, gaussian pooling 2 then 5, on 32x32x3 images).
CKN_README = [
    {"npatch": 3, "subsampling": 2, "pooling": "gaussian", "kernel": "exp", "sigma": 0.65},
    {"npatch": 3, "subsampling": 5, "pooling": "gaussian", "kernel": "exp", "sigma": 0.65},
]
CKN_README_RELU = [
    {"npatch": 3, "subsampling": 2, "pooling": "gaussian", "kernel": "relu"},
    {"npatch": 3, "subsampling": 5, "pooling": "gaussian", "kernel": "relu"},
]
CKN_CIFAR = [
    {"npatch": 3, "subsampling": 2, "pooling": "gaussian", "kernel": "exp", "sigma": 0.6},
    {"npatch": 3, "subsampling": 5, "pooling": "gaussian", "kernel": "exp", "sigma": 0.6},
]


def ours_arch(net, depth, image):
    """Our architecture for a network name (see NETS)."""
    from sklearn_convkernel import arch as A
    from sklearn_convkernel.presets import cnn_gp_convnet, from_ckn_kernel

    body = []
    for _ in range(depth):
        body += [A.Conv(3, padding="same", weight_var=2.0), A.ReLU()]
    if net == "cntk_gap":
        return A.Sequential(*body, A.GlobalAvgPool(), A.Dense(weight_var=1.0))
    if net == "cntk_flat":
        return A.Sequential(*body, A.Flatten(), A.Dense(weight_var=1.0))
    if net == "cnn_gp_convnet":
        return cnn_gp_convnet(tuple(image[:2]))
    if net == "ckn_readme":
        return from_ckn_kernel(CKN_README)
    if net == "ckn_readme_relu":
        return from_ckn_kernel(CKN_README_RELU, ntk=True)
    if net == "ckn_cifar":
        return from_ckn_kernel(CKN_CIFAR)
    raise ValueError(net)


def nt_kernel_fn(net, depth):
    """neural-tangents stax twin: Conv(W_std=sqrt(2), no bias) <-> Conv(weight_var=2)."""
    from neural_tangents import stax

    layers = []
    for _ in range(depth):
        layers += [stax.Conv(1, (3, 3), padding="SAME", W_std=math.sqrt(2.0), b_std=None),
                   stax.Relu()]
    readout = {"cntk_gap": stax.GlobalAvgPool, "cntk_flat": stax.Flatten}[net]
    _, _, kernel_fn = stax.serial(*layers, readout(), stax.Dense(1, W_std=1.0, b_std=None))
    return kernel_fn


def net_cost(net, image, itemsize):
    """Modelled flops and bytes of one kernel entry of a workload (_cost_model)."""
    import _cost_model as cm

    H, W, C = image
    if net in ("cntk_gap", "cntk_flat"):
        return cm.cntk(H, W, C, 5, "gap" if net == "cntk_gap" else "flatten", itemsize)
    if net == "cnn_gp_convnet":
        return cm.cnn_gp_convnet(H, W, C, CNN_GP_LAYERS, CNN_GP_KERNEL, itemsize)
    models = {"ckn_readme": (CKN_README, False), "ckn_readme_relu": (CKN_README_RELU, True),
              "ckn_cifar": (CKN_CIFAR, False)}
    layers, ntk = models[net]
    return cm.ckn(H, W, C, layers, ntk, itemsize)


# cnn_gp's configs/mnist_paper_convnet_gp.py, as in presets.cnn_gp_convnet
CNN_GP_LAYERS, CNN_GP_KERNEL, CNN_GP_VAR_WEIGHT, CNN_GP_VAR_BIAS = 7, 7, 2.79, 7.86


def cnn_gp_model(src, H, W):
    """cnn_gp's ConvNet-GP, built from its kernels module in the checkout ``src``.

    The package's ``__init__`` imports torchvision (not needed here): register
    an empty package pointing at the checkout and import ``cnn_gp.kernels``.
    """
    import importlib
    import types

    pkg = types.ModuleType("cnn_gp")
    pkg.__path__ = [os.path.join(src, "cnn_gp")]
    sys.modules["cnn_gp"] = pkg
    kern = importlib.import_module("cnn_gp.kernels")
    layers = []
    for _ in range(CNN_GP_LAYERS):
        layers += [kern.Conv2d(kernel_size=CNN_GP_KERNEL, padding="same",
                               var_weight=CNN_GP_VAR_WEIGHT * CNN_GP_KERNEL ** 2,
                               var_bias=CNN_GP_VAR_BIAS), kern.ReLU()]
    assert H == W, "cnn_gp's read-out conv is square"
    return kern.Sequential(*layers, kern.Conv2d(kernel_size=H, padding=0,
                                                var_weight=CNN_GP_VAR_WEIGHT,
                                                var_bias=CNN_GP_VAR_BIAS))


def _upper_blocks(n, size):
    """(start, stop) pairs of the blocks i <= j of an n x n symmetric Gram."""
    cuts = list(range(0, n, size)) + [n]
    spans = list(zip(cuts[:-1], cuts[1:]))
    return [(a, b) for i, a in enumerate(spans) for b in spans[i:]]


def worker_cnn_gp(spec):
    import torch

    torch.set_num_threads(spec["threads"])
    X = np.load(spec["data"])
    n, H, W, _ = X.shape
    x = torch.from_numpy(np.ascontiguousarray(X.transpose(0, 3, 1, 2), dtype=np.float32))
    model = cnn_gp_model(spec["src"], H, W)
    rss0 = _maxrss_mb()
    with torch.no_grad():
        model(x[:2], x[:2], True)  # warm-up (thread pool, allocator)
        K = np.empty((n, n), np.float32)
        c0, t0 = _cpu_s(), time.perf_counter()
        # cnn_gp's own ProductIterator order: the blocks i <= j, same=True on the diagonal
        for (a0, a1), (b0, b1) in _upper_blocks(n, spec["batch_size"]):
            k = model(x[a0:a1], x[b0:b1], a0 == b0).numpy()
            K[a0:a1, b0:b1] = k
            K[b0:b1, a0:a1] = k.T
        dt = time.perf_counter() - t0
    if spec.get("save"):
        np.save(spec["save"], K.astype(np.float64))
    _emit({"time": dt, "cores": (_cpu_s() - c0) / dt, "reps": 1, "rss_peak_mb": _maxrss_mb(),
           "rss_setup_mb": rss0, "version": f"cnn_gp {spec['src']}, torch {torch.__version__}"})


def _ckn_blocks(task):
    """One ckn_kernel process: its blocks of the Gram (symmetric or cross)."""
    import ckn_kernel

    X, model, ntk, norms, blocks = task
    out = []
    cache = {}

    def nrm(a0, a1):
        if (a0, a1) not in cache:
            cache[(a0, a1)] = ckn_kernel.compute_norms(X[a0:a1], model=model, ntk=ntk)
        return cache[(a0, a1)]

    for (a0, a1), (b0, b1) in blocks:
        A, B = X[a0:a1], (None if a0 == b0 else X[b0:b1])
        if norms:
            na, nia = nrm(a0, a1)
            nb, nib = (na, nia) if B is None else nrm(b0, b1)
            k = ckn_kernel.compute_kernel_matrix(A, B, na, nb, nia, nib, model=model, ntk=ntk)
        else:
            k = ckn_kernel.compute_kernel_matrix(A, B, model=model, ntk=ntk)
        out.append(((a0, a1), (b0, b1), k))
    return out


def worker_ckn(spec):
    import multiprocessing

    sys.path.insert(0, spec["src"])
    import ckn_kernel  # noqa: F401  (fails early when the build is missing)

    X = np.load(spec["data"])
    n = len(X)
    procs = max(1, min(spec["procs"], n))
    # Gram split in procs contiguous image chunks; the blocks i <= j (a chunk's
    # symmetric block costs half a cross block) dealt to the processes, longest first
    blocks = _upper_blocks(n, -(-n // procs))
    cost = [(b[1] - b[0]) * (a[1] - a[0]) / (2 if a == b else 1) for a, b in blocks]
    loads, tasks = [0.0] * procs, [[] for _ in range(procs)]
    for i in sorted(range(len(blocks)), key=lambda i: -cost[i]):
        j = int(np.argmin(loads))
        loads[j] += cost[i]
        tasks[j].append(blocks[i])
    args = [(X, spec["model"], spec["ntk"], spec["norms"], t) for t in tasks if t]
    rss0 = _maxrss_mb()
    K = np.empty((n, n), np.float32)
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with multiprocessing.get_context("fork").Pool(len(args)) as pool:
        for part in pool.map(_ckn_blocks, args):
            for (a0, a1), (b0, b1), k in part:
                K[a0:a1, b0:b1] = k
                K[b0:b1, a0:a1] = k.T
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if spec.get("save"):
        np.save(spec["save"], K.astype(np.float64))
    child_mb = r1.ru_maxrss / 1024.0
    _emit({"time": dt, "cores": cpu / dt, "reps": 1, "rss_peak_mb": max(_maxrss_mb(), child_mb),
           "rss_setup_mb": rss0, "version": f"ckn_kernel {spec['src']}, {len(args)} processes"})


NET_LABELS = {
    "cntk_gap": "CNTK [conv3 relu]x{d} GAP",
    "cntk_flat": "CNTK [conv3 relu]x{d} Flatten",
    "cnn_gp_convnet": "cnn_gp ConvNet-GP 7x7x8",
    "ckn_readme": "CKN README exp .65",
    "ckn_readme_relu": "CKN README relu-NTK",
    "ckn_cifar": "CKN CIFAR exp .6 32x32x3",
}


def cpu_info():
    model, mhz = platform.processor() or "?", None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("cpu MHz") and mhz is None:
                    mhz = float(line.split(":", 1)[1])
    except OSError:
        pass
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    return {"model": model, "mhz": mhz, "cores": os.cpu_count() or 1,
            "avx512": " avx512f " in flags + " "}


# ---------------------------------------------------------------------------
# workers (run in fresh subprocesses)
# ---------------------------------------------------------------------------


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _emit(result):
    sys.stdout.write(RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()


def _time_ours(conv_kernel, X, arch, kind, dtype, n_jobs, min_total, max_reps):
    """Best of repeated runs until min_total seconds or max_reps runs."""
    times, cores, K = [], [], None
    while True:
        c0, t0 = _cpu_s(), time.perf_counter()
        K = conv_kernel(X, architecture=arch, kind=kind, dtype=dtype, n_jobs=n_jobs)
        dt = time.perf_counter() - t0
        times.append(dt)
        cores.append((_cpu_s() - c0) / dt)
        if sum(times) >= min_total or len(times) >= max_reps:
            break
    i = int(np.argmin(times))
    return K, times[i], cores[i], len(times)


def worker_ours(spec):
    import sklearn_convkernel  # noqa: F401  (rebuilds the editable extension if needed)
    from sklearn_convkernel import conv_kernel
    from sklearn_convkernel._core import simd_variant

    dtype = np.float32 if spec["dtype"] == "float32" else np.float64
    if "points" in spec:  # a W5 series: one subprocess, many points
        out = []
        for pt in spec["points"]:
            X = np.random.default_rng(SEED).random((pt["N"], *pt["image"]))
            arch = ours_arch(pt["net"], pt["depth"], pt["image"])
            _, t, cores, reps = _time_ours(conv_kernel, X, arch, spec["kind"], dtype,
                                           spec["n_jobs"], spec["min_total"], spec["max_reps"])
            out.append(dict(pt, time=t, cores=cores, reps=reps))
        _emit({"points": out, "rss_peak_mb": _maxrss_mb(), "simd": simd_variant()})
        return
    X = np.load(spec["data"])
    arch = ours_arch(spec["net"], spec["depth"], X.shape[1:])
    rss0 = _maxrss_mb()
    K, t, cores, reps = _time_ours(conv_kernel, X, arch, spec["kind"], dtype, spec["n_jobs"],
                                   spec["min_total"], spec["max_reps"])
    if spec.get("save"):
        np.save(spec["save"], np.asarray(K, dtype=np.float64))
    _emit({"time": t, "cores": cores, "reps": reps, "rss_peak_mb": _maxrss_mb(),
           "rss_setup_mb": rss0, "simd": simd_variant()})


def worker_nt(spec):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
    import neural_tangents as nt

    dtype = np.float64 if spec["dtype"] == "float64" else np.float32
    X = np.load(spec["data"]).astype(dtype)
    kernel_fn = nt_kernel_fn(spec["net"], spec["depth"])
    kernel_fn = nt.batch(jax.jit(kernel_fn, static_argnames="get"),
                         batch_size=spec["batch_size"], store_on_device=False)
    rss0 = _maxrss_mb()
    # Cold call (XLA compilation of the batch_size x batch_size block function):
    # on the first 2 batches only when N is larger -- the same blocks are
    # compiled, then the timed call on all N images is warm.
    bs = spec["batch_size"]
    n_cold = 2 * bs if len(X) > 2 * bs else len(X)
    t0 = time.perf_counter()
    np.asarray(kernel_fn(X[:n_cold], None, "ntk"))
    t_cold = time.perf_counter() - t0
    c0, t0 = _cpu_s(), time.perf_counter()
    K = np.asarray(kernel_fn(X, None, "ntk"))  # warm
    t_warm = time.perf_counter() - t0
    cores = (_cpu_s() - c0) / t_warm
    # compile time estimate: cold call minus its warm share (blocks ~ n^2)
    compile_s = max(0.0, t_cold - t_warm * (n_cold / len(X)) ** 2)
    K = K.reshape(len(X), len(X))
    if spec.get("save"):
        np.save(spec["save"], K.astype(np.float64))
    _emit({"time": t_warm, "cold": t_cold, "n_cold": n_cold, "compile": compile_s, "cores": cores,
           "reps": 1, "rss_peak_mb": _maxrss_mb(), "rss_setup_mb": rss0,
           "version": f"neural-tangents {nt.__version__}, jax {jax.__version__}"})


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------


def _proc_stat_busy():
    """Busy and total CPU seconds of the whole machine (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / hz


class Runner:
    def __init__(self, args, tmp):
        self.args, self.tmp, self.n = args, tmp, 0

    def _run(self, python, spec, timeout, extra_env=None):
        self.n += 1
        path = os.path.join(self.tmp, f"spec{self.n}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env.update(extra_env or {})
        if self.args.wait_idle > 0:
            self._wait_idle(self.args.wait_idle)
        b0 = _proc_stat_busy()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            p = subprocess.run([python, os.path.abspath(__file__), "--worker", path],
                               cwd=self.tmp, env=env, capture_output=True, text=True,
                               timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        except OSError as e:
            return {"error": str(e)}
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        b1 = _proc_stat_busy()
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith(RESULT_TAG)]
        if p.returncode != 0 or not lines:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            return {"error": f"exit {p.returncode}: {tail[-300:]}"}
        res = json.loads(lines[-1][len(RESULT_TAG):])
        if b0 is not None and b1 is not None:
            ours = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            # cores kept busy by *other* processes while the subprocess ran
            res["background"] = max(0.0, (b1 - b0) - ours) / wall
        return res

    @staticmethod
    def _wait_idle(limit, threshold=0.25):
        """Wait (at most `limit` s) until other processes keep < threshold cores busy."""
        t0 = time.perf_counter()
        while True:
            b0 = _proc_stat_busy()
            time.sleep(1.0)
            b1 = _proc_stat_busy()
            if b0 is None or b1 is None or b1 - b0 < threshold:
                return
            if time.perf_counter() - t0 > limit:
                print(f"  (machine still busy after waiting {limit:.0f} s: {b1 - b0:.1f} cores; "
                      "measuring anyway)", flush=True)
                return

    def ours(self, spec):
        spec = {"engine": "ours", "n_jobs": self.args.n_jobs, "min_total": 2.0, "max_reps": 3,
                **spec}
        return self._run(sys.executable, spec, self.args.timeout)

    def nt(self, spec):
        return self.peer("nt", self.args.nt_python, None, spec)

    def peer(self, engine, python, src, spec, env=None):
        """Run a peer worker with ``python``; ``src``: the peer's checkout (or None)."""
        if self.args.no_peer:
            return {"error": "skipped (--no-peer)"}
        if src is not None and not src:
            flag = {"cnn_gp": "--cnn-gp-src", "ckn": "--ckn-kernel-src"}[engine]
            return {"error": f"peer not run: no {flag} DIR (see benchmarks/README.md, "
                             "benchmarks/peers/setup_peers.sh)"}
        if src is not None and not os.path.isdir(src):
            return {"error": f"peer source {src} not found"}
        if not os.path.exists(python):
            return {"error": f"{python} not found"}
        if src is not None:
            spec = dict(spec, src=os.path.abspath(src))
        return self._run(python, dict(engine=engine, **spec), self.args.timeout, env)


def entries(n):
    return n * (n + 1) // 2


def config(quick):
    if quick:
        return dict(
            w1_peer_n=6, w1_n=40, nt_bs_gap={"float64": 2}, w1_nt_dtypes=("float64",),
            w2_n=200, nt_bs_flat={"float64": 50, "float32": 50}, w3_peer_n=50, w3_ns=(300,),
            cnn_gp_bs=50, w4_peer_n=20, w4_ns=(60,), w4_cifar_peer_n=6, w4_cifar_ns=(30,),
            w5=dict(n_diag=[25, 50, 100, 200], n_full=[2, 4, 8, 16],
                    side=[16, 24, 32, 48], side_full_n=4, side_diag_n=50,
                    depth=list(range(1, 9)), depth_full_n=4, depth_diag_n=100))
    return dict(
        # neural-tangents batch sizes: W1 float64 2 was the fastest here (2 ~ 10 < 5);
        # float32 (3-4x slower than float64 whatever the size) 2, 5 and 10 were within
        # the noise of a shared machine, and 10 takes 4 GB, so 2 as well
        w1_peer_n=10, w1_n=200, nt_bs_gap={"float64": 2, "float32": 2},
        w1_nt_dtypes=("float64", "float32"), w2_n=200,
        nt_bs_flat={"float64": 50, "float32": 50},
        # the peers at the N of issue 15 (cnn_gp 200, ckn_kernel 60), ours there and larger
        w3_peer_n=200, w3_ns=(1000,), cnn_gp_bs=200, w4_peer_n=60, w4_ns=(200,),
        w4_cifar_peer_n=20, w4_cifar_ns=(100,),
        w5=dict(n_diag=[25, 50, 100, 200, 400, 800], n_full=[4, 8, 16, 32, 48],
                side=[16, 24, 32, 48, 64], side_full_n=6, side_diag_n=100,
                depth=list(range(1, 9)), depth_full_n=8, depth_diag_n=200))


class Table:
    COLS = [("workload", 48, "s"), ("N", 5, "d"), ("dtype", 7, "s"), ("time s", 9, ".3f"),
            ("entries/s", 10, ".4g"), ("cores", 5, ".2f"), ("RSS MB", 7, ".0f"),
            ("(d MB)", 7, ".0f"), ("bg", 4, ".1f"), ("peer", 18, "s"), ("peer s", 9, ".4g"),
            ("ratio", 11, "s"), ("max dev", 8, ".1e"), ("notes", 0, "s")]

    def __init__(self):
        self.rows = []
        print(self.header(), flush=True)

    def header(self):
        cells = [f"{name:<{w}}" if fmt == "s" else f"{name:>{w}}" for name, w, fmt in self.COLS]
        line = " ".join(cells)
        return line + "\n" + "-" * len(line)

    def add(self, **row):
        self.rows.append(row)
        print(self.format(row), flush=True)

    def format(self, row):
        cells = []
        for name, w, fmt in self.COLS:
            v = row.get(name)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                s = "-"
            elif fmt == "s":
                s = str(v)
            else:
                s = format(v, fmt)
            cells.append(f"{s:<{w}}" if fmt == "s" else f"{s:>{w}}")
        return " ".join(cells)


def _fmt_ratio(x, approx=False):
    if x is None:
        return None
    return ("~" if approx else "") + (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def our_row(table, wl, res, N, dtype, peer=None, peer_time=None, ratio=None, dev=None,
            notes=""):
    if "error" in res:
        table.add(workload=wl, N=N, dtype=dtype, notes="ERROR " + res["error"])
        return None
    notes = (notes + ("; " if notes else "") + f"best of {res['reps']}") if res["reps"] > 1 \
        else notes
    table.add(workload=wl, N=N, dtype=dtype, **{
        "time s": res["time"], "entries/s": entries(N) / res["time"], "cores": res["cores"],
        "RSS MB": res["rss_peak_mb"], "(d MB)": res["rss_peak_mb"] - res["rss_setup_mb"],
        "bg": res.get("background"), "peer": peer, "peer s": peer_time, "ratio": ratio,
        "max dev": dev, "notes": notes})
    return res


def max_offdiag_dev(ours_path, ref_path):
    try:
        a, b = np.load(ours_path), np.load(ref_path)
    except OSError:
        return None
    err = np.abs(a - b) / np.max(np.abs(b))
    mask = ~np.eye(len(a), dtype=bool)
    return float(np.max(err[mask], initial=0.0))


def make_data(tmp, N, image, tag):
    path = os.path.join(tmp, f"X_{tag}_{N}.npy")
    if not os.path.exists(path):
        np.save(path, np.random.default_rng(SEED).random((N, *image)))
    return path


def run_nt_workload(R, table, tmp, wl_name, net, N, batch_sizes, nt_dtypes, rate_rows):
    """Peer rows (NT in nt_dtypes) at N, ours (f64, f32) at N with the ratio and
    deviation, then ours at larger N (rate_rows) compared by entries/s with NT
    at N.  An f32 row without an NT f32 run is compared with NT f64."""
    data = make_data(tmp, N, (28, 28, 1), "28")
    nt_res = {}
    for dt in nt_dtypes:
        save = os.path.join(tmp, f"nt_{net}_{N}_{dt}.npy")
        bs = batch_sizes[dt]
        nt_res[dt] = R.nt(dict(net=net, depth=5, N=N, dtype=dt, batch_size=bs, data=data,
                               save=save))
        r = nt_res[dt]
        if "error" in r:
            table.add(workload=f"{wl_name} [peer NT]", N=N, dtype=dt, notes="ERROR " + r["error"])
            continue
        table.add(**{"workload": f"{wl_name} [peer NT]", "N": N, "dtype": dt,
                     "time s": r["time"], "entries/s": entries(N) / r["time"],
                     "cores": r["cores"], "RSS MB": r["rss_peak_mb"],
                     "(d MB)": r["rss_peak_mb"] - r["rss_setup_mb"], "bg": r.get("background"),
                     "notes": f"warm run; compile ~{r['compile']:.1f} s (cold call on "
                              f"{r['n_cold']} images: {r['cold']:.1f} s); batch_size={bs}, jit"})
    ref = os.path.join(tmp, f"nt_{net}_{N}_float64.npy")
    out = {}
    for dt in ("float64", "float32"):
        save = os.path.join(tmp, f"ours_{net}_{N}_{dt}.npy")
        res = R.ours(dict(net=net, depth=5, kind="ntk", dtype=dt, data=data, save=save))
        pdt = dt if dt in nt_res else "float64"
        peer = nt_res.get(pdt, {})
        pt = peer.get("time")
        ratio = _fmt_ratio(pt / res["time"]) if pt and "time" in res else None
        dev = max_offdiag_dev(save, ref) if "time" in nt_res.get("float64", {}) \
            and "error" not in res else None
        notes = []
        if dev is not None and dt == "float32":
            notes.append("dev vs NT float64")
        if pt and pdt != dt:
            notes.append("peer is NT float64 (NT float32 not run)")
        our_row(table, wl_name, res, N, dt, peer=f"neural-tangents" if pt else None,
                peer_time=pt, ratio=ratio, dev=dev, notes="; ".join(notes))
        out[(N, dt)] = res
    for n2 in rate_rows:
        if n2 == N:
            continue
        data2 = make_data(tmp, n2, (28, 28, 1), "28")
        for dt in ("float64", "float32"):
            res = R.ours(dict(net=net, depth=5, kind="ntk", dtype=dt, data=data2))
            pdt = dt if dt in nt_res else "float64"
            peer = nt_res.get(pdt, {})
            ratio = None
            if "time" in peer and "time" in res:
                ratio = _fmt_ratio((entries(n2) / res["time"]) / (entries(N) / peer["time"]),
                                   approx=True)
            our_row(table, wl_name, res, n2, dt,
                    peer=f"NT rate @N={N}" if ratio else None, ratio=ratio,
                    notes=f"ratio of entries/s vs NT {pdt} measured at N={N}" if ratio else "")
            out[(n2, dt)] = res
    return out


def peer_row(table, wl_name, label, N, dtype, r, notes=""):
    """A table row of a peer measurement (or its error)."""
    if "error" in r:
        table.add(workload=f"{wl_name} [peer {label}]", N=N, dtype=dtype,
                  notes="ERROR " + r["error"])
        return
    table.add(**{"workload": f"{wl_name} [peer {label}]", "N": N, "dtype": dtype,
                 "time s": r["time"], "entries/s": entries(N) / r["time"], "cores": r["cores"],
                 "RSS MB": r["rss_peak_mb"], "(d MB)": r["rss_peak_mb"] - r["rss_setup_mb"],
                 "bg": r.get("background"), "notes": notes or r.get("version", "")})


def run_peer_workload(R, table, tmp, wl_name, net, image, kind, N, peers, rate_ns, perf):
    """float32 workload vs peers measured at N, each ``(label, engine, python, src,
    spec)``: peer rows, ours at N (ratio to the fastest peer, max dev vs the first
    peer's Gram), then ours at the N of ``rate_ns`` (ratio of entries/s)."""
    tag = "x".join(map(str, image))
    data = make_data(tmp, N, image, tag)
    timed = {}
    ref = None
    for label, engine, python, src, spec in peers:
        save = os.path.join(tmp, f"{engine}_{net}_{N}_{len(timed)}.npy")
        r = R.peer(engine, python, src, dict(spec, data=data, save=save), env={
            "OMP_NUM_THREADS": "1"} if engine == "ckn" else None)
        peer_row(table, wl_name, label, N, "float32", r)
        if "time" in r:
            timed[label] = r["time"]
            ref = ref or save
            perf.append((f"{wl_name} [peer {label}]", net, image, N, "float32", r))
    fastest = min(timed, key=timed.get) if timed else None
    for n in [N] + [n for n in rate_ns if n != N]:
        save = os.path.join(tmp, f"ours_{net}_{n}.npy")
        res = R.ours(dict(net=net, depth=0, kind=kind, dtype="float32",
                          data=make_data(tmp, n, image, tag), save=save if n == N else None))
        ratio = dev = None
        notes = []
        if "time" in res and fastest:
            if n == N:
                ratio = _fmt_ratio(timed[fastest] / res["time"])
                dev = max_offdiag_dev(save, ref)
                notes += [f"{lab} {t:.3g} s: {_fmt_ratio(t / res['time'])}"
                          for lab, t in timed.items() if len(timed) > 1]
            else:
                ratio = _fmt_ratio((entries(n) / res["time"]) / (entries(N) / timed[fastest]),
                                   approx=True)
                notes.append(f"entries/s vs {fastest} at N={N}")
        our_row(table, wl_name, res, n, "float32", peer=fastest, ratio=ratio, dev=dev,
                peer_time=timed[fastest] if fastest and n == N else None,
                notes="; ".join(notes))
        perf.append((wl_name, net, image, n, "float32", res))


def run_w5(R, cfg, outdir, quick):
    c = cfg["w5"]
    im = lambda s: [s, s, 1]  # noqa: E731
    series = {
        "N, diagonal (Flatten, depth 5)": [dict(net="cntk_flat", depth=5, image=im(28), N=n, x=n)
                                           for n in c["n_diag"]],
        "N, full (GAP, depth 5)": [dict(net="cntk_gap", depth=5, image=im(28), N=n, x=n)
                                   for n in c["n_full"]],
        f"side, full (GAP, depth 5, N={c['side_full_n']})": [
            dict(net="cntk_gap", depth=5, image=im(s), N=c["side_full_n"], x=s) for s in c["side"]],
        f"side, diagonal (Flatten, depth 5, N={c['side_diag_n']})": [
            dict(net="cntk_flat", depth=5, image=im(s), N=c["side_diag_n"], x=s)
            for s in c["side"] + ([64] if 64 not in c["side"] else [])],
        f"depth, full (GAP, 28x28, N={c['depth_full_n']})": [
            dict(net="cntk_gap", depth=d, image=im(28), N=c["depth_full_n"], x=d)
            for d in c["depth"]],
        f"depth, diagonal (Flatten, 28x28, N={c['depth_diag_n']})": [
            dict(net="cntk_flat", depth=d, image=im(28), N=c["depth_diag_n"], x=d)
            for d in c["depth"]],
    }
    print("\nW5 scaling (kind=ntk, float64; one subprocess per series; time = best of runs "
          "totalling >= 0.5 s)", flush=True)
    print(f"{'series':<44} {'x':>5} {'N':>5} {'time s':>9} {'entries/s':>10} {'s/entry':>10} "
          f"{'cores':>5}")
    rows = []
    for name, pts in series.items():
        res = R.ours(dict(kind="ntk", dtype="float64", points=pts, min_total=0.5, max_reps=3))
        if "error" in res:
            print(f"{name:<44} ERROR {res['error']}", flush=True)
            continue
        for p in res["points"]:
            e = entries(p["N"])
            row = dict(series=name, x=p["x"], N=p["N"], side=p["image"][0], depth=p["depth"],
                       time_s=p["time"], entries_per_s=e / p["time"],
                       s_per_entry=p["time"] / e, cores=p["cores"])
            rows.append(row)
            print(f"{name:<44} {p['x']:>5} {p['N']:>5} {p['time']:>9.3f} "
                  f"{e / p['time']:>10.4g} {p['time'] / e:>10.3g} {p['cores']:>5.2f}", flush=True)
        xs = np.array([p["x"] for p in res["points"]], float)
        ys = np.array([p["time"] for p in res["points"]], float)
        k = min(3, len(xs))
        what = "time" if name.startswith("N") else "s/entry"
        if not name.startswith("N"):
            ys = ys / np.array([entries(p["N"]) for p in res["points"]], float)
        bg = res.get("background")
        bg = f"; bg {bg:.1f} cores" if bg is not None else ""
        if name.startswith("depth"):  # affine in depth: s/entry = a + b * depth
            b, a = np.polyfit(xs, ys, 1)
            resid = np.max(np.abs(a + b * xs - ys) / ys)
            print(f"{'':<44} linear fit s/entry = {a:.3g} + {b:.3g} x depth, max residual "
                  f"{100 * resid:.0f}% (ideal: affine){bg}", flush=True)
            continue
        slope = np.polyfit(np.log(xs[-k:]), np.log(ys[-k:]), 1)[0]
        expect = {"N": "2 (N(N+1)/2 entries)", "side, full": "4 ((HW)^2 position pairs)",
                  "side, diagonal": "2 (HW positions)"}
        exp = next(v for kk, v in expect.items() if name.startswith(kk))
        print(f"{'':<44} fitted exponent of {what} over the last {k} points: {slope:.2f} "
              f"(ideal {exp}){bg}", flush=True)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "scaling_quick.csv" if quick else "scaling.csv")
    if rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"W5 CSV: {path}")
        plot_w5(rows, path[:-4] + ".png")


def plot_w5(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("W5 plot skipped: matplotlib is not installed (pip install matplotlib to get "
              f"{os.path.basename(path)}; it is not a dependency).")
        return
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    groups = {}
    for r in rows:
        groups.setdefault(r["series"], []).append(r)
    for name, rs in groups.items():
        xs = np.array([r["x"] for r in rs], float)
        if name.startswith("N"):
            ax, ys = axes[0], np.array([r["time_s"] for r in rs])
            ref = ys[-1] * (xs * (xs + 1)) / (xs[-1] * (xs[-1] + 1))
            ax.loglog(xs, ref, ":", color="grey")
        elif name.startswith("side"):
            ax, ys = axes[1], np.array([r["s_per_entry"] for r in rs])
            p = 4 if "full" in name else 2
            ax.loglog(xs, ys[-1] * (xs / xs[-1]) ** p, ":", color="grey")
        else:
            ax, ys = axes[2], np.array([r["s_per_entry"] for r in rs])
            ax.set_yscale("log")
        ax.plot(xs, ys, "o-", label=name)
    axes[0].set(xlabel="N images", ylabel="Gram time [s]", title="time vs N (dotted: N(N+1)/2)")
    axes[1].set(xlabel="image side", ylabel="s per kernel entry",
                title="vs image side (dotted: side^4 full, side^2 diagonal)")
    axes[2].set(xlabel="depth (conv+ReLU pairs)", ylabel="s per kernel entry",
                title="vs depth")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"W5 plot: {path}")


def _loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def print_roofline(perf, info, variant):
    """Measured peak of the CPU (and of the vector width of the engine
    variant in use); per workload the modelled cost of an entry by operation;
    per timed row the achieved GFLOP/s and fraction of the CPU's peak."""
    from _peak import measure_peak

    pk = measure_peak(info["cores"])
    nominal = info["cores"] * (info["mhz"] or float("nan")) * 1e6 * 16
    print("\nRoofline")
    if "error" in pk:
        peak64 = nominal
        print(f"  peak NOT measured ({pk['error']}): assumed {info['cores']} cores x "
              f"{(info['mhz'] or float('nan')) / 1e3:.3f} GHz x 16 double flop/cycle = "
              f"{peak64 / 1e9:.1f} GFLOP/s double")
    else:
        peak64 = pk["peak64"]
        print(f"  peak: {info['cores']} cores x {peak64 / info['cores'] / 1e9:.1f} = "
              f"{peak64 / 1e9:.1f} GFLOP/s double, {pk['peak32'] / 1e9:.1f} single "
              f"({pk['best_width']}-bit FMA);\n  {pk['how']};\n"
              f"  (the former assumption, 16 double flop/cycle at the /proc/cpuinfo clock: "
              f"{nominal / 1e9:.1f} GFLOP/s = {100 * nominal / peak64:.0f}% of this)")
        widths = {"generic": "128-bit SSE2, no FMA", "avx2": "256-bit FMA",
                  "avx512": "512-bit FMA"}
        print("  peak per engine variant's vector width: " + "; ".join(
            f"{v} ({widths[v]}) {p / 1e9:.1f} GFLOP/s double = {100 * p / peak64:.0f}%"
            for v, p in pk["variant_peak64"].items())
            + f" of the CPU's peak; the rows below ran '{variant}', and their % peak is of the "
              "CPU's peak")
    print("  model of one kernel entry (benchmarks/_cost_model.py, from the architecture): "
          "flops by operation; bytes if every\n  operation streamed its tensors through "
          "memory (float32 / float64)")
    print(f"  {'network':<18} {'flops/entry':>11} {'bytes f32':>10} {'bytes f64':>10} "
          f"{'flop/B f32':>10}  flops by operation")
    seen = set()
    for _, net, image, *_ in perf:
        if (net, tuple(image)) in seen:
            continue
        seen.add((net, tuple(image)))
        c4, c8 = net_cost(net, image, 4), net_cost(net, image, 8)
        print(f"  {net:<18} {c4.total_flops:>11.3g} {c4.total_bytes:>10.3g} "
              f"{c8.total_bytes:>10.3g} {c4.total_flops / c4.total_bytes:>10.2f}  "
              f"{c4.breakdown()}")
    print(f"  {'row':<48} {'N':>5} {'dtype':<7} {'time s':>8} {'at peak s':>9} "
          f"{'GFLOP/s':>8} {'% peak':>6} {'% busy':>6}")
    for wl, net, image, n, dt, res in perf:
        if "time" not in res:
            continue
        peak = peak64 * (2 if dt == "float32" else 1)
        flops = net_cost(net, image, 4 if dt == "float32" else 8).total_flops * entries(n)
        busy = peak / info["cores"] * max(res["cores"], 1e-9)
        print(f"  {wl:<48} {n:>5} {dt:<7} {res['time']:>8.3g} {flops / peak:>9.3g} "
              f"{flops / res['time'] / 1e9:>8.2f} {100 * flops / res['time'] / peak:>6.1f} "
              f"{100 * flops / res['time'] / busy:>6.1f}")
    print("  (at peak s = modelled flops / peak; % peak = of all cores; % busy = of the cores "
          "the row kept busy)")


def environment(args):
    info = cpu_info()
    simd, t_build = {"variant": "?"}, 0.0
    t0 = time.perf_counter()
    try:  # import once first so that an editable rebuild does not land in a timing; this
        # also makes the engine variant's choice (measured once per machine, then cached,
        # so that the workers below read the same choice)
        p = subprocess.run([sys.executable, "-c", "import json, sklearn_convkernel, numpy; "
                            "from sklearn_convkernel._core import simd_report; "
                            "print(json.dumps([simd_report(), numpy.__version__]))"],
                           cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=1800)
        if p.returncode == 0:
            simd, npv = json.loads(p.stdout.splitlines()[-1])
        else:
            simd, npv = {"variant": "IMPORT-FAILED"}, "?"
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        npv = "?"
    t_build = time.perf_counter() - t0
    try:
        head = subprocess.run(["git", "-C", REPO, "log", "-1", "--format=%h %cd",
                               "--date=format:%Y-%m-%d %H:%M"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "_ext",
                                "sklearn_convkernel"], capture_output=True, text=True).stdout
        head += " + uncommitted changes" if dirty.strip() else ""
    except OSError:
        head = "?"
    return info, simd, npv, t_build, head


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller N everywhere (~3 min)")
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5",
                    help="comma-separated subset of W1,W2,W3,W4,W5 (default all)")
    ap.add_argument("--csv", help="also write the table rows to this CSV file")
    ap.add_argument("--outdir", default=os.path.join(HERE, "results"),
                    help="where the W5 scaling CSV/PNG go (default benchmarks/results)")
    ap.add_argument("--nt-python", default=os.environ.get("NT_PYTHON", "/tmp/ntvenv/bin/python"),
                    help="python of the neural-tangents venv")
    ap.add_argument("--peer-python",
                    default=os.environ.get("PEER_PYTHON", "/tmp/peervenv/bin/python"),
                    help="python of the cnn_gp / ckn_kernel venv (benchmarks/peers/"
                         "setup_peers.sh; default /tmp/peervenv/bin/python or $PEER_PYTHON)")
    ap.add_argument("--cnn-gp-src", default=os.environ.get("CNN_GP_SRC"), metavar="DIR",
                    help="checkout of cambridge-mlg/cnn-gp (W3 peer; default $CNN_GP_SRC)")
    ap.add_argument("--ckn-kernel-src", default=os.environ.get("CKN_KERNEL_SRC"), metavar="DIR",
                    help="built checkout of albietz/ckn_kernel (W4 peer; default "
                         "$CKN_KERNEL_SRC)")
    ap.add_argument("--peer-procs", type=int, default=os.cpu_count() or 1,
                    help="torch threads of cnn_gp and processes of ckn_kernel (default: "
                         "all cores)")
    ap.add_argument("--no-peer", action="store_true", help="run no peer")
    ap.add_argument("--n-jobs", type=int, default=-1, help="threads for ours (default all cores)")
    ap.add_argument("--timeout", type=float, default=3600, help="per-subprocess time limit (s)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement wait up to SECONDS for other processes to "
                         "leave the CPUs idle (< 0.25 cores busy); default 0: do not wait")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        with open(args.worker) as f:
            spec = json.load(f)
        workers = {"ours": worker_ours, "nt": worker_nt, "cnn_gp": worker_cnn_gp,
                   "ckn": worker_ckn}
        workers[spec["engine"]](spec)
        return 0

    wanted = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    unknown = wanted - {"W1", "W2", "W3", "W4", "W5"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose among W1..W5")
    cfg = config(args.quick)
    t_start = time.perf_counter()
    info, simd, npv, t_build, head = environment(args)
    print(f"sklearn-convkernel benchmarks ({'quick' if args.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  machine: {info['model']}, {info['cores']} cores, {info['mhz']:.0f} MHz "
          f"(/proc/cpuinfo){', AVX-512 capable' if info['avx512'] else ''}; "
          f"numpy {npv}; python {platform.python_version()}")
    print(f"  core: engine '{simd['variant']}' (SKLEARN_CONVKERNEL_SIMD="
          f"{os.environ.get('SKLEARN_CONVKERNEL_SIMD', 'auto')}), n_jobs={args.n_jobs}, "
          f"repo {head}; import/rebuild check {t_build:.1f} s")
    if "supported" in simd:
        from sklearn_convkernel._simd import format_report
        print("    " + format_report(simd).replace("\n", "\n    "))
    if args.no_peer:
        print("  peers: none (--no-peer)")
    else:
        print(f"  peers: neural-tangents {args.nt_python}; cnn_gp {args.cnn_gp_src or '-'}, "
              f"ckn_kernel {args.ckn_kernel_src or '-'} with {args.peer_python}, "
              f"{args.peer_procs} threads/processes")
    print(f"  load average before the run: {_loadavg()}")
    print("  columns: time = wall time of conv_kernel(X) (symmetric Gram), best of the runs "
          "totalling >= 2 s (max 3); entries/s = N(N+1)/2 / time;\n"
          "  cores = CPU time / wall time of that call; RSS MB = peak RSS of the measuring "
          "process, (d MB) = above its RSS before the call;\n"
          "  bg = cores busy with OTHER processes during the measurement (> 0.2 taints timings);"
          " ratio = peer time / our time at the same N\n"
          "  (~ = ratio of entries/s vs the peer at a smaller N); every peer is measured in this "
          "run; max dev = max off-diagonal\n"
          "  |ours - peer| / max |peer| (W1, W2: vs NT float64; W3, W4: vs the first peer row, "
          "float32).\n", flush=True)

    table = Table()
    perf = []  # (workload, net, image, N, dtype, result) of every timed row
    with tempfile.TemporaryDirectory(prefix="convkernel_bench_") as tmp:
        R = Runner(args, tmp)
        if "W1" in wanted:
            rows = run_nt_workload(R, table, tmp, "W1 CNTK GAP d5 ntk", "cntk_gap",
                                   cfg["w1_peer_n"], cfg["nt_bs_gap"], cfg["w1_nt_dtypes"],
                                   [cfg["w1_n"]])
            perf += [("W1 CNTK GAP d5 ntk", "cntk_gap", (28, 28, 1), n, dt, res)
                     for (n, dt), res in sorted(rows.items())]
        if "W2" in wanted:
            rows = run_nt_workload(R, table, tmp, "W2 CNTK Flatten d5 ntk", "cntk_flat",
                                   cfg["w2_n"], cfg["nt_bs_flat"], ("float64", "float32"), [])
            perf += [("W2 CNTK Flatten d5 ntk", "cntk_flat", (28, 28, 1), n, dt, res)
                     for (n, dt), res in sorted(rows.items())]
        if "W3" in wanted:
            cnn_gp = ("cnn_gp", "cnn_gp", args.peer_python, args.cnn_gp_src or "",
                      dict(threads=args.peer_procs, batch_size=cfg["cnn_gp_bs"]))
            run_peer_workload(R, table, tmp, "W3 cnn_gp ConvNet-GP nngp", "cnn_gp_convnet",
                              (28, 28, 1), "nngp", cfg["w3_peer_n"], [cnn_gp], cfg["w3_ns"],
                              perf)
        if "W4" in wanted:
            def ckn(model, ntk):
                return [(f"ckn_kernel{'+norms' if norms else ''}", "ckn", args.peer_python,
                         args.ckn_kernel_src or "",
                         dict(model=model, ntk=ntk, norms=norms, procs=args.peer_procs))
                        for norms in (False, True)]
            run_peer_workload(R, table, tmp, "W4 CKN README exp nngp", "ckn_readme",
                              (28, 28, 1), "nngp", cfg["w4_peer_n"], ckn(CKN_README, False),
                              cfg["w4_ns"], perf)
            run_peer_workload(R, table, tmp, "W4 CKN README relu ntk", "ckn_readme_relu",
                              (28, 28, 1), "ntk", cfg["w4_peer_n"], ckn(CKN_README_RELU, True),
                              cfg["w4_ns"], perf)
            run_peer_workload(R, table, tmp, "W4 CKN CIFAR exp 32x32x3", "ckn_cifar",
                              (32, 32, 3), "nngp", cfg["w4_cifar_peer_n"],
                              ckn(CKN_CIFAR, False), cfg["w4_cifar_ns"], perf)
        if args.csv:
            keys = [c[0] for c in Table.COLS]
            with open(args.csv, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(keys + ["ratio_low"])  # ratio_low: numeric (lower end of a range)
                for r in table.rows:
                    m = re.match(r"~?([0-9.]+)x", r.get("ratio") or "")
                    w.writerow(["" if r.get(k) is None else r.get(k) for k in keys]
                               + [m.group(1) if m else ""])
            print(f"\ntable CSV: {args.csv}")

        if perf:
            print_roofline(perf, info, simd["variant"])

        if "W5" in wanted:
            run_w5(R, cfg, args.outdir, args.quick)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
