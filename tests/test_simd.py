"""Choice of the engine variant: the margin rule, the per-machine cache, the override.

Timings are injected (no timing assertions); the one real micro-benchmark
test checks only the shape of its result.
"""

import json
import os
import pickle
import warnings

import numpy as np
import pytest

from sklearn_convkernel import _core, _simd
from sklearn_convkernel._plan import make_plan
from sklearn_convkernel.arch import Conv, Dense, GlobalAvgPool, ReLU, Sequential

THREE = ["generic", "avx2", "avx512"]


def _times(**scale):
    """Timings of two cases, each variant's scaled from 1 ms / 3 ms."""
    return {v: {"full-float32": 1e-3 * s, "diagonal-float64": 3e-3 * s}
            for v, s in scale.items()}


class _Measure:
    """An injected micro-benchmark: returns fixed timings and counts its calls."""

    def __init__(self, times):
        self.times, self.calls = times, 0

    def __call__(self, variants):
        self.calls += 1
        return {v: dict(self.times[v]) for v in variants}


def _never(variants):
    raise AssertionError("measured although it should not have")


@pytest.mark.parametrize("scale, expected", [
    (dict(generic=1.2, avx2=1.0), "avx2"),
    (dict(generic=0.96, avx2=1.0), "avx2"),     # faster, but within the margin
    (dict(generic=0.94, avx2=1.0), "generic"),  # faster by more than 5 %
    (dict(generic=1.0, avx2=1.0), "avx2"),      # a tie keeps the instruction-set order
])
def test_margin_rule(scale, expected):
    variant, scores = _simd.choose_variant(["generic", "avx2"], _times(**scale))
    assert variant == expected
    assert scores["avx2"] == pytest.approx(1.0)
    assert scores["generic"] == pytest.approx(scale["generic"])


def test_rule_over_three_variants_and_cases():
    # avx2 and generic both beat avx512 by 20 %: of the equal ones the wider wins
    assert _simd.choose_variant(THREE, _times(generic=0.8, avx2=0.8, avx512=1))[0] == "avx2"
    assert _simd.choose_variant(THREE, _times(generic=0.7, avx2=0.8, avx512=1))[0] == "generic"
    # the score is a geometric mean over cases: 2x faster on one, 2x slower on the other ties
    times = {"avx2": {"a": 1.0, "b": 1.0}, "generic": {"a": 0.5, "b": 2.0}}
    variant, scores = _simd.choose_variant(["generic", "avx2"], times)
    assert variant == "avx2" and scores["generic"] == pytest.approx(1.0)


def test_measured_once_then_cached(tmp_path):
    fake = _Measure(_times(generic=0.5, avx2=1.0, avx512=0.9))
    first = _simd.decide(THREE, {}, measure=fake, directory=str(tmp_path))
    assert (first["variant"], first["source"], fake.calls) == ("generic", "measured", 1)
    assert os.path.dirname(first["cache_file"]) == str(tmp_path)
    assert first["scores"]["generic"] == pytest.approx(0.5 / 0.9)
    again = _simd.decide(THREE, {}, measure=_never, directory=str(tmp_path))
    assert (again["variant"], again["source"]) == ("generic", "cached")
    assert again["times"] == first["times"]
    # another machine (other variants) has a file of its own
    other = _simd.decide(["generic", "avx2"], {}, measure=_Measure(_times(generic=2, avx2=1)),
                         directory=str(tmp_path))
    assert (other["variant"], other["source"]) == ("avx2", "measured")
    assert other["cache_file"] != first["cache_file"]
    assert _simd.decide(THREE, {}, measure=_never, directory=str(tmp_path))["variant"] == "generic"


def _stored(tmp_path, variants, times):
    report = _simd.decide(variants, {}, measure=_Measure(times), directory=str(tmp_path))
    with open(report["cache_file"]) as fh:
        return report["cache_file"], json.load(fh)


def _tamper(record):
    record["variant"] = "avx2"  # the timings say generic
    return json.dumps(record)


def _foreign(record):
    record["key"]["cpu"] = "another CPU"
    return json.dumps(record)


def _bad_time(record):
    record["times"]["avx2"]["full-float32"] = -1.0
    return json.dumps(record)


def _missing_variant(record):
    del record["times"]["avx2"]
    return json.dumps(record)


@pytest.mark.parametrize("corrupt", [
    lambda record: "{not json",
    lambda record: "\xff\xfe garbage",
    lambda record: json.dumps([1, 2, 3]),
    lambda record: json.dumps(dict(record, format="something else")),
    lambda record: json.dumps(record) + " " * (1 << 16),  # too large
    _tamper, _foreign, _bad_time, _missing_variant,
], ids=["truncated", "binary", "list", "format", "large", "tampered", "foreign", "bad-time",
        "missing-variant"])
def test_corrupt_or_foreign_cache_is_ignored_and_rewritten(tmp_path, corrupt):
    variants = ["generic", "avx2"]
    path, record = _stored(tmp_path, variants, _times(generic=0.5, avx2=1.0))
    with open(path, "w", encoding="latin-1") as fh:
        fh.write(corrupt(record))
    key = _simd.machine_key(variants)
    assert _simd.read_cache(path, key) is None
    fake = _Measure(_times(generic=1.0, avx2=0.5))
    report = _simd.decide(variants, {}, measure=fake, directory=str(tmp_path))
    assert (report["variant"], report["source"], fake.calls) == ("avx2", "measured", 1)
    assert _simd.read_cache(path, key)["variant"] == "avx2"


def test_first_stored_choice_wins(tmp_path):
    variants = ["generic", "avx2"]
    key = _simd.machine_key(variants)
    path = _simd.cache_path(str(tmp_path), key)
    first = _simd.write_cache(path, key, _times(generic=0.5, avx2=1.0))
    second = _simd.write_cache(path, key, _times(generic=1.0, avx2=0.5))
    assert first["variant"] == second["variant"] == "generic"
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temporary left


