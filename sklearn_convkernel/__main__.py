"""Command line: ``python -m sklearn_convkernel demo`` (also ``sklearn-convkernel demo``).

``demo`` classifies a part of the shipped Fashion-MNIST subset with

* an RBF ``SVC`` on raw pixels (gamma and C chosen by 3-fold CV), the baseline;
* ``SVC(kernel="precomputed")`` on the exact CNTK (``kind="ntk"``) and CNN-GP
  (``kind="nngp"``) Gram matrices of a 3-layer ReLU CNN with a flatten readout
  (C chosen by 3-fold CV on the training Gram),

and prints test accuracy, wall times and kernel throughput.
"""

import argparse
import sys
import time

import numpy as np

COMMANDS = ("demo",)

N_TRAIN_MAX = 2000
N_TEST_MAX = 1000

# SVC's C on a kernel with unit mean diagonal; divided by the mean diagonal of
# the raw Gram (scaling K by a equals scaling C by a).
C_GRID_UNIT_KERNEL = (0.1, 1.0, 10.0, 100.0, 1000.0)


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sklearn_convkernel",
        description="sklearn-convkernel command line.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="Fashion-MNIST: RBF SVC baseline vs CNTK / CNN-GP kernels + SVC",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--n-train",
        type=int,
        default=500,
        help=f"training images, 10..{N_TRAIN_MAX}; multiples of 10 are class-balanced "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--n-test",
        type=int,
        default=500,
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


def _demo_architecture():
    from sklearn_convkernel.arch import Conv, Dense, Flatten, ReLU, Sequential

    return Sequential(*([Conv(3, weight_var=2.0), ReLU()] * 3), Flatten(), Dense())


def _say(message):
    print(message, flush=True)


def _fmt_seconds(t):
    return "-" if t is None else f"{t:.2f}"


def _fmt_rate(r):
    return "-" if r is None else f"{r:.3g}"


def _rbf_baseline(X_train, y_train, X_test, y_test, n_jobs):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    F_train = X_train.reshape(len(X_train), -1)
    F_test = X_test.reshape(len(X_test), -1)
    gamma0 = 1.0 / (F_train.shape[1] * F_train.var())  # SVC's gamma="scale"
    grid = {"C": [1.0, 10.0, 100.0], "gamma": [gamma0 / 3, gamma0, gamma0 * 3]}
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)

    _say("[rbf] grid search (3-fold CV) + fit + predict ...")
    t0 = time.perf_counter()
    search = GridSearchCV(SVC(kernel="rbf"), grid, cv=cv, n_jobs=n_jobs)
    search.fit(F_train, y_train)
    accuracy = search.score(F_test, y_test)
    t_fit = time.perf_counter() - t0
    best = search.best_params_
    _say(f"[rbf] done in {t_fit:.2f} s")
    return {
        "model": "RBF SVC on pixels",
        "accuracy": accuracy,
        "t_kernel": None,
        "t_fit": t_fit,
        "rate": None,
        "params": f"C={best['C']:g}, gamma={best['gamma']:.3g}",
    }


def _conv_kernel_model(
    conv_kernel, kind, label, architecture, X_train, y_train, X_test, y_test, n_jobs
):
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    n_tr, n_te = len(X_train), len(X_test)
    _say(f"[{kind}] K(train, train): {n_tr} x {n_tr} ...")
    t0 = time.perf_counter()
    K_train = conv_kernel(X_train, architecture=architecture, kind=kind, n_jobs=n_jobs)
    t1 = time.perf_counter()
    _say(f"[{kind}]   done in {t1 - t0:.2f} s")
    _say(f"[{kind}] K(test, train): {n_te} x {n_tr} ...")
    K_test = conv_kernel(X_test, X_train, architecture=architecture, kind=kind, n_jobs=n_jobs)
    t_kernel = time.perf_counter() - t0
    _say(f"[{kind}]   done in {t_kernel - (t1 - t0):.2f} s")

    K_train = np.asarray(K_train)
    K_test = np.asarray(K_test)
    if K_train.shape != (n_tr, n_tr) or K_test.shape != (n_te, n_tr):
        raise RuntimeError(
            f"conv_kernel returned shapes {K_train.shape} and {K_test.shape}, "
            f"expected {(n_tr, n_tr)} and {(n_te, n_tr)}"
        )
    if not (np.all(np.isfinite(K_train)) and np.all(np.isfinite(K_test))):
        raise RuntimeError(f"conv_kernel (kind={kind!r}) returned non-finite values")

    scale = float(np.mean(np.diag(K_train)))
    if not scale > 0:
        raise RuntimeError(f"Gram matrix (kind={kind!r}) has a non-positive mean diagonal")
    grid = {"C": [c / scale for c in C_GRID_UNIT_KERNEL]}
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)

    _say(f"[{kind}] C search (3-fold CV on the training Gram) + fit + predict ...")
    t2 = time.perf_counter()
    # SVC(kernel="precomputed") is tagged pairwise, so the CV slices K_train
    # on both axes (K_train[np.ix_(idx, idx)]).
    search = GridSearchCV(SVC(kernel="precomputed"), grid, cv=cv, n_jobs=n_jobs)
    search.fit(K_train, y_train)
    accuracy = search.score(K_test, y_test)
    t_fit = time.perf_counter() - t2
    _say(f"[{kind}]   done in {t_fit:.2f} s")

    entries = n_tr * (n_tr + 1) // 2 + n_te * n_tr
    return {
        "model": label,
        "accuracy": accuracy,
        "t_kernel": t_kernel,
        "t_fit": t_fit,
        "rate": entries / t_kernel if t_kernel > 0 else None,
        "params": f"C={search.best_params_['C'] * scale:g}/mean(diag K)",
    }


def _print_table(rows):
    header = (
        "model",
        "test acc",
        "kernel [s]",
        "fit+pred [s]",
        "total [s]",
        "kernel entries/s",
        "selected",
    )
    table = [header]
    for r in rows:
        total = r["t_fit"] + (r["t_kernel"] or 0.0)
        table.append(
            (
                r["model"],
                f"{r['accuracy']:.4f}",
                _fmt_seconds(r["t_kernel"]),
                _fmt_seconds(r["t_fit"]),
                _fmt_seconds(total),
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


def run_demo(n_train=500, n_test=500, n_jobs=-1):
    """Run the Fashion-MNIST demo and print a results table.

    Returns the list of result rows (dicts).
    """
    # Import the kernel first, so that a broken build fails before the baseline runs.
    from sklearn_convkernel import conv_kernel
    from sklearn_convkernel.datasets import load_fashion_mnist

    _check_sizes(n_train, n_test)

    X_train, y_train, X_test, y_test = load_fashion_mnist()
    X_train, y_train = X_train[:n_train], y_train[:n_train]
    X_test, y_test = X_test[:n_test], y_test[:n_test]
    architecture = _demo_architecture()

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
    _say(f"architecture: {architecture!r}")

    data = (X_train, y_train, X_test, y_test, n_jobs)
    rows = [
        _rbf_baseline(*data),
        _conv_kernel_model(conv_kernel, "ntk", "CNTK (ntk) + SVC", architecture, *data),
        _conv_kernel_model(conv_kernel, "nngp", "CNN-GP (nngp) + SVC", architecture, *data),
    ]
    print(flush=True)
    _print_table(rows)
    print(
        "\nkernel entries = n_train*(n_train+1)/2 + n_test*n_train unique Gram entries; "
        "total = kernel + CV search + fit + predict.",
        flush=True,
    )
    return rows


def main(argv=None):
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
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
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
