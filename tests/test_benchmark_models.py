"""The benchmarks' roofline helpers: the per-entry cost model and the measured FMA peak.

``benchmarks/_cost_model.py`` counts flops from the architectures alone; its
geometry must agree with the package's own shape rules, and its counts with a
hand count from the formulas in its docstring.  ``benchmarks/_peak.py``
measures the CPU's FMA throughput; it must report a consistent peak, or a
clear reason when it cannot.
"""

import importlib.util
import pathlib
import shutil

import numpy as np
import pytest

from sklearn_convkernel import arch as A
from sklearn_convkernel.presets import from_ckn_kernel

BENCH = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cm = _load("_cost_model")
peak = _load("_peak")


def test_cntk_flatten_hand_count():
    # depth 1 on a 2x2 single-channel image, 3x3 windows, diagonal path (4 pairs):
    # input 2C-1 = 1, window 2(k-1)+1 = 5 (first layer: Theta' = K' is free),
    # ReLU NTK 48, read-out 1 add per tensor (K and Theta) = 2
    c = cm.cntk(2, 2, 1, depth=1, readout="flatten", itemsize=8)
    assert c.flops == {"input": 4, "window sums": 20, "nonlinearity": 192, "pooling": 0,
                       "read-out": 8}
    # a second layer carries K and Theta: two windows plus Theta += K
    c2 = cm.cntk(2, 2, 1, depth=2, readout="flatten", itemsize=8)
    assert c2.total_flops - c.total_flops == 4 * (5 + 5 + 1 + 48)


def test_cntk_gap_is_the_flatten_count_over_all_position_pairs():
    flat = cm.cntk(7, 5, 3, depth=4, readout="flatten", itemsize=4)
    gap = cm.cntk(7, 5, 3, depth=4, readout="gap", itemsize=4)
    assert gap.total_flops == flat.total_flops * 35
    assert gap.total_bytes == flat.total_bytes * 35
    # float64 streams twice the bytes of float32, the same flops
    flat64 = cm.cntk(7, 5, 3, depth=4, readout="flatten", itemsize=8)
    assert flat64.total_bytes == 2 * flat.total_bytes
    assert flat64.total_flops == flat.total_flops
    shares = flat.breakdown()
    assert shares.startswith("input") and "pooling" not in shares


@pytest.mark.parametrize("model", [
    [{"npatch": 3, "subsampling": 2}, {"npatch": 3, "subsampling": 5}],
    [{"npatch": 5, "subsampling": 2}, {"npatch": 3, "subsampling": 3, "pooling": "average"}],
])
@pytest.mark.parametrize("side", [28, 32])
def test_ckn_sides_agree_with_the_architecture(model, side):
    net = from_ckn_kernel(model)
    # the spatial shape after each [patch conv, kernel, pool] triple of the package's network
    shapes, shape = [], (side, side)
    for layer in net.layers:
        shape = layer.output_shape(shape)
        if isinstance(layer, A._Pool):
            shapes.append(shape[0])
    assert [hp for _, hp in cm.ckn_layer_sides(side, model)] == shapes


def test_ckn_cost_counts_pairs_per_layer():
    model = [{"npatch": 3, "subsampling": 2}]
    c = cm.ckn(8, 8, 1, model, ntk=False, itemsize=4)
    # 8x8 -> gaussian pooling with subsampling 2: 3 (8 // 2 - 1) per side
    assert c.flops["input"] == 8 ** 4
    assert c.flops["window sums"] == 8 ** 4 * 2 * (3 - 1)
    assert c.flops["nonlinearity"] == 8 ** 4 * cm.EXP_NNGP
    assert c.flops["read-out"] == 3 ** 2
    with pytest.raises(ValueError, match="square"):
        cm.ckn(8, 6, 1, model, ntk=False, itemsize=4)


def test_peak_reports_a_reason_without_fma(monkeypatch):
    monkeypatch.setattr(peak, "_cpu_flags", lambda: set())
    assert "error" in peak.measure_peak(1)


