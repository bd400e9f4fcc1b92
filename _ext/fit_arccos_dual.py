"""Coefficients of the arc-cosine dual polynomials of _ext/src/vecmath.hpp
(arccos_dual_parts).  Needs mpmath; not used by the build.

    python _ext/fit_arccos_dual.py A f 7     # acos(1 - 2t) / (pi sqrt t), float
    python _ext/fit_arccos_dual.py H d 16    # J(-(1 - 2t)) / (pi t sqrt t), double

on t in [0, 1/2], J(-a) = sqrt(1 - a^2) - a acos(a).  Near-minimax for the
relative error: weighted least squares on Chebyshev points with Lawson
reweighting, in 50-digit arithmetic; the coefficients are rounded to the
target type one at a time from the constant term up, the others refitted to
absorb the rounding.  Prints the coefficients (constant term first) and the
max relative error of the rounded polynomial (exact evaluation).
"""
import sys

import mpmath as mp
import numpy as np

mp.mp.dps = 50
T = mp.mpf(1) / 2


def acos_part(t):
    z = mp.sqrt(t)
    return 2 * mp.asin(z) / z / mp.pi


def j_part(t):
    z = mp.sqrt(t)
    return (2 * z * mp.sqrt(1 - t) - (1 - 2 * t) * 2 * mp.asin(z)) / (t * z) / mp.pi


def fit(f, n, rnd, m=None, lawson=8):
    m = m or 6 * (n + 1)
    xs = [T / 2 - T / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / m) for k in range(m)]
    fx = [f(x) for x in xs]
    fixed = []
    for k in range(n + 1):
        free = n - k + 1
        res = [fx[i] - sum(fixed[j] * xs[i] ** j for j in range(k)) for i in range(m)]
        w = [mp.mpf(1)] * m
        for _ in range(lawson if free > 1 else 1):
            M, b = mp.matrix(m, free), mp.matrix(m, 1)
            for i in range(m):
                s = mp.sqrt(w[i]) / fx[i]
                for j in range(free):
                    M[i, j] = s * xs[i] ** (k + j)
                b[i] = s * res[i]
            c, _ = mp.qr_solve(M, b)
            e = [abs(res[i] - sum(c[j] * xs[i] ** (k + j) for j in range(free))) / fx[i]
                 for i in range(m)]
            tot = sum(w[i] * e[i] for i in range(m))
            w = [w[i] * e[i] / tot for i in range(m)]
        fixed.append(rnd(c[0]))
    return fixed


def max_rel_err(f, cs, points=1500):
    worst = 0
    for i in range(1, points + 1):
        x = T * mp.mpf(i) / points
        p = mp.mpf(0)
        for c in reversed(cs):
            p = p * x + c
        worst = max(worst, abs(p / f(x) - 1))
    return float(worst)


if __name__ == "__main__":
    which, dtype, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    f = {"A": acos_part, "H": j_part}[which]
    if dtype == "f":
        def rnd(v):
            return mp.mpf(float(np.float32(float(v))))
    else:
        def rnd(v):
            return mp.mpf(float(v))
    cs = fit(f, n, rnd)
    print(which, dtype, n, "max relative error %.3e" % max_rel_err(f, cs))
    print(", ".join(repr(float(np.float32(float(c)))) + "f" if dtype == "f" else repr(float(c))
                    for c in cs))
