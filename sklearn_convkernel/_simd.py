"""Which compiled engine variant a process runs, and why.

The core is compiled once per instruction set (``generic``: the x86-64
baseline; ``avx2``: AVX2 + FMA; ``avx512``: AVX-512 F/DQ/VL/BW), and every
program names the variant its passes run with
(``_core.CompiledProgram(..., variant=...)``).  This module picks the
variant of a process, once, on the core's first use:

1. ``SKLEARN_CONVKERNEL_SIMD=generic|avx2|avx512`` forces one (the widest
   supported one at or below it); ``isa`` takes the widest supported one
   without measuring (the order of the instruction sets, the behaviour of
   versions before the measurement).
2. Otherwise (unset, empty or ``auto``) the fastest variant of a short
   micro-benchmark (:func:`measure`: pair tiles of depth-3 ReLU networks on
   small images, with full spatial covariances, slab by slab and layer by
   layer, and with spatial diagonals only; float32 and float64; best of
   several repetitions on the thread's CPU clock), measured **once per machine** and
   cached in a small JSON file.  The widest variant is kept unless another
   one is faster by more than ``MARGIN`` (:func:`choose_variant`).

Stability: variants may differ in the last bits of a kernel (rounding), so
the choice must not change from one run to the next on the same machine.
Hence the cache: a decision is used only once it is stored, is never
measured again while its file is valid, and the file is keyed by everything
the decision depends on (CPU model and flags, package version, a hash of the
compiled core, the supported variants and the micro-benchmark's version).
Its name is a hash of that key (machines sharing a home directory keep one
file each); a file that is unreadable, too large, of another format or key,
or whose stored timings do not give its stored variant is ignored and
replaced.  When no file can be written there, the process takes the widest
variant (as ``isa``) rather than a per-process measurement, so that all
processes of a machine agree.  Of processes measuring at the same time the
first to store its file wins and the others adopt it.  A pickled program
keeps the variant it was built with (where the unpickling CPU runs it), so
the processes of one computation agree even when their environments differ;
on a CPU without it, it runs with that process's variant, with a warning
(:func:`fallback_advice`), and the tasks of ``_gram`` report the variant they
ran with to the calling process, which warns too (and a Gram store records it).

The cache directory is ``$SKLEARN_CONVKERNEL_CACHE_DIR``, else
``$XDG_CACHE_HOME/sklearn_convkernel``, else ``~/.cache/sklearn_convkernel``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import threading
import time

import numpy as np

__all__ = ["process_variant", "simd_report", "choose_variant", "measure", "decide",
           "cache_dir", "cpu_model_and_flags", "machine_key", "read_cache", "write_cache",
           "requested_variant", "fallback_advice"]

ENV_SIMD = "SKLEARN_CONVKERNEL_SIMD"
ENV_CACHE_DIR = "SKLEARN_CONVKERNEL_CACHE_DIR"

#: A narrower variant replaces the widest one only when it is faster by more
#: than this fraction (geometric mean over the micro-benchmark's cases).
MARGIN = 0.05

#: Timed repetitions per variant and case (after one untimed warm-up); the best counts.
REPEATS = 5

#: Bumped whenever the micro-benchmark (its cases, REPEATS) or the decision
#: rule changes (part of the cache key).
BENCHMARK_VERSION = 2

_FORMAT = "sklearn-convkernel simd choice"
_MAX_FILE_BYTES = 1 << 16
_AUTO = ("", "auto")
_ISA = "isa"

_LOCK = threading.Lock()
_DECISION = None  # the process's report, once decided


def _core():
    from sklearn_convkernel import _core
    return _core


# ---------------------------------------------------------------- the request


def requested_variant(environ=None):
    """The request of ``SKLEARN_CONVKERNEL_SIMD``: "auto", "isa" or a variant name.

    Raises
    ------
    ValueError
        For any other value, naming the variable and its accepted values.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get(ENV_SIMD, "")
    value = raw.strip().lower()
    if value in _AUTO:
        return "auto"
    if value == _ISA or value in _core().VARIANTS:
        return value
    raise ValueError(
        f"{ENV_SIMD}={raw!r} is not understood: unset it or use 'auto' (the fastest "
        f"variant, measured once per machine), 'isa' (the widest variant this CPU runs, "
        f"without measuring) or one of {', '.join(_core().VARIANTS)} (that variant, or "
        f"the widest supported one below it).")


