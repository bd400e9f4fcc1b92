// Vector math of the engine: branch-free polynomial arc-cosine / arc-sine /
// exp that the compiler vectorises, and the row primitives every operation is
// built from (adds, axpy, window sums of k rows held in registers, dot
// products with independent partial sums).
//
// Like every engine header, compiled once per instruction-set variant
// (engine_generic.cpp, engine_avx2.cpp, engine_avx512.cpp), each time in its
// own namespace CK_ARCH; core.cpp picks one at run time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "internal.hpp"

#if defined(__GNUC__)
#define CK_INLINE inline __attribute__((always_inline))
#else
#define CK_INLINE inline
#endif

#ifndef CK_ARCH
#error "define CK_ARCH (the namespace of this engine variant) before including the engine"
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

// asin(x) for x in [-1, 1], branch-free.
template <class C>
CK_INLINE C asin_v(C x) {
    C r, t, z;
    const bool big = asin_reduce(std::fabs(x), r, t, z);
    const C as = big ? C(0.5) * (C)kPi - C(2) * r : r;  // asin(|x|)
    return std::copysign(as, x);
}

// sum_k sc c[k] t^k by Horner's rule, highest degree first.
template <int N, class C>
CK_INLINE C horner_scaled(const C (&c)[N], C t, C sc) {
    C p = sc * c[N - 1];
#pragma GCC unroll 20
    for (int k = N - 2; k >= 0; --k) p = p * t + sc * c[k];
    return p;
}

