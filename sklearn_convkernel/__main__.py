"""Command line: ``sklearn-convkernel COMMAND`` (also ``python -m sklearn_convkernel COMMAND``).

gram computes an exact kernel matrix from .npy files into a resumable store
(see sklearn_convkernel._gram_cli).

info prints the version and the engine variant the compiled core runs on this
machine, with the per-variant micro-benchmark behind the choice (see
sklearn_convkernel._simd).

demo classifies a part of the shipped Fashion-MNIST subset with the most
accurate exact kernel that fits a time budget, next to the RBF baseline:

- an RBF SVC on raw pixels (gamma and C chosen by 3-fold CV), the baseline;
- the first of these kernels, most accurate first, whose estimated time fits
  --budget (the cheapest if none fits):
  CNTK-LAP, Li et al.'s CNTK with local average pooling
  (presets.li_lap(depth=5, max_shift=1); 85.2 % on the full Fashion-MNIST
  test set with 1000 training images), and the vanilla CNTK
  (cntk_architecture(depth=6, gap=False); 82.4 %, RBF 81.5 %).
  Each candidate's time is estimated from a small timed kernel matrix and
  the number of kernel entries the run needs; the output says which fits
  and why.  The chosen kernel's ridge regulariser is chosen by 3-fold CV
  (kernel entries are shared across folds and candidates by the kernel
  cache), with progress bars on stderr while it computes.

It prints test accuracy, wall time and kernel throughput.  With fewer than
3 training images per class the folds shrink to 2, and with one image per
class the hyper-parameters stay at their defaults (no CV).
"""

import argparse
import os
import sys
import time

import numpy as np

COMMANDS = ("demo", "gram", "info")
INFO_HELP = "version, CPU and the compiled engine variant this machine runs (and why)"

N_TRAIN_MAX = 2000
N_TEST_MAX = 1000
DEFAULT_BUDGET = 120.0
HEARTBEAT = 5.0  # seconds between "still working" lines of a stage without a progress bar

DEMO_EXAMPLE = "demo --n-train 400 --n-test 400 --budget 60"

#: Test accuracy on the 10 000 official Fashion-MNIST test images with the first
#: 1000 training images, hyper-parameters by 3-fold CV on those
#: (benchmarks/results/full_fashion_mnist.md): the ranking of the demo's kernels.
KNOWN_ACCURACY = {"rbf": 0.8148, "cntk-lap": 0.8517, "cntk": 0.8242}


def _prog_name():
    """The command as the user typed it (for usage lines and examples)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("__main__.py", "-m", "-c", ""):
        return "python -m sklearn_convkernel"
    if name.startswith("sklearn-convkernel") or name.startswith("sklearn_convkernel"):
        return name
    return "sklearn-convkernel"


def _build_parser(prog=None):
    from sklearn_convkernel import __version__
    from sklearn_convkernel._gram_cli import GRAM_EXAMPLE, GRAM_HELP, add_gram_parser

    prog = _prog_name() if prog is None else prog
    demo_help = ("Fashion-MNIST: RBF SVC baseline vs the most accurate exact kernel "
                 "that fits a time budget")
    epilog = "commands:\n" + "".join(
        f"  {name:<6}{help_}\n          example: {prog} {example}\n"
        for name, help_, example in (("demo", demo_help, DEMO_EXAMPLE),
                                     ("gram", GRAM_HELP, GRAM_EXAMPLE),
                                     ("info", INFO_HELP, "info"))
    ) + f"\n'{prog} COMMAND --help' describes a command's options."
    parser = argparse.ArgumentParser(
        prog=prog,
        description="sklearn-convkernel command line: exact convolutional kernels.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_gram_parser(sub, prog)
    sub.add_parser("info", help=INFO_HELP, description=INFO_HELP + ".")
    demo = sub.add_parser(
        "demo",
        help=demo_help,
        description=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--n-train",
        type=int,
        default=400,
        help=f"training images, 10..{N_TRAIN_MAX}; multiples of 10 are class-balanced "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--n-test",
        type=int,
        default=400,
        help=f"test images, 1..{N_TEST_MAX} (default: %(default)s)",
    )
    demo.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        metavar="SECONDS",
        help="time allowed for the exact-kernel model (search + fit + prediction); the "
        "demo runs the most accurate kernel whose estimated time fits it "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--n-jobs",
        type=int,
        default=-1,
        help="parallel jobs for the kernels and the CV searches; -1 = all cores "
        "(default: %(default)s)",
    )
    return parser


def run_info():
    """Print the version, the CPU and the engine variant's choice; return the exit status."""
    import platform

    from sklearn_convkernel import __version__
    from sklearn_convkernel._core import simd_report
    from sklearn_convkernel._simd import cpu_model_and_flags, format_report

    try:
        report = simd_report()
    except ValueError as exc:  # an unknown SKLEARN_CONVKERNEL_SIMD
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _say(f"sklearn-convkernel {__version__}; python {platform.python_version()}, "
         f"numpy {np.__version__}")
    _say(f"CPU: {cpu_model_and_flags()[0]}")
    _say(format_report(report))
    return 0


