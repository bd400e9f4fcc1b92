"""Gram engine boundaries: core errors become exceptions; any joblib backend works."""

import os
import subprocess
import sys

import numpy as np
import pytest
from joblib import parallel_config

from sklearn_convkernel import _core, conv_kernel
from sklearn_convkernel._gram import default_tile_size
from sklearn_convkernel._plan import make_plan
from sklearn_convkernel.arch import AvgPool, Conv, Dense, Flatten, GlobalAvgPool, ReLU, Sequential

ARCH = Sequential(Conv(3, weight_var=2.0), ReLU(), AvgPool(2), Conv(2), ReLU(), GlobalAvgPool(),
                  Dense())


def _program(plan, ops=None, tape_len=None, n_outputs=None):
    H, W, C = plan.input_shape
    return _core.CompiledProgram(
        plan.ops if ops is None else ops, plan.fops, plan.blob_i, plan.blob_f, H, W, C,
        plan.tape_len if tape_len is None else tape_len,
        plan.n_outputs if n_outputs is None else n_outputs, plan.kind == "ntk",
    )


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda ops: ops.__setitem__((2, 0), 99), "unknown op code"),
        (lambda ops: ops.__setitem__((1, 3), 1000), "shape|mode"),
        (lambda ops: ops.__setitem__((0, 0), 1), "INPUT"),
        (lambda ops: ops.__setitem__((-1, 8), 7), "output slot"),
    ],
)
def test_malformed_programs_raise_instead_of_crashing(corrupt, match):
    plan = make_plan(ARCH, (6, 5, 1), kind="ntk")
    ops = plan.ops.copy()
    corrupt(ops)
    with pytest.raises(RuntimeError, match=match):
        _program(plan, ops=ops)
    with pytest.raises(RuntimeError, match="tape offset"):
        _program(plan, tape_len=1)


def test_wrong_buffers_are_value_errors():
    plan = make_plan(ARCH, (6, 5, 1), kind="nngp")
    prog = _program(plan)
    X = np.zeros((2, 30))
    with pytest.raises(ValueError, match="tapes has the wrong shape"):
        prog.self_pass(X, np.zeros((2, 3)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="wrong number of features"):
        prog.self_pass(np.zeros((2, 29)), np.zeros((2, plan.tape_len)), np.zeros((2, 1)))
    tapes = np.zeros((2, plan.tape_len))
    with pytest.raises(ValueError, match="indexes outside"):
        prog.pair_list(X, tapes, X, tapes, np.array([0, 2]), np.array([0, 1]), np.zeros((2, 1)))


# ARCH runs layer by layer; SLAB (same-size convs, GAP) runs slab by slab
SLAB = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3), ReLU(), GlobalAvgPool(), Dense())


@pytest.mark.parametrize("arch", [ARCH, SLAB], ids=["layers", "slabs"])
@pytest.mark.parametrize("kind", ["nngp", "ntk"])
def test_overflow_reports_a_non_finite_kernel(arch, kind):
    X = np.full((2, 6, 5, 1), 1e200)
    with pytest.raises(ValueError, match="not finite"):
        conv_kernel(X, architecture=arch, kind=kind)
    with pytest.raises(ValueError, match="not finite"):
        conv_kernel(np.full((2, 6, 5, 1), 1e30, dtype=np.float32), architecture=arch,
                    kind=kind, dtype=np.float32)


def test_process_backends_give_the_same_gram():
    rng = np.random.default_rng(3)
    X = rng.random((7, 6, 5, 2))
    ref = conv_kernel(X, architecture=ARCH, kind="ntk")
    with parallel_config(backend="loky"):
        K = conv_kernel(X, architecture=ARCH, kind="ntk", n_jobs=2, tile_size=3)
    np.testing.assert_array_equal(K, ref)


