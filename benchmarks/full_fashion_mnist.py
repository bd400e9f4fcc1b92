"""Fashion-MNIST on the full test set: exact convolutional kernels against an RBF SVC.

Training set: the first ``n`` images of the official training split
(n = 1000 and 5000), or images ``K .. K + n - 1`` with ``--train-offset K``
(to check a result on other slices); test set: all 10 000 official test images. Every
hyper-parameter is chosen by 3-fold cross-validation (``GridSearchCV``,
stratified, shuffled with seed 0) on the training images only; the selected
model is refitted on all ``n`` images and scored once on the test set.

Models (``--models``):

``rbf``
    ``SVC(kernel="rbf")`` on raw pixels, grid over ``C`` and ``gamma``.
``cnngp``
    ``CNNGPClassifier``: Garriga-Alonso et al.'s ConvNet GP (7x7
    convolutions), ``depth`` 1..7 in one pass (``max_depth=7``) x ``alpha``.
``cntk``
    ``CNTKClassifier(gap=False)``: Arora et al.'s vanilla CNTK (3x3
    convolutions, flatten read-out), ``depth`` 2..8 in one pass
    (``max_depth=8``) x ``alpha``.
``cntk-gap``
    ``CNTKClassifier(gap=True)``: the CNTK with global average pooling,
    ``depth`` 2..6 in one pass x ``alpha`` (full spatial path: ~150x the cost
    per kernel entry of ``cntk``).
``cntk-lap1``, ``cntk-lap2``
    ``CNTKClassifier(gap=False, max_shift=m)``: the vanilla CNTK with Li et
    al.'s local average pooling (``ShiftAverage(m)``: the flatten read-out
    averaged over shifts of both images by up to m pixels), ``depth`` 2..6 in
    one pass x ``alpha``; about ``(4 m + 1)**2`` times the cost of ``cntk``.
``cntk-lap1-flip``
    ``cntk-lap1`` with ``augment="hflip"`` (the kernel averaged over a
    left-right flip of one image): twice its cost.
``cntk-patches``, ``cntk-lap1-patches``
    ``cntk`` (depth 2..5) and ``cntk-lap1`` (depth 2..4) on the
    output of ``PatchFeatures(n_filters=16, patch_size=5, random_state=0)``
    (Coates et al.'s first layer: k-means patches of the whitened 5x5
    patches, triangle encoding; 16 channels).  The patch layer is
    unsupervised and is fitted once on the n training images (never on test
    images); the three CV folds share it.
``cntk-lap1-patches-flips``
    ``cntk-lap1-patches`` trained on the n images *and their left-right
    flips* (2n training images, labels repeated; data-level augmentation as
    in Li et al., applied to the pixels, before the patch layer, which is
    fitted on the 2n images).  An image and its flip always fall in the same
    CV fold (``StratifiedGroupKFold``), so no validation image has its
    mirror image in the training folds.  About 4x the search and 2x the test
    kernel of ``cntk-lap1-patches``.
``cntk-lap1-patches-hflip``
    ``cntk-lap1-patches`` with kernel-level flips: the patch layer built
    mirror-paired (``PatchFeatures(..., flip_equivariant=True)``) and the
    kernel averaged over the mirror image of one argument
    (``augment="hflip_reverse_channels"``): twice the cost per entry of
    ``cntk-lap1-patches``, against 4x the search and 2x the test kernel of
    ``cntk-lap1-patches-flips``.
``cnngp-lap1``
    ``CNNGPClassifier(max_shift=1)``: the ConvNet GP with a ``ShiftAverage(1)``
    read-out, ``depth`` 1..5 in one pass x ``alpha``.
``ckn``
    ``CKNClassifier()``: ckn_kernel's example network (2 layers, 3x3
    patches, exp kernel, Gaussian pooling 2 then 5), ``sigma`` fixed at 0.65,
    ``alpha`` searched (full spatial path: ~30x the cost per entry of
    ``cntk``).

The kernels run in float32 with ``n_jobs`` threads (default 2) and go through
a ``KernelCache``, so the whole search, its refit on all n images included,
costs about one training Gram per architecture; the kernel's progress goes to
stderr meanwhile (a line every 30 s when stderr is a log). The test kernel
(10 000 x n) is computed without the cache, in chunks, with progress output;
with a depth sweep, the refitted model predicts through its network truncated
at the selected depth (``truncated()``: the same fit, no read-outs beyond that
depth). Wall time is the whole search + refit + test prediction of one model.

``--estimate`` times the kernel of each model on a small sample and prints
the predicted wall time of the full run without running it.

Results are kept per (model, n) in ``--out`` (JSON, default
``benchmarks/results/full_fashion_mnist.json``; estimates in
``full_fashion_mnist_estimates.json``); after every model the markdown tables
of everything stored are rewritten (``benchmarks/results/full_fashion_mnist.md``)
and printed at the end.

Command lines used for the published tables (2 cores, shared machine)::

    python3 benchmarks/full_fashion_mnist.py --n 1000 5000 --models rbf
    python3 benchmarks/full_fashion_mnist.py --n 1000 --models cnngp cntk
    python3 benchmarks/full_fashion_mnist.py --n 5000 --models cntk
    python3 benchmarks/full_fashion_mnist.py --n 5000 --models cnngp
    python3 benchmarks/full_fashion_mnist.py --n 1000 5000 --models cnngp cntk ckn \\
        --estimate --sample 64
    python3 benchmarks/full_fashion_mnist.py --n 1000 --models cntk-gap --estimate --sample 64
    python3 benchmarks/full_fashion_mnist.py --n 1000 --models cntk-lap1-patches
    python3 benchmarks/full_fashion_mnist.py --n 5000 --models cntk-lap1-patches
    python3 benchmarks/full_fashion_mnist.py --n 1000 --models cntk-lap1-patches-flips
    python3 benchmarks/full_fashion_mnist.py --n 1000 --train-offset 1000 \\
        --models cntk-lap1-patches cntk-lap1-patches-flips

(``--n 1000 5000 --models rbf cnngp cntk`` runs them all in one go: about
1.5 h on 2 idle cores.) ``--table`` rewrites the markdown file from the
stored results.

Needs the full Fashion-MNIST IDX files (Debian: ``apt-get install
dataset-fashion-mnist``, or ``--data DIR``). Run it from the repository root
or anywhere else, with the package installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ALPHAS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
MODEL_ORDER = ("rbf", "cnngp", "cntk", "cntk-patches", "cntk-gap", "cntk-lap1", "cntk-lap1-flip",
               "cntk-lap1-patches", "cntk-lap1-patches-flips", "cntk-lap1-patches-hflip", "cntk-lap2", "cnngp-lap1", "ckn")
N_TEST = 10_000


def say(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------


def kernel_model(name, dtype, n_jobs):
    """(label, estimator, grid, (architecture at max_depth, kind)) of a kernel model."""
    from sklearn_convkernel import (
        CKNClassifier,
        CNNGPClassifier,
        CNTKClassifier,
        ckn_architecture,
        cnngp_architecture,
        cntk_architecture,
    )

    common = dict(dtype=dtype, n_jobs=n_jobs)
    if name == "cnngp":
        est = CNNGPClassifier(kernel_size=7, max_depth=7, **common)
        grid = {"depth": list(range(1, 8)), "alpha": ALPHAS}
        arch = cnngp_architecture(7, kernel_size=7, max_depth=7)[0], "nngp"
        return "CNN-GP (ConvNet GP, 7x7 conv)", est, grid, arch
    if name == "cntk":
        est = CNTKClassifier(gap=False, max_depth=8, **common)
        grid = {"depth": list(range(2, 9)), "alpha": ALPHAS}
        arch = cntk_architecture(8, gap=False, max_depth=8)[0], "ntk"
        return "CNTK vanilla (3x3 conv, flatten)", est, grid, arch
    if name in ("cntk-patches", "cntk-lap1-patches", "cntk-lap1-patches-flips",
                "cntk-lap1-patches-hflip"):
        m = 1 if "lap1" in name else 0
        D = 4 if m else 5  # on patch channels shallow networks win (depth 2-3 at n = 1000)
        flip = "hflip_reverse_channels" if name.endswith("-hflip") else None
        est = CNTKClassifier(gap=False, max_shift=m, max_depth=D, augment=flip, **common)
        grid = {"depth": list(range(2, D + 1)), "alpha": ALPHAS}
        arch = cntk_architecture(D, gap=False, max_depth=D, max_shift=m)[0], "ntk"
        read = f"ShiftAverage({m})" if m else "flatten"
        label = f"CNTK{'-LAP' if m else ''} (3x3 conv, {read}) on 16 k-means patch channels"
        if name.endswith("-flips"):
            label += ", trained on the images and their flips"
        if flip:
            label += ", kernel averaged over flips (mirror-paired patches)"
        return label, est, grid, arch
    if name in ("cntk-lap1", "cntk-lap1-flip", "cntk-lap2"):
        m = 2 if name == "cntk-lap2" else 1
        flip = "hflip" if name.endswith("flip") else None
        est = CNTKClassifier(gap=False, max_shift=m, max_depth=6, augment=flip, **common)
        grid = {"depth": list(range(2, 7)), "alpha": ALPHAS}
        arch = cntk_architecture(6, gap=False, max_depth=6, max_shift=m)[0], "ntk"
        label = f"CNTK-LAP (3x3 conv, ShiftAverage({m}){', flips' if flip else ''})"
        return label, est, grid, arch
    if name == "cnngp-lap1":
        est = CNNGPClassifier(kernel_size=7, max_depth=5, max_shift=1, **common)
        grid = {"depth": list(range(1, 6)), "alpha": ALPHAS}
        arch = cnngp_architecture(5, kernel_size=7, max_depth=5, max_shift=1)[0], "nngp"
        return "CNN-GP-LAP (ConvNet GP 7x7, ShiftAverage(1))", est, grid, arch
    if name == "cntk-gap":
        est = CNTKClassifier(gap=True, max_depth=6, **common)
        grid = {"depth": list(range(2, 7)), "alpha": ALPHAS}
        arch = cntk_architecture(6, gap=True, max_depth=6)[0], "ntk"
        return "CNTK-GAP (3x3 conv, global avg pool)", est, grid, arch
    if name == "ckn":
        est = CKNClassifier(**common)
        grid = {"alpha": ALPHAS}
        arch = ckn_architecture()[0], "nngp"
        return "CKN (exp, 2 layers, Gaussian pooling)", est, grid, arch
    raise ValueError(f"unknown model {name!r}; choose from {MODEL_ORDER}")


def preprocessor(name):
    """The unsupervised image transformer a model runs on, or None for pixels."""
    if "-patches" not in name:
        return None
    from sklearn_convkernel import PatchFeatures

    return PatchFeatures(n_filters=16, patch_size=5, random_state=0,
                         flip_equivariant=name.endswith("-hflip"))


def describe(params):
    parts = []
    for k in sorted(params):
        v = params[k]
        parts.append(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


def cv_splitter(grouped=False):
    """3 stratified shuffled folds (seed 0); grouped: an image and its flip share a fold."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if grouped:
        return StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
    return StratifiedKFold(n_splits=3, shuffle=True, random_state=0)


