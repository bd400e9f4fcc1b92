#!/usr/bin/env python3
"""Benchmark harness of issue 5: our exact convolutional kernels vs the peers.

Run (from anywhere; a plain ``python3`` with sklearn_convkernel installed)::

    python3 benchmarks/run_benchmarks.py [--quick] [--workloads W1,W2,...] [--csv out.csv]

Prints one row per (workload, N, dtype): wall time of ``conv_kernel`` (the
symmetric Gram K(X, X)), unique kernel entries per second (N(N+1)/2 / time),
the CPU cores actually kept busy, the peak RSS of the measuring process, and
where a peer exists its time on the same N and the ratio (peer time / our time).
Every measurement runs in a fresh subprocess, so the peak RSS is per workload.

Peers.  neural-tangents (W1, W2) is *measured in the same run*, in its own
virtual environment (``--nt-python``, default /tmp/ntvenv/bin/python; it is
never a dependency of the package):

    python3 -m venv /tmp/ntvenv && /tmp/ntvenv/bin/pip install neural-tangents==0.6.5 \\
        jax==0.4.25 jaxlib==0.4.25 numpy==1.26.4 scipy==1.12.0

cnn_gp (needs torch) and ckn_kernel do not run here: their rows use the figures
recorded on this machine and quoted in issue 5, marked "recorded".

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


NET_LABELS = {
    "cntk_gap": "CNTK [conv3 relu]x{d} GAP",
    "cntk_flat": "CNTK [conv3 relu]x{d} Flatten",
    "cnn_gp_convnet": "cnn_gp ConvNet-GP 7x7x8",
    "ckn_readme": "CKN README exp .65",
    "ckn_readme_relu": "CKN README relu-NTK",
    "ckn_cifar": "CKN CIFAR exp .6 32x32x3",
}

# Figures recorded on this machine for the peers that cannot run here (issue 5),
# as unique Gram entries per second: (low, high, note).
RECORDED = {
    "cnn_gp_convnet": ("cnn_gp", 3080.0, 3080.0, "torch CPU, 2 threads"),
    "ckn_readme": ("ckn_kernel", 131.0, 131.0, "2 processes; 295/s with precomputed norms"),
    "ckn_readme_relu": ("ckn_kernel", 54.0, 54.0, "NTK"),
    # ~80-105 s for the N=100 Gram (5050 unique entries)
    "ckn_cifar": ("ckn_kernel", 5050 / 105.0, 5050 / 80.0, "80-105 s for N=100"),
}
CKN_PRECOMPUTED_NORMS_RATE = 295.0

# ---------------------------------------------------------------------------
# roofline: useful floating-point operations of the CNTK-GAP recursion
# ---------------------------------------------------------------------------
#
# Counted per pair of spatial positions (p, q) of the 4-D tensors (H*W)^2, one
# multiply, add, FMA-half or square root = 1 flop; compares, selects, min/max
# and abs are not counted.  Following the recursion of arch.py (weight_var on
# the window *mean*, NTK, trainable convs, no bias):
#
#   input     K0 = x_p . y_q / C                         2C - 1 (C=1: 1 mul)
#   conv 3x3  K' = w/9 * window_sum(K), separable:
#             2 adds along the height taps + 2 along the width taps + 1 mul = 5
#             Theta' = w/9 * window_sum(Theta) + K'                 5 + 1 = 6
#             (first conv: Theta_in = 0, Theta' = K' is a copy: 0)
#   ReLU      rho = K * inv_p * inv_q                                     2
#             acos(rho) (branch-free: tb = (1-|rho|)/2: 2, sqrt: 1, a^2: 1,
#             asin core: u = 4t: 1, degree-12 Horner: 12 FMA = 24, z + z t q: 3,
#             reflection 2r or pi/2 - r: 1, sign pi - ac: 1)                 34
#             s = sq_p * sq_q                                              1
#             sin = sqrt((1 - rho)(1 + rho))                               4
#             K'' = s * (sin + (pi - th) rho) / (2 pi)                     5
#             Kdot = (pi - th) / (2 pi)                                    1
#             Theta'' = Theta' * Kdot                                      1
#                                                               ReLU total 48
#   GAP       sums of K and Theta over all pairs                           2
#
# so a depth-d CNTK-GAP costs (H W)^2 (2C - 1 + 5 + 48 + (d - 1)(11 + 48) + 2)
# flops per kernel entry: 292 (H W)^2 = 1.80e8 for d = 5 on 28x28x1.  This is
# the arithmetic of the current formulas, not a lower bound (a cheaper arccos
# would lower it); the self passes (O(N)) and the 3x3 border (SAME padding:
# edge windows have fewer taps, -2% on 28x28) are ignored.

FLOPS = {"input_per_channel": 2, "conv_K": 5, "conv_Theta": 6, "relu_ntk": 48, "gap": 2}


def cntk_gap_flops_per_entry(H, W, C, depth):
    per_pair = (FLOPS["input_per_channel"] * C - 1 + FLOPS["conv_K"] + FLOPS["relu_ntk"]
                + (depth - 1) * (FLOPS["conv_K"] + FLOPS["conv_Theta"] + FLOPS["relu_ntk"])
                + FLOPS["gap"])
    return per_pair * (H * W) ** 2


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

    def _run(self, python, spec, timeout):
        self.n += 1
        path = os.path.join(self.tmp, f"spec{self.n}.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
        if self.args.no_peer:
            return {"error": "skipped (--no-peer)"}
        if not os.path.exists(self.args.nt_python):
            return {"error": f"{self.args.nt_python} not found"}
        return self._run(self.args.nt_python, dict(engine="nt", **spec), self.args.timeout)


def entries(n):
    return n * (n + 1) // 2


def config(quick):
    if quick:
        return dict(
            w1_peer_n=6, w1_n=40, nt_bs_gap={"float64": 2}, w1_nt_dtypes=("float64",),
            w2_n=200, nt_bs_flat={"float64": 50, "float32": 50}, w3_n=300,
            w4_ns=(60,), w4_ntk_ns=(60,), w4_cifar_n=30,
            w5=dict(n_diag=[25, 50, 100, 200], n_full=[2, 4, 8, 16],
                    side=[16, 24, 32, 48], side_full_n=4, side_diag_n=50,
                    depth=list(range(1, 9)), depth_full_n=4, depth_diag_n=100))
    return dict(
        # neural-tangents batch sizes: W1 float64 2 was the fastest here (2 ~ 10 < 5);
        # float32 (3-4x slower than float64 whatever the size) 2, 5 and 10 were within
        # the noise of a shared machine, and 10 takes 4 GB, so 2 as well
        w1_peer_n=10, w1_n=200, nt_bs_gap={"float64": 2, "float32": 2},
        w1_nt_dtypes=("float64", "float32"), w2_n=200,
        nt_bs_flat={"float64": 50, "float32": 50}, w3_n=1000,
        w4_ns=(60, 200), w4_ntk_ns=(60, 200), w4_cifar_n=100,
        w5=dict(n_diag=[25, 50, 100, 200, 400, 800], n_full=[4, 8, 16, 32, 48],
                side=[16, 24, 32, 48, 64], side_full_n=6, side_diag_n=100,
                depth=list(range(1, 9)), depth_full_n=8, depth_diag_n=200))


class Table:
    COLS = [("workload", 32, "s"), ("N", 5, "d"), ("dtype", 7, "s"), ("time s", 9, ".3f"),
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


def recorded_row(R, table, tmp, wl_name, net, N, dtype, image, kind):
    data = make_data(tmp, N, image, "x".join(map(str, image)))
    res = R.ours(dict(net=net, depth=0, kind=kind, dtype=dtype, data=data))
    peer, lo, hi, note = RECORDED[net]
    pt = ratio = None
    if "time" in res:
        pt = entries(N) / ((lo + hi) / 2)
        r_lo, r_hi = entries(N) / hi / res["time"], entries(N) / lo / res["time"]
        ratio = _fmt_ratio(r_lo) if abs(r_hi - r_lo) < 1e-9 * r_lo else \
            f"{_fmt_ratio(r_lo)}-{_fmt_ratio(r_hi)}"
        if net == "ckn_readme":
            note += f" -> {entries(N) / CKN_PRECOMPUTED_NORMS_RATE / res['time']:.1f}x vs that"
    our_row(table, wl_name, res, N, dtype, peer=f"{peer} (recorded)", peer_time=pt, ratio=ratio,
            notes=note)
    return res


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


def environment(args):
    info = cpu_info()
    simd, t_build = "?", 0.0
    t0 = time.perf_counter()
    try:  # import once first so that an editable rebuild does not land in a timing
        p = subprocess.run([sys.executable, "-c", "import sklearn_convkernel, numpy; "
                            "from sklearn_convkernel._core import simd_variant; "
                            "print(simd_variant(), numpy.__version__)"],
                           cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=1800)
        simd, npv = p.stdout.split()[-2:] if p.returncode == 0 else ("IMPORT-FAILED", "?")
    except (subprocess.TimeoutExpired, ValueError):
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
    ap.add_argument("--no-peer", action="store_true", help="do not run neural-tangents")
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
        (worker_ours if spec["engine"] == "ours" else worker_nt)(spec)
        return 0

    wanted = {w.strip().upper() for w in args.workloads.split(",") if w.strip()}
    unknown = wanted - {"W1", "W2", "W3", "W4", "W5"}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose among W1..W5")
    cfg = config(args.quick)
    t_start = time.perf_counter()
    info, simd, npv, t_build, head = environment(args)
    peak64 = info["cores"] * (info["mhz"] or float("nan")) * 1e6 * 16
    print(f"sklearn-convkernel benchmarks ({'quick' if args.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  machine: {info['model']}, {info['cores']} cores, {info['mhz']:.0f} MHz "
          f"(/proc/cpuinfo){', AVX-512 capable' if info['avx512'] else ''}; "
          f"numpy {npv}; python {platform.python_version()}")
    print(f"  core: engine '{simd}' (SKLEARN_CONVKERNEL_SIMD="
          f"{os.environ.get('SKLEARN_CONVKERNEL_SIMD', 'auto')}), n_jobs={args.n_jobs}, "
          f"repo {head}; import/rebuild check {t_build:.1f} s")
    print(f"  peer: {args.nt_python if not args.no_peer else 'none (--no-peer)'}")
    print("  columns: time = wall time of conv_kernel(X) (symmetric Gram), best of the runs "
          "totalling >= 2 s (max 3); entries/s = N(N+1)/2 / time;\n"
          "  cores = CPU time / wall time of that call; RSS MB = peak RSS of the measuring "
          "process, (d MB) = above its RSS before the call;\n"
          "  bg = cores busy with OTHER processes during the measurement (> 0.2 taints timings);"
          " ratio = peer time / our time at the same N\n"
          "  (~ = ratio of entries/s vs the peer at a smaller N; 'recorded' = peer figure from "
          "issue 5, not measured); max dev = max off-diagonal\n"
          "  |ours - NT float64| / max |NT float64|.\n", flush=True)

    table = Table()
    w1_rows = {}
    with tempfile.TemporaryDirectory(prefix="convkernel_bench_") as tmp:
        R = Runner(args, tmp)
        if "W1" in wanted:
            w1_rows = run_nt_workload(R, table, tmp, "W1 CNTK GAP d5 ntk", "cntk_gap",
                                      cfg["w1_peer_n"], cfg["nt_bs_gap"], cfg["w1_nt_dtypes"],
                                      [cfg["w1_n"]])
        if "W2" in wanted:
            run_nt_workload(R, table, tmp, "W2 CNTK Flatten d5 ntk", "cntk_flat",
                            cfg["w2_n"], cfg["nt_bs_flat"], ("float64", "float32"), [])
        if "W3" in wanted:
            recorded_row(R, table, tmp, "W3 cnn_gp ConvNet-GP nngp", "cnn_gp_convnet",
                         cfg["w3_n"], "float32", (28, 28, 1), "nngp")
        if "W4" in wanted:
            for n in cfg["w4_ns"]:
                recorded_row(R, table, tmp, "W4 CKN README exp nngp", "ckn_readme", n,
                             "float32", (28, 28, 1), "nngp")
            for n in cfg["w4_ntk_ns"]:
                recorded_row(R, table, tmp, "W4 CKN README relu ntk", "ckn_readme_relu", n,
                             "float32", (28, 28, 1), "ntk")
            recorded_row(R, table, tmp, "W4 CKN CIFAR exp.6 32x32x3", "ckn_cifar",
                         cfg["w4_cifar_n"], "float32", (32, 32, 3), "nngp")
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

        if w1_rows:
            fpe = cntk_gap_flops_per_entry(28, 28, 1, 5)
            print(f"\nRoofline W1: {fpe:.3g} useful flops per entry (292 per position pair x "
                  f"784^2, counted in this script's FLOPS table);\n  peak assumed = "
                  f"{info['cores']} cores x {info['mhz'] / 1e3:.3f} GHz x 16 double flop/cycle "
                  f"(2 x 256-bit FMA) = {peak64 / 1e9:.1f} GFLOP/s double, "
                  f"{2 * peak64 / 1e9:.1f} single; engine '{simd}'" + (
                      " (AVX-512 CPUs that split 512-bit FMAs in two 256-bit halves, as "
                      "AMD Zen 4 does, have this same peak)" if info["avx512"] else ""))
            for (n, dt), res in sorted(w1_rows.items()):
                if "time" not in res:
                    continue
                gf = fpe * entries(n) / res["time"]
                peak = peak64 * (2 if dt == "float32" else 1)
                busy = peak / info["cores"] * res["cores"]
                print(f"  N={n:<4} {dt}: {entries(n) / res['time']:8.1f} entries/s -> "
                      f"{gf / 1e9:6.2f} GFLOP/s = {100 * gf / peak:5.1f}% of {dt[5:]}-bit peak; "
                      f"{res['cores']:.2f} cores were busy: {100 * gf / busy:5.1f}% of their peak")

        if "W5" in wanted:
            run_w5(R, cfg, args.outdir, args.quick)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