def fallback_advice(requested, used):
    """What a program running with ``used`` instead of ``requested`` means, and the fix.

    The one text of both warnings of such a fallback: the worker's
    (``_core._restore_program``, unpickling on a CPU without ``requested``)
    and the calling process's (``_gram.VariantCheck``, told by the tasks).
    """
    return (
        f"{used!r} may round differently from {requested!r} in the last bits, so the "
        "processes of one computation no longer agree bit for bit. Run every worker on "
        f"CPUs with the same instruction sets, or set {ENV_SIMD} to a variant all of them "
        "run (e.g. generic or avx2) in the process that starts the computation (a Gram "
        "store keeps the variant it was started with: start a new one)."
    )


# ---------------------------------------------------------------- the rule


def choose_variant(variants, times, margin=MARGIN):
    """The variant to run, from measured times.

    Parameters
    ----------
    variants : sequence of str
        The supported variants in instruction-set order (widest last).
    times : dict
        ``{variant: {case: seconds}}`` for every variant, over the same cases.
    margin : float, default=MARGIN

    Returns
    -------
    variant : str
        The widest variant unless another one's score is below ``1 - margin``;
        then the one of lowest score (the wider one of equal scores).
    scores : dict
        ``{variant: score}``: the geometric mean over the cases of the time
        relative to the widest variant's (1.0 for the widest).
    """
    variants = list(variants)
    widest = variants[-1]
    base = times[widest]
    scores = {v: math.exp(sum(math.log(times[v][c] / base[c]) for c in base) / len(base))
              for v in variants}
    best = widest
    for v in reversed(variants):  # widest first: of equal scores the wider stays
        if scores[v] < scores[best]:
            best = v
    if scores[best] >= 1.0 - margin:
        best = widest
    return best, scores


# ---------------------------------------------------------------- the micro-benchmark


def _cases():
    """The micro-benchmark's networks: name -> (architecture, image shape, kind, images)."""
    from sklearn_convkernel.arch import (AvgPool, Conv, Dense, Flatten, GlobalAvgPool, ReLU,
                                         Sequential)

    def relu3(readout, pool=()):
        return Sequential(Conv(3, weight_var=2.0), ReLU(), *pool, Conv(3, weight_var=2.0),
                          ReLU(), Conv(3, weight_var=2.0), ReLU(), readout, Dense())

    return {
        # full spatial covariances, slab by slab (the CNTK / CNN-GP with GAP)
        "full": (relu3(GlobalAvgPool()), (8, 8, 1), "ntk", 4),
        # full spatial covariances, layer by layer (a pool between convolutions)
        "pooled": (relu3(GlobalAvgPool(), [AvgPool(2)]), (8, 8, 1), "ntk", 4),
        # spatial diagonals only (Flatten read-out)
        "diagonal": (relu3(Flatten()), (16, 16, 1), "ntk", 8),
    }


def measure(variants, repeats=REPEATS):
    """Time a pair tile per variant, case and dtype on this thread's CPU clock.

    Each case (see ``_cases``: a depth-3 ReLU NTK read out by global average
    pooling, full spatial covariances, on 8 x 8 images and, with a 2 x 2
    average pool after the first layer; and by a flatten
    read-out on 16 x 16 images, spatial diagonals) runs its pair tile in
    float32 and float64, once untimed and ``repeats`` times timed, the
    variants interleaved (alternating order), keeping each one's best time.

    Returns
    -------
    dict
        ``{variant: {"<case>-<dtype>": seconds}}``.
    """
    from sklearn_convkernel._plan import make_plan

    core = _core()
    variants = list(variants)
    rng = np.random.default_rng(0)
    # the thread's CPU clock (other processes' load does not count), unless it is coarse
    clock = time.thread_time
    if time.get_clock_info("thread_time").resolution > 1e-6:
        clock = time.perf_counter
    times = {v: {} for v in variants}
    for name, (architecture, shape, kind, n) in _cases().items():
        plan = make_plan(architecture, shape, kind=kind)
        H, W, C = plan.input_shape
        progs = {v: core.CompiledProgram(plan.ops, plan.fops, plan.blob_i, plan.blob_f, H, W, C,
                                         plan.tape_len, plan.n_outputs, plan.kind == "ntk",
                                         variant=v)
                 for v in variants}
        for dtype in (np.float32, np.float64):
            X = rng.standard_normal((n, H * W * C)).astype(dtype)
            tapes = np.empty((n, plan.tape_len), dtype=dtype)
            self_out = np.empty((n, plan.n_outputs), dtype=dtype)
            progs[variants[-1]].self_pass(X, tapes, self_out)
            out = np.empty((plan.n_outputs, n, n), dtype=dtype)
            best = dict.fromkeys(variants, math.inf)
            for rep in range(repeats + 1):
                for v in (variants if rep % 2 else variants[::-1]):
                    t0 = clock()
                    progs[v].pair_tile(X, tapes, 0, X, tapes, 0, out, False)
                    dt = clock() - t0
                    if rep:
                        best[v] = min(best[v], dt)
            for v in variants:
                # the thread clock may tick coarsely: never a zero time
                times[v][f"{name}-{np.dtype(dtype).name}"] = max(best[v], 1e-9)
    return times