def with_flips(X, y):
    """The images followed by their left-right flips (NHWC), labels and groups repeated."""
    n = len(X)
    return (np.concatenate([X, X[:, :, ::-1]]), np.concatenate([y, y]),
            np.concatenate([np.arange(n), np.arange(n)]))


def run_rbf(X_train, y_train, X_test, y_test, n_jobs):
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    F_train = X_train.reshape(len(X_train), -1).astype(np.float64)
    F_test = X_test.reshape(len(X_test), -1).astype(np.float64)
    gamma0 = 1.0 / (F_train.shape[1] * F_train.var())  # SVC's gamma="scale"
    grid = {"C": [1.0, 3.0, 10.0, 30.0, 100.0],
            "gamma": [gamma0 / 4, gamma0 / 2, gamma0, gamma0 * 2, gamma0 * 4]}
    t0 = time.perf_counter()
    # no kernel cache here, so the search itself may run in parallel
    search = GridSearchCV(SVC(kernel="rbf"), grid, cv=cv_splitter(), n_jobs=n_jobs)
    search.fit(F_train, y_train)
    t_search = time.perf_counter() - t0
    acc = search.score(F_test, y_test)
    wall = time.perf_counter() - t0
    best = search.best_params_
    return {
        "label": "RBF SVC on pixels (baseline)",
        "params": f"C={best['C']:g}, gamma={best['gamma'] / gamma0:g} x scale",
        "cv_accuracy": float(search.best_score_),
        "accuracy": float(acc),
        "wall_s": wall,
        "search_s": t_search,
        "test_s": wall - t_search,
    }


