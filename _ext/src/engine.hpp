// The kernel engine: the stack machine of core.hpp run on image pairs.
//
// This header is compiled once per instruction-set variant (engine_generic.cpp
// for baseline x86-64 / any CPU, engine_avx2.cpp with AVX2+FMA,
// engine_avx512.cpp with AVX-512), each time in its own namespace CK_ARCH;
// core.cpp picks one at run time.  The hot loops
// are written branch-free over contiguous rows so that the compiler
// vectorises them (including the arc-cosine, see acos_v).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <utility>
#include <type_traits>
#include <vector>

#include "internal.hpp"

#if defined(__GNUC__)
#define CK_INLINE inline __attribute__((always_inline))
#else
#define CK_INLINE inline
#endif

#ifndef CK_ARCH
#error "define CK_ARCH (the namespace of this engine variant) before including engine.hpp"
#endif

namespace convkernel {
namespace CK_ARCH {

// ---------------------------------------------------------------------------
// vectorisable arc-cosine / arc-sine (double precision, ~1 ulp)
// ---------------------------------------------------------------------------

// asin(z) = z + z^3 Q(4 z^2) for z in [0, 1/2]: Q is a degree-12 Chebyshev
// fit (max relative error 1.5e-17) of the Taylor series of (asin z - z)/z^3,
// computed in 40-digit arithmetic.
template <class C>
CK_INLINE C asin_core(C z, C t) {
    if constexpr (std::is_same<C, float>::value) {
        // float: (asin z - z) / z^3 as a degree-4 Chebyshev fit in t = z^2 on
        // [0, 1/4] (asin within 7.8e-8 relative, the float rounding level)
        float q = 0.03808502480387688f;
        q = q * t + 0.026554541662335396f;
        q = q * t + 0.045001380145549774f;
        q = q * t + 0.07498855143785477f;
        q = q * t + 0.16666673123836517f;
        return z + z * t * q;
    } else {
        const C u = C(4) * t;
        C q = (C)1.714101515258644e-09;
        q = q * u + (C)-3.540965812503625e-09;
        q = q * u + (C)1.659477180737879e-08;
        q = q * u + (C)2.081873595672744e-08;
        q = q * u + (C)1.5751364670083281e-07;
        q = q * u + (C)7.006333871572818e-07;
        q = q * u + (C)3.4109406673713215e-06;
        q = q * u + (C)1.6945696016474583e-05;
        q = q * u + (C)8.7391300555273e-05;
        q = q * u + (C)0.0004747178771645507;
        q = q * u + (C)0.0027901785716472143;
        q = q * u + (C)0.018749999999996082;
        q = q * u + (C)0.16666666666666669;
        return z + z * t * q;
    }
}

// sqrt(1 - u) for u in [0, 1/4]: Chebyshev fits (computed in 50-digit
// arithmetic) of degree 12 for double (max relative error 1.3e-16) and 5 for
// float (6.9e-8); polynomial FMAs are cheaper than a second vector sqrt.
template <class C>
CK_INLINE C sqrt1m_poly(C u) {
    if constexpr (std::is_same<C, float>::value) {
        float p = -0.05078177526593208f;
        p = p * u + -0.03161308914422989f;
        p = p * u + -0.06352239847183228f;
        p = p * u + -0.12493826448917389f;
        p = p * u + -0.5000013709068298f;
        p = p * u + 1.0f;
        return p;
    } else {
        C p = (C)-0.034308838583332474;
        p = p * u + (C)0.017190548009281534;
        p = p * u + (C)-0.021194963521473254;
        p = p * u + (C)-0.007446828865423663;
        p = p * u + (C)-0.01375441009387522;
        p = p * u + (C)-0.016027596302914372;
        p = p * u + (C)-0.020515325325567758;
        p = p * u + (C)-0.02734331164089207;
        p = p * u + (C)-0.0390625163329017;
        p = p * u + (C)-0.06249999963931342;
        p = p * u + (C)-0.1250000000041244;
        p = p * u + (C)-0.4999999999999815;
        p = p * u + (C)1.0;
        return p;
    }
}

// The range reduction shared by the arc functions, for a = |x| in [0, 1]:
// r = asin(z) with z = a when a <= 1/2, else z = sqrt((1 - a) / 2), so that
// asin(a) = pi/2 - 2 r and acos(a) = 2 r there; t = z^2.  Returns whether
// a > 1/2 (plain locals and a returned flag: the selects stay if-converted,
// which a struct holding the flag defeated in GCC's vectoriser).
template <class C>
CK_INLINE bool asin_reduce(C a, C& r, C& t, C& z) {
    const C tb = C(0.5) * (C(1) - a);
    const C zb = std::sqrt(tb);
    const bool big = a > C(0.5);
    t = big ? tb : a * a;
    z = big ? zb : a;
    r = asin_core(z, t);
    return big;
}

// acos(x) for x in [-1, 1], branch-free (both branches are computed and
// selected, so that the loops calling it vectorise).
template <class C>
CK_INLINE C acos_v(C x) {
    const C pi = (C)kPi;
    C r, t, z;
    const bool big = asin_reduce(std::fabs(x), r, t, z);
    const C ac = big ? C(2) * r : C(0.5) * pi - r;  // acos(|x|)
    return x < C(0) ? pi - ac : ac;
}

// acos(x) and sin(acos x) = sqrt(1 - x^2) for x in [-1, 1].  In float with a
// single square root: for |x| <= 1/2, sqrt(1 - x^2) = S(x^2); above,
// sqrt(1 - x^2) = 2 z S(z^2), S(u) = sqrt(1 - u) on [0, 1/4] (sqrt1m_poly).
template <class C>
CK_INLINE void acos_sin_v(C x, C& th, C& sn) {
    const C pi = (C)kPi;
    C r, t, z;
    const bool big = asin_reduce(std::fabs(x), r, t, z);
    const C ac = big ? C(2) * r : C(0.5) * pi - r;
    th = x < C(0) ? pi - ac : ac;
    if constexpr (std::is_same<C, float>::value)
        sn = (big ? C(2) * z : C(1)) * sqrt1m_poly(t);
    else  // measured: for double the second sqrt beats 13 more FMAs
        sn = std::sqrt((C(1) - x) * (C(1) + x));
}

// asin(x) for x in [-1, 1], branch-free.
template <class C>
CK_INLINE C asin_v(C x) {
    C r, t, z;
    const bool big = asin_reduce(std::fabs(x), r, t, z);
    const C as = big ? C(0.5) * (C)kPi - C(2) * r : r;  // asin(|x|)
    return std::copysign(as, x);
}

template <class C>
CK_INLINE C clamp1(C r) { return std::min(C(1), std::max(C(-1), r)); }

// 2^k for the integer k held in the low mantissa bits of kk = k + 1.5 * 2^52
// (double) or k + 1.5 * 2^23 (float): k moved into the exponent field.
CK_INLINE double pow2_of_shifted(double kk) {
    int64_t bits;
    std::memcpy(&bits, &kk, sizeof bits);
    bits = (bits - 0x4338000000000000LL + 1023) << 52;
    double v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

CK_INLINE float pow2_of_shifted(float kk) {
    int32_t bits;
    std::memcpy(&bits, &kk, sizeof bits);
    bits = (bits - 0x4B400000 + 127) << 23;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

// exp(x), branch-free and vectorisable, in double (~1 ulp) or float: x is
// clamped to the range where the result stays normal, x = k ln2 + r with
// |r| <= ln2/2 (Cody-Waite split of ln2 whose high part has few enough
// significant bits that k * ln2_hi is exact), e^r by its Taylor series
// (degree 13 in double, truncation < 5e-18; 7 in float, < 6e-9), and 2^k
// assembled in the exponent bits; the integer k is read off the mantissa of
// x log2(e) + 1.5 * 2^52 (2^23 in float), with no float-to-integer
// conversion (which AVX2 lacks for 64-bit integers).
template <class F>
struct ExpParams;

template <>
struct ExpParams<double> {
    static constexpr double lo = -708.0, hi = 709.0, shifter = 6755399441055744.0;
    static constexpr double log2e = 1.4426950408889634;
    static constexpr double ln2_hi = 0.6931471803691238, ln2_lo = 1.9082149292705877e-10;
    static constexpr int degree = 13;
};

template <>
struct ExpParams<float> {
    static constexpr float lo = -87.0f, hi = 88.0f, shifter = 12582912.0f;
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723e-06f;
    static constexpr int degree = 7;
};

// 1 / k! for k = 0..15 (k! is exact in double up to 18!)
struct InvFactorials {
    double v[16];
    constexpr InvFactorials() : v() {
        double f = 1.0;
        for (int k = 0; k < 16; ++k) {
            if (k > 1) f *= (double)k;
            v[k] = 1.0 / f;
        }
    }
};
constexpr InvFactorials kInvFact{};

template <class F>
CK_INLINE F exp_t(F x) {
    using P = ExpParams<F>;
    x = std::min(P::hi, std::max(P::lo, x));
    const F kk = x * P::log2e + P::shifter;
    const F k = kk - P::shifter;
    const F r = (x - k * P::ln2_hi) - k * P::ln2_lo;
    F p = (F)kInvFact.v[P::degree];
#pragma GCC unroll 16
    for (int d = P::degree - 1; d >= 0; --d) p = p * r + (F)kInvFact.v[d];
    return p * pow2_of_shifted(kk);
}


// ---------------------------------------------------------------------------
// nonlinearities
// ---------------------------------------------------------------------------

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

// One contiguous row of entries: K[t] (and Theta[t]) with x-side factors
// (scalars when XS, else arrays) and y-side arrays.  p = 1/sigma^2 (exp) or
// the degree (poly).
template <int FN, bool NTK, bool XS, class T>
CK_INLINE void nonlin_row(T* __restrict K, T* __restrict Th, int64_t n, const T* __restrict ixa,
                       const T* __restrict sxa, const T* __restrict iy,
                       const T* __restrict sy, double pd) {
    // computed in T: float rows run twice as many lanes; every step is
    // cancellation-free (1 - rho^2 as (1 - rho)(1 + rho), acos via asin of
    // sqrt((1 - |rho|) / 2) near |rho| = 1).  The arc-cosine kernels snap
    // |rho| within 64 ulps of 1 to exactly +-1: there acos has an infinite
    // slope, so the rounding of rho = c ix iy at coincident points of
    // identical images (c and the variances are summed in different orders
    // by the pair and self passes) would leave pi - theta ~ sqrt(2 * ulps)
    // instead of pi, i.e. half the digits lost in the NTK derivative.  The
    // snap changes theta by at most sqrt(128 eps), the size of the noise
    // that the rounding of rho already causes there; outside the band
    // nothing changes (a select: the loop stays vectorised).
    constexpr T pi = (T)kPi;
    constexpr T snap = T(1) - T(64) * std::numeric_limits<T>::epsilon();
    constexpr T inv2pi = (T)(1.0 / (2.0 * kPi));
    constexpr T invpi = (T)(1.0 / kPi);
    const T p = (T)pd;
    const T ix0 = ixa[0], sx0 = sxa[0];
    for (int64_t t = 0; t < n; ++t) {
        const T ix = XS ? ix0 : ixa[t];
        const T c = K[t];
        T kv, dv;
        if (FN == FN_ERF) {
            const T z = clamp1(T(2) * c * ix * iy[t]);
            kv = T(2) * invpi * asin_v(z);
            const T w = (T(1) - z) * (T(1) + z);
            dv = T(4) * invpi * ix * iy[t] / std::sqrt(std::max(w, std::numeric_limits<T>::min()));
        } else {
            const T sx = XS ? sx0 : sxa[t];
            T rho = clamp1(c * ix * iy[t]);
            if (FN == FN_RELU || FN == FN_ARCCOS1 || FN == FN_ARCCOS0)
                rho = std::fabs(rho) >= snap ? std::copysign(T(1), rho) : rho;
            const T s = sx * sy[t];
            if (FN == FN_RELU || FN == FN_ARCCOS1) {
                T th, sn;
                acos_sin_v(rho, th, sn);
                const T f = FN == FN_RELU ? inv2pi : invpi;
                kv = s * (sn + (pi - th) * rho) * f;
                dv = (pi - th) * f;
            } else if (FN == FN_ARCCOS0) {
                kv = s * (pi - acos_v(rho)) * invpi;
                dv = T(0);
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

// Exact values at a coincident point (same image, same position, rho = 1).
inline void nonlin_coincident(int64_t fn, double p, double v, double& kv, double& dv) {
    if (fn == FN_ERF) {
        const double a = 1.0 + 2.0 * v;
        kv = (2.0 / kPi) * asin_v(2.0 * v / a);
        dv = (4.0 / kPi) / std::sqrt(a * a - 4.0 * v * v);
        return;
    }
    if (!(v > 0.0)) {  // zero variance: rho := 0
        kv = 0.0;
        switch (fn) {
            case FN_RELU: dv = 0.25; break;
            case FN_ARCCOS1: dv = 0.5; break;
            case FN_ARCCOS0: dv = 0.0; break;
            case FN_EXP: dv = std::exp(-p) * p; break;
            case FN_POLY: dv = p == 1.0 ? 1.0 : 0.0; break;
            default: dv = 1.0; break;
        }
        return;
    }
    switch (fn) {
        case FN_RELU: kv = 0.5 * v; dv = 0.5; break;
        case FN_ARCCOS1: kv = v; dv = 1.0; break;
        case FN_ARCCOS0: kv = v; dv = 0.0; break;
        case FN_EXP: kv = v; dv = p; break;
        case FN_POLY: kv = v; dv = p; break;
        default: kv = v; dv = 1.0; break;
    }
}

// ---------------------------------------------------------------------------
// states and helpers
// ---------------------------------------------------------------------------

// An allocator whose value-less construct() default-initialises: growing a
// buffer of floats with resize() then leaves the new elements uninitialised
// instead of zero-filling them (every buffer below is written before it is
// read; the few that need zeros are assigned them explicitly).  The engine's
// buffers shrink and grow again between layers and pairs, so zero-filling
// on every growth cost a memset of up to a whole 4-D tensor per op.
template <class T, class A = std::allocator<T>>
class DefaultInitAllocator : public A {
    using traits = std::allocator_traits<A>;

  public:
    template <class U>
    struct rebind {
        using other = DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>;
    };
    using A::A;
    DefaultInitAllocator() = default;
    template <class U>
    DefaultInitAllocator(const DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>& o)
        : A(o) {}
    template <class U>
    void construct(U* ptr) noexcept(std::is_nothrow_default_constructible<U>::value) {
        ::new (static_cast<void*>(ptr)) U;
    }
    template <class U, class... Args>
    void construct(U* ptr, Args&&... args) {
        traits::construct(static_cast<A&>(*this), ptr, std::forward<Args>(args)...);
    }
};

template <class T>
using Buffer = std::vector<T, DefaultInitAllocator<T>>;

template <class T>
struct State {
    int64_t h = 0, w = 0;
    int full = 0;
    Buffer<T> K, Th;
    int64_t size() const { return full ? h * h * w * w : h * w; }
};

template <class T>
inline void add_to(const T* __restrict x, T* __restrict y, int64_t n) {
    for (int64_t t = 0; t < n; ++t) y[t] += x[t];
}

template <class T>
inline void axpy(T a, const T* __restrict x, T* __restrict y, int64_t n) {
    for (int64_t t = 0; t < n; ++t) y[t] += a * x[t];
}

// A short row copied inline (vector moves; the build passes
// -fno-tree-loop-distribute-patterns so that this stays a loop and not a
// call to memcpy, whose call overhead dominates rows of a few dozen values).
template <class T>
CK_INLINE void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
    for (int64_t t = 0; t < n; ++t) dst[t] = src[t];
}

// Most taps one window sum folds in registers (taller kernels are summed in
// several passes).
constexpr int kMaxTaps = 16;

// dst[t] = c * (src[0][t] + ... + src[K-1][t]) + b, each sum in registers.
template <int K, class T>
CK_INLINE void sum_rows_k(const T* const* src, T* __restrict dst, int64_t n, T c, T b) {
    const T* s[K];
    for (int k = 0; k < K; ++k) s[k] = src[k];
    for (int64_t t = 0; t < n; ++t) {
        T acc = s[0][t];
#pragma GCC unroll 16
        for (int k = 1; k < K; ++k) acc += s[k][t];
        dst[t] = c * acc + b;
    }
}

// The same for 1 <= k <= kMaxTaps sources (dst is none of them).
template <class T>
inline void sum_rows(const T* const* src, int k, T* dst, int64_t n, T c, T b) {
    switch (k) {
        case 1: sum_rows_k<1>(src, dst, n, c, b); break;
        case 2: sum_rows_k<2>(src, dst, n, c, b); break;
        case 3: sum_rows_k<3>(src, dst, n, c, b); break;
        case 4: sum_rows_k<4>(src, dst, n, c, b); break;
        case 5: sum_rows_k<5>(src, dst, n, c, b); break;
        case 6: sum_rows_k<6>(src, dst, n, c, b); break;
        case 7: sum_rows_k<7>(src, dst, n, c, b); break;
        case 8: sum_rows_k<8>(src, dst, n, c, b); break;
        case 9: sum_rows_k<9>(src, dst, n, c, b); break;
        case 10: sum_rows_k<10>(src, dst, n, c, b); break;
        case 11: sum_rows_k<11>(src, dst, n, c, b); break;
        case 12: sum_rows_k<12>(src, dst, n, c, b); break;
        case 13: sum_rows_k<13>(src, dst, n, c, b); break;
        case 14: sum_rows_k<14>(src, dst, n, c, b); break;
        case 15: sum_rows_k<15>(src, dst, n, c, b); break;
        default: sum_rows_k<16>(src, dst, n, c, b); break;
    }
}

// dst[t] = w[0] src[0][t] + ... + w[K-1] src[K-1][t], in registers.
template <int K, class T>
CK_INLINE void wsum_rows_k(const T* const* src, const T* w, T* __restrict dst, int64_t n) {
    const T* s[K];
    T c[K];
    for (int k = 0; k < K; ++k) { s[k] = src[k]; c[k] = w[k]; }
    for (int64_t t = 0; t < n; ++t) {
        T acc = c[0] * s[0][t];
#pragma GCC unroll 16
        for (int k = 1; k < K; ++k) acc += c[k] * s[k][t];
        dst[t] = acc;
    }
}

// The same for any k >= 0 (beyond 8 sources, in passes of 8; dst is none of
// the sources).
template <class T>
inline void wsum_rows(const T* const* src, const T* w, int64_t k, T* dst, int64_t n) {
    if (k == 0) {
        std::fill(dst, dst + n, T(0));
        return;
    }
    const int64_t first = std::min<int64_t>(k, 8);
    switch (first) {
        case 1: wsum_rows_k<1>(src, w, dst, n); break;
        case 2: wsum_rows_k<2>(src, w, dst, n); break;
        case 3: wsum_rows_k<3>(src, w, dst, n); break;
        case 4: wsum_rows_k<4>(src, w, dst, n); break;
        case 5: wsum_rows_k<5>(src, w, dst, n); break;
        case 6: wsum_rows_k<6>(src, w, dst, n); break;
        case 7: wsum_rows_k<7>(src, w, dst, n); break;
        default: wsum_rows_k<8>(src, w, dst, n); break;
    }
    for (int64_t u = first; u < k; ++u)
        for (int64_t t = 0; t < n; ++t) dst[t] += w[u] * src[u][t];
}

// sum_t a[t] b[t] in double with 8 independent partial sums (one dependent
// chain of additions would be latency-bound; these vectorise).  Used for
// read-out weights (double x T) and channel sums (T x T).
template <class A, class B>
CK_INLINE double dot8(const A* __restrict a, const B* __restrict b, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t t = 0;
    for (; t + 8 <= n; t += 8)
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] += (double)a[t + u] * (double)b[t + u];
    double r = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; t < n; ++t) r += (double)a[t] * (double)b[t];
    return r;
}

// One axis of a convolution: for each tap, the input index of each output
// (-1 in the zero padding), and for stride 1 without wrap-around the
// contiguous valid range of outputs with their input offset.
struct ConvAxis {
    int64_t n_in = 0, n_out = 0, k = 0;
    bool contiguous = false;          // stride 1 and zero padding
    std::vector<int64_t> tab;         // k x n_out
    std::vector<int64_t> lo, hi, off;  // per tap (contiguous case)

    void set(int64_t nin, int64_t nout, int64_t kk, int64_t s, int64_t dil, int64_t pad,
             bool circular) {
        n_in = nin; n_out = nout; k = kk;
        contiguous = (s == 1 && !circular);
        tab.assign((size_t)(k * n_out), -1);
        lo.assign((size_t)k, 0); hi.assign((size_t)k, 0); off.assign((size_t)k, 0);
        for (int64_t d = 0; d < k; ++d) {
            int64_t first = n_out, last = -1;
            for (int64_t a = 0; a < n_out; ++a) {
                int64_t i = s * a + dil * d - pad;
                if (circular) {
                    i %= n_in;
                    if (i < 0) i += n_in;
                } else if (i < 0 || i >= n_in) {
                    i = -1;
                }
                tab[(size_t)(d * n_out + a)] = i;
                if (i >= 0) { first = std::min(first, a); last = a; }
            }
            lo[(size_t)d] = first;
            hi[(size_t)d] = last + 1 > first ? last + 1 : first;
            off[(size_t)d] = dil * d - pad;
        }
    }
};

// ---------------------------------------------------------------------------
// the engine: one per thread, buffers reused across pairs
// ---------------------------------------------------------------------------

template <class T>
class Engine {
  public:
    Engine(const Program& P, int64_t max_depth, int64_t max_size) : P_(P), ntk_(P.ntk != 0) {
        stack_.resize((size_t)max_depth);
        for (auto& s : stack_) {
            s.K.reserve((size_t)max_size);
            if (ntk_) s.Th.reserve((size_t)max_size);
        }
        bufK_.reserve((size_t)max_size);
        if (ntk_) bufT_.reserve((size_t)max_size);
        axes_.resize((size_t)(2 * P.n_ops));
        slab_analyze();
    }

    // Runs the program on (x, y).  For the self pass, x == y, tape_x ==
    // tape_y == tape_rec and `self` is set: nonlinearity inputs are recorded
    // on the tape and coincident entries use exact values.
    int run(const T* x, const T* y, const T* tape_x, const T* tape_y, T* tape_rec, bool self,
            T* out, Error& err) {
        sp_ = 0;
        const bool by_slab = slab_;
        if (by_slab && !(disp_ ? disp_compute(x, y, tape_x, tape_y, tape_rec, self)
                               : slab_compute(x, y, tape_x, tape_y, tape_rec, self)))
            return err.fail(STATUS_NOT_FINITE,
                            "a self-variance is not finite (the input images are too large "
                            "for this dtype and network: rescale them)");
        for (int64_t k = 0; k < P_.n_ops; ++k) {
            const int64_t* r = op_row(P_, k);
            const double* f = fop_row(P_, k);
            if (by_slab && role_[(size_t)k] != R_NORMAL) {
                slab_replay(k, r);
                continue;
            }
            switch (r[C_CODE]) {
                case OP_INPUT: op_input(r, f, x, y); break;
                case OP_CONV: {
                    const int64_t* rn = k + 1 < P_.n_ops ? op_row(P_, k + 1) : nullptr;
                    if (!self && rn && rn[C_CODE] == OP_NONLIN && r[C_MODE_OUT] == 1) {
                        op_conv(k, r, f, rn, fop_row(P_, k + 1), tape_x, tape_y);  // fused
                        ++k;
                    } else {
                        op_conv(k, r, f);
                    }
                    break;
                }
                case OP_NONLIN:
                    if (!op_nonlin(r, f, tape_x, tape_y, tape_rec, self))
                        return err.fail(STATUS_NOT_FINITE,
                                        "a self-variance is not finite at op %lld (the input "
                                        "images are too large for this dtype and network: "
                                        "rescale them)", k);
                    break;
                case OP_POOL: op_pool(r); break;
                case OP_DIAGSUM: op_diagsum(f); break;
                case OP_SHIFTSUM: op_shiftsum(r); break;
                case OP_TODIAG: op_todiag(); break;
                case OP_PUSH: {
                    State<T>& a = stack_[(size_t)(sp_ - 1)];
                    State<T>& b = stack_[(size_t)sp_];
                    b.h = a.h; b.w = a.w; b.full = a.full;
                    b.K.assign(a.K.begin(), a.K.end());
                    if (ntk_) b.Th.assign(a.Th.begin(), a.Th.end());
                    ++sp_;
                    break;
                }
                case OP_SWAP: std::swap(stack_[(size_t)(sp_ - 1)], stack_[(size_t)(sp_ - 2)]); break;
                case OP_ADD: {
                    State<T>& a = stack_[(size_t)(sp_ - 1)];
                    State<T>& b = stack_[(size_t)(sp_ - 2)];
                    add_to(a.K.data(), b.K.data(), b.size());
                    if (ntk_) add_to(a.Th.data(), b.Th.data(), b.size());
                    --sp_;
                    break;
                }
                case OP_POP: --sp_; break;
                case OP_OUTPUT: {
                    const State<T>& a = stack_[(size_t)(sp_ - 1)];
                    const T v = ntk_ ? a.Th[0] : a.K[0];
                    if (!std::isfinite((double)v))
                        return err.fail(STATUS_NOT_FINITE,
                                        "kernel output %lld is not finite (check the input "
                                        "images for NaN/inf or overflow)", r[C_OUTPUT_SLOT]);
                    out[r[C_OUTPUT_SLOT]] = v;
                    break;
                }
                default: return err.fail(STATUS_BAD_PROGRAM, "unknown op");
            }
        }
        return STATUS_OK;
    }

  private:
    State<T>& top() { return stack_[(size_t)(sp_ - 1)]; }

    // -----------------------------------------------------------------------
    // slab-major path
    //
    // A stride-1 convolution with zero padding whose output has the input's
    // size maps the blocks (i, i') of a full tensor only from blocks of the
    // same height displacement i' - i, and a nonlinearity is entrywise; so
    // when a program starts INPUT, then only such convolutions and
    // nonlinearities, with every read-out a pooling to 1x1 (global average
    // pooling, possibly tapped after any layer), each "slab" of blocks with
    // one displacement goes through all the layers on its own while it stays
    // in the L2 cache (the layer-by-layer order streams every layer's 4-D
    // tensor through the shared cache), and each read-out accumulates its
    // weighted sum.  The ops of that prefix are then replayed on 1x1 states
    // (slab_replay); everything after a read-out runs as usual.
    // -----------------------------------------------------------------------

    enum Role { R_NORMAL = 0, R_INPUT, R_SKIP, R_PUSH, R_REDUCE };

    bool is_reduction(const int64_t* r, int64_t H, int64_t W) const {
        return (r[C_CODE] == OP_POOL || r[C_CODE] == OP_SHIFTSUM) && r[C_MODE_IN] == 1 &&
               r[C_IN_H] == H && r[C_IN_W] == W && r[C_OUT_H] == 1 && r[C_OUT_W] == 1;
    }

    void add_reduction(int64_t k, int64_t H, int64_t W) {
        const int64_t* r = op_row(P_, k);
        if (r[C_CODE] == OP_SHIFTSUM) {  // weights by displacement
            Reduction red;
            red.disp = true;
            const double* wh = P_.blob_f + r[C_SHIFTSUM_H_WEIGHTS];
            const double* ww = P_.blob_f + r[C_SHIFTSUM_W_WEIGHTS];
            red.hw.assign(wh, wh + (2 * H - 1));
            red.ww.assign(ww, ww + (2 * W - 1));
            slot_[(size_t)k] = (int64_t)reds_.size();
            reds_.push_back(std::move(red));
            role_[(size_t)k] = R_REDUCE;
            chain_.push_back(k);
            return;
        }
        const int64_t* hp = P_.blob_i + r[C_POOL_H_PTR];
        const int64_t* hi = P_.blob_i + r[C_POOL_H_IDX];
        const double* hv = P_.blob_f + r[C_POOL_H_IDX];
        const int64_t* wp = P_.blob_i + r[C_POOL_W_PTR];
        const int64_t* wi = P_.blob_i + r[C_POOL_W_IDX];
        const double* wv = P_.blob_f + r[C_POOL_W_IDX];
        Reduction red;
        red.hw.assign((size_t)H, 0.0);
        red.ww.assign((size_t)W, 0.0);
        for (int64_t u = hp[0]; u < hp[1]; ++u) red.hw[(size_t)hi[u]] += hv[u];
        for (int64_t v = wp[0]; v < wp[1]; ++v) red.ww[(size_t)wi[v]] += wv[v];
        slot_[(size_t)k] = (int64_t)reds_.size();
        reds_.push_back(std::move(red));
        role_[(size_t)k] = R_REDUCE;
        chain_.push_back(k);
    }

    void slab_analyze() {
        const int64_t n = P_.n_ops;
        if (n < 2) return;
        const int64_t* r0 = op_row(P_, 0);
        if (r0[C_CODE] != OP_INPUT || r0[C_MODE_OUT] != 1) return;
        const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W];
        role_.assign((size_t)n, R_NORMAL);
        slot_.assign((size_t)n, -1);
        role_[0] = R_INPUT;
        for (int64_t k = 1; k < n; ++k) {
            const int64_t* r = op_row(P_, k);
            const int64_t code = r[C_CODE];
            if (code == OP_CONV) {
                if (r[C_MODE_IN] != 1 || r[C_MODE_OUT] != 1 || r[C_IN_H] != H || r[C_IN_W] != W ||
                    r[C_OUT_H] != H || r[C_OUT_W] != W || r[C_CONV_SH] != 1 || r[C_CONV_SW] != 1 ||
                    r[C_CONV_CIRC_H] != 0 || r[C_CONV_CIRC_W] != 0 || r[C_CONV_KH] > kMaxTaps ||
                    r[C_CONV_KW] > kMaxTaps)
                    break;
                role_[(size_t)k] = R_SKIP;
                chain_.push_back(k);
            } else if (code == OP_NONLIN) {
                if (r[C_MODE_IN] != 1 || r[C_MODE_OUT] != 1 || r[C_IN_H] != H || r[C_IN_W] != W) break;
                role_[(size_t)k] = R_SKIP;
                chain_.push_back(k);
            } else if (code == OP_PUSH) {
                // a tap: PUSH, read-out to 1x1, ops on that 1x1 state, POP
                if (k + 1 >= n || !is_reduction(op_row(P_, k + 1), H, W)) break;
                int64_t depth = 1, j = k + 2;
                for (; j < n; ++j) {
                    const int64_t c = op_row(P_, j)[C_CODE];
                    if (c == OP_PUSH) ++depth;
                    else if (c == OP_ADD || c == OP_POP) --depth;
                    if (depth == 0) break;
                }
                if (j >= n || op_row(P_, j)[C_CODE] != OP_POP) break;
                role_[(size_t)k] = R_PUSH;
                add_reduction(k + 1, H, W);
                k = j;  // the tap's own ops run as usual; its POP returns to the spatial state
            } else if (is_reduction(r, H, W)) {
                add_reduction(k, H, W);
                slab_ = true;
                break;
            } else {
                break;
            }
        }
        if (!slab_) {
            role_.clear();
            chain_.clear();
            reds_.clear();
            return;
        }
        // the slabs some read-out weighs (a shift read-out needs few of them)
        need_.assign((size_t)(2 * H - 1), 0);
        for (const Reduction& red : reds_)
            for (int64_t di = -(H - 1); di < H; ++di) {
                bool used = false;
                if (red.disp) {
                    used = red.hw[(size_t)(di + H - 1)] != 0.0;
                } else {
                    for (int64_t i = std::max<int64_t>(0, -di); i < H && i + di < H && !used; ++i)
                        used = red.hw[(size_t)i] * red.hw[(size_t)(i + di)] != 0.0;
                }
                if (used) need_[(size_t)(di + H - 1)] = 1;
            }
        saxes_.resize(chain_.size() * (size_t)(H + 1));
        disp_analyze(H, W);
        accK_.assign(reds_.size(), 0.0);
        accT_.assign(reds_.size(), 0.0);
    }

    // the ops of the slab prefix, on 1x1 states
    void slab_replay(int64_t k, const int64_t* r) {
        switch (role_[(size_t)k]) {
            case R_INPUT:
                sp_ = 1;
                resize(top(), 1, 1, 0);
                break;
            case R_PUSH:
                resize(stack_[(size_t)sp_], 1, 1, 0);
                ++sp_;
                break;
            case R_REDUCE: {
                State<T>& s = top();
                const int64_t slot = slot_[(size_t)k];
                resize(s, 1, 1, (int)r[C_MODE_OUT]);
                s.K[0] = (T)accK_[(size_t)slot];
                if (ntk_) s.Th[0] = (T)accT_[(size_t)slot];
                break;
            }
            default: break;  // convolutions and nonlinearities: done slab by slab
        }
    }

    // height axis of conv op chain_[ci] restricted to a slab of h blocks
    // (zero outside: the blocks where one image is outside are absent)
    const ConvAxis* slab_axis(size_t ci, int64_t h, const int64_t* r) {
        const int64_t H = op_row(P_, 0)[C_OUT_H];
        ConvAxis& a = saxes_[ci * (size_t)(H + 1) + (size_t)h];
        if (a.k == 0) a.set(h, h, r[C_CONV_KH], 1, r[C_CONV_DH], r[C_CONV_PAD_H], false);
        return &a;
    }

    // One W x W block (rows j of image x, columns j' of image y).  In float
    // the per-position factors are expanded to the block's shape so that the
    // nonlinearity runs as one flat vector loop (rows of a few dozen values
    // would each end in a long scalar tail).
    template <int FN>
    void block_nonlin(T* K, T* Th, int64_t W, const T* ix, const T* sx, const T* iy,
                     const T* sy, double p) {
        if constexpr (!std::is_same<T, float>::value) {
            // double rows lose fewer lanes to their tails: measured faster per row
            for (int64_t j = 0; j < W; ++j) {
                if (ntk_)
                    nonlin_row<FN, true, true>(K + j * W, Th + j * W, W, ix + j, sx + j, iy, sy, p);
                else
                    nonlin_row<FN, false, true>(K + j * W, Th, W, ix + j, sx + j, iy, sy, p);
            }
            return;
        }
        const int64_t blk = W * W;
        xe_.resize((size_t)(4 * blk));
        T* ixe = xe_.data();
        T* sxe = ixe + blk;
        T* iye = sxe + blk;
        T* sye = iye + blk;
        for (int64_t j = 0; j < W; ++j) {
            const T a = ix[j], s = sx[j];
            T* __restrict r1 = ixe + j * W;
            T* __restrict r2 = sxe + j * W;
            for (int64_t t = 0; t < W; ++t) { r1[t] = a; r2[t] = s; }
            copy_row(iye + j * W, iy, W);
            copy_row(sye + j * W, sy, W);
        }
        nonlin_flat<FN>(K, Th, blk, ixe, sxe, iye, sye, p);
    }

    // A flat nonlinearity in a function of its own: inlined into the block
    // loops above, GCC left the loop scalar (measured: 4x slower in float).
    template <int FN>
    __attribute__((noinline)) void nonlin_flat(T* K, T* Th, int64_t n, const T* ix,
                                               const T* sx, const T* iy, const T* sy,
                                               double p) {
        if (ntk_)
            nonlin_row<FN, true, false>(K, Th, n, ix, sx, iy, sy, p);
        else
            nonlin_row<FN, false, false>(K, Th, n, ix, sx, iy, sy, p);
    }

    void slab_nonlin_block(int64_t fn, T* K, T* Th, int64_t W, const T* ix, const T* sx,
                           const T* iy, const T* sy, double p) {
        switch (fn) {
            case FN_RELU: block_nonlin<FN_RELU>(K, Th, W, ix, sx, iy, sy, p); break;
            case FN_ERF: block_nonlin<FN_ERF>(K, Th, W, ix, sx, iy, sy, p); break;
            case FN_EXP: block_nonlin<FN_EXP>(K, Th, W, ix, sx, iy, sy, p); break;
            case FN_ARCCOS0: block_nonlin<FN_ARCCOS0>(K, Th, W, ix, sx, iy, sy, p); break;
            case FN_ARCCOS1: block_nonlin<FN_ARCCOS1>(K, Th, W, ix, sx, iy, sy, p); break;
            case FN_POLY: block_nonlin<FN_POLY>(K, Th, W, ix, sx, iy, sy, p); break;
            default: block_nonlin<FN_LINEAR>(K, Th, W, ix, sx, iy, sy, p); break;
        }
    }

    // The self pass (x == y, `self`) runs the slab of displacement 0 first,
    // recording each nonlinearity's factors on the tape from its diagonal
    // (as op_nonlin does) and setting the coincident entries exactly; the
    // slabs of displacement di and -di of a self kernel are transposes with
    // the same read-out sums, so only di > 0 follow, counted twice.
    // Returns false on a non-finite self-variance.
    bool slab_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self) {
        const int64_t* r0 = op_row(P_, 0);
        const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS], HW = H * W;
        const int64_t blk = W * W;
        const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
        std::fill(accK_.begin(), accK_.end(), 0.0);
        std::fill(accT_.begin(), accT_.end(), 0.0);
        // channel-major copy of y: contiguous rows for the input blocks
        yT_.resize((size_t)(C * HW));
        for (int64_t q = 0; q < HW; ++q)
            for (int64_t c = 0; c < C; ++c) yT_[(size_t)(c * HW + q)] = y[q * C + c];
        cw_ = axes_.data() + 1;  // the width axis: the same for every conv (set below)
        const int64_t n_slabs = self ? H : 2 * H - 1;
        for (int64_t sl = 0; sl < n_slabs; ++sl) {
            const int64_t di = self ? sl : sl - (H - 1);
            const double mult = self && di > 0 ? 2.0 : 1.0;
            const bool record = self && di == 0;
            if (!record && !need_[(size_t)(di + H - 1)]) continue;  // no read-out weighs it
            const int64_t i0 = di < 0 ? -di : 0, h = H - (di < 0 ? -di : di);
            const int64_t n = h * blk;
            sK_.resize((size_t)n);
            T* K = sK_.data();
            T* Th = nullptr;
            // input blocks (i, i + di)
            for (int64_t a = 0; a < h; ++a) {
                const int64_t i = i0 + a, i2 = i + di;
                for (int64_t j = 0; j < W; ++j) {
                    T* __restrict dst = K + a * blk + j * W;
                    const T* xp = x + (i * W + j) * C;
                    const T a0 = scale * xp[0];
                    const T* y0 = yT_.data() + i2 * W;
                    for (int64_t t = 0; t < W; ++t) dst[t] = a0 * y0[t];
                    for (int64_t c = 1; c < C; ++c)
                        axpy((T)(scale * xp[c]), yT_.data() + c * HW + i2 * W, dst, W);
                }
            }
            if (ntk_) {
                sT_.assign((size_t)n, T(0));
                Th = sT_.data();
            }
            for (size_t ci = 0; ci < chain_.size(); ++ci) {
                const int64_t k = chain_[ci];
                const int64_t* r = op_row(P_, k);
                const double* f = fop_row(P_, k);
                const int64_t code = r[C_CODE];
                if (code == OP_CONV) {
                    ConvAxis* ax = axes_.data() + 2 * k;
                    if (ax[1].k == 0) ax[1].set(W, W, r[C_CONV_KW], 1, r[C_CONV_DW], r[C_CONV_PAD_W], false);
                    cw_ = ax + 1;
                    ch_ = slab_axis(ci, h, r);
                    conv_pad_layout(W);
                    tmp_.resize((size_t)blk);
                    const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(r[C_CONV_KH] * r[C_CONV_KW]));
                    const T b = (T)f[F_CONV_BIAS_VAR];
                    const bool trainable = r[C_CONV_TRAINABLE] != 0;
                    // a following nonlinearity is applied to each block while in cache
                    const int64_t* rn = ci + 1 < chain_.size() ? op_row(P_, chain_[ci + 1]) : nullptr;
                    const bool fuse = rn && rn[C_CODE] == OP_NONLIN && !record;
                    nK_.resize((size_t)n);
                    if (ntk_) nT_.resize((size_t)n);
                    for (int64_t a = 0; a < h; ++a) {
                        const T* rows[kMaxTaps];
                        int nk = 0;
                        for (int64_t t = 0; t < ch_->k; ++t) {
                            const int64_t src = ch_->tab[(size_t)(t * h + a)];
                            if (src >= 0) rows[nk++] = K + src * blk;
                        }
                        T* oK = nK_.data() + a * blk;
                        conv_block_rows(rows, nk, false, oK, W, c, b);
                        T* oT = nullptr;
                        if (ntk_) {
                            for (int v = 0; v < nk; ++v) rows[v] = Th + (rows[v] - K);
                            oT = nT_.data() + a * blk;
                            conv_block_rows(rows, nk, false, oT, W, c, T(0));
                            if (trainable) add_to(oK, oT, blk);
                        }
                        if (fuse) {
                            const double* fn_f = fop_row(P_, chain_[ci + 1]);
                            const int64_t fn = rn[C_NONLIN_FN], off = rn[C_NONLIN_TAPE];
                            const double p = nonlin_param(rn, fn_f);
                            const int64_t i = i0 + a, i2 = i + di;
                            slab_nonlin_block(fn, oK, oT, W, tx + off + i * W, tx + off + HW + i * W,
                                              ty + off + i2 * W, ty + off + HW + i2 * W, p);
                        }
                    }
                    sK_.swap(nK_);
                    K = sK_.data();
                    if (ntk_) {
                        sT_.swap(nT_);
                        Th = sT_.data();
                    }
                    if (fuse) ++ci;
                } else if (code == OP_NONLIN) {  // not fused with the conv before it
                    const int64_t fn = r[C_NONLIN_FN], off = r[C_NONLIN_TAPE];
                    const double p = nonlin_param(r, f);
                    if (record) {
                        if (!slab_self_nonlin(fn, p, off, K, Th, H, W, tape_rec)) return false;
                        continue;
                    }
                    for (int64_t a = 0; a < h; ++a) {
                        const int64_t i = i0 + a, i2 = i + di;
                        slab_nonlin_block(fn, K + a * blk, ntk_ ? Th + a * blk : nullptr, W,
                                          tx + off + i * W, tx + off + HW + i * W,
                                          ty + off + i2 * W, ty + off + HW + i2 * W, p);
                    }
                } else {  // a read-out: weighted sum of this slab
                    const Reduction& red = reds_[(size_t)slot_[(size_t)k]];
                    double sK = 0.0, sT = 0.0;
                    if (red.disp) {  // sum_j sum_j' ww[j' - j] over the slab, times wh[di]
                        const double wr = red.hw[(size_t)(di + H - 1)];
                        if (wr != 0.0) {
                            for (int64_t a = 0; a < h; ++a)
                                for (int64_t j = 0; j < W; ++j) {
                                    const double* wj = red.ww.data() + (W - 1 - j);
                                    sK += dot8(wj, K + a * blk + j * W, W);
                                    if (ntk_) sT += dot8(wj, Th + a * blk + j * W, W);
                                }
                            sK *= wr;
                            sT *= wr;
                        }
                    }
                    for (int64_t a = 0; a < h && !red.disp; ++a) {
                        const int64_t i = i0 + a;
                        const double wr = red.hw[(size_t)i] * red.hw[(size_t)(i + di)];
                        if (wr == 0.0) continue;
                        double bK = 0.0, bT = 0.0;
                        for (int64_t j = 0; j < W; ++j) {
                            const double rK = dot8(red.ww.data(), K + a * blk + j * W, W);
                            const double rT = ntk_ ? dot8(red.ww.data(), Th + a * blk + j * W, W) : 0.0;
                            bK += red.ww[(size_t)j] * rK;
                            bT += red.ww[(size_t)j] * rT;
                        }
                        sK += wr * bK;
                        sT += wr * bT;
                    }
                    const int64_t slot = slot_[(size_t)k];
                    accK_[(size_t)slot] += mult * sK;
                    accT_[(size_t)slot] += mult * sT;
                }
            }
        }
        return true;
    }

