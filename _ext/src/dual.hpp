// Dual activations: each nonlinearity's kernel map on one entry, the
// sklearn_convkernel/_reference.py rule (arch.py's _dual) written for the
// engine.  For a pair entry with self-variances Vx, Vy and covariance c,
// rho = c / sqrt(Vx Vy) and K' = sqrt(Vx Vy) kappa(rho), Theta' = Theta *
// kappa'(rho) (erf: its own closed form).  The per-position factors
// 1/sqrt(V), sqrt(V) come from the tapes (position_factors), the parameter of
// exp / poly from nonlin_param, and with_nonlinearity is the one dispatch from
// a run-time FN_* code to the templated row loops.
#pragma once

#include "vecmath.hpp"

namespace convkernel {
namespace CK_ARCH {

// Per-position factors of one image at a nonlinearity: for the homogeneous
// kernels inv = 1/sqrt(V) (0 where V = 0, so that rho := 0) and sq = sqrt(V);
// for erf inv = 1/sqrt(1 + 2V).
inline void position_factors(int64_t fn, const double* v, int64_t n, double* inv, double* sq) {
    if (fn == FN_ERF) {
        for (int64_t p = 0; p < n; ++p) {
            inv[p] = 1.0 / std::sqrt(1.0 + 2.0 * v[p]);
            sq[p] = 0.0;
        }
        return;
    }
    for (int64_t p = 0; p < n; ++p) {
        const double s = std::sqrt(v[p] > 0.0 ? v[p] : 0.0);
        sq[p] = s;
        inv[p] = s > 0.0 ? 1.0 / s : 0.0;
    }
}

// One contiguous row of entries: K[t] (and Theta[t]) with y-side arrays and
// x-side factors by XS: 0 arrays, 1 scalars (ixa[0], sxa[0]), 2 two scalars,
// ixa[0] where second[t] == 0 and ixa[1] elsewhere (two rows of a block in
// one loop; a mask array, not t < split, which GCC's loop splitting would
// cut back into two loops with a tail each).
// p = 1/sigma^2 (exp) or the degree (poly).
template <int FN, bool NTK, int XS, class T>
CK_INLINE void nonlin_row(T* __restrict K, T* __restrict Th, int64_t n, const T* __restrict ixa,
                       const T* __restrict sxa, const T* __restrict iy,
                       const T* __restrict sy, double pd,
                       const T* __restrict second = nullptr) {
    // computed in T: float rows run twice as many lanes; every step is
    // cancellation-free (the arc-cosine duals by arccos_dual_parts, in
    // t = (1 - |rho|) / 2 and sqrt(t) near |rho| = 1).  The arc-cosine kernels snap
    // |rho| within 64 ulps of 1 to exactly +-1: there acos has an infinite
    // slope, so the rounding of rho = c ix iy at coincident points of
    // identical images (c and the variances are summed in different orders
    // by the pair and self passes) would leave pi - theta ~ sqrt(2 * ulps)
    // instead of pi, i.e. half the digits lost in the NTK derivative.  The
    // snap changes theta by at most sqrt(128 eps), the size of the noise
    // that the rounding of rho already causes there; outside the band
    // nothing changes (a select: the loop stays vectorised).
    constexpr T snap = T(1) - T(64) * std::numeric_limits<T>::epsilon();
    constexpr T invpi = (T)(1.0 / kPi);
    const T p = (T)pd;
    const T ix0 = ixa[0], sx0 = sxa[0];
    const T ix1 = XS == 2 ? ixa[1] : ix0, sx1 = XS == 2 ? sxa[1] : sx0;
    for (int64_t t = 0; t < n; ++t) {
        const T ix = XS == 2 ? (second[t] != T(0) ? ix1 : ix0) : XS ? ix0 : ixa[t];
        const T c = K[t];
        T kv, dv;
        if (FN == FN_ERF) {
            const T z = clamp1(T(2) * c * ix * iy[t]);
            kv = T(2) * invpi * asin_v(z);
            const T w = (T(1) - z) * (T(1) + z);
            dv = T(4) * invpi * ix * iy[t] / std::sqrt(std::max(w, std::numeric_limits<T>::min()));
        } else {
            const T sx = XS == 2 ? (second[t] != T(0) ? sx1 : sx0) : XS ? sx0 : sxa[t];
            const T r = c * ix * iy[t];
            const T rho = clamp1(r);
            const T s = sx * sy[t];
            if (FN == FN_RELU || FN == FN_ARCCOS1 || FN == FN_ARCCOS0) {
                // |rho| clamped and snapped in one select (snap < 1), the
                // sign read off r: no clamp of r itself
                const T a = std::fabs(r) >= snap ? T(1) : std::fabs(r);
                // the factor f = 1 / (2 pi) (ReLU) or 1 / pi is folded into
                // the polynomials as sc = pi f (1/2 or 1: exact)
                constexpr T sc = FN == FN_RELU ? T(0.5) : T(1);
                T psi, jn;
                arccos_dual_parts(a, sc, psi, jn);
                const T d = r > T(0) ? sc - psi : psi;  // f (pi - theta)
                if (FN == FN_ARCCOS0) {
                    kv = s * d;
                    dv = T(0);
                } else {
                    kv = s * (jn + (r > T(0) ? sc * a : T(0)));
                    dv = d;
                }
            } else if (FN == FN_EXP) {
                const T e = exp_t((rho - T(1)) * p);
                kv = s * e;
                dv = e * p;
            } else if (FN == FN_POLY) {
                // rho^(degree - 1) by squaring over the (loop-invariant) bits
                // of the exponent: a fixed trip count keeps the row loop
                // vectorisable (degrees above 2^20 are not meaningful kernels)
                const int64_t e = (int64_t)pd - 1;
                T pw = T(1), base = rho;
#pragma GCC unroll 20
                for (int bit = 0; bit < 20; ++bit) {
                    pw = ((e >> bit) & 1) ? pw * base : pw;
                    base *= base;
                }
                kv = s * pw * rho;
                dv = p * pw;
            } else {  // FN_LINEAR
                kv = s * rho;
                dv = T(1);
            }
        }
        K[t] = kv;
        if (NTK) Th[t] *= dv;
    }
}

// The parameter p of a NONLIN row's dual activation: 1 / sigma^2 for exp
// (exp((rho - 1) p)), the degree for poly (rho^p), unused otherwise.
inline double nonlin_param(const int64_t* r, const double* f) {
    return r[C_NONLIN_FN] == FN_EXP ? 1.0 / (f[F_NONLIN_SIGMA] * f[F_NONLIN_SIGMA])
                                    : (double)r[C_NONLIN_DEGREE];
}

// Calls f(std::integral_constant<int, FN>{}) for the nonlinearity code fn, so
// that templated row loops are instantiated once per nonlinearity.
template <class F>
inline void with_nonlinearity(int64_t fn, F&& f) {
    switch (fn) {
        case FN_RELU: f(std::integral_constant<int, FN_RELU>{}); break;
        case FN_ERF: f(std::integral_constant<int, FN_ERF>{}); break;
        case FN_EXP: f(std::integral_constant<int, FN_EXP>{}); break;
        case FN_ARCCOS0: f(std::integral_constant<int, FN_ARCCOS0>{}); break;
        case FN_ARCCOS1: f(std::integral_constant<int, FN_ARCCOS1>{}); break;
        case FN_POLY: f(std::integral_constant<int, FN_POLY>{}); break;
        default: f(std::integral_constant<int, FN_LINEAR>{}); break;
    }
}

// a * a - b with a * a unrounded where the build has FMA (one rounding, as the
// FMA builds have always contracted it), else two roundings.  Written out:
// left to -ffp-contract, GCC picks a * a - b or a * a - (b's product) by the
// shape of the code around it, so inlining alone changed the last bit.
inline double square_minus(double a, double b) {
#ifdef __FMA__
    return std::fma(a, a, -b);
#else
    return a * a - b;
#endif
}

// Exact values at a coincident point (same image, same position, rho = 1);
// a zero variance gives rho := 0.
inline void nonlin_coincident(int64_t fn, double p, double v, double& kv, double& dv) {
    const bool zero = !(v > 0.0);
    with_nonlinearity(fn, [&](auto fc) {
        constexpr int FN = decltype(fc)::value;
        if constexpr (FN == FN_ERF) {  // rho = 2V / (1 + 2V), any V >= 0
            const double a = 1.0 + 2.0 * v;
            kv = (2.0 / kPi) * asin_v(2.0 * v / a);
            dv = (4.0 / kPi) / std::sqrt(square_minus(a, 4.0 * v * v));
        } else if constexpr (FN == FN_RELU) {
            kv = zero ? 0.0 : 0.5 * v;
            dv = zero ? 0.25 : 0.5;
        } else if constexpr (FN == FN_ARCCOS1) {
            kv = zero ? 0.0 : v;
            dv = zero ? 0.5 : 1.0;
        } else if constexpr (FN == FN_ARCCOS0) {
            kv = zero ? 0.0 : v;
            dv = 0.0;
        } else if constexpr (FN == FN_EXP) {
            kv = zero ? 0.0 : v;
            dv = zero ? std::exp(-p) * p : p;
        } else if constexpr (FN == FN_POLY) {
            kv = zero ? 0.0 : v;
            dv = zero ? (p == 1.0 ? 1.0 : 0.0) : p;
        } else {  // FN_LINEAR
            kv = zero ? 0.0 : v;
            dv = 1.0;
        }
    });
}

}  // namespace CK_ARCH
}  // namespace convkernel