# ---------------------------------------------------------------- the cache


def cache_dir(environ=None):
    """The directory of the cached choice (see the module docstring), or None."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_CACHE_DIR):
        return environ[ENV_CACHE_DIR]
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if base.startswith("~"):  # no home directory to expand
        return None
    return os.path.join(base, "sklearn_convkernel")


def cpu_model_and_flags():
    """The CPU's model name and its sorted flags (from /proc/cpuinfo on Linux).

    The model falls back to :func:`platform.processor` / :func:`platform.machine`
    ("unknown" at worst); the flags are "" where /proc/cpuinfo is missing.
    """
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not model and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif not flags and line.startswith("flags"):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                if model and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine() or "unknown", flags


def _file_hash(path):
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return "unreadable"
    return h.hexdigest()


def machine_key(variants):
    """What a cached choice depends on: CPU, package, compiled core, variants, benchmark."""
    from sklearn_convkernel import __version__

    model, flags = cpu_model_and_flags()
    return {
        "cpu": model,
        "cpu_flags": hashlib.blake2b(flags.encode(), digest_size=16).hexdigest(),
        "package": __version__,
        "core": _file_hash(_core().__file__),
        "variants": list(variants),
        "benchmark": BENCHMARK_VERSION,
        "margin": MARGIN,
    }


def cache_path(directory, key):
    """The file of ``key``'s choice in ``directory``."""
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=8)
    return os.path.join(directory, f"simd-{digest.hexdigest()}.json")


def _valid_times(times, variants):
    if not isinstance(times, dict) or sorted(times) != sorted(variants):
        return False
    cases = None
    for per_case in times.values():
        if not isinstance(per_case, dict) or not per_case:
            return False
        if cases is None:
            cases = sorted(per_case)
        if sorted(per_case) != cases:
            return False
        for t in per_case.values():
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                    0 < t < math.inf):
                return False
    return True