    // The nonlinearity of the displacement-0 slab in the self pass: tape
    // factors from the diagonal, then the entries, then the exact coincident
    // values (the slab counterpart of op_nonlin's self branch).
    bool slab_self_nonlin(int64_t fn, double p, int64_t off, T* K, T* Th, int64_t H, int64_t W,
                          T* tape_rec) {
        const int64_t HW = H * W, blk = W * W;
        diagK_.resize((size_t)HW);
        diagT_.resize((size_t)HW);
        fx_.resize((size_t)(2 * HW));
        for (int64_t a = 0; a < H; ++a)
            for (int64_t j = 0; j < W; ++j) {
                const int64_t e = a * blk + j * W + j;
                diagK_[(size_t)(a * W + j)] = (double)K[e];
                diagT_[(size_t)(a * W + j)] = ntk_ ? (double)Th[e] : 0.0;
            }
        for (int64_t q = 0; q < HW; ++q)
            if (!std::isfinite(diagK_[(size_t)q]) || !std::isfinite(diagT_[(size_t)q])) return false;
        position_factors(fn, diagK_.data(), HW, fx_.data(), fx_.data() + HW);
        for (int64_t q = 0; q < 2 * HW; ++q) tape_rec[off + q] = (T)fx_[(size_t)q];
        const T* t = tape_rec + off;
        for (int64_t a = 0; a < H; ++a)
            slab_nonlin_block(fn, K + a * blk, ntk_ ? Th + a * blk : nullptr, W, t + a * W,
                              t + HW + a * W, t + a * W, t + HW + a * W, p);
        for (int64_t a = 0; a < H; ++a)
            for (int64_t j = 0; j < W; ++j) {
                const int64_t e = a * blk + j * W + j;
                double kv, dv;
                nonlin_coincident(fn, p, diagK_[(size_t)(a * W + j)], kv, dv);
                K[e] = (T)kv;
                if (ntk_) Th[e] = (T)(diagT_[(size_t)(a * W + j)] * dv);
            }
        return true;
    }

