// Convolution on a workspace: the window mean of the covariance over pairs of
// windows, K'[p, q] = w / |window| * sum_t K[p + t, q + t] + b (Theta: the
// same map, plus K' when the weights are trainable).  Full tensors go block
// by block (conv_full / conv_block); diagonal maps use conv_diag.  Mirrors
// _reference.py's conv rule.
#pragma once

#include "engine.hpp"

namespace convkernel {
namespace CK_ARCH {

// Convolution; when `nl` is given (the pair pass, full mode), the next
// op's nonlinearity is applied to each output block while it is in cache.
template <class T>
inline void Engine<T>::op_conv(int64_t op, const int64_t* r, const double* f, const int64_t* nl,
             const double* nlf, const T* tape_x,
             const T* tape_y) {
    State<T>& s = top();
    const int64_t H = r[C_IN_H], W = r[C_IN_W], Ho = r[C_OUT_H], Wo = r[C_OUT_W];
    const int64_t kh = r[C_CONV_KH], kw = r[C_CONV_KW];
    // the axis tables of each conv op are built once per engine (per tile)
    ConvAxis* ax = conv_axes_.data() + 2 * op;
    if (ax[0].k == 0) {
        ax[0].set(H, Ho, kh, r[C_CONV_SH], r[C_CONV_DH], r[C_CONV_PAD_H], r[C_CONV_CIRC_H] != 0);
        ax[1].set(W, Wo, kw, r[C_CONV_SW], r[C_CONV_DW], r[C_CONV_PAD_W], r[C_CONV_CIRC_W] != 0);
    }
    axis_h_ = ax;
    axis_w_ = ax + 1;
    const bool trainable = r[C_CONV_TRAINABLE] != 0;
    const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(kh * kw));
    const T b = (T)f[F_CONV_BIAS_VAR];
    const bool full = s.full != 0;
    const int64_t n_out = full ? Ho * Ho * Wo * Wo : Ho * Wo;
    next_K_.resize((size_t)n_out);
    if (ntk_) next_T_.resize((size_t)n_out);
    if (full) {
        scratch_.resize((size_t)(W * W));
        if (axis_w_->contiguous && axis_w_->k <= kMaxTaps) conv_pad_layout(W);
        if (nl) {
            const int64_t HW = Ho * Wo, off = nl[C_NONLIN_TAPE], fn = nl[C_NONLIN_FN];
            const double p = nonlin_param(nl, nlf);
            const T* ix = tape_x + off;
            const T* iy = tape_y + off;
            Nl q{ix, ix + HW, iy, iy + HW, p};
            with_nonlinearity(fn, [&](auto fc) {
                conv_full<decltype(fc)::value>(s, c, b, trainable, q);
            });
        } else {
            conv_full<-1>(s, c, b, trainable, Nl{});
        }
    } else {
        T* oK = next_K_.data();
        T* oT = ntk_ ? next_T_.data() : nullptr;
        conv_diag(s.K.data(), oK, H, W, c, b);
        if (ntk_) {
            conv_diag(s.Th.data(), oT, H, W, c, T(0));
            if (trainable) add_to(oK, oT, n_out);
        }
    }
    s.K.swap(next_K_);
    if (ntk_) s.Th.swap(next_T_);
    s.h = Ho; s.w = Wo;
    s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
}

// Patches of one image at the output positions of the conv op 1 (its axes in
// axis_h_ / axis_w_), zero where a tap falls in the padding.
template <class T>
inline void Engine<T>::conv_patches(const T* img, T* dst, bool by_position, T scale, int64_t C,
                                    int64_t W) {
    const int64_t Ho = axis_h_->n_out, Wo = axis_w_->n_out, kw = axis_w_->k;
    const int64_t M = axis_h_->k * kw * C, HWo = Ho * Wo;
    for (int64_t u = 0; u < axis_h_->k; ++u)
        for (int64_t v = 0; v < kw; ++v)
            for (int64_t ch = 0; ch < C; ++ch) {
                const int64_t m = (u * kw + v) * C + ch;
                for (int64_t a = 0; a < Ho; ++a) {
                    const int64_t i = axis_h_->tab[(size_t)(u * Ho + a)];
                    for (int64_t b = 0; b < Wo; ++b) {
                        const int64_t j = axis_w_->tab[(size_t)(v * Wo + b)];
                        const T val = i >= 0 && j >= 0 ? scale * img[(i * W + j) * C + ch] : T(0);
                        dst[by_position ? (a * Wo + b) * M + m : m * HWo + a * Wo + b] = val;
                    }
                }
            }
}

template <class T>
inline int64_t Engine<T>::op_input_conv(const T* x, const T* y, const T* tape_x, const T* tape_y,
                                        bool self) {
    const int64_t* r0 = op_row(P_, 0);
    const int64_t* r = op_row(P_, 1);
    const double* f = fop_row(P_, 1);
    const int64_t W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS];
    const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
    const int64_t Ho = r[C_OUT_H], Wo = r[C_OUT_W], kh = r[C_CONV_KH], kw = r[C_CONV_KW];
    ConvAxis* ax = conv_axes_.data() + 2;
    if (ax[0].k == 0) {
        ax[0].set(r[C_IN_H], Ho, kh, r[C_CONV_SH], r[C_CONV_DH], r[C_CONV_PAD_H],
                  r[C_CONV_CIRC_H] != 0);
        ax[1].set(W, Wo, kw, r[C_CONV_SW], r[C_CONV_DW], r[C_CONV_PAD_W], r[C_CONV_CIRC_W] != 0);
    }
    axis_h_ = ax;
    axis_w_ = ax + 1;
    const int64_t M = kh * kw * C, HWo = Ho * Wo, ob = Wo * Wo;
    patches_x_.resize((size_t)(M * HWo));
    patches_y_.resize((size_t)(M * HWo));
    // x carries the input's scale, as op_input's products do
    conv_patches(x, patches_x_.data(), true, scale, C, W);
    conv_patches(y, patches_y_.data(), false, T(1), C, W);
    const T* px = patches_x_.data();
    const T* py = patches_y_.data();
    const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(kh * kw));
    const T b = (T)f[F_CONV_BIAS_VAR];
    const bool trainable = r[C_CONV_TRAINABLE] != 0;
    sp_ = 1;
    State<T>& s = top();
    resize(s, Ho, Wo, 1);
    T* K = s.K.data();
    T* Th = ntk_ ? s.Th.data() : nullptr;
    const int64_t* rn = P_.n_ops > 2 ? op_row(P_, 2) : nullptr;
    const bool fuse = !self && rn && rn[C_CODE] == OP_NONLIN;
    if (M > kMaxTaps) scratch_.resize((size_t)HWo);
    auto blocks = [&](auto fc, const Nl& q) {
        constexpr int FN = decltype(fc)::value;
        for (int64_t a = 0; a < Ho; ++a) {
            // the row of blocks (a, *), one x position (a, al) at a time
            T* rowK = K + a * Ho * ob;
            for (int64_t al = 0; al < Wo; ++al) {
                const T* wx = px + (a * Wo + al) * M;
                if (M <= kMaxTaps) {
                    patch_dot((int)M, wx, py, HWo, Wo, rowK + al * Wo, ob, Wo, Ho, c, b);
                    continue;
                }
                // in chunks of kMaxTaps terms (scaled below)
                patch_dot(kMaxTaps, wx, py, HWo, Wo, rowK + al * Wo, ob, Wo, Ho, T(1), T(0));
                for (int64_t m = kMaxTaps; m < M; m += kMaxTaps) {
                    patch_dot((int)std::min<int64_t>(kMaxTaps, M - m), wx + m, py + m * HWo,
                              HWo, Wo, scratch_.data(), Wo, Wo, Ho, T(1), T(0));
                    for (int64_t a2 = 0; a2 < Ho; ++a2)
                        add_to(scratch_.data() + a2 * Wo, rowK + a2 * ob + al * Wo, Wo);
                }
            }
            if (M > kMaxTaps)
                for (int64_t t = 0; t < Ho * ob; ++t) rowK[t] = c * rowK[t] + b;
            for (int64_t a2 = 0; a2 < Ho; ++a2) {
                T* oK = rowK + a2 * ob;
                T* oT = nullptr;
                if (ntk_) {  // Theta is 0 after INPUT: the conv leaves K' if trainable, else 0
                    oT = Th + (a * Ho + a2) * ob;
                    if (trainable) copy_row(oT, oK, ob);
                    else std::fill(oT, oT + ob, T(0));
                }
                if constexpr (FN >= 0)
                    block_nonlin<FN>(oK, oT, Wo, q.ix + a * Wo, q.sx + a * Wo, q.iy + a2 * Wo,
                                     q.sy + a2 * Wo, q.p);
            }
        }
    };
    if (!fuse) {
        blocks(std::integral_constant<int, -1>{}, Nl{});
        return 1;
    }
    const int64_t off = rn[C_NONLIN_TAPE];
    const T* ix = tape_x + off;
    const T* iy = tape_y + off;
    const Nl q{ix, ix + HWo, iy, iy + HWo, nonlin_param(rn, fop_row(P_, 2))};
    with_nonlinearity(rn[C_NONLIN_FN], [&](auto fc) { blocks(fc, q); });
    return 2;
}