def read_cache(path, key):
    """The stored record at ``path`` if it is a valid choice for ``key``, else None.

    Valid: a JSON object of this format and exactly this key, whose timings
    cover every variant of the key over the same cases with positive finite
    seconds, and whose variant is what :func:`choose_variant` makes of them.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            return None
        record = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        return None
    if record.get("key") != key:
        return None
    variants = key["variants"]
    times = record.get("times")
    if not _valid_times(times, variants):
        return None
    if record.get("variant") != choose_variant(variants, times, key["margin"])[0]:
        return None
    return record


def write_cache(path, key, times):
    """Store the choice made of ``times`` at ``path``; return the record now stored there.

    The first valid file wins: an existing valid file (another process's) is
    kept and returned; an invalid one is replaced.  Returns None when the
    file cannot be written.
    """
    variant, _ = choose_variant(key["variants"], times, key["margin"])
    record = {"format": _FORMAT, "key": key, "variant": variant, "times": times,
              "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    directory = os.path.dirname(path)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(directory, exist_ok=True)
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True)
        try:
            os.link(tmp, path)  # atomic, and only if no file is there yet
        except FileExistsError:
            if read_cache(path, key) is None:
                os.replace(tmp, path)  # an invalid file: replaced
        except OSError:  # a file system without hard links
            if read_cache(path, key) is None:
                os.replace(tmp, path)
    except OSError:
        return None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return read_cache(path, key)


def _can_write(directory):
    probe = os.path.join(directory, f".probe.{os.getpid()}.{threading.get_ident()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "w"):
            pass
        os.unlink(probe)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- the decision


def decide(variants=None, environ=None, measure=measure, directory=None):
    """Choose the engine variant; return the report (see :func:`simd_report`).

    Parameters
    ----------
    variants : sequence of str, optional
        The supported variants in instruction-set order (default: the core's).
    environ : mapping, optional
        The environment to read (default ``os.environ``).
    measure : callable, optional
        ``measure(variants) -> {variant: {case: seconds}}`` (tests inject timings).
    directory : str, optional
        The cache directory (default :func:`cache_dir`).
    """
    variants = list(_core().simd_variants() if variants is None else variants)
    environ = os.environ if environ is None else environ
    request = requested_variant(environ)
    report = {"variant": variants[-1], "source": "isa-order", "reason": "",
              "request": request, "supported": list(variants), "times": None, "scores": None,
              "margin": MARGIN, "cache_file": None}
    if request not in ("auto", _ISA):
        order = _core().VARIANTS
        below = [v for v in variants if order.index(v) <= order.index(request)]
        chosen = below[-1] if below else variants[0]
        report.update(variant=chosen, source="forced", reason=f"{ENV_SIMD}={request}" + (
            "" if chosen == request
            else f", which this CPU or build does not run: {chosen}, the widest below it"))
        return report
    if request == _ISA:
        report["reason"] = f"{ENV_SIMD}=isa: the widest variant this CPU runs, not measured"
        return report
    if len(variants) == 1:
        report["reason"] = "the only variant this CPU runs"
        return report
    directory = cache_dir(environ) if directory is None else directory
    if directory is None:
        report["reason"] = "no cache directory (no home; set " + ENV_CACHE_DIR + "): not measured"
        return report
    key = machine_key(variants)
    path = cache_path(directory, key)
    report["cache_file"] = path
    record = read_cache(path, key)
    if record is not None:
        report.update(variant=record["variant"], source="cached", times=record["times"],
                      scores=choose_variant(variants, record["times"])[1],
                      reason=f"measured on {record.get('measured', '?')}, read from the cache")
        return report
    if not _can_write(directory):
        report.update(cache_file=None,
                      reason=f"cache directory {directory} not writable (set {ENV_CACHE_DIR}): "
                             "not measured, so that every process agrees")
        return report
    times = measure(variants)
    record = write_cache(path, key, times)
    if record is None:
        report.update(cache_file=None, times=times, scores=choose_variant(variants, times)[1],
                      reason=f"measured but the cache {path} could not be written: not used, "
                             "so that every process agrees")
        return report
    mine = record["times"] == json.loads(json.dumps(times))
    report.update(variant=record["variant"], source="measured" if mine else "cached",
                  times=record["times"], scores=choose_variant(variants, record["times"])[1],
                  reason="measured now and cached" if mine
                  else "another process measured and cached it first")
    return report


def process_variant():
    """The engine variant of this process (decided on the first call, then fixed)."""
    global _DECISION
    if _DECISION is None:
        with _LOCK:
            if _DECISION is None:
                _DECISION = decide()
    return _DECISION["variant"]


def simd_report():
    """What engine variant this process runs, and why.

    Returns
    -------
    dict
        ``variant`` (the chosen one), ``source`` ("forced" by
        ``SKLEARN_CONVKERNEL_SIMD``, "cached", "measured" now, or "isa-order":
        the widest supported one, when not measured), ``reason`` (one
        sentence), ``request`` (the variable's value: "auto", "isa" or a
        variant), ``supported`` (the variants this CPU runs, instruction-set
        order), ``times`` (``{variant: {case: seconds}}`` of the
        micro-benchmark, or None), ``scores`` (per variant, its time relative
        to the widest one's, geometric mean over the cases, or None),
        ``margin`` and ``cache_file`` (the cache file used, or None).
    """
    process_variant()
    return json.loads(json.dumps(_DECISION))  # a copy


def format_report(report):
    """The report as a few lines of text (for benchmarks and the command line)."""
    lines = [f"engine variant: {report['variant']} ({report['source']}: {report['reason']})",
             f"supported: {', '.join(report['supported'])}"]
    if report["times"]:
        cases = sorted(next(iter(report["times"].values())))
        lines.append(f"micro-benchmark: pair tile, ms of thread CPU time, best of {REPEATS}; "
                     f"score = geometric mean of the times relative to {report['supported'][-1]}'s")
        lines += [f"  {v:<8} " + ", ".join(f"{c} {1e3 * report['times'][v][c]:.3g}"
                                           for c in cases)
                  + f"; score {report['scores'][v]:.3f}" for v in report["supported"]]
    if report["cache_file"]:
        lines.append(f"cache: {report['cache_file']}")
    return "\n".join(lines)
