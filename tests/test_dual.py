"""The compiled arc-cosine duals (ReLU, ArcCosKernel(0 / 1)) entry by entry.

A one-layer network whose single pair entry is the dual itself at a
correlation the engine sees exactly: x = e_0 and y = (p, q_1, .., q_4) / 2^m
with p^2 + q_1^2 + .. + q_4^2 = 4^m (Lagrange's four squares), so that every
square and partial sum of the input kernel is an exact integer times 4^-m in
float32 (m = 12) and float64 (m = 26): V_x = V_y = 1, c = rho = p / 2^m and
the read-out adds no rounding.  Tiny |rho| use y = (rho, 1, 0, 0, 0) (V_y
rounds to exactly 1).  The reference is computed in long double without the
cancellation of sin(theta) + (pi - theta) rho near rho = -1.
"""

import math

import numpy as np
import pytest

from sklearn_convkernel import conv_kernel
from sklearn_convkernel.arch import ArcCosKernel, Conv, Dense, Flatten, ReLU, Sequential

LD = np.longdouble
PI = np.arccos(LD(-1))


def _four_squares(n):
    """Integers (a, b, c, d) with a^2 + b^2 + c^2 + d^2 = n: n / 4^k by a
    search whose first remainder avoids 4^i (8 j + 7) (Legendre), times 2^k."""
    k = 0
    while n and n % 4 == 0:
        n, k = n // 4, k + 1
    for a in range(math.isqrt(n), -1, -1):
        r1 = n - a * a
        r = r1
        while r and r % 4 == 0:
            r //= 4
        if r % 8 == 7:
            continue
        for b in range(math.isqrt(r1), -1, -1):
            r2 = r1 - b * b
            for c in range(math.isqrt(r2), -1, -1):
                r3 = r2 - c * c
                if r3 > c * c:
                    break
                d = math.isqrt(r3)
                if d * d == r3:
                    return tuple(v << k for v in (a, b, c, d))
    raise AssertionError(n)


def _exact_correlations(m, extra_numerators):
    """Inputs y (rows) with V_y = 1 exactly and correlations rho = y[0]."""
    step = 2 ** max(m - 11, 0)  # about 4000 points over [-1, 1]
    ps = set(range(-(2 ** m), 2 ** m + 1, step)) | set(extra_numerators)
    rows = []
    for p in sorted(ps):
        q = _four_squares(4 ** m - p * p)
        rows.append([p, *q])
    Y = np.array(rows, dtype=np.float64) / 2.0 ** m
    tiny = np.array([1e-30, 2.0 ** -40, 3e-20, 1e-17])
    T = np.zeros((2 * tiny.size, 5))
    T[:, 0] = np.concatenate([tiny, -tiny])
    T[:, 1] = 1.0
    return np.concatenate([Y, T])


def _boundary_numerators(m):
    h, one = 2 ** (m - 1), 2 ** m
    ps = [0, 1, -1, 2, -2]
    for k in (1, 2, 3, 7, 64):
        ps += [h + k, h - k, -h + k, -h - k, one - k, -one + k]
    return ps


def _reference(rho):
    """(J(rho), pi - arccos(rho)) in long double, J = sin th + (pi - th) rho."""
    rho = rho.astype(LD)
    psi = np.arccos(np.abs(rho))  # acos |rho|, in [0, pi/2]
    # J(-|rho|) = sin psi - psi cos psi = sum_k (-1)^(k+1) 2k psi^(2k+1) / (2k+1)!
    jneg = np.zeros_like(psi)
    term = psi.copy()  # psi^(2k+1) / (2k+1)! for k = 0
    for k in range(1, 20):
        term = term * psi * psi / LD((2 * k) * (2 * k + 1))
        jneg += (-1) ** (k + 1) * 2 * k * term
    pos = rho > 0
    return np.where(pos, PI * rho, 0) + jneg, np.where(pos, PI - psi, psi)


def _engine(nonlin, Y, dtype, kind="nngp"):
    X = np.zeros((1, 5))
    X[0, 0] = 1.0
    arch = Sequential(Conv(1), nonlin, Flatten(), Dense(), input_norm="sum")
    shape = (1, 1, 1, 5)
    K = conv_kernel(X.reshape(shape).astype(dtype), Y.reshape(-1, 1, 1, 5).astype(dtype),
                    architecture=arch, kind=kind, dtype=dtype)
    return K[0].astype(LD)


def _errors(got, ref, top, dtype):
    """Errors in ulps of the value and in eps * top (top: the value at rho = 1)."""
    eps = LD(np.finfo(dtype).eps)
    ulp = np.spacing(np.abs(ref).astype(dtype)).astype(LD)
    rel = np.abs(got - ref) / np.maximum(ulp, LD(np.finfo(dtype).tiny))
    return rel, np.abs(got - ref) / (eps * top)


CASES = [(np.float32, 12), (np.float64, 26)]


@pytest.mark.parametrize("dtype, m", CASES)
def test_arccos_duals_entrywise_over_all_correlations(dtype, m):
    Y = _exact_correlations(m, _boundary_numerators(m))
    rho = Y[:, 0]
    J, D = _reference(rho)
    got = {
        "relu": _engine(ReLU(), Y, dtype),
        "arccos1": _engine(ArcCosKernel(1), Y, dtype),
        "arccos0": _engine(ArcCosKernel(0), Y, dtype),
    }
    exp = {"relu": J / (2 * PI), "arccos1": J / PI, "arccos0": D / PI}
    assert np.all(got["arccos0"][rho == 1] == 1) and np.all(got["arccos0"][rho == -1] == 0)
    assert np.all(got["arccos1"][rho == 1] == 1) and np.all(got["arccos1"][rho == -1] == 0)
    for name in got:
        rel, ab = _errors(got[name], exp[name], exp[name][rho == 1][0], dtype)
        # within 2 eps of the value at rho = 1 (which the evaluation as
        # sin(th) + (pi - th) rho also met) and within 4 ulps of the value
        # itself, up to rho = -1 (where it cancelled: 1e5 ulps in float32)
        worst = np.argmax(ab)
        assert ab[worst] <= 2, (name, float(ab[worst]), float(rho[worst]))
        worst = np.argmax(rel)
        assert rel[worst] <= 4, (name, float(rel[worst]), float(rho[worst]))


@pytest.mark.parametrize("dtype, m", CASES)
def test_relu_ntk_entrywise(dtype, m):
    # Theta = K_relu + rho kappa'(rho) with kappa' = (pi - th) / (2 pi): the
    # NTK factor through the engine's product and sum, within 2 eps of
    # Theta(rho = 1) = 1
    Y = _exact_correlations(m, _boundary_numerators(m))
    rho = Y[:, 0].astype(LD)
    J, D = _reference(Y[:, 0])
    got = _engine(ReLU(), Y, dtype, "ntk")
    _, ab = _errors(got, (J + rho * D) / (2 * PI), 1, dtype)
    worst = np.argmax(ab)
    assert ab[worst] <= 2, (float(ab[worst]), float(rho[worst]))
