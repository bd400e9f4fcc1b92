"""Command line: ``sklearn-convkernel COMMAND`` (also ``python -m sklearn_convkernel COMMAND``).

gram computes an exact kernel matrix from .npy files into a resumable store
(see sklearn_convkernel._gram_cli).

demo classifies a part of the shipped Fashion-MNIST subset with

- an RBF SVC on raw pixels (gamma and C chosen by 3-fold CV), the baseline;
- the package's exact-kernel estimators: a CKN (ckn_kernel's README network:
  2 layers, 3x3 patches, exp kernel, Gaussian pooling 2 then 5; on at most
  400 training images, as it costs ~50x more per entry), a CNTK (Arora
  et al.'s vanilla CNTK, depth 4) and a CNN-GP (Garriga-Alonso et al.'s
  ConvNet GP: 7 layers of 7x7 convolutions), each with its ridge
  regulariser chosen by 3-fold CV (kernel entries are shared across folds and
  candidates by the kernel cache),

and prints test accuracy, wall time and kernel throughput.  With fewer than
3 training images per class the folds shrink to 2, and with one image per
class the hyper-parameters stay at their defaults (no CV).
"""

import argparse
import os
import sys
import time

import numpy as np

COMMANDS = ("demo", "gram")

N_TRAIN_MAX = 2000
N_TEST_MAX = 1000
N_TRAIN_CKN = 400


DEMO_EXAMPLE = "demo --n-train 400 --n-test 400"


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
    demo_help = "Fashion-MNIST: RBF SVC baseline vs CKN / CNTK / CNN-GP exact-kernel models"
    epilog = "commands:\n" + "".join(
        f"  {name:<6}{help_}\n          example: {prog} {example}\n"
        for name, help_, example in (("demo", demo_help, DEMO_EXAMPLE),
                                     ("gram", GRAM_HELP, GRAM_EXAMPLE))
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
        "--n-jobs",
        type=int,
        default=-1,
        help="parallel jobs for the kernels and the CV searches; -1 = all cores "
        "(default: %(default)s)",
    )
    return parser


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
    if cv is None:
        search = SVC(kernel="rbf", C=10.0, gamma=gamma0).fit(F_train, y_train)
        best = {"C": 10.0, "gamma": gamma0}
    else:
        search = GridSearchCV(SVC(kernel="rbf"), grid, cv=cv, n_jobs=n_jobs)
        search.fit(F_train, y_train)
        best = search.best_params_
    accuracy = search.score(F_test, y_test)
    t_fit = time.perf_counter() - t0
    _say(f"[rbf] done in {t_fit:.2f} s")
    return {
        "model": "RBF SVC on pixels",
        "accuracy": accuracy,
        "t_kernel": None,
        "t_fit": t_fit,
        "rate": None,
        "params": f"C={best['C']:g}, gamma={best['gamma']:.3g}",
    }


def _estimator_model(label, estimator, X_train, y_train, X_test, y_test, n_jobs):
    from sklearn.model_selection import GridSearchCV

    from sklearn_convkernel import KernelCache

    cache = KernelCache()
    estimator.set_params(cache=cache, n_jobs=n_jobs, verbose=0)
    cv = _folds(y_train)
    if cv is None:
        search = estimator
    else:
        search = GridSearchCV(estimator, {"alpha": [1e-4, 1e-3, 1e-2, 1e-1]}, cv=cv)
    _say(f"[{label}] alpha {_search_text(cv)} + fit + predict ...")
    t0 = time.perf_counter()
    search.fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    t_fit = time.perf_counter() - t0
    alpha = estimator.alpha if cv is None else search.best_params_["alpha"]
    # unique kernel entries computed: off-diagonal pairs + one self pass per image
    entries = cache.computed_pairs_ + len(X_train) + len(X_test)
    _say(f"[{label}]   done in {t_fit:.2f} s ({entries} kernel entries)")
    return {
        "model": label,
        "accuracy": accuracy,
        "t_kernel": None,
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


def _check_sizes(n_train, n_test):
    if not 10 <= n_train <= N_TRAIN_MAX:
        raise ValueError(f"n_train must be in 10..{N_TRAIN_MAX}, got {n_train}")
    if not 1 <= n_test <= N_TEST_MAX:
        raise ValueError(f"n_test must be in 1..{N_TEST_MAX}, got {n_test}")


def run_demo(n_train=400, n_test=400, n_jobs=-1):
    """Run the Fashion-MNIST demo and print a results table.

    Returns the list of result rows (dicts).
    """
    # Import the estimators first, so that a broken build fails before the baseline runs.
    from sklearn_convkernel import CKNClassifier, CNNGPClassifier, CNTKClassifier
    from sklearn_convkernel.datasets import load_fashion_mnist

    _check_sizes(n_train, n_test)

    X_train, y_train, X_test, y_test = load_fashion_mnist()
    X_train, y_train = X_train[:n_train], y_train[:n_train]
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
    _say(f"n_jobs: {n_jobs}")

    data = (X_train, y_train, X_test, y_test, n_jobs)
    # the exact CKN keeps full tensors over pairs of positions at 28 x 28 (its
    # Gaussian pooling mixes positions): ~50x the cost per entry of the others,
    # so it trains on fewer images
    n_ckn = min(n_train, N_TRAIN_CKN)
    models = [
        ("CNTK vanilla, depth 4", CNTKClassifier(depth=4, gap=False), n_train),
        ("CNN-GP ConvNet, 7 layers 7x7", CNNGPClassifier(), n_train),
        ("CKN exp, 2 layers (float32)", CKNClassifier(dtype="float32"), n_ckn),
    ]
    rows = [_rbf_baseline(*data)]
    rows[0]["n_train"] = n_train
    for label, est, n in models:
        row = _estimator_model(label, est, X_train[:n], y_train[:n], X_test, y_test, n_jobs)
        row["n_train"] = n
        rows.append(row)
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
            _check_sizes(args.n_train, args.n_test)
        except ValueError as exc:
            parser.error(str(exc))  # exits 2
        run_demo(n_train=args.n_train, n_test=args.n_test, n_jobs=args.n_jobs)
        return 0
    if args.command == "gram":
        from sklearn_convkernel._gram_cli import run_gram

        return run_gram(args, parser.prog)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