    // -----------------------------------------------------------------------
    // displacement path
    //
    // When every read-out of a slab-path prefix weighs displacements
    // (ShiftAverage), the prefix runs once per displacement d = q - p with a
    // non-zero weight, on the map D_d[p] = K[p, p + d] over the positions p
    // where both p and p + d are inside: a same-size stride-1 zero-padded
    // convolution sums K[p + t, p + d + t] over the taps t that keep both
    // inside, i.e. it is the same convolution on that smaller map (the
    // diagonal path's conv_diag); nonlinearities read x's factors at p and
    // y's at p + d.  d = 0 is the diagonal path itself and goes first in the
    // self pass (it records the tape); d and -d of a self kernel have equal
    // sums (weights are symmetric), so the self pass counts d > 0 twice.
    // -----------------------------------------------------------------------

    void disp_analyze(int64_t H, int64_t W) {
        for (const Reduction& red : reds_)
            if (!red.disp) return;
        disp_ = true;
        dlist_.clear();
        dlist_.push_back({0, 0});
        for (int64_t dh = -(H - 1); dh < H; ++dh)
            for (int64_t dw = -(W - 1); dw < W; ++dw) {
                if (dh == 0 && dw == 0) continue;
                bool used = false;
                for (const Reduction& red : reds_)
                    used |= red.hw[(size_t)(dh + H - 1)] * red.ww[(size_t)(dw + W - 1)] != 0.0;
                if (used) dlist_.push_back({dh, dw});
            }
        daxes_.resize(chain_.size() * (size_t)(H + W + 2));
    }