# The engine variant is chosen once per process (the environment is read on
# the core's first use), so each variant runs in a child process of its own
# (as a user would force it; tests/test_simd.py also runs them in-process).
_VARIANT_CHILD = """
import sys
import numpy as np
from sklearn_convkernel import _core, conv_kernel
from sklearn_convkernel.arch import (AvgPool, Conv, Dense, Erf, Flatten, GlobalAvgPool,
                                     ReLU, Sequential)
assert _core.simd_variant() == sys.argv[1], (_core.simd_variant(), sys.argv[1])
X = np.random.default_rng(4).standard_normal((5, 7, 6, 3))
archs = (  # the interpreter (full and diagonal mode) and the slab path
    Sequential(Conv(3), Erf(), Conv(3), ReLU(), GlobalAvgPool(), Dense()),
    Sequential(Conv(3, bias_var=0.1), ReLU(), Conv(3), ReLU(), Flatten(), Dense()),
    Sequential(Conv(3, weight_var=2), ReLU(), AvgPool(2), Conv(2), ReLU(), GlobalAvgPool(),
               Dense()),
)
out = {f"{dtype}-{kind}-{i}": conv_kernel(X, architecture=a, kind=kind, dtype=dtype)
       for dtype in ("float64", "float32") for kind in ("nngp", "ntk")
       for i, a in enumerate(archs)}
np.savez(sys.argv[2], **out)
"""


def _variant_kernels(variant, path):
    env = dict(os.environ, SKLEARN_CONVKERNEL_SIMD=variant)
    # cwd: not the repository root, whose source tree (without the compiled
    # core) would shadow the installed package on the child's sys.path
    subprocess.run([sys.executable, "-c", _VARIANT_CHILD, variant, str(path)], env=env,
                   check=True, cwd=path.parent)
    return np.load(path)


@pytest.mark.parametrize("variant", ["avx2", "avx512"])
def test_simd_variants_agree(tmp_path, variant):
    if variant not in _core.simd_variants():
        pytest.skip(f"this CPU or build has no {variant} engine "
                    f"(it runs {', '.join(_core.simd_variants())})")
    fast = _variant_kernels(variant, tmp_path / "fast.npz")
    base = _variant_kernels("generic", tmp_path / "base.npz")
    assert sorted(fast.files) == sorted(base.files) and len(fast.files) == 12
    for key in base.files:
        rtol = 1e-13 if key.startswith("float64") else 1e-5
        assert fast[key].dtype == base[key].dtype
        np.testing.assert_allclose(fast[key], base[key], rtol=rtol, err_msg=key)


def test_nested_taps_are_numbered_in_order_of_appearance():
    from sklearn_convkernel._reference import reference_gram
    from sklearn_convkernel.arch import Tap

    rng = np.random.default_rng(5)
    X = rng.random((3, 6, 5, 1))
    arch = Sequential(
        Conv(3), ReLU(),
        Tap(Conv(3), ReLU(), Tap(Flatten()), GlobalAvgPool()),  # outer tap 0, inner tap 1
        Conv(3), ReLU(), Flatten(), Dense(),
    )
    for kind in ("nngp", "ntk"):
        K = conv_kernel(X, architecture=arch, kind=kind)
        R = reference_gram(X, architecture=arch, kind=kind)
        assert K.shape == (3, 3, 3)
        np.testing.assert_allclose(K, R, rtol=1e-12)
        # the outer tap (GAP of the 2-layer map) differs from the inner (flatten)
        assert not np.allclose(K[0], K[1])


@pytest.mark.parametrize("nx, ny, symmetric, n_jobs", [
    (10, 10, True, 2), (10, 10, True, 1), (3, 50, False, 2), (1, 1, True, 4),
    (1000, 1000, True, 2), (40, 7, False, 8),
])
def test_default_tile_size_feeds_every_worker(nx, ny, symmetric, n_jobs):
    tile = default_tile_size(nx, ny, symmetric, n_jobs)
    assert 1 <= tile <= 32
    tr, tc = -(-nx // tile), -(-ny // tile)
    n_tasks = tr * (tr + 1) // 2 if symmetric else tr * tc
    # at least 4 tasks per worker unless the tiles are already single images
    assert n_tasks >= 4 * n_jobs or tile == 1
    if tile < 32:  # a larger tile would starve the workers
        tr2, tc2 = -(-nx // (2 * tile)), -(-ny // (2 * tile))
        assert (tr2 * (tr2 + 1) // 2 if symmetric else tr2 * tc2) < 4 * n_jobs


def test_small_gram_is_tiled_for_threads_and_unchanged():
    rng = np.random.default_rng(5)
    X = rng.random((10, 6, 5, 1))
    one = conv_kernel(X, architecture=ARCH, kind="ntk", n_jobs=1, tile_size=32)
    two = conv_kernel(X, architecture=ARCH, kind="ntk", n_jobs=2)
    np.testing.assert_array_equal(two, one)
