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

// The factors of the map's positions are gathered into flat arrays, so
// that the nonlinearity runs as one vector loop over the map (rows of
// W - |dw| values would each end in a scalar tail).
template <class T>
template <int FN>
inline void Engine<T>::disp_nonlin(T* K, T* Th, int64_t h, int64_t w, const T* fx, const T* fy, int64_t HW,
                 int64_t W, int64_t dh, int64_t dw, int64_t i0, int64_t j0, double p) {
    const int64_t n = h * w;
    expanded_factors_.resize((size_t)(4 * n));
    T* ixe = expanded_factors_.data();
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

template <class T>
inline bool Engine<T>::disp_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self) {
    const int64_t* r0 = op_row(P_, 0);
    const int64_t H = r0[C_OUT_H], W = r0[C_OUT_W], C = r0[C_INPUT_CHANNELS], HW = H * W;
    const T scale = (T)fop_row(P_, 0)[F_INPUT_SCALE];
    std::fill(readout_K_.begin(), readout_K_.end(), 0.0);
    std::fill(readout_T_.begin(), readout_T_.end(), 0.0);
    for (const auto& d : displacements_) {
        const int64_t dh = d.first, dw = d.second;
        const bool record = self && dh == 0 && dw == 0;
        if (self && (dh < 0 || (dh == 0 && dw < 0))) continue;  // the mirror of a d > 0
        const double mult = self && !record ? 2.0 : 1.0;
        const int64_t i0 = dh < 0 ? -dh : 0, j0 = dw < 0 ? -dw : 0;
        const int64_t h = H - (dh < 0 ? -dh : dh), w = W - (dw < 0 ? -dw : dw), n = h * w;
        slab_K_.resize((size_t)n);
        T* K = slab_K_.data();
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
            slab_T_.assign((size_t)n, T(0));
            Th = slab_T_.data();
        }
        for (size_t ci = 0; ci < slab_chain_.size(); ++ci) {
            const int64_t k = slab_chain_[ci];
            const int64_t* r = op_row(P_, k);
            const double* f = fop_row(P_, k);
            const int64_t code = r[C_CODE];
            if (code == OP_CONV) {
                axis_h_ = disp_axis(ci, 0, h, r);
                axis_w_ = disp_axis(ci, 1, w, r);
                const T c = (T)(f[F_CONV_WEIGHT_VAR] / (double)(r[C_CONV_KH] * r[C_CONV_KW]));
                slab_next_K_.resize((size_t)n);
                conv_diag(K, slab_next_K_.data(), h, w, c, (T)f[F_CONV_BIAS_VAR]);
                slab_K_.swap(slab_next_K_);
                K = slab_K_.data();
                if (ntk_) {
                    slab_next_T_.resize((size_t)n);
                    conv_diag(Th, slab_next_T_.data(), h, w, c, T(0));
                    if (r[C_CONV_TRAINABLE] != 0) add_to(K, slab_next_T_.data(), n);
                    slab_T_.swap(slab_next_T_);
                    Th = slab_T_.data();
                }
            } else if (code == OP_NONLIN) {
                const int64_t fn = r[C_NONLIN_FN], off = r[C_NONLIN_TAPE];
                const double p = nonlin_param(r, f);
                if (record) {  // displacement 0: every entry is coincident
                    const bool ok = self_nonlin(
                        fn, p, off, K, Th, H, W, tape_rec,
                        [&](int64_t i, int64_t j) { return i * W + j; }, [](const T*) {});
                    if (!ok) return false;
                    continue;
                }
                with_nonlinearity(fn, [&](auto fc) {
                    disp_nonlin<decltype(fc)::value>(K, Th, h, w, tx + off, ty + off, HW, W,
                                                     dh, dw, i0, j0, p);
                });
            } else {  // a read-out
                const int64_t slot = readout_slot_[(size_t)k];
                const Reduction& red = readouts_[(size_t)slot];
                const double wgt = red.hw[(size_t)(dh + H - 1)] * red.ww[(size_t)(dw + W - 1)];
                if (wgt == 0.0) continue;
                double sK = 0.0, sT = 0.0;
                for (int64_t t = 0; t < n; ++t) sK += (double)K[t];
                if (ntk_)
                    for (int64_t t = 0; t < n; ++t) sT += (double)Th[t];
                readout_K_[(size_t)slot] += mult * wgt * sK;
                readout_T_[(size_t)slot] += mult * wgt * sT;
            }
        }
    }
    return true;
}

}  // namespace CK_ARCH
}  // namespace convkernel
