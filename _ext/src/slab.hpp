// The slab-major path (see the comment at Engine::slab_analyze in engine.hpp):
// a prefix of same-size stride-1 convolutions and nonlinearities ending in
// 1x1 read-outs runs one slab of blocks of one height displacement at a time
// while it stays in cache.
#pragma once

#include "engine.hpp"

namespace convkernel {
namespace CK_ARCH {

template <class T>
inline bool Engine<T>::is_reduction(const int64_t* r, int64_t H, int64_t W) const {
    return (r[C_CODE] == OP_POOL || r[C_CODE] == OP_SHIFTSUM) && r[C_MODE_IN] == 1 &&
           r[C_IN_H] == H && r[C_IN_W] == W && r[C_OUT_H] == 1 && r[C_OUT_W] == 1;
}

template <class T>
inline void Engine<T>::add_reduction(int64_t k, int64_t H, int64_t W) {
    const int64_t* r = op_row(P_, k);
    if (r[C_CODE] == OP_SHIFTSUM) {  // weights by displacement
        Reduction red;
        red.disp = true;
        const double* wh = P_.blob_f + r[C_SHIFTSUM_H_WEIGHTS];
        const double* ww = P_.blob_f + r[C_SHIFTSUM_W_WEIGHTS];
        red.hw.assign(wh, wh + (2 * H - 1));
        red.ww.assign(ww, ww + (2 * W - 1));
        readout_slot_[(size_t)k] = (int64_t)readouts_.size();
        readouts_.push_back(std::move(red));
        op_role_[(size_t)k] = R_REDUCE;
        slab_chain_.push_back(k);
        return;
    }
    const auto [hp, hi, hv, wp, wi, wv] = pool_csr(P_, r);
    Reduction red;
    red.hw.assign((size_t)H, 0.0);
    red.ww.assign((size_t)W, 0.0);
    for (int64_t u = hp[0]; u < hp[1]; ++u) red.hw[(size_t)hi[u]] += hv[u];
    for (int64_t v = wp[0]; v < wp[1]; ++v) red.ww[(size_t)wi[v]] += wv[v];
    readout_slot_[(size_t)k] = (int64_t)readouts_.size();
    readouts_.push_back(std::move(red));
    op_role_[(size_t)k] = R_REDUCE;
    slab_chain_.push_back(k);
}

template <class T>
inline void Engine<T>::slab_analyze() {
    const int64_t n = P_.n_ops;
    if (n < 2) return;
    const int64_t* r0 = op_row(P_, 0);
    if (r0[C_CODE] != OP_INPUT || r0[C_MODE_OUT] != 1) return;
    const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W];
    op_role_.assign((size_t)n, R_NORMAL);
    readout_slot_.assign((size_t)n, -1);
    op_role_[0] = R_INPUT;
    for (int64_t k = 1; k < n; ++k) {
        const int64_t* r = op_row(P_, k);
        const int64_t code = r[C_CODE];
        if (code == OP_CONV) {
            if (r[C_MODE_IN] != 1 || r[C_MODE_OUT] != 1 || r[C_IN_H] != H || r[C_IN_W] != W ||
                r[C_OUT_H] != H || r[C_OUT_W] != W || r[C_CONV_SH] != 1 || r[C_CONV_SW] != 1 ||
                r[C_CONV_CIRC_H] != 0 || r[C_CONV_CIRC_W] != 0 || r[C_CONV_KH] > kMaxTaps ||
                r[C_CONV_KW] > kMaxTaps)
                break;
            op_role_[(size_t)k] = R_SKIP;
            slab_chain_.push_back(k);
        } else if (code == OP_NONLIN) {
            if (r[C_MODE_IN] != 1 || r[C_MODE_OUT] != 1 || r[C_IN_H] != H || r[C_IN_W] != W) break;
            op_role_[(size_t)k] = R_SKIP;
            slab_chain_.push_back(k);
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
            op_role_[(size_t)k] = R_PUSH;
            add_reduction(k + 1, H, W);
            k = j;  // the tap's own ops run as usual; its POP returns to the spatial state
        } else if (is_reduction(r, H, W)) {
            add_reduction(k, H, W);
            slab_path_ = true;
            break;
        } else {
            break;
        }
    }
    if (!slab_path_) {
        op_role_.clear();
        slab_chain_.clear();
        readouts_.clear();
        return;
    }
    // the slabs some read-out weighs (a shift read-out needs few of them)
    slab_needed_.assign((size_t)(2 * H - 1), 0);
    for (const Reduction& red : readouts_)
        for (int64_t di = -(H - 1); di < H; ++di) {
            bool used = false;
            if (red.disp) {
                used = red.hw[(size_t)(di + H - 1)] != 0.0;
            } else {
                for (int64_t i = std::max<int64_t>(0, -di); i < H && i + di < H && !used; ++i)
                    used = red.hw[(size_t)i] * red.hw[(size_t)(i + di)] != 0.0;
            }
            if (used) slab_needed_[(size_t)(di + H - 1)] = 1;
        }
    slab_axes_.resize(slab_chain_.size() * (size_t)(H + 1));
    disp_analyze(H, W);
    readout_K_.assign(readouts_.size(), 0.0);
    readout_T_.assign(readouts_.size(), 0.0);
}

// the ops of the slab prefix, on 1x1 states
template <class T>
inline void Engine<T>::slab_replay(int64_t k, const int64_t* r) {
    switch (op_role_[(size_t)k]) {
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
            const int64_t slot = readout_slot_[(size_t)k];
            resize(s, 1, 1, (int)r[C_MODE_OUT]);
            s.K[0] = (T)readout_K_[(size_t)slot];
            if (ntk_) s.Th[0] = (T)readout_T_[(size_t)slot];
            break;
        }
        default: break;  // convolutions and nonlinearities: done slab by slab
    }
}