// Full-mode convolution into next_K_/next_T_, output blocks visited along
// diagonals (a2 - a constant) so that consecutive blocks share most of
// their input blocks; FN >= 0 fuses that nonlinearity.
template <class T>
template <int FN>
inline void Engine<T>::conv_full(State<T>& s, T c, T b, bool trainable, const Nl& q) {
    const int64_t H = axis_h_->n_in, W = axis_w_->n_in, Ho = axis_h_->n_out, Wo = axis_w_->n_out;
    const int64_t ob = Wo * Wo;
    T* oK = next_K_.data();
    T* oT = ntk_ ? next_T_.data() : nullptr;
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

// One output block (a, a2) of a full tensor: o = c * (window sums) + b.
// Height taps are summed into tmp (W x W) in one pass, then width taps
// into o, every output element summing all its taps in registers and
// being stored once (sum_rows); in the contiguous case (stride 1, zero
// padding) the few border columns where some tap falls in the padding
// are summed separately.
template <class T>
inline void Engine<T>::conv_block(const T* src, T* o, int64_t a, int64_t a2, int64_t H, int64_t W, T c,
                T b) {
    const int64_t blk = W * W;
    T* tmp = scratch_.data();
    const T* rows[kMaxTaps];
    int nk = 0;
    bool folded = false;  // very tall kernels: the first kMaxTaps taps summed into tmp
    for (int64_t t = 0; t < axis_h_->k; ++t) {
        const int64_t i1 = axis_h_->tab[(size_t)(t * axis_h_->n_out + a)];
        const int64_t i2 = axis_h_->tab[(size_t)(t * axis_h_->n_out + a2)];
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
// (or, when `folded`, their sum already in scratch_).
template <class T>
inline void Engine<T>::conv_block_rows(const T* const* rows, int nk, bool folded, T* o, int64_t W, T c, T b) {
    const int64_t blk = W * W, Wo = axis_w_->n_out;
    T* tmp = scratch_.data();
    if (nk == 0 && !folded) {
        std::fill(o, o + Wo * Wo, b);
        return;
    }
    if (axis_w_->contiguous && axis_w_->k <= kMaxTaps) {
        // The block's rows go into the interior of the zero-padded block of
        // conv_pad_layout (stride Wp, margins zeroed once per convolution),
        // where every width tap is a constant flat offset: the height taps
        // are summed straight into that interior (one strided sum) and the
        // width taps straight into o (another), so that no row is copied
        // unless the block has a single tap or was folded beforehand.  Same
        // adds in the same order as a flat sum followed by copies.
        const int64_t Wp = block_pad_width_;
        T* pad = block_padded_.data();
        T* interior = pad + block_pad_top_ * (Wp + 1);
        if (!folded && nk > 1) {
            sum_rows(rows, nk, interior, W, T(1), T(0), W, W, Wp);
        } else {
            const T* src = folded ? tmp : rows[0];  // folded: tmp holds the sum already
            for (int64_t j = 0; j < W; ++j) copy_row(interior + j * Wp, src + j * W, W);
        }
        const T* rws[kMaxTaps];
        for (int64_t t = 0; t < axis_w_->k; ++t)
            rws[t] = interior + axis_w_->off[(size_t)t] * (Wp + 1);
        sum_rows(rws, (int)axis_w_->k, o, Wo, c, b, Wo, Wp, Wo);
        return;
    }
    if (folded) {
        // tmp holds the sum already
    } else if (nk > 1) {
        sum_rows(rows, nk, tmp, blk, T(1), T(0));
    } else {
        tmp = const_cast<T*>(rows[0]);  // a single tap: read the input block itself
    }
    {
        std::fill(o, o + Wo * Wo, T(0));
        for (int64_t t = 0; t < axis_w_->k; ++t) {
            const int64_t* tt = axis_w_->tab.data() + t * Wo;
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
template <class T>
inline void Engine<T>::conv_pad_layout(int64_t W) {
    const int64_t Wo = axis_w_->n_out;
    int64_t top = 0, right = 0;
    for (int64_t t = 0; t < axis_w_->k; ++t) {
        top = std::max(top, -axis_w_->off[(size_t)t]);
        right = std::max(right, axis_w_->off[(size_t)t] + Wo - W);
    }
    block_pad_top_ = top;
    block_pad_width_ = top + W + right;
    block_padded_.assign((size_t)((block_pad_width_ + 1) * block_pad_width_), T(0));
}

// Window sums of a diagonal-mode map (H x W) into o (Ho x Wo), o = c * sums + b.
// Contiguous axes (stride 1, zero padding): the height taps first, straight
// from the map's rows (block prefix / suffix sums for 3 or more undilated
// taps: conv_diag_blocks; direct sums otherwise: conv_diag_rows), into the
// interior of rows padded with zeros (stride Wp), so that the width taps are
// constant offsets; then one strided sum of the width taps writes o (direct
// sums: a block scheme along the vector direction does not vectorise, and
// transposing costs more than it saves).  The zero margins are written only
// when the layout changes (they are never overwritten), so that no row is
// copied.
template <class T>
inline void Engine<T>::conv_diag(const T* src, T* o, int64_t H, int64_t W, T c, T b,
                                 int64_t lds, int64_t ldo) {
    const int64_t Ho = axis_h_->n_out, Wo = axis_w_->n_out;
    if (lds == 0) lds = W;
    if (ldo == 0) ldo = Wo;
    if (!(axis_h_->contiguous && axis_w_->contiguous && axis_h_->k <= kMaxTaps && axis_w_->k <= kMaxTaps)) {
        conv_diag_generic(src, o, W, lds, ldo);
        for (int64_t a = 0; a < Ho; ++a)
            for (int64_t t = 0; t < Wo; ++t) o[a * ldo + t] = c * o[a * ldo + t] + b;
        return;
    }
    int64_t PL = 0, PR = 0;
    for (int64_t t = 0; t < axis_w_->k; ++t) {
        const int64_t off = axis_w_->off[(size_t)t];
        PL = std::max(PL, -off);
        PR = std::max(PR, off + Wo - W);
    }
    const int64_t Wp = PL + W + PR;
    if (diag_pad_layout_[0] != Ho || diag_pad_layout_[1] != W || diag_pad_layout_[2] != PL ||
        diag_pad_layout_[3] != Wp) {
        // (at least kMaxTaps rows: block_sums writes whole groups of k rows)
        diag_padded_.assign((size_t)(std::max<int64_t>(Ho, kMaxTaps) * Wp), T(0));
        diag_pad_layout_[0] = Ho; diag_pad_layout_[1] = W;
        diag_pad_layout_[2] = PL; diag_pad_layout_[3] = Wp;
    }
    T* pad = diag_padded_.data() + PL;  // column 0 of the map in padded row 0
    if (axis_h_->unit && axis_h_->k >= kBlockSumMinTaps)
        conv_diag_blocks(src, pad, H, W, lds, Wp);
    else
        conv_diag_rows(src, pad, W, lds, Wp);
    const T* rows[kMaxTaps];
    for (int64_t t = 0; t < axis_w_->k; ++t) rows[t] = pad + axis_w_->off[(size_t)t];
    sum_rows(rows, (int)axis_w_->k, o, Wo, c, b, Ho, Wp, ldo);
}

// conv_diag's height taps (unit axis, k >= kBlockSumMinTaps) in groups of k
// output rows (block_sums) from a table of the padded rows (u = i - off for
// map row i; a zero row outside the map).  A last partial group overlaps the
// one before it (its rows are recomputed, with another block alignment: as
// exact), or, when Ho < k, fills the spare rows of the buffer.
template <class T>
inline void Engine<T>::conv_diag_blocks(const T* src, T* pad, int64_t H, int64_t W, int64_t lds,
                                        int64_t Wp) {
    const int64_t Ho = axis_h_->n_out, k = axis_h_->k, off = axis_h_->off[0];
    if ((int64_t)zero_row_.size() < W) zero_row_.assign((size_t)W, T(0));
    const int64_t n_u = std::max(Ho, k) + k - 1;
    block_rows_.resize((size_t)n_u);
    const T** rows = block_rows_.data();
    const int64_t u_lo = std::min(n_u, std::max<int64_t>(0, -off));
    const int64_t u_hi = std::max(u_lo, std::min(n_u, H - off));
    for (int64_t u = 0; u < n_u; ++u)
        rows[u] = u >= u_lo && u < u_hi ? src + (u + off) * lds : zero_row_.data();
    const int64_t n_whole = Ho / k;
    if (n_whole > 0) block_sums(rows, (int)k, pad, Wp, W, n_whole);
    if (Ho % k) {
        const int64_t g = Ho >= k ? Ho - k : 0;
        block_sums(rows + g, (int)k, pad + g * Wp, Wp, W);
    }
}

// conv_diag's height taps as direct sums: constant row offsets over the
// band of output rows where every tap is inside the map (one strided sum),
// the border rows summing their valid taps row by row.
template <class T>
inline void Engine<T>::conv_diag_rows(const T* src, T* pad, int64_t W, int64_t lds, int64_t Wp) {
    const int64_t Ho = axis_h_->n_out;
    const T* rows[kMaxTaps];
    int64_t Bl = 0, Bh = Ho;
    for (int64_t t = 0; t < axis_h_->k; ++t) {
        Bl = std::max(Bl, axis_h_->lo[(size_t)t]);
        Bh = std::min(Bh, axis_h_->hi[(size_t)t]);
    }
    if (Bl < Bh) {
        for (int64_t t = 0; t < axis_h_->k; ++t) rows[t] = src + (Bl + axis_h_->off[(size_t)t]) * lds;
        if (lds == W && Wp == W)  // contiguous rows: one flat sum (no row tails)
            sum_rows(rows, (int)axis_h_->k, pad + Bl * W, (Bh - Bl) * W, T(1), T(0));
        else
            sum_rows(rows, (int)axis_h_->k, pad + Bl * Wp, W, T(1), T(0), Bh - Bl, lds, Wp);
    } else {
        Bl = Bh = Ho;
    }
    for (int64_t a = 0; a < Ho; ++a) {
        if (a == Bl) a = Bh;
        if (a >= Ho) break;
        int nv = 0;
        for (int64_t t = 0; t < axis_h_->k; ++t)
            if (a >= axis_h_->lo[(size_t)t] && a < axis_h_->hi[(size_t)t])
                rows[nv++] = src + (a + axis_h_->off[(size_t)t]) * lds;
        if (nv == 0)
            std::fill(pad + a * Wp, pad + a * Wp + W, T(0));
        else
            sum_rows(rows, nv, pad + a * Wp, W, T(1), T(0));
    }
}

// Strided, dilated-with-stride or circular axes: tap tables.
template <class T>
inline void Engine<T>::conv_diag_generic(const T* src, T* o, int64_t W, int64_t lds,
                                         int64_t ldo) {
    const int64_t Ho = axis_h_->n_out, Wo = axis_w_->n_out;
    scratch_.resize((size_t)(Ho * W));
    T* tmp = scratch_.data();
    std::fill(tmp, tmp + Ho * W, T(0));
    for (int64_t t = 0; t < axis_h_->k; ++t)
        for (int64_t a = 0; a < Ho; ++a) {
            const int64_t i = axis_h_->tab[(size_t)(t * Ho + a)];
            if (i >= 0) add_to(src + i * lds, tmp + a * W, W);
        }
    for (int64_t a = 0; a < Ho; ++a) {
        const T* row = tmp + a * W;
        T* orow = o + a * ldo;
        std::fill(orow, orow + Wo, T(0));
        for (int64_t t = 0; t < axis_w_->k; ++t) {
            const int64_t* tt = axis_w_->tab.data() + t * Wo;
            for (int64_t bb = 0; bb < Wo; ++bb)
                if (tt[bb] >= 0) orow[bb] += row[tt[bb]];
        }
    }
}

}  // namespace CK_ARCH
}  // namespace convkernel