    // conv axis of chain_[ci] on a map of n rows (axis 0) or columns (axis 1)
    const ConvAxis* disp_axis(size_t ci, int axis, int64_t n, const int64_t* r) {
        const int64_t H = op_row(P_, 0)[C_OUT_H], W = op_row(P_, 0)[C_OUT_W];
        ConvAxis& a = daxes_[ci * (size_t)(H + W + 2) + (axis ? (size_t)(H + 1 + n) : (size_t)n)];
        if (a.k == 0) a.set(n, n, r[axis ? C_CONV_KW : C_CONV_KH], 1, r[axis ? C_CONV_DW : C_CONV_DH],
                           r[axis ? C_CONV_PAD_W : C_CONV_PAD_H], false);
        return &a;
    }

    // The factors of the map's positions are gathered into flat arrays, so
    // that the nonlinearity runs as one vector loop over the map (rows of
    // W - |dw| values would each end in a scalar tail).
    template <int FN>
    void disp_nonlin(T* K, T* Th, int64_t h, int64_t w, const T* fx, const T* fy, int64_t HW,
                     int64_t W, int64_t dh, int64_t dw, int64_t i0, int64_t j0, double p) {
        const int64_t n = h * w;
        xe_.resize((size_t)(4 * n));
        T* ixe = xe_.data();
        T* sxe = ixe + n;
        T* iye = sxe + n;
        T* sye = iye + n;
        for (int64_t a = 0; a < h; ++a) {
            const T* ix = fx + (i0 + a) * W + j0;
            const T* iy = fy + (i0 + a + dh) * W + j0 + dw;
            copy_row(ixe + a * w, ix, w);
            copy_row(sxe + a * w, ix + HW, w);
            copy_row(iye + a * w, iy, w);
            copy_row(sye + a * w, iy + HW, w);
        }
        nonlin_flat<FN>(K, Th, n, ixe, sxe, iye, sye, p);
    }