def _say(message):
    print(message, flush=True)


def _fmt_seconds(t):
    return "-" if t is None else f"{t:.2f}"


def _fmt_rate(r):
    return "-" if r is None else f"{r:.3g}"


def _folds(y):
    """Stratified folds for the CV searches: 3, fewer when a class has fewer
    images, None (no search) when a class has a single image."""
    from sklearn.model_selection import StratifiedKFold

    k = min(3, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
    return None if k < 2 else StratifiedKFold(n_splits=k, shuffle=True, random_state=0)


def _search_text(cv):
    return "defaults (1 image per class: no CV)" if cv is None else (
        f"search ({cv.n_splits}-fold CV)")


class _Heartbeat:
    """Prints ``[label] still working, T s elapsed`` every ``every`` seconds until closed
    (for stages that have no progress bar of their own)."""

    def __init__(self, label, every=HEARTBEAT):
        import threading

        self.label, self.every = label, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.perf_counter()
        while not self._stop.wait(self.every):
            _say(f"[{self.label}]   still working, {time.perf_counter() - t0:.0f} s elapsed")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _rbf_baseline(X_train, y_train, X_test, y_test, n_jobs):
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    F_train = X_train.reshape(len(X_train), -1)
    F_test = X_test.reshape(len(X_test), -1)
    gamma0 = 1.0 / (F_train.shape[1] * F_train.var())  # SVC's gamma="scale"
    grid = {"C": [1.0, 10.0, 100.0], "gamma": [gamma0 / 3, gamma0, gamma0 * 3]}
    cv = _folds(y_train)

    _say(f"[rbf] {_search_text(cv)} + fit + predict ...")
    t0 = time.perf_counter()
    with _Heartbeat("rbf"):
        if cv is None:
            search = SVC(kernel="rbf", C=10.0, gamma=gamma0).fit(F_train, y_train)
            best = {"C": 10.0, "gamma": gamma0}
        else:
            search = GridSearchCV(SVC(kernel="rbf"), grid, cv=cv, n_jobs=n_jobs)
            search.fit(F_train, y_train)
            best = search.best_params_
        accuracy = search.score(F_test, y_test)
    t_fit = time.perf_counter() - t0
    _say(f"[rbf] done in {t_fit:.2f} s: test accuracy {accuracy:.4f}")
    return {
        "model": "RBF SVC on pixels",
        "accuracy": accuracy,
        "t_fit": t_fit,
        "rate": None,
        "params": f"C={best['C']:g}, gamma={best['gamma']:.3g}",
    }


def _candidates():
    """The demo's exact kernels, most accurate first: dicts with "key", "label",
    "code" (how to build it), "architecture" (an NTK architecture)."""
    from sklearn_convkernel import cntk_architecture
    from sklearn_convkernel.presets import li_lap

    return [
        {"key": "cntk-lap", "label": "CNTK-LAP, depth 5",
         "code": "presets.li_lap(depth=5, max_shift=1)", "architecture": li_lap(5, 1)},
        {"key": "cntk", "label": "CNTK vanilla, depth 6",
         "code": "cntk_architecture(depth=6, gap=False)",
         "architecture": cntk_architecture(6, gap=False)[0]},
    ]


def _entries_needed(n_train, n_test):
    """Kernel entries of a cached CV search + refit + prediction: the training
    Gram's upper triangle (its diagonal included) and the test kernel."""
    return n_train * (n_train + 1) // 2 + n_test * n_train


def _entry_rate(architecture, images, n_jobs, min_seconds=0.2):
    """Kernel entries per second (wall clock) of an NTK, from a small timed matrix
    ``K(images[:8], images[8:8 + m])``, m doubled from 8 until the call takes
    ``min_seconds`` (past the fixed costs) or the images run out."""
    from sklearn_convkernel import conv_kernel

    def timed(m):
        t0 = time.perf_counter()
        conv_kernel(images[:8], images[8:8 + m], architecture=architecture, kind="ntk",
                    dtype="float32", n_jobs=n_jobs)
        return time.perf_counter() - t0

    timed(2)  # warm-up: compilation of the architecture, thread pool
    m = 8
    while True:
        seconds = timed(m)
        if seconds >= min_seconds or 8 + 2 * m > len(images):
            return 8 * m / max(seconds, 1e-9)
        m *= 2


def _choose(candidates, rates, entries, budget):
    """Index of the first (most accurate) candidate whose estimated time
    ``entries / rate`` fits ``budget``, else of the fastest; with the
    estimated times and one line of reasons per candidate."""
    estimates = [entries / r for r in rates]
    fits = [i for i, t in enumerate(estimates) if t <= budget]
    chosen = fits[0] if fits else int(np.argmin(estimates))
    reasons = []
    for i, (c, t) in enumerate(zip(candidates, estimates)):
        verdict = "fits the budget" if t <= budget else "over the budget"
        if i == chosen:
            verdict += " -> chosen" if fits else ", the fastest -> chosen (nothing fits)"
        elif t <= budget:
            verdict += ", less accurate"
        reasons.append(
            f"  {c['label']:<22} known {100 * KNOWN_ACCURACY[c['key']]:.1f} %  "
            f"{entries} entries at {rates[i]:.3g} entries/s = ~{t:.0f} s: {verdict}")
    return chosen, estimates, reasons


def _estimator_model(label, estimator, X_train, y_train, X_test, y_test, n_jobs):
    from sklearn.model_selection import GridSearchCV

    from sklearn_convkernel import KernelCache

    cache = KernelCache()
    estimator.set_params(cache=cache, n_jobs=n_jobs, verbose=1)
    cv = _folds(y_train)
    if cv is None:
        search = estimator
    else:
        search = GridSearchCV(estimator, {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}, cv=cv)
    _say(f"[{label}] alpha {_search_text(cv)} + fit + predict (progress bars on stderr) ...")
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    t_fit = time.perf_counter() - t0
    alpha = estimator.alpha if cv is None else search.best_params_["alpha"]
    # unique kernel entries computed: off-diagonal pairs + one self pass per image
    entries = cache.computed_pairs_ + len(X_train) + len(X_test)
    _say(f"[{label}] done in {t_fit:.2f} s ({entries} kernel entries): "
         f"test accuracy {accuracy:.4f}")
    return {
        "model": label,
        "accuracy": accuracy,
        "t_fit": t_fit,
        "rate": entries / t_fit if t_fit > 0 else None,
        "params": f"alpha={alpha:g}",
    }


def _print_table(rows):
    header = (
        "model",
        "n train",
        "test acc",
        "fit+pred [s]",
        "kernel entries/s",
        "selected",
    )
    table = [header]
    for r in rows:
        table.append(
            (
                r["model"],
                str(r["n_train"]),
                f"{r['accuracy']:.4f}",
                _fmt_seconds(r["t_fit"]),
                _fmt_rate(r["rate"]),
                r["params"],
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for k, row in enumerate(table):
        cells = [
            cell.ljust(w) if i in (0, len(row) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    print("\n".join(lines), flush=True)


def _check_sizes(n_train, n_test, budget=DEFAULT_BUDGET):
    if not 10 <= n_train <= N_TRAIN_MAX:
        raise ValueError(f"n_train must be in 10..{N_TRAIN_MAX}, got {n_train}")
    if not 1 <= n_test <= N_TEST_MAX:
        raise ValueError(f"n_test must be in 1..{N_TEST_MAX}, got {n_test}")
    if not budget > 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget}")


def run_demo(n_train=400, n_test=400, n_jobs=-1, budget=DEFAULT_BUDGET):
    """Run the Fashion-MNIST demo and print a results table.

    Returns the list of result rows (dicts): the RBF baseline, then the
    chosen kernel (its row also holds "estimate", the predicted seconds, and
    "candidates", the candidates' labels with their estimated seconds).
    """
    # Import the estimators first, so that a broken build fails before the baseline runs.
    from sklearn_convkernel import CNTKClassifier
    from sklearn_convkernel.datasets import load_fashion_mnist

    _check_sizes(n_train, n_test, budget)

    X_all, y_all, X_test, y_test = load_fashion_mnist()
    X_train, y_train = X_all[:n_train], y_all[:n_train]
    X_test, y_test = X_test[:n_test], y_test[:n_test]

    try:
        from sklearn_convkernel import __version__ as version
    except ImportError:
        version = "?"
    _say(f"sklearn-convkernel {version}: Fashion-MNIST demo")
    _say(
        f"data: shipped subset, {n_train} train / {n_test} test images of 28x28x1, "
        f"classes per train split {np.bincount(y_train, minlength=10).tolist()}"
    )
    _say(f"n_jobs: {n_jobs}; budget for the exact kernel: {budget:g} s")

    rows = [_rbf_baseline(X_train, y_train, X_test, y_test, n_jobs)]

    candidates = _candidates()
    entries = _entries_needed(n_train, n_test)
    _say(f"[choose] timing a small kernel matrix of each candidate (most accurate first; "
         f"known: test accuracy with 1000 training images on the full test set, RBF "
         f"{100 * KNOWN_ACCURACY['rbf']:.1f} %) ...")
    rates = [_entry_rate(c["architecture"], X_all, n_jobs) for c in candidates]
    chosen, estimates, reasons = _choose(candidates, rates, entries, budget)
    for line in reasons:
        _say(line)
    best = candidates[chosen]
    _say(f"[choose] {best['label']} = CNTKClassifier(architecture={best['code']}): "
         + ("the most accurate kernel whose estimated time fits the budget"
            if estimates[chosen] <= budget else
            "no candidate fits the budget, so the fastest one")
         + " (--budget SECONDS changes the choice)")

    estimator = CNTKClassifier(architecture=best["architecture"], dtype="float32")
    row = _estimator_model(best["label"], estimator, X_train, y_train, X_test, y_test, n_jobs)
    row["estimate"] = estimates[chosen]
    row["candidates"] = [(c["label"], t) for c, t in zip(candidates, estimates)]
    rows.append(row)
    _say(f"[{best['label']}] estimated ~{estimates[chosen]:.0f} s, took {row['t_fit']:.0f} s")
    for r in rows:
        r["n_train"] = n_train
    print(flush=True)
    _print_table(rows)
    print(
        "\nkernel entries: unique kernel values computed (the cache shares them across "
        "CV folds and candidates); fit+pred: the whole CV search, refit and prediction.",
        flush=True,
    )
    return rows


def main(argv=None, prog=None):
    """Entry point of ``sklearn-convkernel``; returns the exit status."""
    parser = _build_parser(prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    if argv and argv[0] == "--version":
        parser.parse_args(argv[:1])  # prints the version and exits 0
    if not argv or argv[0] not in COMMANDS:
        parser.print_usage(sys.stderr)
        if argv:
            print(f"{parser.prog}: unknown command {argv[0]!r}", file=sys.stderr)
        else:
            print(f"{parser.prog}: a command is required ({', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "demo":
        try:
            _check_sizes(args.n_train, args.n_test, args.budget)
        except ValueError as exc:
            parser.error(str(exc))  # exits 2
        run_demo(n_train=args.n_train, n_test=args.n_test, n_jobs=args.n_jobs,
                 budget=args.budget)
        return 0
    if args.command == "gram":
        from sklearn_convkernel._gram_cli import run_gram

        return run_gram(args, parser.prog)
    if args.command == "info":
        return run_info()
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
