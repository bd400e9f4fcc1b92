"""
====================================================
Accuracy on the full Fashion-MNIST test set, plotted
====================================================

The benchmark scripts record every result they measure as JSON next to the
tables of the README: ``benchmarks/full_fashion_mnist.py`` (exact kernels
trained on the first ``n`` official training images, hyper-parameters chosen
by 3-fold cross-validation on those images only),
``benchmarks/full_dataset_nystroem.py`` (all 60 000 training images through
:class:`~sklearn_convkernel.ConvNystroem` and a ridge classifier, one kernel
between the images and ``M`` landmarks shared by every ``m <= M`` of the
curve) and ``benchmarks/supervised_ckn.py`` (the CKN's Nyström features,
:class:`~sklearn_convkernel.CKNFeatures`, and a ridge classifier whose
penalty is chosen by leave-one-out on the training images, up to all 60 000;
:class:`~sklearn_convkernel.SupervisedCKNClassifier`).  Every accuracy is on
the 10 000 official test images.

This example only reads those files (it computes nothing: the runs take from
minutes to hours on two cores; their commands are in the scripts' docstrings)
and plots

* test accuracy against the number of training images, for the RBF SVC
  baseline, the exact convolutional kernels and the CKN features (dashed),
  with the published RBF SVC on all 60 000 images for reference (89.7 %, the
  Fashion-MNIST benchmark);
* test accuracy of the Nyström route against the number of landmarks;
* test accuracy against the shift of Li et al.'s local average pooling
  (``ShiftAverage(max_shift)``; 0 is the flatten read-out) with 1 000
  training images, on pixels and on 16 k-means patch channels
  (``PatchFeatures``), with the RBF SVC for reference.
"""

# %%
import json
from pathlib import Path


def find_results():
    """benchmarks/results from the repository root or from examples/."""
    for base in (Path("benchmarks/results"), Path("../benchmarks/results")):
        if (base / "full_fashion_mnist.json").exists():
            return base
    return None


base = find_results()
exact, nystroem, ckn = [], [], []
if base is None:
    print("benchmarks/results not found: run this example from a clone of the repository")
else:
    exact = json.loads((base / "full_fashion_mnist.json").read_text())
    path = base / "full_dataset_nystroem.jsonl"
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        nystroem = [r for r in rows if r.get("evaluation") == "test"]
    path = base / "ckn_fashion_mnist.jsonl"
    if path.exists():
        ckn = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ckn_curves(rows):
    """{label: [(n_train, test accuracy)]} of the CKN rows run with default options.

    A (model, network, n) measured more than once keeps its latest row.
    """
    latest = {}
    for r in rows:
        if r["options"]:
            continue
        name = "CKNFeatures + ridge" if r["model"] == "ckn-features" else "supervised CKN"
        label = f"{name}, n_filters={tuple(r['n_filters'])}"
        latest[(label, r["n_train"])] = r["accuracy"]
    out = {}
    for (label, n), acc in sorted(latest.items()):
        out.setdefault(label, []).append((n, acc))
    return out


cknc = ckn_curves(ckn)

curves = {}
for r in exact:
    if not r.get("offset"):  # rows on other training slices are checks, not curve points
        curves.setdefault(r["label"], []).append((r["n"], r["accuracy"]))
for label, points in sorted(curves.items()):
    print(f"{label:45s} " + "  ".join(f"n={n}: {acc:.4f}" for n, acc in sorted(points)))
for label, points in cknc.items():
    print(f"{label:45s} " + "  ".join(f"n={n}: {acc:.4f}" for n, acc in points))
for r in sorted(nystroem, key=lambda r: r["n_components"]):
    print(f"ConvNystroem {r['architecture']} {r['kind']}, n={r['n_train']}, "
          f"m={r['n_components']}: {r['accuracy']:.4f}")

# %%
# The figures
# -----------
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed: skipping the figure")

#: (model key of full_fashion_mnist.py, read-out shift) per input representation
SHIFT_SERIES = {
    "pixels": (("cntk", 0), ("cntk-lap1", 1), ("cntk-lap2", 2)),
    "16 k-means patch channels": (("cntk-patches", 0), ("cntk-lap1-patches", 1)),
}


def shift_curves(rows, n=1000):
    """{series: [(max_shift, test accuracy)]} of the CNTKs trained on the first n images."""
    acc = {r["model"]: r["accuracy"] for r in rows if r["n"] == n and not r.get("offset")}
    return {name: [(m, acc[key]) for key, m in keys if key in acc]
            for name, keys in SHIFT_SERIES.items()}


shifts = shift_curves(exact)
for name, points in shifts.items():
    print(f"CNTK on {name}, n=1000: " + "  ".join(f"max_shift={m}: {a:.4f}" for m, a in points))

if plt is not None and exact:
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 6.5), layout="constrained")
    for label, points in sorted(curves.items()):
        n, acc = zip(*sorted(points))
        ax1.plot(n, acc, "o-", label=label)
    for label, points in cknc.items():
        n, acc = zip(*points)
        ax1.plot(n, acc, "s--", label=label)
    if nystroem:
        best = max(nystroem, key=lambda r: r["n_components"])
        ax1.plot([best["n_train"]], [best["accuracy"]], "*", markersize=12,
                 label=f"CNTK via ConvNystroem, m={best['n_components']}")
    ax1.plot([60000], [0.897], "kx", markersize=9, label="RBF SVC, 60 000 (published)")
    ax1.set_xscale("log")
    ax1.set_xlabel("training images")
    ax1.set_ylabel("test accuracy (10 000 images)")
    # many curves: the legend goes below the axes
    ax1.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax1.grid(alpha=0.3)
    if nystroem:
        by_arch = {}
        for r in nystroem:
            by_arch.setdefault(f"{r['architecture']} {r['kind']}", []).append(
                (r["n_components"], r["accuracy"]))
        for label, points in by_arch.items():
            m, acc = zip(*sorted(points))
            ax2.plot(m, acc, "o-", label=label)
        ax2.axhline(0.897, color="k", linestyle=":", label="RBF SVC, 60 000 (published)")
        ax2.set_xscale("log")
        ax2.set_xlabel("landmarks m (n_components)")
        ax2.set_ylabel("test accuracy")
        ax2.set_title("all 60 000 training images, ConvNystroem + ridge", fontsize=9)
        ax2.legend(fontsize=7)
        ax2.grid(alpha=0.3)
    for name, points in shifts.items():
        if points:
            m, acc = zip(*points)
            ax3.plot(m, acc, "o-", label=f"CNTK on {name}")
    rbf = [r["accuracy"] for r in exact if r["model"] == "rbf" and r["n"] == 1000]
    if rbf:
        ax3.axhline(rbf[0], color="k", linestyle=":", label="RBF SVC on pixels")
    ax3.set_xticks([0, 1, 2])
    ax3.set_xlabel("max_shift of ShiftAverage (0: flatten read-out)")
    ax3.set_ylabel("test accuracy")
    ax3.set_title("1 000 training images, depth and alpha by 3-fold CV", fontsize=9)
    ax3.legend(fontsize=7)
    ax3.grid(alpha=0.3)
    plt.show()