def run_kernel(name, X_train, y_train, X_test, y_test, dtype, n_jobs, chunk):
    from sklearn.model_selection import GridSearchCV

    from sklearn_convkernel import KernelCache

    label, est, grid, _ = kernel_model(name, dtype, n_jobs)
    groups = None
    if name.endswith("-flips"):
        X_train, y_train, groups = with_flips(X_train, y_train)
        say(f"[{name}] training set augmented with left-right flips: {len(X_train)} images")
    n = len(X_train)
    pre, pre_s = preprocessor(name), 0.0
    if pre is not None:
        t_pre = time.perf_counter()
        X_train = pre.fit(X_train).transform(X_train).astype(np.float32)
        X_test = pre.transform(X_test).astype(np.float32)
        say(f"[{name}] {type(pre).__name__} fitted on the {n} training images and applied to "
            f"both sets in {time.perf_counter() - t_pre:.0f} s: input {X_train.shape[1:]}")
        pre_s = time.perf_counter() - t_pre
    # The cache's store holds one square matrix per read-out over the images
    # seen, whose side grows by doubling: 4n/3 here (two folds, then the
    # third).  Its room check counts every requested image as new and the
    # side as doubling again, so it asks for a budget of up to (4n)^2 entries
    # per read-out before it bypasses the cache (which would recompute the
    # held-out kernels for every candidate): give it that budget (only the
    # 4n/3 side is ever allocated).
    n_out = len(grid.get("depth", [1])) + 1
    item = np.dtype(dtype).itemsize
    cache = KernelCache(max_bytes=max(2 * 1024**3, (4 * n) ** 2 * (n_out * item + 1)))
    # verbose: the kernel's progress on stderr (the cache fills of the first
    # folds hold nearly all of the search's time), a line every 30 s in a log
    est.set_params(cache=cache, verbose=1)
    n_cand = int(np.prod([len(v) for v in grid.values()]))
    say(f"[{name}] {label}: 3-fold CV over {n_cand} candidates on {n} images "
        f"({describe({k: f'{v[0]}..{v[-1]}' for k, v in grid.items()})}; kernel progress "
        "on stderr) ...")
    t0 = time.perf_counter()
    search = GridSearchCV(est, grid, cv=cv_splitter(grouped=groups is not None), refit=True)
    search.fit(X_train, y_train, groups=groups)
    t_search = time.perf_counter() - t0
    say(f"[{name}]   search done in {t_search:.0f} s ({cache.computed_pairs_} pairs computed; "
        f"one Gram has {n * (n - 1) // 2}); best {describe(search.best_params_)}, "
        f"CV accuracy {search.best_score_:.4f}")

    # The test kernel: 10 000 x n entries, without the cache (whose store would
    # grow to (n + 10 000)^2 entries per read-out). The search's refit took its
    # Gram from the cache, but with a depth sweep its network runs to
    # max_depth; when the selected depth is smaller, the same fit on the
    # network truncated there (truncated(): nothing recomputed) predicts.
    best = search.best_estimator_
    params = search.best_params_
    if "depth" in params and params["depth"] < est.max_depth:
        say(f"[{name}]   test kernel by the network truncated at depth {params['depth']} "
            f"(no read-outs up to {est.max_depth}; the fit from the search's cache)")
        best = best.truncated()
    best.set_params(cache=None, verbose=0)
    t1 = time.perf_counter()
    correct = 0
    for start in range(0, len(X_test), chunk):
        stop = min(start + chunk, len(X_test))
        correct += int(np.sum(best.predict(X_test[start:stop]) == y_test[start:stop]))
        el = time.perf_counter() - t1
        eta = el / stop * (len(X_test) - stop)
        say(f"[{name}]   test kernel {stop}/{len(X_test)} images, {el:.0f} s elapsed, "
            f"~{eta:.0f} s left, running accuracy {correct / stop:.4f}")
    t_test = time.perf_counter() - t1
    wall = time.perf_counter() - t0 + pre_s  # the patch layer's fit and transform included
    return {
        "label": label,
        "params": describe(params),
        "cv_accuracy": float(search.best_score_),
        "accuracy": correct / len(X_test),
        "wall_s": wall,
        "search_s": t_search,
        "test_s": t_test,
        "test_entries_per_s": len(X_test) * n / t_test,
    }