    bool disp_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self) {
        const int64_t* r0 = op_row(P_, 0);
        const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS], HW = H * W;
        const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
        std::fill(accK_.begin(), accK_.end(), 0.0);
        std::fill(accT_.begin(), accT_.end(), 0.0);
        for (const auto& d : dlist_) {
            const int64_t dh = d.first, dw = d.second;
            const bool record = self && dh == 0 && dw == 0;
            if (self && (dh < 0 || (dh == 0 && dw < 0))) continue;  // the mirror of a d > 0
            const double mult = self && !record ? 2.0 : 1.0;
            const int64_t i0 = dh < 0 ? -dh : 0, j0 = dw < 0 ? -dw : 0;
            const int64_t h = H - (dh < 0 ? -dh : dh), w = W - (dw < 0 ? -dw : dw), n = h * w;
            sK_.resize((size_t)n);
            T* K = sK_.data();
            for (int64_t a = 0; a < h; ++a) {  // the input map
                const T* xr = x + ((i0 + a) * W + j0) * C;
                const T* yr = y + ((i0 + a + dh) * W + j0 + dw) * C;
                T* __restrict dst = K + a * w;
                for (int64_t b = 0; b < w; ++b) {
                    T acc = T(0);
                    for (int64_t c = 0; c < C; ++c) acc += xr[b * C + c] * yr[b * C + c];
                    dst[b] = scale * acc;
                }
            }
            T* Th = nullptr;
            if (ntk_) {
                sT_.assign((size_t)n, T(0));
                Th = sT_.data();
            }
            for (size_t ci = 0; ci < chain_.size(); ++ci) {
                const int64_t k = chain_[ci];
                const int64_t* r = op_row(P_, k);
                const double* f = fop_row(P_, k);
                const int64_t code = r[C_CODE];
                if (code == OP_CONV) {
                    ch_ = disp_axis(ci, 0, h, r);
                    cw_ = disp_axis(ci, 1, w, r);
                    const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(r[C_CONV_KH] * r[C_CONV_KW]));
                    nK_.resize((size_t)n);
                    conv_diag(K, nK_.data(), h, w, c, (T)f[F_CONV_BIAS_VAR]);
                    sK_.swap(nK_);
                    K = sK_.data();
                    if (ntk_) {
                        nT_.resize((size_t)n);
                        conv_diag(Th, nT_.data(), h, w, c, T(0));
                        if (r[C_CONV_TRAINABLE] != 0) add_to(K, nT_.data(), n);
                        sT_.swap(nT_);
                        Th = sT_.data();
                    }
                } else if (code == OP_NONLIN) {
                    const int64_t fn = r[C_NONLIN_FN], off = r[C_NONLIN_TAPE];
                    const double p = nonlin_param(r, f);
                    if (record) {
                        if (!disp_self_nonlin(fn, p, off, K, Th, HW, tape_rec)) return false;
                        continue;
                    }
                    with_nonlinearity(fn, [&](auto fc) {
                        disp_nonlin<decltype(fc)::value>(K, Th, h, w, tx + off, ty + off, HW, W,
                                                         dh, dw, i0, j0, p);
                    });
                } else {  // a read-out
                    const int64_t slot = slot_[(size_t)k];
                    const Reduction& red = reds_[(size_t)slot];
                    const double wgt = red.hw[(size_t)(dh + H - 1)] * red.ww[(size_t)(dw + W - 1)];
                    if (wgt == 0.0) continue;
                    double sK = 0.0, sT = 0.0;
                    for (int64_t t = 0; t < n; ++t) sK += (double)K[t];
                    if (ntk_)
                        for (int64_t t = 0; t < n; ++t) sT += (double)Th[t];
                    accK_[(size_t)slot] += mult * wgt * sK;
                    accT_[(size_t)slot] += mult * wgt * sT;
                }
            }
        }
        return true;
    }

    // The nonlinearity of displacement 0 in the self pass: every entry is
    // coincident; record the factors and set the exact values.
    bool disp_self_nonlin(int64_t fn, double p, int64_t off, T* K, T* Th, int64_t HW,
                          T* tape_rec) {
        diagK_.resize((size_t)HW);
        fx_.resize((size_t)(2 * HW));
        for (int64_t q = 0; q < HW; ++q) {
            diagK_[(size_t)q] = (double)K[q];
            if (!std::isfinite(diagK_[(size_t)q]) || (ntk_ && !std::isfinite((double)Th[q])))
                return false;
        }
        position_factors(fn, diagK_.data(), HW, fx_.data(), fx_.data() + HW);
        for (int64_t q = 0; q < 2 * HW; ++q) tape_rec[off + q] = (T)fx_[(size_t)q];
        for (int64_t q = 0; q < HW; ++q) {
            double kv, dv;
            nonlin_coincident(fn, p, diagK_[(size_t)q], kv, dv);
            K[q] = (T)kv;
            if (ntk_) Th[q] = (T)((double)Th[q] * dv);
        }
        return true;
    }

    bool disp_ = false;
    std::vector<std::pair<int64_t, int64_t>> dlist_;  // displacements (dh, dw), (0, 0) first
    std::vector<ConvAxis> daxes_;

    struct Reduction {
        std::vector<double> hw, ww;  // read-out weights per row / column,
        bool disp = false;           // or per displacement (length 2n - 1)
    };
    std::vector<char> need_;         // per height displacement: weighed by a read-out
    bool slab_ = false;
    std::vector<int> role_;
    std::vector<int64_t> slot_;    // per op: its read-out's index
    std::vector<int64_t> chain_;   // the prefix's convs, nonlinearities and read-outs, in order
    std::vector<Reduction> reds_;
    std::vector<double> accK_, accT_;
    std::vector<ConvAxis> saxes_;
    Buffer<T> sK_, sT_, nK_, nT_, xe_;

    void resize(State<T>& s, int64_t h, int64_t w, int full) {
        s.h = h; s.w = w; s.full = full;
        s.K.resize((size_t)s.size());
        if (ntk_) s.Th.resize((size_t)s.size());
    }

    void op_input(const int64_t* r, const double* f, const T* x, const T* y) {
        const int64_t H = r[C_OUT_H], W = r[C_OUT_W], C = r[C_INPUT_CHANNELS];
        const T scale = (T)f[F_INPUT_SCALE];
        sp_ = 1;
        State<T>& s = top();
        resize(s, H, W, (int)r[C_MODE_OUT]);
        T* K = s.K.data();
        if (s.full) {
            // channel-major copy of y so that rows are contiguous
            yT_.resize((size_t)(C * H * W));
            for (int64_t q = 0; q < H * W; ++q)
                for (int64_t c = 0; c < C; ++c) yT_[(size_t)(c * H * W + q)] = y[q * C + c];
            for (int64_t i = 0; i < H; ++i)
                for (int64_t i2 = 0; i2 < H; ++i2)
                    for (int64_t j = 0; j < W; ++j) {
                        T* __restrict dst = K + ((i * H + i2) * W + j) * W;
                        const T* xp = x + (i * W + j) * C;
                        const T a0 = (T)(scale * xp[0]);
                        const T* y0 = yT_.data() + i2 * W;
                        for (int64_t t = 0; t < W; ++t) dst[t] = a0 * y0[t];
                        for (int64_t c = 1; c < C; ++c)
                            axpy((T)(scale * xp[c]), yT_.data() + c * H * W + i2 * W, dst, W);
                    }
        } else {
            if (C < 8) {
                for (int64_t p = 0; p < H * W; ++p) {
                    double acc = 0.0;
                    for (int64_t c = 0; c < C; ++c) acc += (double)x[p * C + c] * (double)y[p * C + c];
                    K[p] = (T)(scale * acc);
                }
            } else {  // many channels (e.g. patch features): vectorised dot products
                for (int64_t p = 0; p < H * W; ++p)
                    K[p] = (T)(scale * dot8(x + p * C, y + p * C, C));
            }
        }
        if (ntk_) std::fill(s.Th.begin(), s.Th.end(), T(0));
    }

    // One output block (a, a2) of a full tensor: o = c * (window sums) + b.
    // Height taps are summed into tmp (W x W) in one pass, then width taps
    // into o, every output element summing all its taps in registers and
    // being stored once (sum_rows); in the contiguous case (stride 1, zero
    // padding) the few border columns where some tap falls in the padding
    // are summed separately.
    void conv_block(const T* src, T* o, int64_t a, int64_t a2, int64_t H, int64_t W, T c,
                    T b) {
        const int64_t blk = W * W;
        T* tmp = tmp_.data();
        const T* rows[kMaxTaps];
        int nk = 0;
        bool folded = false;  // very tall kernels: the first kMaxTaps taps summed into tmp
        for (int64_t t = 0; t < ch_->k; ++t) {
            const int64_t i1 = ch_->tab[(size_t)(t * ch_->n_out + a)];
            const int64_t i2 = ch_->tab[(size_t)(t * ch_->n_out + a2)];
            if (i1 < 0 || i2 < 0) continue;
            const T* blk_src = src + (i1 * H + i2) * blk;
            if (folded) {
                add_to(blk_src, tmp, blk);
            } else if (nk == kMaxTaps) {
                sum_rows(rows, nk, tmp, blk, T(1), T(0));
                add_to(blk_src, tmp, blk);
                folded = true;
            } else {
                rows[nk++] = blk_src;
            }
        }
        conv_block_rows(rows, nk, folded, o, W, c, b);
    }

    // The rest of conv_block, from the nk source blocks of the height taps
    // (or, when `folded`, their sum already in tmp_).
    void conv_block_rows(const T* const* rows, int nk, bool folded, T* o, int64_t W, T c, T b) {
        const int64_t blk = W * W, Wo = cw_->n_out;
        T* tmp = tmp_.data();
        if (nk == 0 && !folded) {
            std::fill(o, o + Wo * Wo, b);
            return;
        }
        if (folded) {
            // tmp holds the sum already
        } else if (nk > 1) {
            sum_rows(rows, nk, tmp, blk, T(1), T(0));
        } else {
            tmp = const_cast<T*>(rows[0]);  // a single tap: read the input block itself
        }
        if (cw_->contiguous && cw_->k <= kMaxTaps) {
            // tmp copied into the zero-padded block of conv_pad_layout, where
            // every width tap is a constant flat offset: one flat sum for the
            // whole output block, then its rows are compacted into o
            const int64_t Wp = bpad_w_;
            T* pad = bpad_.data();
            for (int64_t j = 0; j < W; ++j)
                copy_row(pad + (bpad_top_ + j) * Wp + bpad_top_, tmp + j * W, W);
            const T* rws[kMaxTaps];
            for (int64_t t = 0; t < cw_->k; ++t)
                rws[t] = pad + bpad_top_ * (Wp + 1) + cw_->off[(size_t)t] * (Wp + 1);
            T* wo = bout_.data();
            sum_rows(rws, (int)cw_->k, wo, (Wo - 1) * Wp + Wo, c, b);
            for (int64_t bb = 0; bb < Wo; ++bb)
                copy_row(o + bb * Wo, wo + bb * Wp, Wo);
        } else {
            std::fill(o, o + Wo * Wo, T(0));
            for (int64_t t = 0; t < cw_->k; ++t) {
                const int64_t* tt = cw_->tab.data() + t * Wo;
                for (int64_t bb = 0; bb < Wo; ++bb) {
                    const int64_t j1 = tt[bb];
                    if (j1 < 0) continue;
                    const T* row = tmp + j1 * W;
                    T* orow = o + bb * Wo;
                    for (int64_t b2 = 0; b2 < Wo; ++b2) {
                        const int64_t j2 = tt[b2];
                        orow[b2] += j2 >= 0 ? row[j2 >= 0 ? j2 : 0] : T(0);
                    }
                }
            }
            for (int64_t t = 0; t < Wo * Wo; ++t) o[t] = c * o[t] + b;
        }
    }

    // The zero-padded W x W block used by conv_block's width stage: the
    // block sits at rows/columns [top, top + W) of a (top + W + right + 1) x
    // (top + W + right) buffer whose padding is zeroed once per convolution.
    void conv_pad_layout(int64_t W) {
        const int64_t Wo = cw_->n_out;
        int64_t top = 0, right = 0;
        for (int64_t t = 0; t < cw_->k; ++t) {
            top = std::max(top, -cw_->off[(size_t)t]);
            right = std::max(right, cw_->off[(size_t)t] + Wo - W);
        }
        bpad_top_ = top;
        bpad_w_ = top + W + right;
        bpad_.assign((size_t)((bpad_w_ + 1) * bpad_w_), T(0));
        bout_.resize((size_t)(Wo * bpad_w_));
    }

    // Window sums of a diagonal-mode map (H x W) into o (Ho x Wo), o = c * sums + b.
    // Contiguous axes (stride 1, zero padding) run as long flat sums: the
    // map is copied into rows padded with zeros (stride Wp), so that the
    // width taps are constant offsets over the whole map; then the height
    // taps are constant offsets of whole padded rows over the band of output
    // rows where every tap is inside the input (the few border rows sum
    // their valid taps row by row); the result is compacted into o.
    void conv_diag(const T* src, T* o, int64_t H, int64_t W, T c, T b) {
        const int64_t Ho = ch_->n_out, Wo = cw_->n_out;
        if (!(ch_->contiguous && cw_->contiguous && ch_->k <= kMaxTaps && cw_->k <= kMaxTaps)) {
            conv_diag_generic(src, o, W);
            for (int64_t t = 0; t < Ho * Wo; ++t) o[t] = c * o[t] + b;
            return;
        }
        int64_t PL = 0, PR = 0;
        for (int64_t t = 0; t < cw_->k; ++t) {
            const int64_t off = cw_->off[(size_t)t];
            PL = std::max(PL, -off);
            PR = std::max(PR, off + Wo - W);
        }
        const int64_t Wp = PL + W + PR;
        // padded copy (one spare padded row at the end keeps every flat read in bounds)
        dpad_.resize((size_t)((H + 1) * Wp));
        T* pad = dpad_.data();
        for (int64_t i = 0; i < H; ++i) {
            T* row = pad + i * Wp;
            std::fill(row, row + PL, T(0));
            copy_row(row + PL, src + i * W, W);
            std::fill(row + PL + W, row + Wp, T(0));
        }
        std::fill(pad + H * Wp, pad + (H + 1) * Wp, T(0));
        // width taps: wsum[i * Wp + b] for b < Wo (columns Wo..Wp-1 are scratch)
        dtmp_.resize((size_t)(H * Wp));
        T* wsum = dtmp_.data();
        const T* rows[kMaxTaps];
        for (int64_t t = 0; t < cw_->k; ++t) rows[t] = pad + PL + cw_->off[(size_t)t];
        sum_rows(rows, (int)cw_->k, wsum, H * Wp, T(1), T(0));
        // height taps over padded rows
        dout_.resize((size_t)(Ho * Wp));
        T* hs = dout_.data();
        int64_t Bl = 0, Bh = Ho;
        for (int64_t t = 0; t < ch_->k; ++t) {
            Bl = std::max(Bl, ch_->lo[(size_t)t]);
            Bh = std::min(Bh, ch_->hi[(size_t)t]);
        }
        if (Bl < Bh) {
            for (int64_t t = 0; t < ch_->k; ++t) rows[t] = wsum + (Bl + ch_->off[(size_t)t]) * Wp;
            sum_rows(rows, (int)ch_->k, hs + Bl * Wp, (Bh - Bl) * Wp - (Wp - Wo), c, b);
        } else {
            Bl = Bh = Ho;
        }
        for (int64_t a = 0; a < Ho; ++a) {
            if (a == Bl) a = Bh;
            if (a >= Ho) break;
            int nv = 0;
            for (int64_t t = 0; t < ch_->k; ++t)
                if (a >= ch_->lo[(size_t)t] && a < ch_->hi[(size_t)t])
                    rows[nv++] = wsum + (a + ch_->off[(size_t)t]) * Wp;
            if (nv == 0)
                std::fill(hs + a * Wp, hs + a * Wp + Wo, b);
            else
                sum_rows(rows, nv, hs + a * Wp, Wo, c, b);
        }
        for (int64_t a = 0; a < Ho; ++a)
            copy_row(o + a * Wo, hs + a * Wp, Wo);
    }

    // Strided, dilated-with-stride or circular axes: tap tables.
    void conv_diag_generic(const T* src, T* o, int64_t W) {
        const int64_t Ho = ch_->n_out, Wo = cw_->n_out;
        tmp_.resize((size_t)(Ho * W));
        T* tmp = tmp_.data();
        std::fill(tmp, tmp + Ho * W, T(0));
        for (int64_t t = 0; t < ch_->k; ++t)
            for (int64_t a = 0; a < Ho; ++a) {
                const int64_t i = ch_->tab[(size_t)(t * Ho + a)];
                if (i >= 0) add_to(src + i * W, tmp + a * W, W);
            }
        std::fill(o, o + Ho * Wo, T(0));
        for (int64_t a = 0; a < Ho; ++a) {
            const T* row = tmp + a * W;
            T* orow = o + a * Wo;
            for (int64_t t = 0; t < cw_->k; ++t) {
                const int64_t* tt = cw_->tab.data() + t * Wo;
                for (int64_t bb = 0; bb < Wo; ++bb)
                    if (tt[bb] >= 0) orow[bb] += row[tt[bb]];
            }
        }
    }

    // Convolution; when `nl` is given (the pair pass, full mode), the next
    // op's nonlinearity is applied to each output block while it is in cache.
    void op_conv(int64_t op, const int64_t* r, const double* f, const int64_t* nl = nullptr,
                 const double* nlf = nullptr, const T* tape_x = nullptr,
                 const T* tape_y = nullptr) {
        State<T>& s = top();
        const int64_t H = r[C_IN_H], W = r[C_IN_W], Ho = r[C_OUT_H], Wo = r[C_OUT_W];
        const int64_t kh = r[C_CONV_KH], kw = r[C_CONV_KW];
        // the axis tables of each conv op are built once per engine (per tile)
        ConvAxis* ax = axes_.data() + 2 * op;
        if (ax[0].k == 0) {
            ax[0].set(H, Ho, kh, r[C_CONV_SH], r[C_CONV_DH], r[C_CONV_PAD_H], r[C_CONV_CIRC_H] != 0);
            ax[1].set(W, Wo, kw, r[C_CONV_SW], r[C_CONV_DW], r[C_CONV_PAD_W], r[C_CONV_CIRC_W] != 0);
        }
        ch_ = ax;
        cw_ = ax + 1;
        const bool trainable = r[C_CONV_TRAINABLE] != 0;
        const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(kh * kw));
        const T b = (T)f[F_CONV_BIAS_VAR];
        const bool full = s.full != 0;
        const int64_t n_out = full ? Ho * Ho * Wo * Wo : Ho * Wo;
        bufK_.resize((size_t)n_out);
        if (ntk_) bufT_.resize((size_t)n_out);
        if (full) {
            tmp_.resize((size_t)(W * W));
            if (cw_->contiguous && cw_->k <= kMaxTaps) conv_pad_layout(W);
            if (nl) {
                const int64_t HW = Ho * Wo, off = nl[C_NONLIN_TAPE], fn = nl[C_NONLIN_FN];
                const double p = nonlin_param(nl, nlf);
                const T* ix = tape_x + off;
                const T* iy = tape_y + off;
                Nl q{ix, ix + HW, iy, iy + HW, p};
                switch (fn) {
                    case FN_RELU: conv_full<FN_RELU>(s, c, b, trainable, q); break;
                    case FN_ERF: conv_full<FN_ERF>(s, c, b, trainable, q); break;
                    case FN_EXP: conv_full<FN_EXP>(s, c, b, trainable, q); break;
                    case FN_ARCCOS0: conv_full<FN_ARCCOS0>(s, c, b, trainable, q); break;
                    case FN_ARCCOS1: conv_full<FN_ARCCOS1>(s, c, b, trainable, q); break;
                    case FN_POLY: conv_full<FN_POLY>(s, c, b, trainable, q); break;
                    default: conv_full<FN_LINEAR>(s, c, b, trainable, q); break;
                }
            } else {
                conv_full<-1>(s, c, b, trainable, Nl{});
            }
        } else {
            T* oK = bufK_.data();
            T* oT = ntk_ ? bufT_.data() : nullptr;
            conv_diag(s.K.data(), oK, H, W, c, b);
            if (ntk_) {
                conv_diag(s.Th.data(), oT, H, W, c, T(0));
                if (trainable) add_to(oK, oT, n_out);
            }
        }
        s.K.swap(bufK_);
        if (ntk_) s.Th.swap(bufT_);
        s.h = Ho; s.w = Wo;
        s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
    }

    struct Nl {
        const T *ix = nullptr, *sx = nullptr, *iy = nullptr, *sy = nullptr;
        double p = 0.0;
    };

    // Full-mode convolution into bufK_/bufT_, output blocks visited along
    // diagonals (a2 - a constant) so that consecutive blocks share most of
    // their input blocks; FN >= 0 fuses that nonlinearity.
    template <int FN>
    void conv_full(State<T>& s, T c, T b, bool trainable, const Nl& q) {
        const int64_t H = ch_->n_in, W = cw_->n_in, Ho = ch_->n_out, Wo = cw_->n_out;
        const int64_t ob = Wo * Wo;
        T* oK = bufK_.data();
        T* oT = ntk_ ? bufT_.data() : nullptr;
        for (int64_t d = -(Ho - 1); d < Ho; ++d) {
            const int64_t a_lo = d < 0 ? -d : 0, a_hi = d < 0 ? Ho : Ho - d;
            for (int64_t a = a_lo; a < a_hi; ++a) {
                const int64_t a2 = a + d;
                const int64_t o = (a * Ho + a2) * ob;
                conv_block(s.K.data(), oK + o, a, a2, H, W, c, b);
                if (ntk_) {
                    conv_block(s.Th.data(), oT + o, a, a2, H, W, c, T(0));
                    if (trainable) add_to(oK + o, oT + o, ob);
                }
                if (FN >= 0)
                    block_nonlin<FN>(oK + o, oT ? oT + o : nullptr, Wo, q.ix + a * Wo,
                                     q.sx + a * Wo, q.iy + a2 * Wo, q.sy + a2 * Wo, q.p);
            }
        }
    }

    template <int FN>
    void nonlin_apply(State<T>& s, const T* ix, const T* sx, const T* iy, const T* sy,
                      double p) {
        const int64_t H = s.h, W = s.w;
        T* K = s.K.data();
        T* Th = ntk_ ? s.Th.data() : nullptr;
        if (s.full) {
            for (int64_t i = 0; i < H; ++i)
                for (int64_t i2 = 0; i2 < H; ++i2)
                    for (int64_t j = 0; j < W; ++j) {
                        const int64_t e = ((i * H + i2) * W + j) * W;
                        const int64_t px = i * W + j, qy = i2 * W;
                        if (ntk_)
                            nonlin_row<FN, true, true>(K + e, Th + e, W, ix + px, sx + px,
                                                       iy + qy, sy + qy, p);
                        else
                            nonlin_row<FN, false, true>(K + e, Th, W, ix + px, sx + px, iy + qy,
                                                        sy + qy, p);
                    }
        } else {
            if (ntk_)
                nonlin_row<FN, true, false>(K, Th, H * W, ix, sx, iy, sy, p);
            else
                nonlin_row<FN, false, false>(K, Th, H * W, ix, sx, iy, sy, p);
        }
    }

    // The tape of an image holds, per nonlinearity, its per-position factors
    // [inv (H*W) | sq (H*W)] (see position_factors), computed by the self pass
    // from the self-variances, so that the pair pass takes no square root.
    // Returns false when the self pass meets a non-finite self-variance.
    bool op_nonlin(const int64_t* r, const double* f, const T* tape_x, const T* tape_y,
                   T* tape_rec, bool self) {
        State<T>& s = top();
        const int64_t H = s.h, W = s.w, HW = H * W;
        const int64_t off = r[C_NONLIN_TAPE];
        const int64_t fn = r[C_NONLIN_FN];
        const double p = nonlin_param(r, f);
        T* K = s.K.data();
        T* Th = ntk_ ? s.Th.data() : nullptr;
        if (self) {
            // the self-variances give this image's factors; keep the coincident entries
            diagK_.resize((size_t)HW);
            diagT_.resize((size_t)HW);
            fx_.resize((size_t)(2 * HW));
            for (int64_t i = 0; i < H; ++i)
                for (int64_t j = 0; j < W; ++j) {
                    const int64_t e = s.full ? ((i * H + i) * W + j) * W + j : i * W + j;
                    diagK_[(size_t)(i * W + j)] = (double)K[e];
                    diagT_[(size_t)(i * W + j)] = ntk_ ? (double)Th[e] : 0.0;
                }
            for (int64_t q = 0; q < HW; ++q)
                if (!std::isfinite(diagK_[(size_t)q]) || !std::isfinite(diagT_[(size_t)q]))
                    return false;
            position_factors(fn, diagK_.data(), HW, fx_.data(), fx_.data() + HW);
            for (int64_t q = 0; q < 2 * HW; ++q) tape_rec[off + q] = (T)fx_[(size_t)q];
        }
        const T* ix = tape_x + off;  // written just above in the self pass
        const T* iy = tape_y + off;
        const T* sx = ix + HW;
        const T* sy = iy + HW;
        if (!(self && !s.full)) {  // a self pass in diagonal mode is all coincident
            switch (fn) {
                case FN_RELU: nonlin_apply<FN_RELU>(s, ix, sx, iy, sy, p); break;
                case FN_ERF: nonlin_apply<FN_ERF>(s, ix, sx, iy, sy, p); break;
                case FN_EXP: nonlin_apply<FN_EXP>(s, ix, sx, iy, sy, p); break;
                case FN_ARCCOS0: nonlin_apply<FN_ARCCOS0>(s, ix, sx, iy, sy, p); break;
                case FN_ARCCOS1: nonlin_apply<FN_ARCCOS1>(s, ix, sx, iy, sy, p); break;
                case FN_POLY: nonlin_apply<FN_POLY>(s, ix, sx, iy, sy, p); break;
                default: nonlin_apply<FN_LINEAR>(s, ix, sx, iy, sy, p); break;
            }
        }
        if (self) {
            for (int64_t i = 0; i < H; ++i)
                for (int64_t j = 0; j < W; ++j) {
                    const int64_t e = s.full ? ((i * H + i) * W + j) * W + j : i * W + j;
                    double kv, dv;
                    nonlin_coincident(fn, p, diagK_[(size_t)(i * W + j)], kv, dv);
                    K[e] = (T)kv;
                    if (ntk_) Th[e] = (T)(diagT_[(size_t)(i * W + j)] * dv);
                }
        }
        return true;
    }

    // P M P^T with separable CSR matrices, full mode; or the diagonal rule.
    void pool_apply(const int64_t* r, const T* src, T* dst, bool full, int64_t H, int64_t W,
                    int64_t Ho, int64_t Wo) {
        const int64_t* hp = P_.blob_i + r[C_POOL_H_PTR];
        const int64_t* hi = P_.blob_i + r[C_POOL_H_IDX];
        const double* hv = P_.blob_f + r[C_POOL_H_IDX];
        const int64_t* wp = P_.blob_i + r[C_POOL_W_PTR];
        const int64_t* wi = P_.blob_i + r[C_POOL_W_IDX];
        const double* wv = P_.blob_f + r[C_POOL_W_IDX];
        if (!full) {  // each output row has at most one tap: K'[a,b] = ph^2 pw^2 K[i,j]
            std::fill(dst, dst + Ho * Wo, T(0));
            for (int64_t a = 0; a < Ho; ++a)
                for (int64_t u = hp[a]; u < hp[a + 1]; ++u)
                    for (int64_t b = 0; b < Wo; ++b)
                        for (int64_t v = wp[b]; v < wp[b + 1]; ++v)
                            dst[a * Wo + b] += (T)(hv[u] * hv[u] * wv[v] * wv[v]) * src[hi[u] * W + wi[v]];
            return;
        }
        const int64_t blk = W * W;
        // step 1: first height axis -> p1_[a][i'][j][j'], each output slab one weighted sum
        p1_.resize((size_t)(Ho * H * blk));
        T* t1 = p1_.data();
        std::vector<const T*>& ptr = pptr_;
        Buffer<T>& wt = pw_;
        for (int64_t a = 0; a < Ho; ++a) {
            ptr.clear(); wt.clear();
            for (int64_t u = hp[a]; u < hp[a + 1]; ++u) {
                ptr.push_back(src + hi[u] * H * blk);
                wt.push_back((T)hv[u]);
            }
            wsum_rows(ptr.data(), wt.data(), (int64_t)ptr.size(), t1 + a * H * blk, H * blk);
        }
        // steps 2-4 per output block (a, a'): second height axis, then both width axes
        tmp_.resize((size_t)(blk + Wo * W));
        T* t2 = tmp_.data();
        T* t3 = t2 + blk;
        for (int64_t a = 0; a < Ho; ++a)
            for (int64_t a2 = 0; a2 < Ho; ++a2) {
                ptr.clear(); wt.clear();
                for (int64_t u = hp[a2]; u < hp[a2 + 1]; ++u) {
                    ptr.push_back(t1 + (a * H + hi[u]) * blk);
                    wt.push_back((T)hv[u]);
                }
                wsum_rows(ptr.data(), wt.data(), (int64_t)ptr.size(), t2, blk);
                for (int64_t b = 0; b < Wo; ++b) {
                    ptr.clear(); wt.clear();
                    for (int64_t v = wp[b]; v < wp[b + 1]; ++v) {
                        ptr.push_back(t2 + wi[v] * W);
                        wt.push_back((T)wv[v]);
                    }
                    wsum_rows(ptr.data(), wt.data(), (int64_t)ptr.size(), t3 + b * W, W);
                }
                T* o = dst + (a * Ho + a2) * Wo * Wo;
                for (int64_t b = 0; b < Wo; ++b)
                    for (int64_t b2 = 0; b2 < Wo; ++b2) {
                        double acc = 0.0;
                        for (int64_t v = wp[b2]; v < wp[b2 + 1]; ++v) acc += wv[v] * (double)t3[b * W + wi[v]];
                        o[b * Wo + b2] = (T)acc;
                    }
            }
    }

    void op_pool(const int64_t* r) {
        State<T>& s = top();
        const int64_t H = r[C_IN_H], W = r[C_IN_W], Ho = r[C_OUT_H], Wo = r[C_OUT_W];
        const bool full = s.full != 0;
        const int64_t n_out = full ? Ho * Ho * Wo * Wo : Ho * Wo;
        bufK_.resize((size_t)n_out);
        pool_apply(r, s.K.data(), bufK_.data(), full, H, W, Ho, Wo);
        s.K.swap(bufK_);
        if (ntk_) {
            bufT_.resize((size_t)n_out);
            pool_apply(r, s.Th.data(), bufT_.data(), full, H, W, Ho, Wo);
            s.Th.swap(bufT_);
        }
        s.h = Ho; s.w = Wo;
        s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
    }

    double diag_sum(const Buffer<T>& M, const State<T>& s) const {
        double acc = 0.0;
        if (s.full) {
            for (int64_t i = 0; i < s.h; ++i)
                for (int64_t j = 0; j < s.w; ++j)
                    acc += (double)M[(size_t)(((i * s.h + i) * s.w + j) * s.w + j)];
        } else {
            for (int64_t p = 0; p < s.h * s.w; ++p) acc += (double)M[(size_t)p];
        }
        return acc;
    }

    void op_diagsum(const double* f) {
        State<T>& s = top();
        const double kv = f[F_DIAGSUM_SCALE] * diag_sum(s.K, s);
        const double tv = ntk_ ? f[F_DIAGSUM_SCALE] * diag_sum(s.Th, s) : 0.0;
        resize(s, 1, 1, 0);
        s.K[0] = (T)kv;
        if (ntk_) s.Th[0] = (T)tv;
    }

    // sum_{i,i'} wh[i'-i] sum_{j,j'} ww[j'-j] M[i][i'][j][j'] (full mode), or
    // wh[0] ww[0] sum_p M[p] (diagonal mode: displacement 0 only)
    double shift_sum(const Buffer<T>& M, const State<T>& s, const double* wh,
                     const double* ww) const {
        const int64_t H = s.h, W = s.w;
        if (!s.full) {
            double acc = 0.0;
            for (int64_t p = 0; p < H * W; ++p) acc += (double)M[(size_t)p];
            return wh[H - 1] * ww[W - 1] * acc;
        }
        double acc = 0.0;
        for (int64_t i = 0; i < H; ++i)
            for (int64_t i2 = 0; i2 < H; ++i2) {
                const double wr = wh[i2 - i + H - 1];
                if (wr == 0.0) continue;
                const T* blk = M.data() + (i * H + i2) * W * W;
                double b = 0.0;
                for (int64_t j = 0; j < W; ++j) b += dot8(ww + (W - 1 - j), blk + j * W, W);
                acc += wr * b;
            }
        return acc;
    }

    void op_shiftsum(const int64_t* r) {
        State<T>& s = top();
        const double* wh = P_.blob_f + r[C_SHIFTSUM_H_WEIGHTS];
        const double* ww = P_.blob_f + r[C_SHIFTSUM_W_WEIGHTS];
        const double kv = shift_sum(s.K, s, wh, ww);
        const double tv = ntk_ ? shift_sum(s.Th, s, wh, ww) : 0.0;
        resize(s, 1, 1, 0);
        s.K[0] = (T)kv;
        if (ntk_) s.Th[0] = (T)tv;
    }

    void op_todiag() {
        State<T>& s = top();
        if (!s.full) return;
        const int64_t H = s.h, W = s.w;
        for (int64_t i = 0; i < H; ++i)
            for (int64_t j = 0; j < W; ++j) {
                const size_t e = (size_t)(((i * H + i) * W + j) * W + j);
                s.K[(size_t)(i * W + j)] = s.K[e];  // e >= i*W+j: safe in place
                if (ntk_) s.Th[(size_t)(i * W + j)] = s.Th[e];
            }
        resize(s, H, W, 0);
    }

    const Program& P_;
    const bool ntk_;
    std::vector<State<T>> stack_;
    int64_t sp_ = 0;
    Buffer<T> bufK_, bufT_, tmp_, p1_, yT_, dpad_, dtmp_, dout_, bpad_, bout_, pw_;
    std::vector<const T*> pptr_;
    int64_t bpad_top_ = 0, bpad_w_ = 0;
    const T* rows2_[kMaxTaps];
    std::vector<double> fx_, diagK_, diagT_;
    std::vector<ConvAxis> axes_;  // 2 per op (height, width), built on first use
    const ConvAxis* ch_ = nullptr;
    const ConvAxis* cw_ = nullptr;
};

