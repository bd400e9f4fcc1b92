"""The CPU's measured floating-point peak, for the roofline of run_benchmarks.py.

The FMA micro-benchmark ``_fma_peak.c`` is compiled at run time with the
system C compiler (``$CC`` or ``cc``) and run once per vector width the CPU
supports (256-bit AVX2+FMA, 512-bit AVX-512F; and 128-bit SSE2 multiplies and
adds without FMA, the peak of the baseline "generic" engine variant), so that
the roofline can state both the CPU's true peak (its best width) and the peak
of the width the engine variant in use runs.  It reports the double flop/s
of one core (timed on the thread's CPU clock, so other load on a shared
machine does not count) and the core clock (from dependent integer
multiplies).  flop/cycle / (2 x lanes) is the number of FMA units of that
width: a Xeon with two 512-bit FMA units has twice the AVX-512 peak of one
that, like AMD Zen 4, executes 512-bit FMAs as two 256-bit halves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "_fma_peak.c")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def measure_peak(cores, n=20_000_000, reps=5):
    """Measured per-core FMA throughput and the CPU's double/single peak.

    Returns a dict with ``widths`` ({bits: (flop/s per core, cycles/s,
    FMA units, None at 128 bits)}), ``peak64`` and ``peak32`` (flop/s of
    ``cores`` cores at the best FMA width: the CPU's peak; single = 2 x
    double lanes), ``variant_peak64`` ({engine variant: double flop/s of
    ``cores`` cores at its width}: generic 128, avx2 256, avx512 512) and ``how`` (one line
    for the report), or ``{"error": reason}`` when no compiler or no x86-64
    FMA is available.
    """
    flags = _cpu_flags()
    fma = [w for w, need in ((256, {"avx2", "fma"}), (512, {"avx512f"})) if need <= flags]
    widths = ([128] if "sse2" in flags else []) + fma
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not fma:
        return {"error": "no AVX2/FMA or AVX-512 in /proc/cpuinfo"}
    if cc is None:
        return {"error": "no C compiler (set CC) to build the FMA micro-benchmark"}
    out = {}
    with tempfile.TemporaryDirectory(prefix="fma_peak_") as tmp:
        exe = os.path.join(tmp, "fma_peak")
        p = subprocess.run([cc, "-O2", SOURCE, "-o", exe], capture_output=True, text=True)
        if p.returncode != 0:
            return {"error": f"{cc} failed: {p.stderr.strip()[-200:]}"}
        for w in widths:
            p = subprocess.run([exe, str(w), str(n), str(reps)], capture_output=True, text=True,
                               timeout=600)
            try:
                rate, hz = map(float, p.stdout.split())
            except ValueError:
                return {"error": f"micro-benchmark failed: {p.stderr.strip()[-200:]}"}
            out[w] = [rate, hz, None]
    # FMA units: 256-bit from flop/cycle (2 flops x 4 lanes per unit and cycle);
    # 512-bit relative to 256-bit, because AVX-512 code may run at a lower clock
    # than the integer chain that measured it: twice the 256-bit rate per
    # unit-pair means full-width units, the same rate means 512-bit FMAs split
    # in two 256-bit halves (AMD Zen 4)
    if 256 in out:
        r, h, _ = out[256]
        out[256][2] = max(1, round(r / h / 8))
        if 512 in out:
            out[512][2] = max(1, round(out[256][2] * out[512][0] / (2 * r)))
    else:
        r, h, _ = out[512]
        out[512][2] = max(1, round(r / h / 16))
    best = max(fma, key=lambda w: out[w][0])
    rate, hz, _ = out[best]
    parts = [f"{w}-bit: {r / 1e9:.1f} GFLOP/s = {r / h:.1f} flop/cycle at {h / 1e9:.2f} GHz "
             f"(integer clock) -> {u} FMA unit{'s' if u > 1 else ''}"
             if u is not None else
             f"{w}-bit SSE2 multiply + add (no FMA): {r / 1e9:.1f} GFLOP/s = "
             f"{r / h:.1f} flop/cycle"
             for w, (r, h, u) in sorted(out.items())]
    variants = {"generic": 128, "avx2": 256, "avx512": 512}
    return {"widths": out, "best_width": best, "peak64": cores * rate, "peak32": 2 * cores * rate,
            "variant_peak64": {v: cores * out[w][0] for v, w in variants.items() if w in out},
            "how": "measured per core (FMA micro-benchmark, thread CPU time): " + "; ".join(parts)
            + (f"; 512/256-bit rate {out[512][0] / out[256][0]:.2f}"
               if 256 in out and 512 in out else "")}
