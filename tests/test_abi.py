"""The core's ABI is defined once (abi.hpp) and read by Python from the compiled module."""

import pathlib

import numpy as np
import pytest

from sklearn_convkernel import _abi, _core, arch as A
from sklearn_convkernel._plan import make_plan

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_python_constants_equal_the_compiled_table():
    table = _core.abi()
    assert set(table) == {"op", "fn", "status", "size", "column", "fcolumn"}
    for group in table.values():
        for name, value in group.items():
            assert getattr(_abi, name) == value, name
    # the names C++ and Python share
    assert _abi.OP_CONV == table["op"]["OP_CONV"]
    assert _abi.FN_EXP == table["fn"]["FN_EXP"]
    assert _abi.C_CONV_KH == table["column"]["C_CONV_KH"]
    assert _abi.N_INT == table["size"]["N_INT"] and _abi.N_FLOAT == table["size"]["N_FLOAT"]


def test_codes_are_distinct_and_columns_fit_the_rows():
    for group in ("op", "fn", "status"):
        values = list(_core.abi()[group].values())
        assert len(set(values)) == len(values), group
    assert sorted(_core.abi()["fn"].values()) == list(range(len(_core.abi()["fn"])))
    for name, col in _core.abi()["column"].items():
        assert 0 <= col < _abi.N_INT, name
    for name, col in _core.abi()["fcolumn"].items():
        assert 0 <= col < _abi.N_FLOAT, name
    # an op's parameter columns come after the common ones and do not overlap each other
    common = {_abi.C_CODE, _abi.C_IN_H, _abi.C_IN_W, _abi.C_OUT_H, _abi.C_OUT_W,
              _abi.C_MODE_IN, _abi.C_MODE_OUT}
    for op in _abi.OP_CODES:
        prefix = "C_" + op[len("OP_"):] + "_"
        cols = [v for k, v in _core.abi()["column"].items() if k.startswith(prefix)]
        assert len(set(cols)) == len(cols) and not set(cols) & common, op


def _every_layer_architecture():
    S = A.Sequential
    return [
        S(A.Conv(3, weight_var=2), A.ReLU(), A.Tap(A.Flatten()), A.Conv(2, stride=2),
          A.Erf(), A.AvgPool(2), A.Conv(1), A.ExpKernel(0.7), A.Flatten(), A.Dense()),
        S(A.Conv(3), A.Sum(A.Identity(), S(A.ArcCosKernel(1), A.Conv(3), A.PolyKernel(2),
                                           A.Conv(1))),
          A.LinearKernel(), A.ShiftAverage(1), A.Dense()),
        S(A.Conv(3), A.ArcCosKernel(0), A.GlobalAvgPool(), A.Dense()),
        S(A.Conv(3), A.ReLU(), A.Trace()),
    ]


def test_every_code_the_planner_writes_is_known_to_the_core():
    ops_seen, fns_seen = set(), set()
    for architecture in _every_layer_architecture():
        for spatial in ("auto", "full"):
            plan = make_plan(architecture, (6, 5, 2), "nngp", spatial)
            assert plan.ops.shape[1] == _abi.N_INT and plan.fops.shape[1] == _abi.N_FLOAT
            codes = plan.ops[:, _abi.C_CODE]
            assert set(codes.tolist()) <= set(_abi.OP_NAMES)
            ops_seen |= set(codes.tolist())
            nl = plan.ops[codes == _abi.OP_NONLIN]
            fns_seen |= set(nl[:, _abi.C_NONLIN_FN].tolist())
            _core.CompiledProgram(plan.ops, plan.fops, plan.blob_i, plan.blob_f,
                                  *plan.input_shape, plan.tape_len, plan.n_outputs, False)
    # every op and nonlinearity of the core is exercised by some layer
    assert ops_seen == set(_abi.OP_NAMES)
    assert fns_seen == set(_core.abi()["fn"].values())


@pytest.mark.parametrize("layer, name", [
    (A.ReLU(), "FN_RELU"), (A.Erf(), "FN_ERF"), (A.ExpKernel(0.5), "FN_EXP"),
    (A.ArcCosKernel(0), "FN_ARCCOS0"), (A.ArcCosKernel(1), "FN_ARCCOS1"),
    (A.PolyKernel(3), "FN_POLY"), (A.LinearKernel(), "FN_LINEAR")])
def test_nonlinearity_classes_take_their_code_from_the_abi(layer, name):
    assert layer._core_params()[0] == getattr(_abi, name)


def test_status_codes_raise_the_right_exceptions():
    with pytest.raises(MemoryError, match="boom"):
        _core.raise_status(_abi.STATUS_NO_MEMORY, "boom")
    with pytest.raises(RuntimeError, match="planner bug.*boom"):
        _core.raise_status(_abi.STATUS_BAD_PROGRAM, "boom")
    with pytest.raises(ValueError, match="non-finite.*weight_var"):
        _core.raise_status(_abi.STATUS_NOT_FINITE, "boom")
    with pytest.raises(ValueError, match="invalid argument: boom"):
        _core.raise_status(_abi.STATUS_BAD_ARGUMENT, "boom")


def test_a_malformed_program_is_refused_with_bad_program():
    plan = make_plan(A.Sequential(A.Conv(3), A.ReLU(), A.Flatten()), (4, 4, 1))
    ops = plan.ops.copy()
    ops[1, _abi.C_CODE] = max(_abi.OP_NAMES) + 1
    with pytest.raises(RuntimeError, match="unknown op code"):
        _core.CompiledProgram(ops, plan.fops, plan.blob_i, plan.blob_f, *plan.input_shape,
                              plan.tape_len, plan.n_outputs, False)
    with pytest.raises(ValueError, match="op tables must be"):
        _core.CompiledProgram(np.ascontiguousarray(plan.ops[:, :-1]), plan.fops, plan.blob_i,
                              plan.blob_f, *plan.input_shape, plan.tape_len, plan.n_outputs,
                              False)


def test_no_core_source_file_is_over_650_lines():
    files = sorted((ROOT / "_ext" / "src").iterdir()) + \
        sorted((ROOT / "_ext" / "include" / "convkernel").iterdir())
    assert files
    too_long = {f.name: n for f in files
                if (n := len(f.read_text().splitlines())) > 650}
    assert not too_long, too_long


def test_the_engine_reads_columns_by_name():
    """No raw column index (r[8], r[C_P0 + 1], f[0]) in the engine: abi.hpp names them."""
    import re
    for f in sorted((ROOT / "_ext" / "src").iterdir()):
        text = f.read_text()
        assert not re.search(r"\b(r|rn|nl|r0)\[\d+", text), f.name
        assert not re.search(r"\b(f|nlf|fn_f)\[\d+\]", text), f.name
        assert "C_P0" not in text, f.name