def estimate(name, X_train, X_test, n, dtype, n_jobs, sample):
    """Predicted wall time of the full run of a kernel model, from a small sample."""
    from sklearn_convkernel import conv_kernel

    label, _, _, (arch, kind) = kernel_model(name, dtype, n_jobs)
    Xs, Ys = X_train[:sample], X_test[:sample]
    pre = preprocessor(name)
    if pre is not None:
        pre.fit(X_train[:n])
        Xs, Ys = pre.transform(Xs).astype(np.float32), pre.transform(Ys).astype(np.float32)
    t0 = time.perf_counter()
    conv_kernel(Ys, Xs, architecture=arch, kind=kind, dtype=dtype, n_jobs=n_jobs)
    dt = time.perf_counter() - t0
    rate = sample * sample / dt
    if name.endswith(("-flip", "-hflip")):  # flip averaging: every entry is two pair passes
        rate /= 2
    m = 2 * n if name.endswith("-flips") else n  # trained on the images and their flips
    entries = m * (m - 1) / 2 + N_TEST * m
    return {
        "model": name,
        "label": label,
        "n": n,
        "sample": sample,
        "rate": rate,
        "entries": entries,
        "predicted_s": entries / rate,
        "load_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


# ---------------------------------------------------------------------------
# results table
# ---------------------------------------------------------------------------


def fmt_time(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _order(r):
    return (r["n"], r.get("offset", 0),
            MODEL_ORDER.index(r["model"]) if r["model"] in MODEL_ORDER else 99)


def write_table(store, estimates, md_path):
    """Write the markdown file (results, then cost estimates) and return the results table."""
    lines = [
        "| model | n train | selected (3-fold CV on the n training images) | CV acc. | "
        "test acc. (10 000) | wall time (2 cores) | test kernel entries/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted(store.values(), key=_order):
        rate = r.get("test_entries_per_s")
        k0 = r.get("offset", 0)
        lines.append(
            f"| {r['label']} | {r['n']}{f' (from {k0})' if k0 else ''} | {r['params']} | {r['cv_accuracy']:.4f} | "
            f"**{r['accuracy']:.4f}** | {fmt_time(r['wall_s'])} | "
            f"{'-' if rate is None else f'{rate:,.0f}'} |"
        )
    text = "\n".join(lines) + "\n"
    md = [
        "# Fashion-MNIST, full test set\n",
        "Generated by `benchmarks/full_fashion_mnist.py` (its docstring has the exact command "
        "lines). Training set: the first n images of the official training split; test set: "
        "the 10 000 official test images. Hyper-parameters chosen by 3-fold cross-validation "
        "on the training images only. Kernels in float32 with 2 threads; wall time = search + "
        "refit + test prediction, on 2 cores; wall times vary with the machine's load and "
        "the engine version (`version` and the date of each row are in the JSON file).\n",
        text,
    ]
    if estimates:
        md.append(
            "Kernel throughput (`--estimate`: the cross kernel of s training and s test images, "
            "2 threads; the 1-min load average at the end) and the predicted wall time of a "
            "full run (one training Gram + the 10 000 x n test kernel):\n"
        )
        md.append("| model | n train | s | entries/s | load | kernel entries | predicted time |")
        md.append("|---|---:|---:|---:|---:|---:|---:|")
        for e in sorted(estimates.values(), key=_order):
            load = e.get("load_1min")
            md.append(
                f"| {e['label']} | {e['n']} | {e['sample']} | {e['rate']:,.0f} | "
                f"{'-' if load is None else f'{load:.1f}'} | {e['entries'] / 1e6:.1f}M | "
                f"{fmt_time(e['predicted_s'])} |"
            )
        md.append("")
    md_path.write_text("\n".join(md))
    return text


def _load(path):
    """Stored rows keyed by (model, n); accepts a list of rows."""
    if not path.exists():
        return {}
    return {(r["model"], r["n"], r.get("offset", 0)): r for r in json.loads(path.read_text())}


def _save(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(rows.values(), key=_order), indent=1) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the models and the command lines.",
    )
    parser.add_argument("--n", type=int, nargs="+", default=[1000],
                        help="training set sizes (default: 1000)")
    parser.add_argument("--models", nargs="+", default=["rbf", "cnngp", "cntk"],
                        choices=MODEL_ORDER, help="models to run (default: rbf cnngp cntk)")
    parser.add_argument("--n-jobs", type=int, default=2, help="kernel threads (default: 2)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--n-test", type=int, default=N_TEST,
                        help="test images (default: all 10000; fewer only for smoke tests, "
                        "whose results are not stored)")
    parser.add_argument("--train-offset", type=int, default=0,
                        help="train on official training images K .. K+n-1 (default: 0)")
    parser.add_argument("--chunk", type=int, default=1000,
                        help="test images per prediction chunk (progress output)")
    parser.add_argument("--estimate", action="store_true",
                        help="only time each kernel model on a small sample and predict the "
                        "wall time of the full run")
    parser.add_argument("--sample", type=int, default=40,
                        help="sample size of --estimate (default: 40)")
    parser.add_argument("--data", default=None, help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--out", default=str(RESULTS_DIR / "full_fashion_mnist.json"),
                        help="JSON store of the results (the estimates go to *_estimates.json "
                        "and the .md tables next to it)")
    parser.add_argument("--table", action="store_true",
                        help="only rewrite and print the markdown tables from the stored results")
    args = parser.parse_args(argv)

    out = Path(args.out)
    est_path = out.with_name(out.stem + "_estimates.json")
    md_path = out.with_suffix(".md")
    store, estimates = _load(out), _load(est_path)
    if args.table:
        say(write_table(store, estimates, md_path))
        return 0

    from sklearn_convkernel import __version__
    from sklearn_convkernel.datasets import load_fashion_mnist

    X, y, X_test, y_test = load_fashion_mnist(subset=False, path=args.data, dtype=np.float32)
    X_test, y_test = X_test[: args.n_test], y_test[: args.n_test]
    say(f"sklearn-convkernel {__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, n_jobs={args.n_jobs}, dtype={args.dtype}")
    say(f"Fashion-MNIST: training sizes {args.n}, {len(X_test)} test images")

    if args.estimate:
        for n in args.n:
            for name in args.models:
                if name == "rbf":
                    continue
                e = estimate(name, X, X_test, n, args.dtype, args.n_jobs, args.sample)
                say(f"[{name}] n={n}: {e['rate']:.0f} entries/s on a {args.sample}x"
                    f"{args.sample} sample; {e['entries'] / 1e6:.1f}M entries (one training "
                    f"Gram + the test kernel) -> about {fmt_time(e['predicted_s'])}")
                if len(X_test) == N_TEST:
                    estimates[(name, n, 0)] = e
        _save(est_path, estimates)
        write_table(store, estimates, md_path)
        return 0

    for n in args.n:
        k0 = args.train_offset
        if k0 < 0 or k0 + n > len(X):
            parser.error(f"--train-offset {k0} with n = {n} needs images {k0}..{k0 + n - 1}; "
                         f"the training split has {len(X)}")
        Xn, yn = X[k0:k0 + n], y[k0:k0 + n]
        say(f"\n=== n = {n}, training images {k0}..{k0 + n - 1} "
            f"(classes {np.bincount(yn, minlength=10).tolist()}) ===")
        for name in args.models:
            if name == "rbf":
                say("[rbf] RBF SVC: 3-fold CV over C x gamma ...")
                row = run_rbf(Xn, yn, X_test, y_test, args.n_jobs)
            else:
                row = run_kernel(name, Xn, yn, X_test, y_test, args.dtype, args.n_jobs,
                                 args.chunk)
            row.update(model=name, n=n, offset=k0, n_test=len(X_test), dtype=args.dtype,
                       n_jobs=args.n_jobs, version=__version__,
                       date=time.strftime("%Y-%m-%d %H:%M"))
            say(f"[{name}] n={n}: test accuracy {row['accuracy']:.4f}, wall time "
                f"{fmt_time(row['wall_s'])} ({row['params']})")
            if len(X_test) != N_TEST:
                say("(smoke test on a part of the test set: not stored)")
                continue
            # re-read the store: another run may have added rows meanwhile
            store = _load(out)
            store[(name, n, k0)] = row
            _save(out, store)
            write_table(store, _load(est_path), md_path)
    store = _load(out)
    if store:
        say("\n" + write_table(store, _load(est_path), md_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