// ---------------------------------------------------------------------------
// passes
// ---------------------------------------------------------------------------

// Runs body() (which returns a Status), translating C++ exceptions into
// statuses: nothing ever propagates through the C ABI.
template <class F>
int guarded(Error& err, const char* oom_message, F body) {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        return err.fail(STATUS_NO_MEMORY, oom_message);
    } catch (...) {
        return err.fail(STATUS_BAD_PROGRAM, "unexpected C++ exception");
    }
}

template <class T>
int self_pass(const Program* prog, const T* X, int64_t n, T* tapes, T* self_out, char* msg,
              int msg_len) {
    Error err{msg, msg_len};
    return guarded(err, "out of memory in the self pass", [&]() {
        int64_t depth = 0, size = 0;
        int st = check_program_impl(*prog, &depth, &size, err);
        if (st) return st;
        Engine<T> eng(*prog, depth, size);
        const int64_t img = prog->height * prog->width * prog->channels;
        for (int64_t i = 0; i < n; ++i) {
            const T* x = X + i * img;
            T* tape = tapes + i * prog->tape_len;
            st = eng.run(x, x, tape, tape, tape, true, self_out + i * prog->n_outputs, err);
            if (st) return st;
        }
        return (int)STATUS_OK;
    });
}

template <class T>
int pair_tile(const Program* prog, const T* X, const T* tx, int64_t nx, int64_t x0, const T* Y,
              const T* ty, int64_t ny, int64_t y0, int upper_only, T* out, int64_t s_out,
              int64_t s_row, int64_t s_col, char* msg, int msg_len) {
    Error err{msg, msg_len};
    return guarded(err, "out of memory in the pair pass", [&]() {
        int64_t depth = 0, size = 0;
        int st = check_program_impl(*prog, &depth, &size, err);
        if (st) return st;
        Engine<T> eng(*prog, depth, size);
        const int64_t img = prog->height * prog->width * prog->channels;
        const int64_t L = prog->tape_len, n_out = prog->n_outputs;
        std::vector<T> res((size_t)n_out);
        for (int64_t i = 0; i < nx; ++i)
            for (int64_t j = 0; j < ny; ++j) {
                if (upper_only && x0 + i >= y0 + j) continue;
                st = eng.run(X + i * img, Y + j * img, tx + i * L, ty + j * L, nullptr, false,
                             res.data(), err);
                if (st) return st;
                for (int64_t o = 0; o < n_out; ++o) out[o * s_out + i * s_row + j * s_col] = res[(size_t)o];
            }
        return (int)STATUS_OK;
    });
}

