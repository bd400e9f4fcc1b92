// The other operations of the interpreter on a workspace: input covariance,
// nonlinearities (with the self pass's tape recording), separable pools
// P K P^T, diagonal and shift-weighted read-outs, and the drop to the
// diagonal.  Each mirrors the rule of the same name in _reference.py.
#pragma once

#include "engine.hpp"

namespace convkernel {
namespace CK_ARCH {

template <class T>
inline void Engine<T>::resize(State<T>& s, int64_t h, int64_t w, int full) {
    s.h = h; s.w = w; s.full = full;
    s.K.resize((size_t)s.size());
    if (ntk_) s.Th.resize((size_t)s.size());
}

template <class T>
inline void Engine<T>::op_input(const int64_t* r, const double* f, const T* x, const T* y) {
    const int64_t H = r[C_OUT_H], W = r[C_OUT_W], C = r[C_INPUT_CHANNELS];
    const T scale = (T)f[F_INPUT_SCALE];
    sp_ = 1;
    State<T>& s = top();
    resize(s, H, W, (int)r[C_MODE_OUT]);
    T* K = s.K.data();
    if (s.full) {
        // channel-major copy of y so that rows are contiguous
        y_channel_major_.resize((size_t)(C * H * W));
        to_channel_major(y, y_channel_major_.data(), H * W, C);
        for (int64_t i = 0; i < H; ++i)
            for (int64_t i2 = 0; i2 < H; ++i2)
                for (int64_t j = 0; j < W; ++j) {
                    T* __restrict dst = K + ((i * H + i2) * W + j) * W;
                    const T* xp = x + (i * W + j) * C;
                    const T a0 = (T)(scale * xp[0]);
                    const T* y0 = y_channel_major_.data() + i2 * W;
                    for (int64_t t = 0; t < W; ++t) dst[t] = a0 * y0[t];
                    for (int64_t c = 1; c < C; ++c)
                        axpy((T)(scale * xp[c]), y_channel_major_.data() + c * H * W + i2 * W, dst, W);
                }
    } else {
        if (C == 1) {  // one channel: the same products as one vector loop
            for (int64_t p = 0; p < H * W; ++p) K[p] = (T)(scale * ((double)x[p] * (double)y[p]));
        } else if (C < 8) {
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

template <class T>
template <int FN>
inline void Engine<T>::nonlin_apply(State<T>& s, const T* ix, const T* sx, const T* iy, const T* sy,
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
template <class T>
inline bool Engine<T>::op_nonlin(const int64_t* r, const double* f, const T* tape_x,
                                 const T* tape_y, T* tape_rec, bool self) {
    State<T>& s = top();
    const int64_t H = s.h, W = s.w, HW = H * W;
    const int64_t off = r[C_NONLIN_TAPE];
    const int64_t fn = r[C_NONLIN_FN];
    const double p = nonlin_param(r, f);
    T* K = s.K.data();
    T* Th = ntk_ ? s.Th.data() : nullptr;
    if (self) {  // in diagonal mode every entry is coincident
        const bool full = s.full != 0;
        return self_nonlin(
            fn, p, off, K, Th, H, W, tape_rec,
            [&](int64_t i, int64_t j) { return full ? ((i * H + i) * W + j) * W + j : i * W + j; },
            [&](const T* t) {
                if (full)
                    with_nonlinearity(fn, [&](auto fc) {
                        nonlin_apply<decltype(fc)::value>(s, t, t + HW, t, t + HW, p);
                    });
            });
    }
    const T* ix = tape_x + off;
    const T* iy = tape_y + off;
    with_nonlinearity(fn, [&](auto fc) {
        nonlin_apply<decltype(fc)::value>(s, ix, ix + HW, iy, iy + HW, p);
    });
    return true;
}

// The self pass at a nonlinearity (x == y): the coincident entries K[p, p]
// (at entry(i, j) of the state, for the H x W positions) are this image's
// self-variances; their factors (position_factors) are recorded on the tape,
// apply(factors) runs the nonlinearity on the other entries, then the
// coincident entries get their exact values (nonlin_coincident).  The one
// self branch of the interpreter, the slab path and the displacement path.
// Returns false on a non-finite self-variance.
template <class T>
template <class Entry, class Apply>
inline bool Engine<T>::self_nonlin(int64_t fn, double p, int64_t off, T* K, T* Th, int64_t H,
                                   int64_t W, T* tape_rec, Entry entry, Apply apply) {
    const int64_t HW = H * W;
    self_diag_K_.resize((size_t)HW);
    self_diag_T_.resize((size_t)HW);
    self_factors_.resize((size_t)(TAPE_FACTORS * HW));
    for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
            const int64_t e = entry(i, j);
            self_diag_K_[(size_t)(i * W + j)] = (double)K[e];
            self_diag_T_[(size_t)(i * W + j)] = ntk_ ? (double)Th[e] : 0.0;
        }
    for (int64_t q = 0; q < HW; ++q)
        if (!std::isfinite(self_diag_K_[(size_t)q]) || !std::isfinite(self_diag_T_[(size_t)q]))
            return false;
    position_factors(fn, self_diag_K_.data(), HW, self_factors_.data(), self_factors_.data() + HW);
    for (int64_t q = 0; q < TAPE_FACTORS * HW; ++q) tape_rec[off + q] = (T)self_factors_[(size_t)q];
    apply((const T*)(tape_rec + off));
    for (int64_t i = 0; i < H; ++i)
        for (int64_t j = 0; j < W; ++j) {
            const int64_t e = entry(i, j);
            double kv, dv;
            nonlin_coincident(fn, p, self_diag_K_[(size_t)(i * W + j)], kv, dv);
            K[e] = (T)kv;
            if (ntk_) Th[e] = (T)(self_diag_T_[(size_t)(i * W + j)] * dv);
        }
    return true;
}

// P M P^T with separable CSR matrices, full mode; or the diagonal rule.
template <class T>
inline void Engine<T>::pool_apply(const int64_t* r, const T* src, T* dst, bool full, int64_t H, int64_t W,
                int64_t Ho, int64_t Wo) {
    const auto [hp, hi, hv, wp, wi, wv] = pool_csr(P_, r);
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
    // step 1: first height axis -> pool_height_[a][i'][j][j'], each output slab one weighted sum
    pool_height_.resize((size_t)(Ho * H * blk));
    T* t1 = pool_height_.data();
    std::vector<const T*>& ptr = pool_rows_;
    Buffer<T>& wt = pool_weights_;
    for (int64_t a = 0; a < Ho; ++a) {
        ptr.clear(); wt.clear();
        for (int64_t u = hp[a]; u < hp[a + 1]; ++u) {
            ptr.push_back(src + hi[u] * H * blk);
            wt.push_back((T)hv[u]);
        }
        wsum_rows(ptr.data(), wt.data(), (int64_t)ptr.size(), t1 + a * H * blk, H * blk);
    }
    // steps 2-4 per output block (a, a'): second height axis, then both width axes
    scratch_.resize((size_t)(blk + Wo * W));
    T* t2 = scratch_.data();
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

template <class T>
inline void Engine<T>::op_pool(const int64_t* r) {
    State<T>& s = top();
    const int64_t H = r[C_IN_H], W = r[C_IN_W], Ho = r[C_OUT_H], Wo = r[C_OUT_W];
    const bool full = s.full != 0;
    const int64_t n_out = full ? Ho * Ho * Wo * Wo : Ho * Wo;
    next_K_.resize((size_t)n_out);
    pool_apply(r, s.K.data(), next_K_.data(), full, H, W, Ho, Wo);
    s.K.swap(next_K_);
    if (ntk_) {
        next_T_.resize((size_t)n_out);
        pool_apply(r, s.Th.data(), next_T_.data(), full, H, W, Ho, Wo);
        s.Th.swap(next_T_);
    }
    s.h = Ho; s.w = Wo;
    s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
}

template <class T>
inline double Engine<T>::diag_sum(const Buffer<T>& M, const State<T>& s) const {
    double acc = 0.0;
    if (s.full) {
        for (int64_t i = 0; i < s.h; ++i)
            for (int64_t j = 0; j < s.w; ++j)
                acc += (double)M[(size_t)(((i * s.h + i) * s.w + j) * s.w + j)];
    } else {
        acc = sum8(M.data(), s.h * s.w);
    }
    return acc;
}

template <class T>
inline void Engine<T>::op_diagsum(const double* f) {
    State<T>& s = top();
    const double kv = f[F_DIAGSUM_SCALE] * diag_sum(s.K, s);
    const double tv = ntk_ ? f[F_DIAGSUM_SCALE] * diag_sum(s.Th, s) : 0.0;
    resize(s, 1, 1, 0);
    s.K[0] = (T)kv;
    if (ntk_) s.Th[0] = (T)tv;
}

// sum_{i,i'} wh[i'-i] sum_{j,j'} ww[j'-j] M[i][i'][j][j'] (full mode), or
// wh[0] ww[0] sum_p M[p] (diagonal mode: displacement 0 only)
template <class T>
inline double Engine<T>::shift_sum(const Buffer<T>& M, const State<T>& s, const double* wh,
                 const double* ww) const {
    const int64_t H = s.h, W = s.w;
    if (!s.full) return wh[H - 1] * ww[W - 1] * sum8(M.data(), H * W);
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

template <class T>
inline void Engine<T>::op_shiftsum(const int64_t* r) {
    State<T>& s = top();
    const double* wh = P_.blob_f + r[C_SHIFTSUM_H_WEIGHTS];
    const double* ww = P_.blob_f + r[C_SHIFTSUM_W_WEIGHTS];
    const double kv = shift_sum(s.K, s, wh, ww);
    const double tv = ntk_ ? shift_sum(s.Th, s, wh, ww) : 0.0;
    resize(s, 1, 1, 0);
    s.K[0] = (T)kv;
    if (ntk_) s.Th[0] = (T)tv;
}

template <class T>
inline void Engine<T>::op_todiag() {
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

}  // namespace CK_ARCH
}  // namespace convkernel