// height axis of conv op slab_chain_[ci] restricted to a slab of h blocks
// (zero outside: the blocks where one image is outside are absent)
template <class T>
inline const ConvAxis* Engine<T>::slab_axis(size_t ci, int64_t h, const int64_t* r) {
    const int64_t H = op_row(P_, 0)[C_OUT_H];
    ConvAxis& a = slab_axes_[ci * (size_t)(H + 1) + (size_t)h];
    if (a.k == 0) a.set(h, h, r[C_CONV_KH], 1, r[C_CONV_DH], r[C_CONV_PAD_H], false);
    return &a;
}

// One W x W block (rows j of image x, columns j' of image y).  In float
// the rows run two at a time, as one loop of 2W entries over y-side factors
// laid out twice, the x-side factor switching at the row boundary (rows of a
// few dozen floats would each end in a long tail; a row pair of 28-wide
// images is 7 whole AVX2 vectors); an odd last row runs alone.  The arithmetic
// per entry is that of nonlin_row for any layout.
template <class T>
template <int FN>
inline void Engine<T>::block_nonlin(T* K, T* Th, int64_t W, const T* ix, const T* sx, const T* iy,
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
    expanded_factors_.resize((size_t)(6 * W + 4));
    T* iy2 = expanded_factors_.data();
    T* sy2 = iy2 + 2 * W;
    T* second = sy2 + 2 * W;  // 1 on the second row of a pair
    copy_row(iy2, iy, W);
    copy_row(iy2 + W, iy, W);
    copy_row(sy2, sy, W);
    copy_row(sy2 + W, sy, W);
    for (int64_t t = 0; t < 2 * W; ++t) second[t] = t < W ? T(0) : T(1);
    const int64_t pairs = W / 2, j = 2 * pairs;
    nonlin_rows2<FN>(K, Th, 2 * W, pairs, second, ix, sx, iy2, sy2, p);
    if (j < W) {  // the odd last row alone
        T* last = second + 2 * W;
        last[0] = last[1] = ix[j];
        last[2] = last[3] = sx[j];
        nonlin_rows2<FN>(K + j * W, Th ? Th + j * W : nullptr, W, 1, second, last, last + 2,
                         iy2, sy2, p);
    }
}

// A flat nonlinearity in a function of its own: inlined into the block
// loops above, GCC left the loop scalar (measured: 4x slower in float).
template <class T>
template <int FN>
void Engine<T>::nonlin_flat(T* K, T* Th, int64_t n, const T* ix,
                                           const T* sx, const T* iy, const T* sy,
                                           double p) {
    if (ntk_)
        nonlin_row<FN, true, false>(K, Th, n, ix, sx, iy, sy, p);
    else
        nonlin_row<FN, false, false>(K, Th, n, ix, sx, iy, sy, p);
}