template <class T>
int pair_list(const Program* prog, const T* X, const T* tx, int64_t nx, const T* Y, const T* ty,
              int64_t ny, const int64_t* ii, const int64_t* jj, int64_t n_pairs, T* out,
              char* msg, int msg_len) {
    Error err{msg, msg_len};
    return guarded(err, "out of memory in the pair pass", [&]() {
        int64_t depth = 0, size = 0;
        int st = check_program_impl(*prog, &depth, &size, err);
        if (st) return st;
        for (int64_t t = 0; t < n_pairs; ++t)
            if (ii[t] < 0 || ii[t] >= nx || jj[t] < 0 || jj[t] >= ny)
                return err.fail(STATUS_BAD_ARGUMENT, "pair %lld indexes outside the images", t);
        Engine<T> eng(*prog, depth, size);
        const int64_t img = prog->height * prog->width * prog->channels;
        const int64_t L = prog->tape_len;
        for (int64_t t = 0; t < n_pairs; ++t) {
            const int64_t i = ii[t], j = jj[t];
            st = eng.run(X + i * img, Y + j * img, tx + i * L, ty + j * L, nullptr, false,
                         out + t * prog->n_outputs, err);
            if (st) return st;
        }
        return (int)STATUS_OK;
    });
}

}  // namespace CK_ARCH
}  // namespace convkernel