def test_unwritable_cache_keeps_the_isa_order(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    report = _simd.decide(["generic", "avx2"], {}, measure=_never,
                          directory=str(blocker / "cache"))
    assert (report["variant"], report["source"], report["cache_file"]) == (
        "avx2", "isa-order", None)
    assert "not writable" in report["reason"]
    assert _simd.write_cache(str(blocker / "x.json"), _simd.machine_key(["generic", "avx2"]),
                             _times(generic=1, avx2=1)) is None


def test_cache_directory_from_the_environment(tmp_path):
    assert _simd.cache_dir({_simd.ENV_CACHE_DIR: str(tmp_path)}) == str(tmp_path)
    assert _simd.cache_dir({"XDG_CACHE_HOME": "/x"}) == os.path.join("/x", "sklearn_convkernel")
    report = _simd.decide(["generic", "avx2"], {_simd.ENV_CACHE_DIR: str(tmp_path / "c")},
                          measure=_Measure(_times(generic=1, avx2=1)))
    assert report["cache_file"].startswith(str(tmp_path / "c"))


@pytest.mark.parametrize("value, variants, expected, source", [
    ("generic", THREE, "generic", "forced"),
    (" AVX2 ", THREE, "avx2", "forced"),
    ("avx512", ["generic", "avx2"], "avx2", "forced"),  # the widest one below it
    ("isa", THREE, "avx512", "isa-order"),
    ("auto", ["generic"], "generic", "isa-order"),      # nothing to measure
])
def test_environment_override(tmp_path, value, variants, expected, source):
    report = _simd.decide(variants, {_simd.ENV_SIMD: value}, measure=_never,
                          directory=str(tmp_path))
    assert (report["variant"], report["source"]) == (expected, source)
    assert os.listdir(tmp_path) == []


def test_unknown_environment_value_is_a_clear_error():
    with pytest.raises(ValueError, match="SKLEARN_CONVKERNEL_SIMD='sse9'.*isa.*generic"):
        _simd.decide(["generic", "avx2"], {_simd.ENV_SIMD: "sse9"}, measure=_never)


def test_chosen_variant_is_supported():
    supported = _core.simd_variants()
    assert supported[0] == "generic"
    assert list(supported) == list(_core.VARIANTS[:len(supported)])
    report = _core.simd_report()
    assert _core.simd_variant() == report["variant"]
    assert report["variant"] in supported and report["supported"] == list(supported)
    assert report["source"] in ("forced", "cached", "measured", "isa-order")
    assert report["variant"] in _simd.format_report(report)


ARCH = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3), ReLU(), GlobalAvgPool(), Dense())


def _program(plan, variant=None):
    H, W, C = plan.input_shape
    return _core.CompiledProgram(plan.ops, plan.fops, plan.blob_i, plan.blob_f, H, W, C,
                                 plan.tape_len, plan.n_outputs, plan.kind == "ntk",
                                 variant=variant)


def test_program_runs_the_variant_it_asks_for():
    plan = make_plan(ARCH, (6, 5, 2), kind="ntk")
    assert _program(plan).variant == _core.simd_variant()
    for variant in set(_core.VARIANTS) - set(_core.simd_variants()) | {"sse9"}:
        with pytest.raises(ValueError, match="not an engine variant this CPU runs"):
            _program(plan, variant)
    X = np.random.default_rng(0).standard_normal((3, 60))
    ref = None
    for variant in _core.simd_variants():
        prog = _program(plan, variant)
        assert prog.variant == variant
        assert pickle.loads(pickle.dumps(prog)).variant == variant
        tapes, self_out = np.empty((3, plan.tape_len)), np.empty((3, plan.n_outputs))
        prog.self_pass(X, tapes, self_out)
        out = np.zeros((plan.n_outputs, 3, 3))
        prog.pair_tile(X, tapes, 0, X, tapes, 0, out, False)
        np.testing.assert_allclose(np.diag(out[0]), self_out[:, 0], rtol=1e-13)
        if ref is not None:
            np.testing.assert_allclose(out, ref, rtol=1e-13)
        ref = out


def test_a_program_unpickled_on_a_cpu_without_its_variant_falls_back_with_a_warning(
        monkeypatch):
    here = _core.simd_variant()
    others = [v for v in _core.simd_variants() if v != here]
    if not others:
        pytest.skip("this CPU runs a single engine variant")
    plan = make_plan(ARCH, (6, 5, 2), kind="ntk")
    sent = pickle.dumps(_program(plan, others[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none while the CPU runs the variant
        assert pickle.loads(sent).variant == others[0]
    # a worker whose CPU lacks the variant: its own one, and a warning saying so and the fix
    monkeypatch.setattr(_core, "simd_variants",
                        lambda: tuple(v for v in _core.VARIANTS if v != others[0]))
    with pytest.warns(UserWarning, match=rf"does not run the '{others[0]}' engine variant") as w:
        prog = pickle.loads(sent)
    assert prog.variant == here
    message = str(w[0].message)
    assert f"runs with '{here}' instead" in message
    assert "same instruction sets" in message and "SKLEARN_CONVKERNEL_SIMD" in message


def test_micro_benchmark_covers_every_variant_and_case():
    times = _simd.measure(_core.simd_variants(), repeats=1)
    assert sorted(times) == sorted(_core.simd_variants())
    for per_case in times.values():
        assert sorted(per_case) == ["diagonal-float32", "diagonal-float64", "full-float32",
                                    "full-float64", "pooled-float32", "pooled-float64"]
        assert all(t > 0 for t in per_case.values())