def test_peak_reports_a_reason_without_a_compiler(monkeypatch):
    monkeypatch.setattr(peak, "_cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(peak.shutil, "which", lambda name: None)
    out = peak.measure_peak(1)
    assert "compiler" in out["error"]


@pytest.mark.skipif(not ({"avx2", "fma"} <= peak._cpu_flags() or "avx512f" in peak._cpu_flags())
                    or shutil.which("cc") is None, reason="needs x86-64 FMA and a C compiler")
def test_peak_is_measured_and_consistent():
    out = peak.measure_peak(2, n=200_000, reps=2)
    assert "error" not in out, out.get("error")
    rate, hz, units = out["widths"][out["best_width"]]
    # a core of any x86-64 CPU of the last decade: 1..8 FMA units, 0.5..7 GHz
    assert 1 <= units <= 8 and 5e8 < hz < 7e9
    assert out["peak64"] == pytest.approx(2 * rate)
    assert out["peak32"] == pytest.approx(2 * out["peak64"])
    assert "GFLOP/s" in out["how"]


def test_profile_parse_and_categories():
    # benchmarks/profile_workloads.py groups callgrind_annotate's per-function
    # table into the cost model's operations; a misparsed line or a rule that
    # sends the engine's functions to the wrong operation would mislabel the
    # published profile.
    prof = _load("profile_workloads")
    text = """\
--------------------------------------------------------------------------------
7,778,032 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
2,761,836 (35.51%)  build/../_ext/src/vecmath.hpp:void convkernel::avx2::Engine<float>::nonlin_apply<0>(convkernel::avx2::State<float>&, float const*, double) [clone .isra.0]
2,073,456 (26.66%)  build/../_ext/src/vecmath.hpp:void convkernel::avx2::sum_rows<float>(float const* const*, int, float*, long) [/x/_core.so]
1,019,634 (13.11%)  build/../_ext/src/dual.hpp:void convkernel::avx2::Engine<float>::nonlin_apply<0>(convkernel::avx2::State<float>&, float const*, double) [clone .isra.0]
  126,588 ( 1.63%)  ???:convkernel::avx2::Engine<float>::run(float const*, float*, bool) [/x/_core.so]
   20,000 ( 0.20%)  ???:void convkernel::avx2::wsum_rows<double>(double const* const*, double const*, long, double*, long) [/x/_core.so]
   10,000 ( 0.10%)  ???:convkernel::avx2::Engine<double>::pool_apply(long const*, double const*, double*, bool, long, long, long, long) [/x/_core.so]
"""
    costs = prof.parse_annotate(text)
    nonlin = [f for f in costs if "nonlin_apply" in f]
    assert len(nonlin) == 1 and costs[nonlin[0]] == 2_761_836 + 1_019_634
    assert sum(costs.values()) == 2_761_836 + 2_073_456 + 1_019_634 + 126_588 + 30_000
    cats = {}
    for f, c in costs.items():
        cats[prof.categorize(f)] = cats.get(prof.categorize(f), 0) + c
    assert cats == {"nonlinearity": 3_781_470, "window sums": 2_073_456, "other": 126_588,
                    "pooling": 30_000}
    for name in ("void convkernel::avx2::Engine<float>::conv_diag(float const*, float*)",
                 "convkernel::avx2::Engine<double>::conv_block_rows(long)",
                 "convkernel::avx2::Engine<float>::op_conv(long, long const*)"):
        assert prof.categorize(name) == "window sums", name
    assert prof.categorize("void convkernel::avx2::Engine<float>::block_nonlin<3>(long)") \
        == "nonlinearity"
    assert prof.categorize("void convkernel::avx2::block_sums<float>(float const**, int)") \
        == "window sums"
    assert prof.categorize("convkernel::avx2::Engine<float>::op_input_conv(long const*)") \
        == "input"


gr = _load("_grouped_ridge")


def _grouped_data(seed=0, n=60, d=7):
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, d)).astype(np.float32)
    y = rng.integers(0, 3, n)
    F[np.arange(n), y] += 1.5  # some signal
    return F, np.array(["a", "b", "c"])[y], np.arange(n) % (n // 2)  # pairs share a group


def test_grouped_ridge_equals_sklearn_ridge_classifier():
    # the final model is RidgeClassifier(alpha) on all rows (intercept, +-1 targets), computed
    # from chunked float64 sums; the held-out accuracy of every alpha is that of a plain
    # GroupKFold loop over RidgeClassifier
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import GroupKFold

    F, y, groups = _grouped_data()
    alphas = (0.01, 1.0, 30.0)
    model = gr.grouped_ridge_classifier(F, y, groups, alphas, n_folds=4, chunk=7,
                                        log=lambda *a: None)
    for alpha in alphas:
        correct = 0
        for tr, te in GroupKFold(4).split(F, y, groups):
            correct += int(np.sum(RidgeClassifier(alpha=alpha).fit(F[tr], y[tr]).predict(F[te])
                                  == y[te]))
        assert model["cv_accuracy"][alpha] == pytest.approx(correct / len(y))
    ref = RidgeClassifier(alpha=model["alpha"]).fit(F.astype(np.float64), y)
    np.testing.assert_allclose(model["coef"], ref.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model["intercept"], ref.intercept_, rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(gr.predict(model, F, chunk=5), ref.predict(F))


def test_grouped_ridge_keeps_groups_in_one_fold():
    # a row duplicated in its group must never be scored by a model trained on its twin:
    # with exact duplicates and a tiny penalty a leaky split would score ~100 %
    rng = np.random.default_rng(1)
    F = rng.standard_normal((40, 60))
    y = rng.integers(0, 2, 40)
    F2, y2 = np.concatenate([F, F]), np.concatenate([y, y])
    groups = np.concatenate([np.arange(40)] * 2)
    model = gr.grouped_ridge_classifier(F2, y2, groups, (1e-6,), n_folds=4, log=lambda *a: None)
    assert model["cv_accuracy"][1e-6] < 0.8  # random labels: about chance when not leaking
