"""Architecture spec: validation messages, immutability, equality, pickling, planning."""

import pickle

import numpy as np
import pytest

from sklearn_convkernel import arch as A
from sklearn_convkernel._plan import make_plan
from sklearn_convkernel.arch import (
    ArcCosKernel,
    ArchitectureError,
    AvgPool,
    Conv,
    Dense,
    ExpKernel,
    Flatten,
    GaussianPool,
    GlobalAvgPool,
    Identity,
    PolyKernel,
    ReLU,
    Sequential,
    StridedPool,
    Sum,
    Tap,
    Trace,
)


@pytest.mark.parametrize(
    "layer_factory, match",
    [
        (lambda: Conv(0), "size must be >= 1"),
        (lambda: Conv(3, stride=(1, 2, 3)), "pair"),
        (lambda: Conv(3, padding="sam"), "padding must be"),
        (lambda: Conv(3, padding=-1), "padding must be >= 0"),
        (lambda: Conv(3, padding=((1, 2), (3,))), "padding must be"),
        (lambda: Conv(3, weight_var=-1.0), "weight_var must be finite and >= 0"),
        (lambda: Conv(3, bias_var=float("nan")), "bias_var"),
        (lambda: ExpKernel(0.0), "sigma must be finite and > 0"),
        (lambda: ArcCosKernel(2), "order must be 0 or 1"),
        (lambda: PolyKernel(0), "degree must be an int in \\[1, 2\\*\\*20\\]"),
        (lambda: PolyKernel(2 ** 20 + 1), "degree must be an int in"),
        (lambda: Sequential(Conv(3), ReLU), "did you mean ReLU()"),
        (lambda: Sequential(Conv(3), input_norm="max"), "input_norm must be 'mean' or 'sum'"),
        (lambda: Sum(), "at least one branch"),
    ],
)
def test_bad_parameters_name_the_problem(layer_factory, match):
    with pytest.raises(ArchitectureError, match=match):
        layer_factory()


@pytest.mark.parametrize(
    "architecture, shape, match",
    [
        (Sequential(ReLU(), Flatten()), (5, 5), "ReLU.*not a Gaussian pre-activation.*Conv or Dense"),
        (Sequential(Conv(3), ReLU(), ReLU(), Flatten()), (5, 5), "not a Gaussian"),
        (Sequential(Conv(3), ReLU()), (5, 5), "single output position.*GlobalAvgPool"),
        (Sequential(Conv(7, padding="valid"), Flatten()), (5, 5), "window spans 7 pixels"),
        (Sequential(Conv(3), GaussianPool(4), Flatten()), (6, 9), "GaussianPool.*pools to 0"),
        (Sequential(Conv(3), StridedPool(3), Flatten()), (5, 9), "StridedPool"),
        (Sequential(Conv(3), Sum(Identity(), Sequential(Conv(3, stride=2))), Flatten()), (6, 6),
         "branches produce different spatial shapes"),
        (Sequential(Conv(3), Tap(ReLU()), Flatten()), (5, 5), "tap must read out"),
        (Sequential(Sequential(Conv(3), input_norm="sum"), Flatten()), (5, 5),
         "input_norm applies only to the outermost"),
    ],
)
def test_composition_errors_are_raised_before_computing(architecture, shape, match):
    with pytest.raises(ArchitectureError, match=match):
        A.validate(architecture, shape)
    with pytest.raises(ArchitectureError, match=match):
        make_plan(architecture, shape + (1,))


def test_ntk_of_arccos0_is_rejected():
    arch = Sequential(Conv(3), ArcCosKernel(0), Flatten())
    make_plan(arch, (5, 5, 1), kind="nngp")
    with pytest.raises(ArchitectureError, match="no NTK"):
        make_plan(arch, (5, 5, 1), kind="ntk")


def test_immutable_equal_hashable_picklable():
    arch = Sequential(
        Conv((3, 2), dilation=(1, 2), padding=((1, 0), (0, 2)), weight_var=2.0), ReLU(),
        Tap(GlobalAvgPool(), Dense()),
        Sum(Identity(), Sequential(Conv(1), ExpKernel(0.5))),
        AvgPool(2, stride=2, padding="same"), Trace(), input_norm="sum",
    )
    same = pickle.loads(pickle.dumps(arch))
    assert same == arch and hash(same) == hash(arch) and repr(same) == repr(arch)
    assert arch != Sequential(*arch.layers)  # input_norm differs
    with pytest.raises(AttributeError):
        arch.layers = ()
    with pytest.raises(Exception):
        arch.layers[0].size = (5, 5)


def test_padding_resolution_follows_same_rule():
    # TF / neural-tangents SAME: out = ceil(n / s), total pad split low-first
    assert A.resolve_padding("same", 7, 4, 1, 1) == (1, 2, False, 7)
    assert A.resolve_padding("same", 7, 3, 2, 1) == (1, 1, False, 4)
    assert A.resolve_padding("same", 6, 3, 2, 2) == (1, 2, False, 3)  # total (3-1)*2 + 5 - 6
    assert A.resolve_padding("circular", 5, 2, 1, 1) == (0, 1, True, 5)
    assert A.resolve_padding("valid", 7, 3, 2, 1) == (0, 0, False, 3)
    assert A.resolve_padding((2, 0), 5, 3, 1, 1) == (2, 0, False, 5)


def test_plan_chooses_the_diagonal_path_only_where_exact():
    diag = Sequential(Conv(3), ReLU(), StridedPool(2), Conv(3), ReLU(), Flatten(), Dense())
    mixing = Sequential(Conv(3), ReLU(), AvgPool(2), Conv(3), ReLU(), Flatten(), Dense())
    assert make_plan(diag, (9, 9, 1)).diagonal_only
    assert not make_plan(mixing, (9, 9, 1)).diagonal_only
    assert not make_plan(diag, (9, 9, 1), spatial="full").diagonal_only
    # after the last mixing pool the plan drops to the diagonal (TODIAG op = 5)
    plan = make_plan(mixing, (9, 9, 1))
    codes = list(plan.ops[:, 0])
    assert 5 in codes and codes.index(5) > codes.index(3)
    # taps add outputs; the final output is last
    tapped = Sequential(Conv(3), ReLU(), Tap(Flatten()), Conv(3), ReLU(), Tap(GlobalAvgPool()),
                        Flatten())
    assert make_plan(tapped, (6, 5, 2)).n_outputs == 3


def test_rshift_composes():
    arch = Conv(3) >> ReLU()
    assert isinstance(arch, Sequential) and len(arch) == 2
    assert (arch + Sequential(Flatten())).output_shape((4, 4)) == (1, 1)
    assert np.array_equal(GlobalAvgPool().axis_matrices((2, 4))[1], np.full((1, 4), 0.25))
