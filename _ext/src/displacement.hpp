// The displacement path: a slab prefix whose read-outs all weigh
// displacements (ShiftAverage) runs once per displacement d on the map
// K[p, p + d] (see Engine in engine.hpp).
#pragma once

#include "engine.hpp"

namespace convkernel {
namespace CK_ARCH {

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
template <class T>
inline void Engine<T>::disp_analyze(int64_t H, int64_t W) {
    for (const Reduction& red : readouts_)
        if (!red.disp) return;
    disp_path_ = true;
    displacements_.clear();
    displacements_.push_back({0, 0});
    for (int64_t dh = -(H - 1); dh < H; ++dh)
        for (int64_t dw = -(W - 1); dw < W; ++dw) {
            if (dh == 0 && dw == 0) continue;
            bool used = false;
            for (const Reduction& red : readouts_)
                used |= red.hw[(size_t)(dh + H - 1)] * red.ww[(size_t)(dw + W - 1)] != 0.0;
            if (used) displacements_.push_back({dh, dw});
        }
    disp_axes_.resize(slab_chain_.size() * (size_t)(H + W + 2));
}

// conv axis of slab_chain_[ci] on a map of n rows (axis 0) or columns (axis 1)
template <class T>
inline const ConvAxis* Engine<T>::disp_axis(size_t ci, int axis, int64_t n, const int64_t* r) {
    const int64_t H = op_row(P_, 0)[C_OUT_H], W = op_row(P_, 0)[C_OUT_W];
    ConvAxis& a = disp_axes_[ci * (size_t)(H + W + 2) + (axis ? (size_t)(H + 1 + n) : (size_t)n)];
    if (a.k == 0) a.set(n, n, r[axis ? C_CONV_KW : C_CONV_KH], 1, r[axis ? C_CONV_DW : C_CONV_DH],
                       r[axis ? C_CONV_PAD_W : C_CONV_PAD_H], false);
    return &a;
}

// The channel-major copy (C rows of H * W values) of image x, kept while
// the same image comes back (pair_tile's inner loop keeps x; an Engine
// lives for one call, during which the images do not change).
template <class T>
inline const T* Engine<T>::disp_channel_major(const T* x, Buffer<T>& buf, const T*& cached,
                                              int64_t HW, int64_t C) {
    if (cached != x) {
        buf.resize((size_t)(C * HW));
        to_channel_major(x, buf.data(), HW, C);
        cached = x;
    }
    return buf.data();
}

// One convolution of a map (h x w, row stride W) into o (same layout).
// When the width taps reach no further than the W - w unused columns, both
// stages run flat over the map: the height taps sum whole rows of W values
// into disp_conv_tmp_, whose unused columns are then zeroed, so that they
// (and a zero margin before row 0) are the width taps' zero padding, a tap
// left of column 0 reading the previous row's unused columns; o's unused
// columns get values of no meaning.  Otherwise conv_diag (padded rows).
// Either way the same sums in the same tap order.
template <class T>
inline void Engine<T>::disp_conv(const T* src, T* o, int64_t h, int64_t w, int64_t W, T c, T b) {
    const ConvAxis& aw = *axis_w_;
    int64_t PL = 0, PR = 0;  // the width taps' reach left and right
    for (int64_t t = 0; t < aw.k; ++t) {
        PL = std::max(PL, -aw.off[(size_t)t]);
        PR = std::max(PR, aw.off[(size_t)t]);
    }
    if (std::max(PL, PR) > W - w) {
        conv_diag(src, o, h, w, c, b, W, W);
        return;
    }
    T* tmp = disp_conv_tmp_.data() + W;  // after the zero margin
    conv_diag_rows(src, tmp, W, W, W);  // the height taps over whole rows of W values
    const T* rows[kMaxTaps];
    // the unused columns the width taps read, column by column (a few
    // strided stores: a vector loop per row cost more than the rows' tails)
    T* const end = tmp + h * W;
    for (int64_t j = w; j < w + PR; ++j)
        for (T* q = tmp + j; q < end; q += W) *q = T(0);
    for (int64_t j = std::max(w + PR, W - PL); j < W; ++j)
        for (T* q = tmp + j; q < end; q += W) *q = T(0);
    for (int64_t t = 0; t < aw.k; ++t) rows[t] = tmp + aw.off[(size_t)t];
    sum_rows(rows, (int)aw.k, o, (h - 1) * W + w, c, b);
}

// Each map is stored with the image's row stride W (rows of w = W - |dw|
// values, then |dw| unused columns), so that x's factors and y's (and the
// input channels) run at constant flat offsets from it: every elementwise
// step (input covariance, nonlinearity, trainable sum) and most window sums
// (disp_conv) are one vector loop over (h - 1) W + w entries, with no copy
// of the factors and no per-row tails.  The unused columns hold values of
// no meaning (the input covariance there pairs positions of different
// rows): no valid entry is ever computed from them (disp_conv zeroes the
// ones its width taps read, the read-outs zero them before their flat sum),
// and the buffers start zeroed so that no garbage (denormals) is computed on.
template <class T>
inline bool Engine<T>::disp_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self) {
    const int64_t* r0 = op_row(P_, 0);
    const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS], HW = H * W;
    const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
    std::fill(readout_K_.begin(), readout_K_.end(), 0.0);
    std::fill(readout_T_.begin(), readout_T_.end(), 0.0);
    if (slab_K_.size() < (size_t)HW) {  // once per Engine: every map fits in H x W
        for (Buffer<T>* b : {&slab_K_, &slab_T_, &slab_next_K_, &slab_next_T_})
            b->assign((size_t)HW, T(0));
        disp_conv_tmp_.assign((size_t)(W + HW), T(0));
    }
    // channel-major images (C == 1: the images themselves)
    const T* xc = C == 1 ? x : disp_channel_major(x, disp_x_cm_, disp_x_src_, HW, C);
    const T* yc = C == 1 ? y : x == y ? xc : disp_channel_major(y, disp_y_cm_, disp_y_src_, HW, C);
    for (const auto& d : displacements_) {
        const int64_t dh = d.first, dw = d.second;
        const bool record = self && dh == 0 && dw == 0;
        if (self && (dh < 0 || (dh == 0 && dw < 0))) continue;  // the mirror of a d > 0
        const double mult = self && !record ? 2.0 : 1.0;
        const int64_t i0 = dh < 0 ? -dh : 0, j0 = dw < 0 ? -dw : 0;
        const int64_t h = H - (dh < 0 ? -dh : dh), w = W - (dw < 0 ? -dw : dw);
        const int64_t n = (h - 1) * W + w;  // the flat extent of the map (row stride W)
        const int64_t px = i0 * W + j0, py = px + dh * W + dw;  // map entry 0 in x, in y
        T* K = slab_K_.data();
        T* Th = ntk_ ? slab_T_.data() : nullptr;
        dot_channels(xc + px, yc + py, HW, C, K, n, scale);  // the input map
        if (ntk_) std::fill(Th, Th + n, T(0));
        for (size_t ci = 0; ci < slab_chain_.size(); ++ci) {
            const int64_t k = slab_chain_[ci];
            const int64_t* r = op_row(P_, k);
            const double* f = fop_row(P_, k);
            const int64_t code = r[C_CODE];
            if (code == OP_CONV) {
                axis_h_ = disp_axis(ci, 0, h, r);
                axis_w_ = disp_axis(ci, 1, w, r);
                const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(r[C_CONV_KH] * r[C_CONV_KW]));
                disp_conv(K, slab_next_K_.data(), h, w, W, c, (T)f[F_CONV_BIAS_VAR]);
                slab_K_.swap(slab_next_K_);
                K = slab_K_.data();
                if (ntk_) {
                    disp_conv(Th, slab_next_T_.data(), h, w, W, c, T(0));
                    if (r[C_CONV_TRAINABLE] != 0) add_to(K, slab_next_T_.data(), n);
                    slab_T_.swap(slab_next_T_);
                    Th = slab_T_.data();
                }
            } else if (code == OP_NONLIN) {
                const int64_t fn = r[C_NONLIN_FN], off = r[C_NONLIN_TAPE];
                const double p = nonlin_param(r, f);
                if (record) {  // displacement 0: every entry is coincident (w = W: dense)
                    const bool ok = self_nonlin(
                        fn, p, off, K, Th, H, W, tape_rec,
                        [&](int64_t i, int64_t j) { return i * W + j; }, [](const T*) {});
                    if (!ok) return false;
                    continue;
                }
                const T* fx = tx + off + px;  // x's factors at the map's entries
                const T* fy = ty + off + py;
                with_nonlinearity(fn, [&](auto fc) {
                    nonlin_flat<decltype(fc)::value>(K, Th, n, fx, fx + HW, fy, fy + HW, p);
                });
            } else {  // a read-out
                const int64_t slot = readout_slot_[(size_t)k];
                const Reduction& red = readouts_[(size_t)slot];
                const double wgt = red.hw[(size_t)(dh + H - 1)] * red.ww[(size_t)(dw + W - 1)];
                if (wgt == 0.0) continue;
                // the unused columns zeroed (never read as values), then one flat sum
                for (int64_t j = w; j < W; ++j)
                    for (int64_t t = j; t < n; t += W) {
                        K[t] = T(0);
                        if (ntk_) Th[t] = T(0);
                    }
                readout_K_[(size_t)slot] += mult * wgt * sum8(K, n);
                if (ntk_) readout_T_[(size_t)slot] += mult * wgt * sum8(Th, n);
            }
        }
    }
    return true;
}

}  // namespace CK_ARCH
}  // namespace convkernel