// `count` runs of n entries, run c with x-side factors ix[2c], sx[2c] where
// second[t] == 0 and ix[2c + 1], sx[2c + 1] elsewhere (a function of its own
// for the reason above; the loop over runs inside it keeps the vector loop's
// set-up out of the runs).
template <class T>
template <int FN>
void Engine<T>::nonlin_rows2(T* K, T* Th, int64_t n, int64_t count, const T* second,
                             const T* ix, const T* sx, const T* iy, const T* sy, double p) {
    for (int64_t c = 0; c < count; ++c) {
        if (ntk_)
            nonlin_row<FN, true, 2>(K + c * n, Th + c * n, n, ix + 2 * c, sx + 2 * c, iy, sy, p,
                                    second);
        else
            nonlin_row<FN, false, 2>(K + c * n, Th, n, ix + 2 * c, sx + 2 * c, iy, sy, p,
                                     second);
    }
}

template <class T>
inline void Engine<T>::slab_nonlin_block(int64_t fn, T* K, T* Th, int64_t W, const T* ix, const T* sx,
                       const T* iy, const T* sy, double p) {
    with_nonlinearity(fn, [&](auto fc) {
        block_nonlin<decltype(fc)::value>(K, Th, W, ix, sx, iy, sy, p);
    });
}

