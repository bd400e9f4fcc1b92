// The interpreter: the op loop of one image pair (Engine::run) and the
// templated passes behind the C ABI (self pass, pair tile, pair list), which
// run a checked program (ck_check_program recorded its buffer sizes).
// engine_*.cpp include this file, which brings in the whole engine.
#pragma once

#include "conv.hpp"
#include "displacement.hpp"
#include "engine.hpp"
#include "ops.hpp"
#include "slab.hpp"

namespace convkernel {
namespace CK_ARCH {

// Runs the program on (x, y).  For the self pass, x == y, tape_x ==
// tape_y == tape_rec and `self` is set: nonlinearity inputs are recorded
// on the tape and coincident entries use exact values.
template <class T>
inline int Engine<T>::run(const T* x, const T* y, const T* tape_x, const T* tape_y, T* tape_rec, bool self,
        T* out, Error& err) {
    sp_ = 0;
    const bool by_slab = slab_path_;
    if (by_slab && !(disp_path_ ? disp_compute(x, y, tape_x, tape_y, tape_rec, self)
                           : slab_compute(x, y, tape_x, tape_y, tape_rec, self)))
        return err.fail(STATUS_NOT_FINITE,
                        "a self-variance is not finite (the input images are too large "
                        "for this dtype and network: rescale them)");
    for (int64_t k = 0; k < P_.n_ops; ++k) {
        const int64_t* r = op_row(P_, k);
        const double* f = fop_row(P_, k);
        if (by_slab && op_role_[(size_t)k] != R_NORMAL) {
            slab_replay(k, r);
            continue;
        }
        switch (r[C_CODE]) {
            case OP_INPUT:
                if (input_conv_)  // k == 0: the program's first op
                    k = op_input_conv(x, y, tape_x, tape_y, self);
                else
                    op_input(r, f, x, y);
                break;
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
        if (!prog->checked)
            return err.fail(STATUS_BAD_PROGRAM, "the program was not checked (ck_check_program)");
        int st = STATUS_OK;
        Engine<T> eng(*prog, prog->max_depth, prog->max_size);
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
        if (!prog->checked)
            return err.fail(STATUS_BAD_PROGRAM, "the program was not checked (ck_check_program)");
        int st = STATUS_OK;
        Engine<T> eng(*prog, prog->max_depth, prog->max_size);
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
        if (!prog->checked)
            return err.fail(STATUS_BAD_PROGRAM, "the program was not checked (ck_check_program)");
        int st = STATUS_OK;
        for (int64_t t = 0; t < n_pairs; ++t)
            if (ii[t] < 0 || ii[t] >= nx || jj[t] < 0 || jj[t] >= ny)
                return err.fail(STATUS_BAD_ARGUMENT, "pair %lld indexes outside the images", t);
        Engine<T> eng(*prog, prog->max_depth, prog->max_size);
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