// The arc-cosine duals in one piece, with no range split: for a = |rho| in
// [0, 1], t = (1 - a) / 2 and z = sqrt(t) (the only square root),
//   acos(a) = z A(t),  J(-a) = sqrt(1 - a^2) - a acos(a) = z t H(t),
// A and H analytic on t in [0, 1/2] (asin(z) is singular at t = 1 only), and
// J(rho) = sin(theta) + (pi - theta) rho with J(rho) - J(-rho) = pi rho gives
//   J(rho) = pi max(rho, 0) + z t H(t),  pi - theta = rho > 0 ? pi - z A : z A.
// A / pi and H / pi are near-minimax polynomials for the relative error, the
// coefficients rounded one at a time with the rest refitted, in 50-digit
// arithmetic (_ext/fit_arccos_dual.py): degrees 7 and 6 in float (max
// relative error 3.8e-8 and 1.8e-8, the rounding of their constant terms),
// 18 and 16 in double (5.4e-17, 4.5e-17).  z t H is accurate relative to
// itself, also near rho = -1 where sin(theta) + (pi - theta) rho cancelled:
// the duals come out within 2.3 ulps of their value over all of [-1, 1] in
// both types (tests/test_dual.py).
// Returns psi = sc acos(a) / pi and jn = sc J(-a) / pi (sc = 1/2 or 1: exact).
template <class C>
CK_INLINE void arccos_dual_parts(C a, C sc, C& psi, C& jn) {
    const C t = C(0.5) - C(0.5) * a;  // exact for a >= 1/2
    const C z = std::sqrt(t);
    C pa, ph;
    if constexpr (std::is_same<C, float>::value) {
        static constexpr float ca[] = {
            0.6366197466850281f, 0.10610849410295486f, 0.04756084084510803f,
            0.030952615663409233f, 0.002615369390696287f, 0.07238628715276718f,
            -0.0936889797449112f, 0.09112061560153961f};
        static constexpr float ch[] = {
            0.8488263487815857f, 0.08488225191831589f, 0.02731931395828724f,
            0.012102564796805382f, 0.010187825188040733f, -0.004307675175368786f,
            0.013059316202998161f};
        pa = horner_scaled(ca, t, sc);
        ph = horner_scaled(ch, t, sc);
    } else {
        static constexpr double ca[] = {
            0.6366197723675814, 0.10610329539454876, 0.04774648293810828,
            0.0284205246261266, 0.01934178966699512, 0.014241334340794764,
            0.011070182247855356, 0.008586069784603299, 0.010265207078814032,
            -0.014489779963276, 0.11646511526072402, -0.44901294303147454,
            1.4144269657393862, -3.3137036735715513, 5.815567432569614,
            -7.362186736602375, 6.400457510377279, -3.424293286658229,
            0.8655646183295029};
        static constexpr double ch[] = {
            0.8488263631567752, 0.08488263631563098, 0.027283704538123718,
            0.012631344115671173, 0.007033384103305276, 0.0043818249042287035,
            0.002953523717221668, 0.0020111955685093684, 0.002159677711301748,
            -0.0022074429397040732, 0.014818099620655823, -0.04126947189356098,
            0.09349262430865356, -0.14586660672539162, 0.15694399512795076,
            -0.10237297728233075, 0.0322485483579598};
        pa = horner_scaled(ca, t, sc);
        ph = horner_scaled(ch, t, sc);
    }
    psi = z * pa;
    jn = z * t * ph;
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
// row primitives
// ---------------------------------------------------------------------------

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
// An image's pixel-major values (HW positions x C channels) as C rows of HW
// values: the rows the input products read contiguously.
template <class T>
inline void to_channel_major(const T* __restrict x, T* __restrict dst, int64_t HW, int64_t C) {
    for (int64_t q = 0; q < HW; ++q)
        for (int64_t c = 0; c < C; ++c) dst[c * HW + q] = x[q * C + c];
}

template <class T>
CK_INLINE void copy_row(T* __restrict dst, const T* __restrict src, int64_t n) {
    for (int64_t t = 0; t < n; ++t) dst[t] = src[t];
}

// Most taps one window sum folds in registers (taller kernels are summed in
// several passes).
constexpr int kMaxTaps = 16;

// dst[t] = c * (src[0][t] + ... + src[K-1][t]) + b, each sum in registers;
// for rows > 1 the same over `rows` rows of n values, the sources advancing
// by s_src and dst by s_dst from one row to the next (strided 2-D windows:
// no padded copy or compaction of the rows is needed).
template <int K, class T>
CK_INLINE void sum_rows_k(const T* const* src, T* __restrict dst, int64_t n, T c, T b,
                          int64_t rows, int64_t s_src, int64_t s_dst) {
    const T* s[K];
    for (int k = 0; k < K; ++k) s[k] = src[k];
    for (int64_t r = 0; r < rows; ++r, dst += s_dst) {
        for (int64_t t = 0; t < n; ++t) {
            T acc = s[0][t];
#pragma GCC unroll 16
            for (int k = 1; k < K; ++k) acc += s[k][t];
            dst[t] = c * acc + b;
        }
        for (int k = 0; k < K; ++k) s[k] += s_src;
    }
}

// The same for 1 <= k <= kMaxTaps sources (dst is none of them).
template <class T>
inline void sum_rows(const T* const* src, int k, T* dst, int64_t n, T c, T b, int64_t rows = 1,
                     int64_t s_src = 0, int64_t s_dst = 0) {
    switch (k) {
        case 1: sum_rows_k<1>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 2: sum_rows_k<2>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 3: sum_rows_k<3>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 4: sum_rows_k<4>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 5: sum_rows_k<5>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 6: sum_rows_k<6>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 7: sum_rows_k<7>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 8: sum_rows_k<8>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 9: sum_rows_k<9>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 10: sum_rows_k<10>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 11: sum_rows_k<11>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 12: sum_rows_k<12>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 13: sum_rows_k<13>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 14: sum_rows_k<14>(src, dst, n, c, b, rows, s_src, s_dst); break;
        case 15: sum_rows_k<15>(src, dst, n, c, b, rows, s_src, s_dst); break;
        default: sum_rows_k<16>(src, dst, n, c, b, rows, s_src, s_dst); break;
    }
}

// The loop after it carries no dependence between iterations (its stores
// never overlap its loads): lets the compiler vectorise without run-time
// alias checks (which fail for many destination rows at a run-time stride).
#if defined(__clang__)
#define CK_IVDEP _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define CK_IVDEP _Pragma("GCC ivdep")
#else
#define CK_IVDEP
#endif

// Least taps for which block_sums (below) replaces sum_rows over consecutive
// rows: from 3 taps on it does fewer additions (3K - 4 per K windows against
// K (K - 1)) and loads (2K - 1 rows against K^2); measured with callgrind on
// 8x8 to 128x128 maps (K = 2: no gain).
constexpr int kBlockSumMinTaps = 3;

// Window sums of K consecutive rows for K consecutive windows at once,
// without subtraction (block suffix / prefix sums, van Herk / Gil-Werman):
// src[u] (u < 2K - 1) are consecutive rows (a zero row where the window
// leaves the map), and row r < K of dst (stride s_dst >= n) receives
// src[r] + ... + src[r + K - 1] as the suffix sum of the first K rows from r
// plus the prefix sum of the next ones up to r + K - 1 (r = 0: the whole
// first block).  Adding the zero rows is exact, so that a clipped window is
// the sum of its in-range taps and a window of exact zeros stays 0; each
// window adds its K terms in a tree of K - 1 additions (the error bound of a
// direct sum).  The same for `groups` groups of K windows, group g reading
// rows src[g K ...] and writing dst from row g K.  dst is none of the sources.
template <int K, class T>
CK_INLINE void block_sums_k(const T* const* src, T* __restrict dst, int64_t s_dst, int64_t n,
                            int64_t groups) {
    for (int64_t g = 0; g < groups; ++g, src += K, dst += K * s_dst) {
        const T* s[2 * K - 1];
        for (int k = 0; k < 2 * K - 1; ++k) s[k] = src[k];
        CK_IVDEP
        for (int64_t t = 0; t < n; ++t) {
            T suf[K];
            suf[K - 1] = s[K - 1][t];
#pragma GCC unroll 16
            for (int r = K - 2; r >= 0; --r) suf[r] = suf[r + 1] + s[r][t];
            dst[t] = suf[0];
            T pre = s[K][t];
#pragma GCC unroll 16
            for (int r = 1; r < K; ++r) {
                dst[r * s_dst + t] = suf[r] + pre;
                if (r + 1 < K) pre += s[K + r][t];
            }
        }
    }
}

// The same for 2 <= k <= kMaxTaps.
template <class T>
inline void block_sums(const T* const* src, int k, T* dst, int64_t s_dst, int64_t n,
                       int64_t groups = 1) {
    switch (k) {
#define CK_BLOCK_SUMS_CASE(K) \
    case K: block_sums_k<K>(src, dst, s_dst, n, groups); break;
        CK_BLOCK_SUMS_CASE(2) CK_BLOCK_SUMS_CASE(3) CK_BLOCK_SUMS_CASE(4) CK_BLOCK_SUMS_CASE(5)
        CK_BLOCK_SUMS_CASE(6) CK_BLOCK_SUMS_CASE(7) CK_BLOCK_SUMS_CASE(8) CK_BLOCK_SUMS_CASE(9)
        CK_BLOCK_SUMS_CASE(10) CK_BLOCK_SUMS_CASE(11) CK_BLOCK_SUMS_CASE(12)
        CK_BLOCK_SUMS_CASE(13) CK_BLOCK_SUMS_CASE(14) CK_BLOCK_SUMS_CASE(15)
#undef CK_BLOCK_SUMS_CASE
        default: block_sums_k<16>(src, dst, s_dst, n, groups); break;
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

// Lanes of one vector register of T in this variant's instruction set.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

// Runs of a small matrix product with one row of weights: dst[r * d_step + t]
// = c * sum_k w[k] src[k * s + r * s_step + t] + b for r < runs, t < n, the
// K weights held in registers for all the runs and each output summed in
// one register (the patch inner products of Engine::op_input_conv: w the
// patch of x at one position, src the patches of y).  A run goes in whole
// vectors, the last one ending at n and overlapping the one before (storing
// the same values again): runs of a few dozen values would otherwise each
// end in a scalar or half-width tail costing more than the run's vectors.
template <int K, class T>
CK_INLINE void patch_dot_k(const T* __restrict w, const T* __restrict src, int64_t s,
                           int64_t s_step, T* __restrict dst, int64_t d_step, int64_t n,
                           int64_t runs, T c, T b) {
    constexpr int64_t V = kVecBytes / (int64_t)sizeof(T);
    T wk[K];
    const T* sk[K];  // the source rows (no index arithmetic per vector)
    for (int k = 0; k < K; ++k) {
        wk[k] = w[k];
        sk[k] = src + k * s;
    }
    for (int64_t r = 0; r < runs; ++r, dst += d_step) {
        const int64_t o = r * s_step;
        if (n < V || n % V == 0) {  // no tail, or no whole vector
            // (fixed 4-lane chunks are unrolled to scalar code by GCC)
            for (int64_t t = 0; t < n; ++t) {
                T acc = wk[0] * sk[0][o + t];
#pragma GCC unroll 16
                for (int k = 1; k < K; ++k) acc += wk[k] * sk[k][o + t];
                dst[t] = c * acc + b;
            }
            continue;
        }
        for (int64_t t0 = 0;; t0 += V) {
            if (t0 + V > n) t0 = n - V;
            for (int64_t t = 0; t < V; ++t) {  // one vector
                T acc = wk[0] * sk[0][o + t0 + t];
#pragma GCC unroll 16
                for (int k = 1; k < K; ++k) acc += wk[k] * sk[k][o + t0 + t];
                dst[t0 + t] = c * acc + b;
            }
            if (t0 + V >= n) break;
        }
    }
}

// The same for 1 <= k <= kMaxTaps terms.
template <class T>
inline void patch_dot(int k, const T* w, const T* src, int64_t s, int64_t s_step, T* dst,
                      int64_t d_step, int64_t n, int64_t runs, T c, T b) {
    switch (k) {
#define CK_PATCH_DOT_CASE(K) \
        case K: patch_dot_k<K>(w, src, s, s_step, dst, d_step, n, runs, c, b); break;
        CK_PATCH_DOT_CASE(1) CK_PATCH_DOT_CASE(2) CK_PATCH_DOT_CASE(3) CK_PATCH_DOT_CASE(4)
        CK_PATCH_DOT_CASE(5) CK_PATCH_DOT_CASE(6) CK_PATCH_DOT_CASE(7) CK_PATCH_DOT_CASE(8)
        CK_PATCH_DOT_CASE(9) CK_PATCH_DOT_CASE(10) CK_PATCH_DOT_CASE(11) CK_PATCH_DOT_CASE(12)
        CK_PATCH_DOT_CASE(13) CK_PATCH_DOT_CASE(14) CK_PATCH_DOT_CASE(15)
#undef CK_PATCH_DOT_CASE
        default: patch_dot_k<16>(w, src, s, s_step, dst, d_step, n, runs, c, b); break;
    }
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

// sum_t a[t] in double with 8 independent partial sums, as dot8 (the
// diagonal read-outs: one dependent chain of n additions was latency-bound).
template <class A>
CK_INLINE double sum8(const A* __restrict a, int64_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t t = 0;
    for (; t + 8 <= n; t += 8)
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] += (double)a[t + u];
    double r = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; t < n; ++t) r += (double)a[t];
    return r;
}


// dst[t] = s * (d + a[0][t] b[0][t] + ... + a[K-1][t] b[K-1][t]), d = dst[t]
// when ACC else 0, summed in T in that order in registers (the covariance
// of K channels of two channel-major images).
template <int K, bool ACC, class T>
CK_INLINE void dot_rows_k(const T* const* a, const T* const* b, T* __restrict dst, int64_t n, T s) {
    const T* x[K];
    const T* y[K];
    for (int k = 0; k < K; ++k) { x[k] = a[k]; y[k] = b[k]; }
    for (int64_t t = 0; t < n; ++t) {
        T acc = ACC ? dst[t] + x[0][t] * y[0][t] : x[0][t] * y[0][t];
#pragma GCC unroll 8
        for (int k = 1; k < K; ++k) acc += x[k][t] * y[k][t];
        dst[t] = s * acc;
    }
}

// dst[t] = s * sum_c a[c][t] b[c][t] over the C >= 1 channel rows a[c] =
// a0 + c * stride (likewise b), in passes of 8 channels; the channel order
// of the sum is c = 0, 1, ..., C - 1 (the partial sums stored between
// passes are already of type T, so the passes round as one loop would).
template <class T>
inline void dot_channels(const T* a0, const T* b0, int64_t stride, int64_t C, T* dst, int64_t n,
                         T s) {
    const T* a[8];
    const T* b[8];
    for (int64_t c0 = 0; c0 < C; c0 += 8) {
        const int k = (int)std::min<int64_t>(8, C - c0);
        for (int u = 0; u < k; ++u) {
            a[u] = a0 + (c0 + u) * stride;
            b[u] = b0 + (c0 + u) * stride;
        }
        const T sc = c0 + k == C ? s : T(1);
        const bool acc = c0 > 0;
        switch (k + (acc ? 8 : 0)) {
            case 1: dot_rows_k<1, false>(a, b, dst, n, sc); break;
            case 2: dot_rows_k<2, false>(a, b, dst, n, sc); break;
            case 3: dot_rows_k<3, false>(a, b, dst, n, sc); break;
            case 4: dot_rows_k<4, false>(a, b, dst, n, sc); break;
            case 5: dot_rows_k<5, false>(a, b, dst, n, sc); break;
            case 6: dot_rows_k<6, false>(a, b, dst, n, sc); break;
            case 7: dot_rows_k<7, false>(a, b, dst, n, sc); break;
            case 8: dot_rows_k<8, false>(a, b, dst, n, sc); break;
            case 9: dot_rows_k<1, true>(a, b, dst, n, sc); break;
            case 10: dot_rows_k<2, true>(a, b, dst, n, sc); break;
            case 11: dot_rows_k<3, true>(a, b, dst, n, sc); break;
            case 12: dot_rows_k<4, true>(a, b, dst, n, sc); break;
            case 13: dot_rows_k<5, true>(a, b, dst, n, sc); break;
            case 14: dot_rows_k<6, true>(a, b, dst, n, sc); break;
            case 15: dot_rows_k<7, true>(a, b, dst, n, sc); break;
            default: dot_rows_k<8, true>(a, b, dst, n, sc); break;
        }
    }
}

}  // namespace CK_ARCH
}  // namespace convkernel