// The self pass (x == y, `self`) runs the slab of displacement 0 first,
// recording each nonlinearity's factors on the tape from its diagonal
// (as op_nonlin does) and setting the coincident entries exactly; the
// slabs of displacement di and -di of a self kernel are transposes with
// the same read-out sums, so only di > 0 follow, counted twice.
// Returns false on a non-finite self-variance.
template <class T>
inline bool Engine<T>::slab_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self) {
    const int64_t* r0 = op_row(P_, 0);
    const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS], HW = H * W;
    const int64_t blk = W * W;
    const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
    std::fill(readout_K_.begin(), readout_K_.end(), 0.0);
    std::fill(readout_T_.begin(), readout_T_.end(), 0.0);
    // channel-major copy of y: contiguous rows for the input blocks
    y_channel_major_.resize((size_t)(C * HW));
    to_channel_major(y, y_channel_major_.data(), HW, C);
    axis_w_ = conv_axes_.data() + 1;  // the width axis: the same for every conv (set below)
    const int64_t n_slabs = self ? H : 2 * H - 1;
    for (int64_t sl = 0; sl < n_slabs; ++sl) {
        const int64_t di = self ? sl : sl - (H - 1);
        const double mult = self && di > 0 ? 2.0 : 1.0;
        const bool record = self && di == 0;
        if (!record && !slab_needed_[(size_t)(di + H - 1)]) continue;  // no read-out weighs it
        const int64_t i0 = di < 0 ? -di : 0, h = H - (di < 0 ? -di : di);
        const int64_t n = h * blk;
        slab_K_.resize((size_t)n);
        T* K = slab_K_.data();
        T* Th = nullptr;
        // input blocks (i, i + di)
        for (int64_t a = 0; a < h; ++a) {
            const int64_t i = i0 + a, i2 = i + di;
            for (int64_t j = 0; j < W; ++j) {
                T* __restrict dst = K + a * blk + j * W;
                const T* xp = x + (i * W + j) * C;
                const T a0 = scale * xp[0];
                const T* y0 = y_channel_major_.data() + i2 * W;
                for (int64_t t = 0; t < W; ++t) dst[t] = a0 * y0[t];
                for (int64_t c = 1; c < C; ++c)
                    axpy((T)(scale * xp[c]), y_channel_major_.data() + c * HW + i2 * W, dst, W);
            }
        }
        if (ntk_) {
            slab_T_.assign((size_t)n, T(0));
            Th = slab_T_.data();
        }
        for (size_t ci = 0; ci < slab_chain_.size(); ++ci) {
            const int64_t k = slab_chain_[ci];
            const int64_t* r = op_row(P_, k);
            const double* f = fop_row(P_, k);
            const int64_t code = r[C_CODE];
            if (code == OP_CONV) {
                ConvAxis* ax = conv_axes_.data() + 2 * k;
                if (ax[1].k == 0) ax[1].set(W, W, r[C_CONV_KW], 1, r[C_CONV_DW], r[C_CONV_PAD_W], false);
                axis_w_ = ax + 1;
                axis_h_ = slab_axis(ci, h, r);
                conv_pad_layout(W);
                scratch_.resize((size_t)blk);
                const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(r[C_CONV_KH] * r[C_CONV_KW]));
                const T b = (T)f[F_CONV_BIAS_VAR];
                const bool trainable = r[C_CONV_TRAINABLE] != 0;
                // a following nonlinearity is applied to each block while in cache
                const int64_t* rn = ci + 1 < slab_chain_.size() ? op_row(P_, slab_chain_[ci + 1]) : nullptr;
                const bool fuse = rn && rn[C_CODE] == OP_NONLIN && !record;
                slab_next_K_.resize((size_t)n);
                if (ntk_) slab_next_T_.resize((size_t)n);
                for (int64_t a = 0; a < h; ++a) {
                    const T* rows[kMaxTaps];
                    int nk = 0;
                    for (int64_t t = 0; t < axis_h_->k; ++t) {
                        const int64_t src = axis_h_->tab[(size_t)(t * h + a)];
                        if (src >= 0) rows[nk++] = K + src * blk;
                    }
                    T* oK = slab_next_K_.data() + a * blk;
                    conv_block_rows(rows, nk, false, oK, W, c, b);
                    T* oT = nullptr;
                    if (ntk_) {
                        for (int v = 0; v < nk; ++v) rows[v] = Th + (rows[v] - K);
                        oT = slab_next_T_.data() + a * blk;
                        conv_block_rows(rows, nk, false, oT, W, c, T(0));
                        if (trainable) add_to(oK, oT, blk);
                    }
                    if (fuse) {
                        const double* fn_f = fop_row(P_, slab_chain_[ci + 1]);
                        const int64_t fn = rn[C_NONLIN_FN], off = rn[C_NONLIN_TAPE];
                        const double p = nonlin_param(rn, fn_f);
                        const int64_t i = i0 + a, i2 = i + di;
                        slab_nonlin_block(fn, oK, oT, W, tx + off + i * W, tx + off + HW + i * W,
                                          ty + off + i2 * W, ty + off + HW + i2 * W, p);
                    }
                }
                slab_K_.swap(slab_next_K_);
                K = slab_K_.data();
                if (ntk_) {
                    slab_T_.swap(slab_next_T_);
                    Th = slab_T_.data();
                }
                if (fuse) ++ci;
            } else if (code == OP_NONLIN) {  // not fused with the conv before it
                const int64_t fn = r[C_NONLIN_FN], off = r[C_NONLIN_TAPE];
                const double p = nonlin_param(r, f);
                if (record) {  // displacement 0: blocks (a, a), coincident entries (j, j)
                    const bool ok = self_nonlin(
                        fn, p, off, K, Th, H, W, tape_rec,
                        [&](int64_t a, int64_t j) { return a * blk + j * W + j; },
                        [&](const T* t) {
                            for (int64_t a = 0; a < H; ++a)
                                slab_nonlin_block(fn, K + a * blk, ntk_ ? Th + a * blk : nullptr,
                                                  W, t + a * W, t + HW + a * W, t + a * W,
                                                  t + HW + a * W, p);
                        });
                    if (!ok) return false;
                    continue;
                }
                for (int64_t a = 0; a < h; ++a) {
                    const int64_t i = i0 + a, i2 = i + di;
                    slab_nonlin_block(fn, K + a * blk, ntk_ ? Th + a * blk : nullptr, W,
                                      tx + off + i * W, tx + off + HW + i * W,
                                      ty + off + i2 * W, ty + off + HW + i2 * W, p);
                }
            } else {  // a read-out: weighted sum of this slab
                const Reduction& red = readouts_[(size_t)readout_slot_[(size_t)k]];
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
                const int64_t slot = readout_slot_[(size_t)k];
                readout_K_[(size_t)slot] += mult * sK;
                readout_T_[(size_t)slot] += mult * sT;
            }
        }
    }
    return true;
}

}  // namespace CK_ARCH
}  // namespace convkernel
