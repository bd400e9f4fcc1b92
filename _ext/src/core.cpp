// Exact convolutional-kernel recursion: see include/convkernel/core.hpp for
// the program format and DESIGN §2 for the math.
#include "convkernel/core.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

namespace convkernel {
namespace {

constexpr double kPi = 3.14159265358979323846;

struct Error {
    char* msg;
    int len;
    int fail(int status, const char* fmt, long long a = 0, long long b = 0, long long c = 0) {
        if (msg && len > 0) std::snprintf(msg, (size_t)len, fmt, a, b, c);
        return status;
    }
};

inline const int64_t* op_row(const Program& P, int64_t k) { return P.ops + k * N_INT; }
inline const double* fop_row(const Program& P, int64_t k) { return P.fops + k * N_FLOAT; }

// ---------------------------------------------------------------------------
// program check (shapes and stack discipline), done once per program
// ---------------------------------------------------------------------------

struct ShapeMode {
    int64_t h, w;
    int64_t full;
};

int check_csr(const Program& P, int64_t ptr_off, int64_t idx_off, int64_t n_out, int64_t n_in,
              Error& err) {
    if (ptr_off < 0 || ptr_off + n_out + 1 > P.n_blob_i)
        return err.fail(STATUS_BAD_PROGRAM, "pool matrix pointer out of range");
    const int64_t* ptr = P.blob_i + ptr_off;
    if (ptr[0] != 0) return err.fail(STATUS_BAD_PROGRAM, "pool matrix pointer must start at 0");
    for (int64_t a = 0; a < n_out; ++a)
        if (ptr[a + 1] < ptr[a]) return err.fail(STATUS_BAD_PROGRAM, "pool matrix pointer decreases");
    int64_t nnz = ptr[n_out];
    if (idx_off < 0 || idx_off + nnz > P.n_blob_i || idx_off + nnz > P.n_blob_f)
        return err.fail(STATUS_BAD_PROGRAM, "pool matrix indices out of range");
    for (int64_t t = 0; t < nnz; ++t) {
        int64_t i = P.blob_i[idx_off + t];
        if (i < 0 || i >= n_in) return err.fail(STATUS_BAD_PROGRAM, "pool matrix column out of range");
    }
    return STATUS_OK;
}

int check_program_impl(const Program& P, int64_t* max_depth, int64_t* max_size, Error& err) {
    if (!P.ops || !P.fops || P.n_ops < 2)
        return err.fail(STATUS_BAD_PROGRAM, "empty program");
    if (P.height < 1 || P.width < 1 || P.channels < 1)
        return err.fail(STATUS_BAD_PROGRAM, "bad input shape");
    if (P.n_outputs < 1 || P.tape_len < 0)
        return err.fail(STATUS_BAD_PROGRAM, "bad output count or tape length");
    std::vector<ShapeMode> stack;
    std::vector<int> written((size_t)P.n_outputs, 0);
    int64_t depth = 0, size = 1;
    for (int64_t k = 0; k < P.n_ops; ++k) {
        const int64_t* r = op_row(P, k);
        const int64_t code = r[C_CODE];
        const int64_t ih = r[C_IN_H], iw = r[C_IN_W], oh = r[C_OUT_H], ow = r[C_OUT_W];
        const int64_t mi = r[C_MODE_IN], mo = r[C_MODE_OUT];
        if (ih < 1 || iw < 1 || oh < 1 || ow < 1 || (mi != 0 && mi != 1) || (mo != 0 && mo != 1))
            return err.fail(STATUS_BAD_PROGRAM, "op %lld: bad shape or mode", k);
        if (code == OP_INPUT) {
            if (k != 0) return err.fail(STATUS_BAD_PROGRAM, "op %lld: INPUT must come first", k);
            if (oh != P.height || ow != P.width || r[C_P0] != P.channels)
                return err.fail(STATUS_BAD_PROGRAM, "INPUT shape does not match the program");
            stack.push_back({oh, ow, mo});
        } else {
            if (k == 0) return err.fail(STATUS_BAD_PROGRAM, "program must start with INPUT");
            if (stack.empty()) return err.fail(STATUS_BAD_PROGRAM, "op %lld: empty stack", k);
            ShapeMode& top = stack.back();
            if (top.h != ih || top.w != iw || top.full != mi)
                return err.fail(STATUS_BAD_PROGRAM,
                                "op %lld: input shape/mode does not match the stack top", k);
            switch (code) {
                case OP_CONV: {
                    for (int c = 8; c <= 13; ++c)
                        if (r[c] < 1) return err.fail(STATUS_BAD_PROGRAM, "op %lld: bad conv size", k);
                    if (mi != mo && !(oh == 1 && ow == 1 && mo == 0))
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: conv changes mode", k);
                    top = {oh, ow, mo};
                    break;
                }
                case OP_NONLIN: {
                    if (ih != oh || iw != ow || mi != mo)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: nonlinearity changes shape", k);
                    if (r[C_P0] < FN_RELU || r[C_P0] > FN_LINEAR)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: unknown nonlinearity", k);
                    if (r[C_P0 + 1] < 0 || r[C_P0 + 1] + ih * iw > P.tape_len)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: tape offset out of range", k);
                    if (P.ntk && r[C_P0] == FN_ARCCOS0)
                        return err.fail(STATUS_BAD_PROGRAM, "arc-cosine order 0 has no NTK");
                    break;
                }
                case OP_POOL: {
                    if (mi == 0 && mo != 0)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: pool cannot restore full mode", k);
                    if (mi != mo && !(oh == 1 && ow == 1 && mo == 0))
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: pool changes mode", k);
                    int s = check_csr(P, r[8], r[9], oh, ih, err);
                    if (s) return s;
                    s = check_csr(P, r[10], r[11], ow, iw, err);
                    if (s) return s;
                    if (mi == 0) {  // diagonal mode needs at most one tap per output row
                        for (int ax = 0; ax < 2; ++ax) {
                            const int64_t* ptr = P.blob_i + r[8 + 2 * ax];
                            int64_t n = ax ? ow : oh;
                            for (int64_t a = 0; a < n; ++a)
                                if (ptr[a + 1] - ptr[a] > 1)
                                    return err.fail(STATUS_BAD_PROGRAM,
                                                    "op %lld: mixing pool in diagonal mode", k);
                        }
                    }
                    top = {oh, ow, mo};
                    break;
                }
                case OP_DIAGSUM:
                    if (oh != 1 || ow != 1 || mo != 0)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: DIAGSUM must give 1x1", k);
                    top = {1, 1, 0};
                    break;
                case OP_TODIAG:
                    if (ih != oh || iw != ow || mo != 0)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: bad TODIAG", k);
                    top = {oh, ow, 0};
                    break;
                case OP_PUSH:
                    stack.push_back(top);
                    break;
                case OP_SWAP: {
                    if (stack.size() < 2) return err.fail(STATUS_BAD_PROGRAM, "op %lld: SWAP needs 2", k);
                    std::swap(stack[stack.size() - 1], stack[stack.size() - 2]);
                    const ShapeMode& t = stack.back();
                    if (t.h != oh || t.w != ow || t.full != mo)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: SWAP output mismatch", k);
                    break;
                }
                case OP_ADD: {
                    if (stack.size() < 2) return err.fail(STATUS_BAD_PROGRAM, "op %lld: ADD needs 2", k);
                    ShapeMode a = stack.back();
                    stack.pop_back();
                    const ShapeMode& b = stack.back();
                    if (a.h != b.h || a.w != b.w || a.full != b.full)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: ADD of mismatched states", k);
                    break;
                }
                case OP_POP:
                    if (stack.size() < 2) return err.fail(STATUS_BAD_PROGRAM, "op %lld: POP of last", k);
                    stack.pop_back();
                    break;
                case OP_OUTPUT: {
                    int64_t slot = r[C_P0];
                    if (ih != 1 || iw != 1)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: OUTPUT of a non-1x1 map", k);
                    if (slot < 0 || slot >= P.n_outputs)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: output slot out of range", k);
                    written[(size_t)slot] += 1;
                    break;
                }
                default:
                    return err.fail(STATUS_BAD_PROGRAM, "op %lld: unknown op code %lld", k, code);
            }
        }
        depth = std::max<int64_t>(depth, (int64_t)stack.size());
        const ShapeMode& t = stack.back();
        size = std::max(size, t.full ? t.h * t.h * t.w * t.w : t.h * t.w);
        size = std::max(size, mi ? ih * ih * iw * iw : ih * iw);
    }
    for (int64_t s = 0; s < P.n_outputs; ++s)
        if (written[(size_t)s] != 1)
            return err.fail(STATUS_BAD_PROGRAM, "output slot %lld written %lld times", s,
                            written[(size_t)s]);
    if (max_depth) *max_depth = depth;
    if (max_size) *max_size = size;
    return STATUS_OK;
}

// ---------------------------------------------------------------------------
// nonlinearities (computed in double precision)
// ---------------------------------------------------------------------------

struct Nonlin {
    int64_t fn;
    double sigma2;  // exp kernel: sigma^2
    int64_t degree;

    // kval: new covariance; dval: factor multiplying Theta (dK'/dc).
    inline void apply(double c, double vx, double vy, double& kval, double& dval) const {
        if (fn == FN_ERF) {
            const double a = (1.0 + 2.0 * vx) * (1.0 + 2.0 * vy);
            double z = 2.0 * c / std::sqrt(a);
            z = std::min(1.0, std::max(-1.0, z));
            kval = (2.0 / kPi) * std::asin(z);
            dval = (4.0 / kPi) / std::sqrt(std::max(a - 4.0 * c * c, 1e-300));
            return;
        }
        const double prod = vx * vy;
        double s = 0.0, rho = 0.0;
        if (prod > 0.0) {
            s = std::sqrt(prod);
            rho = std::min(1.0, std::max(-1.0, c / s));
        }
        homogeneous(s, rho, kval, dval);
    }

    // Exact values at a coincident point (same image, same position): rho = 1.
    inline void apply_coincident(double v, double& kval, double& dval) const {
        if (fn == FN_ERF) {
            apply(v, v, v, kval, dval);
            return;
        }
        if (v > 0.0) {
            homogeneous_at_one(v, kval, dval);
        } else {
            homogeneous(0.0, 0.0, kval, dval);
        }
    }

    inline void homogeneous(double s, double rho, double& kval, double& dval) const {
        switch (fn) {
            case FN_RELU: {
                const double th = std::acos(rho);
                kval = s * (std::sqrt(std::max(0.0, 1.0 - rho * rho)) + (kPi - th) * rho) / (2.0 * kPi);
                dval = (kPi - th) / (2.0 * kPi);
                break;
            }
            case FN_ARCCOS1: {
                const double th = std::acos(rho);
                kval = s * (std::sqrt(std::max(0.0, 1.0 - rho * rho)) + (kPi - th) * rho) / kPi;
                dval = (kPi - th) / kPi;
                break;
            }
            case FN_ARCCOS0: {
                const double th = std::acos(rho);
                kval = s * (kPi - th) / kPi;
                dval = 0.0;  // no NTK (rejected by the planner)
                break;
            }
            case FN_EXP: {
                const double e = std::exp((rho - 1.0) / sigma2);
                kval = s * e;
                dval = e / sigma2;
                break;
            }
            case FN_POLY: {
                double p = 1.0;
                for (int64_t t = 1; t < degree; ++t) p *= rho;  // rho^(d-1)
                kval = s * p * rho;
                dval = (double)degree * p;
                break;
            }
            default: {  // FN_LINEAR
                kval = s * rho;
                dval = 1.0;
                break;
            }
        }
    }

    inline void homogeneous_at_one(double v, double& kval, double& dval) const {
        switch (fn) {
            case FN_RELU: kval = 0.5 * v; dval = 0.5; break;
            case FN_ARCCOS1: kval = v; dval = 1.0; break;
            case FN_ARCCOS0: kval = v; dval = 0.0; break;
            case FN_EXP: kval = v; dval = 1.0 / sigma2; break;
            case FN_POLY: kval = v; dval = (double)degree; break;
            default: kval = v; dval = 1.0; break;
        }
    }
};

// ---------------------------------------------------------------------------
// the engine: one per thread, buffers reused across pairs
// ---------------------------------------------------------------------------

template <class T>
struct State {
    int64_t h = 0, w = 0;
    int full = 0;
    std::vector<T> K, Th;
    int64_t size() const { return full ? h * h * w * w : h * w; }
};

template <class T>
inline void axpy(T a, const T* x, T* y, int64_t n) {
    for (int64_t t = 0; t < n; ++t) y[t] += a * x[t];
}

template <class T>
inline void add_to(const T* x, T* y, int64_t n) {
    for (int64_t t = 0; t < n; ++t) y[t] += x[t];
}

// Index table of a conv along one axis: tab[d * n_out + a] is the input
// index read by output a at window tap d, or -1 in the zero padding.
void conv_table(int64_t n_in, int64_t n_out, int64_t k, int64_t s, int64_t dil, int64_t lo,
                bool circular, std::vector<int64_t>& tab) {
    tab.assign((size_t)(k * n_out), -1);
    for (int64_t d = 0; d < k; ++d)
        for (int64_t a = 0; a < n_out; ++a) {
            int64_t i = s * a + dil * d - lo;
            if (circular) {
                i %= n_in;
                if (i < 0) i += n_in;
            } else if (i < 0 || i >= n_in) {
                i = -1;
            }
            tab[(size_t)(d * n_out + a)] = i;
        }
}

template <class T>
class Engine {
  public:
    Engine(const Program& P, int64_t max_depth, int64_t max_size) : P_(P), ntk_(P.ntk != 0) {
        stack_.resize((size_t)max_depth);
        for (auto& s : stack_) {
            s.K.reserve((size_t)max_size);
            if (ntk_) s.Th.reserve((size_t)max_size);
        }
        buf1_.reserve((size_t)max_size);
        buf2_.reserve((size_t)max_size);
    }

    // Runs the program on (x, y).  For the self pass, x == y, tape_x ==
    // tape_y == tape_rec and `self` is set: nonlinearity inputs are recorded
    // on the tape and coincident entries use exact values.
    int run(const T* x, const T* y, const T* tape_x, const T* tape_y, T* tape_rec, bool self,
            T* out, Error& err) {
        sp_ = 0;
        for (int64_t k = 0; k < P_.n_ops; ++k) {
            const int64_t* r = op_row(P_, k);
            const double* f = fop_row(P_, k);
            switch (r[C_CODE]) {
                case OP_INPUT: op_input(r, f, x, y); break;
                case OP_CONV: op_conv(r, f); break;
                case OP_NONLIN: op_nonlin(r, f, tape_x, tape_y, tape_rec, self); break;
                case OP_POOL: op_pool(r); break;
                case OP_DIAGSUM: op_diagsum(f); break;
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
                                        "images for NaN/inf or overflow)", r[C_P0]);
                    out[r[C_P0]] = v;
                    break;
                }
                default: return err.fail(STATUS_BAD_PROGRAM, "unknown op");
            }
        }
        return STATUS_OK;
    }

  private:
    State<T>& top() { return stack_[(size_t)(sp_ - 1)]; }

    void resize(State<T>& s, int64_t h, int64_t w, int full) {
        s.h = h; s.w = w; s.full = full;
        s.K.resize((size_t)s.size());
        if (ntk_) s.Th.resize((size_t)s.size());
    }

    void op_input(const int64_t* r, const double* f, const T* x, const T* y) {
        const int64_t H = r[C_OUT_H], W = r[C_OUT_W], C = r[C_P0];
        const double scale = f[0];
        sp_ = 1;
        State<T>& s = top();
        resize(s, H, W, (int)r[C_MODE_OUT]);
        if (s.full) {
            for (int64_t i = 0; i < H; ++i)
                for (int64_t i2 = 0; i2 < H; ++i2)
                    for (int64_t j = 0; j < W; ++j) {
                        const T* xp = x + (i * W + j) * C;
                        T* dst = s.K.data() + ((i * H + i2) * W + j) * W;
                        for (int64_t j2 = 0; j2 < W; ++j2) {
                            const T* yp = y + (i2 * W + j2) * C;
                            double acc = 0.0;
                            for (int64_t c = 0; c < C; ++c) acc += (double)xp[c] * (double)yp[c];
                            dst[j2] = (T)(scale * acc);
                        }
                    }
        } else {
            for (int64_t p = 0; p < H * W; ++p) {
                double acc = 0.0;
                for (int64_t c = 0; c < C; ++c) acc += (double)x[p * C + c] * (double)y[p * C + c];
                s.K[(size_t)p] = (T)(scale * acc);
            }
        }
        if (ntk_) std::fill(s.Th.begin(), s.Th.end(), T(0));
    }

    // A[M] without the 1/(kh kw) factor, from src (shape of s) into dst.
    void conv_apply(const T* src, T* dst, bool full, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                    int64_t kh, int64_t kw) {
        const int64_t* th = tab_h_.data();
        const int64_t* tw = tab_w_.data();
        if (full) {
            // pass 1 along the two height axes: buf1_[a][a'][j][j']
            const int64_t blk = W * W;
            buf1_.resize((size_t)(Ho * Ho * blk));
            T* t1 = buf1_.data();
            std::fill(t1, t1 + Ho * Ho * blk, T(0));
            for (int64_t a = 0; a < Ho; ++a)
                for (int64_t a2 = 0; a2 < Ho; ++a2) {
                    T* d = t1 + (a * Ho + a2) * blk;
                    for (int64_t t = 0; t < kh; ++t) {
                        const int64_t i1 = th[t * Ho + a], i2 = th[t * Ho + a2];
                        if (i1 < 0 || i2 < 0) continue;
                        add_to(src + (i1 * H + i2) * blk, d, blk);
                    }
                }
            // pass 2 along the two width axes
            const int64_t oblk = Wo * Wo;
            std::fill(dst, dst + Ho * Ho * oblk, T(0));
            for (int64_t ab = 0; ab < Ho * Ho; ++ab) {
                const T* in = t1 + ab * blk;
                T* o = dst + ab * oblk;
                for (int64_t t = 0; t < kw; ++t) {
                    const int64_t* tt = tw + t * Wo;
                    for (int64_t b = 0; b < Wo; ++b) {
                        const int64_t j1 = tt[b];
                        if (j1 < 0) continue;
                        const T* row = in + j1 * W;
                        T* orow = o + b * Wo;
                        for (int64_t b2 = 0; b2 < Wo; ++b2) {
                            const int64_t j2 = tt[b2];
                            if (j2 >= 0) orow[b2] += row[j2];
                        }
                    }
                }
            }
        } else {
            buf1_.resize((size_t)(Ho * W));
            T* t1 = buf1_.data();
            std::fill(t1, t1 + Ho * W, T(0));
            for (int64_t a = 0; a < Ho; ++a)
                for (int64_t t = 0; t < kh; ++t) {
                    const int64_t i = th[t * Ho + a];
                    if (i >= 0) add_to(src + i * W, t1 + a * W, W);
                }
            std::fill(dst, dst + Ho * Wo, T(0));
            for (int64_t a = 0; a < Ho; ++a)
                for (int64_t t = 0; t < kw; ++t)
                    for (int64_t b = 0; b < Wo; ++b) {
                        const int64_t j = tw[t * Wo + b];
                        if (j >= 0) dst[a * Wo + b] += t1[a * W + j];
                    }
        }
    }

    void op_conv(const int64_t* r, const double* f) {
        State<T>& s = top();
        const int64_t H = r[C_IN_H], W = r[C_IN_W], Ho = r[C_OUT_H], Wo = r[C_OUT_W];
        const int64_t kh = r[8], kw = r[9];
        conv_table(H, Ho, kh, r[10], r[12], r[14], r[16] != 0, tab_h_);
        conv_table(W, Wo, kw, r[11], r[13], r[15], r[17] != 0, tab_w_);
        const bool trainable = r[18] != 0;
        const T c = (T)(f[0] / (double)(kh * kw));
        const T b = (T)f[1];
        const bool full = s.full != 0;
        const int64_t n_out = full ? Ho * Ho * Wo * Wo : Ho * Wo;
        buf2_.resize((size_t)n_out);
        conv_apply(s.K.data(), buf2_.data(), full, H, W, Ho, Wo, kh, kw);
        s.K.swap(buf2_);
        if (ntk_) {
            buf2_.resize((size_t)n_out);
            conv_apply(s.Th.data(), buf2_.data(), full, H, W, Ho, Wo, kh, kw);
            s.Th.swap(buf2_);
        }
        s.h = Ho; s.w = Wo;
        s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
        T* K = s.K.data();
        for (int64_t t = 0; t < n_out; ++t) K[t] = c * K[t] + b;
        if (ntk_) {
            T* Th = s.Th.data();
            if (trainable)
                for (int64_t t = 0; t < n_out; ++t) Th[t] = c * Th[t] + K[t];
            else
                for (int64_t t = 0; t < n_out; ++t) Th[t] = c * Th[t];
        }
    }

    void op_nonlin(const int64_t* r, const double* f, const T* tape_x, const T* tape_y,
                   T* tape_rec, bool self) {
        State<T>& s = top();
        const int64_t H = s.h, W = s.w, HW = H * W;
        const int64_t off = r[C_P0 + 1];
        Nonlin nl{r[C_P0], f[0] * f[0], r[C_P0 + 2]};
        if (self) {  // record the self-variances of this stage
            T* rec = tape_rec + off;
            if (s.full) {
                for (int64_t i = 0; i < H; ++i)
                    for (int64_t j = 0; j < W; ++j)
                        rec[i * W + j] = s.K[(size_t)(((i * H + i) * W + j) * W + j)];
            } else {
                std::copy(s.K.begin(), s.K.begin() + HW, rec);
            }
        }
        const T* vx = tape_x + off;
        const T* vy = tape_y + off;
        T* K = s.K.data();
        T* Th = ntk_ ? s.Th.data() : nullptr;
        double kv, dv;
        if (s.full) {
            for (int64_t i = 0; i < H; ++i)
                for (int64_t i2 = 0; i2 < H; ++i2)
                    for (int64_t j = 0; j < W; ++j) {
                        const double vxp = (double)vx[i * W + j];
                        const int64_t base = ((i * H + i2) * W + j) * W;
                        const T* vyr = vy + i2 * W;
                        for (int64_t j2 = 0; j2 < W; ++j2) {
                            const int64_t e = base + j2;
                            if (self && i == i2 && j == j2)
                                nl.apply_coincident(vxp, kv, dv);
                            else
                                nl.apply((double)K[e], vxp, (double)vyr[j2], kv, dv);
                            K[e] = (T)kv;
                            if (Th) Th[e] = (T)((double)Th[e] * dv);
                        }
                    }
        } else {
            for (int64_t p = 0; p < HW; ++p) {
                if (self)
                    nl.apply_coincident((double)vx[p], kv, dv);
                else
                    nl.apply((double)K[p], (double)vx[p], (double)vy[p], kv, dv);
                K[p] = (T)kv;
                if (Th) Th[p] = (T)((double)Th[p] * dv);
            }
        }
    }

    // P M P^T with separable CSR matrices, full mode; or the diagonal rule.
    void pool_apply(const int64_t* r, const T* src, T* dst, bool full, int64_t H, int64_t W,
                    int64_t Ho, int64_t Wo) {
        const int64_t* hp = P_.blob_i + r[8];
        const int64_t* hi = P_.blob_i + r[9];
        const double* hv = P_.blob_f + r[9];
        const int64_t* wp = P_.blob_i + r[10];
        const int64_t* wi = P_.blob_i + r[11];
        const double* wv = P_.blob_f + r[11];
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
        // step 1: first height axis -> buf1_[a][i'][j][j']
        buf1_.resize((size_t)(Ho * H * blk));
        T* t1 = buf1_.data();
        std::fill(t1, t1 + Ho * H * blk, T(0));
        for (int64_t a = 0; a < Ho; ++a)
            for (int64_t u = hp[a]; u < hp[a + 1]; ++u)
                axpy((T)hv[u], src + hi[u] * H * blk, t1 + a * H * blk, H * blk);
        // step 2: second height axis -> tmp2_[a][a'][j][j']
        tmp2_.resize((size_t)(Ho * Ho * blk));
        T* t2 = tmp2_.data();
        std::fill(t2, t2 + Ho * Ho * blk, T(0));
        for (int64_t a = 0; a < Ho; ++a)
            for (int64_t a2 = 0; a2 < Ho; ++a2)
                for (int64_t u = hp[a2]; u < hp[a2 + 1]; ++u)
                    axpy((T)hv[u], t1 + (a * H + hi[u]) * blk, t2 + (a * Ho + a2) * blk, blk);
        // steps 3 and 4: the two width axes of each (a, a') block
        std::fill(dst, dst + Ho * Ho * Wo * Wo, T(0));
        std::vector<T>& t3v = buf1_;  // reuse: Wo x W per block
        t3v.resize((size_t)(Wo * W));
        T* t3 = t3v.data();
        for (int64_t ab = 0; ab < Ho * Ho; ++ab) {
            const T* in = t2 + ab * blk;
            std::fill(t3, t3 + Wo * W, T(0));
            for (int64_t b = 0; b < Wo; ++b)
                for (int64_t v = wp[b]; v < wp[b + 1]; ++v) axpy((T)wv[v], in + wi[v] * W, t3 + b * W, W);
            T* o = dst + ab * Wo * Wo;
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
        buf2_.resize((size_t)n_out);
        pool_apply(r, s.K.data(), buf2_.data(), full, H, W, Ho, Wo);
        s.K.swap(buf2_);
        if (ntk_) {
            buf2_.resize((size_t)n_out);
            pool_apply(r, s.Th.data(), buf2_.data(), full, H, W, Ho, Wo);
            s.Th.swap(buf2_);
        }
        s.h = Ho; s.w = Wo;
        s.full = (int)r[C_MODE_OUT];  // a 1x1 output may switch to diagonal mode
    }

    double diag_sum(const std::vector<T>& M, const State<T>& s) const {
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
        const double kv = f[0] * diag_sum(s.K, s);
        const double tv = ntk_ ? f[0] * diag_sum(s.Th, s) : 0.0;
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
    std::vector<T> buf1_, buf2_, tmp2_;
    std::vector<int64_t> tab_h_, tab_w_;
};

template <class T>
int self_pass(const Program* prog, const T* X, int64_t n, T* tapes, T* self_out, char* msg,
              int msg_len) {
    Error err{msg, msg_len};
    try {
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
    } catch (const std::bad_alloc&) {
        return err.fail(STATUS_NO_MEMORY, "out of memory in the self pass");
    } catch (...) {
        return err.fail(STATUS_BAD_PROGRAM, "unexpected C++ exception in the self pass");
    }
    return STATUS_OK;
}

template <class T>
int pair_tile(const Program* prog, const T* X, const T* tx, int64_t nx, int64_t x0, const T* Y,
              const T* ty, int64_t ny, int64_t y0, int upper_only, T* out, int64_t s_out,
              int64_t s_row, int64_t s_col, char* msg, int msg_len) {
    Error err{msg, msg_len};
    try {
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
    } catch (const std::bad_alloc&) {
        return err.fail(STATUS_NO_MEMORY, "out of memory in the pair pass");
    } catch (...) {
        return err.fail(STATUS_BAD_PROGRAM, "unexpected C++ exception in the pair pass");
    }
    return STATUS_OK;
}

template <class T>
int pair_list(const Program* prog, const T* X, const T* tx, int64_t nx, const T* Y, const T* ty,
              int64_t ny, const int64_t* ii, const int64_t* jj, int64_t n_pairs, T* out,
              char* msg, int msg_len) {
    Error err{msg, msg_len};
    try {
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
    } catch (const std::bad_alloc&) {
        return err.fail(STATUS_NO_MEMORY, "out of memory in the pair pass");
    } catch (...) {
        return err.fail(STATUS_BAD_PROGRAM, "unexpected C++ exception in the pair pass");
    }
    return STATUS_OK;
}

}  // namespace

extern "C" {

int ck_check_program(const Program* prog, char* msg, int msg_len) {
    Error err{msg, msg_len};
    try {
        return check_program_impl(*prog, nullptr, nullptr, err);
    } catch (...) {
        return err.fail(STATUS_NO_MEMORY, "out of memory while checking the program");
    }
}

int ck_self_pass_f64(const Program* p, const double* X, int64_t n, double* tapes, double* so,
                     char* msg, int len) {
    return self_pass<double>(p, X, n, tapes, so, msg, len);
}
int ck_self_pass_f32(const Program* p, const float* X, int64_t n, float* tapes, float* so,
                     char* msg, int len) {
    return self_pass<float>(p, X, n, tapes, so, msg, len);
}
int ck_pair_tile_f64(const Program* p, const double* X, const double* tx, int64_t nx, int64_t x0,
                     const double* Y, const double* ty, int64_t ny, int64_t y0, int upper,
                     double* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return pair_tile<double>(p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2, msg, len);
}
int ck_pair_tile_f32(const Program* p, const float* X, const float* tx, int64_t nx, int64_t x0,
                     const float* Y, const float* ty, int64_t ny, int64_t y0, int upper,
                     float* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return pair_tile<float>(p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2, msg, len);
}

int ck_pair_list_f64(const Program* p, const double* X, const double* tx, int64_t nx,
                     const double* Y, const double* ty, int64_t ny, const int64_t* ii,
                     const int64_t* jj, int64_t n, double* out, char* msg, int len) {
    return pair_list<double>(p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}
int ck_pair_list_f32(const Program* p, const float* X, const float* tx, int64_t nx,
                     const float* Y, const float* ty, int64_t ny, const int64_t* ii,
                     const int64_t* jj, int64_t n, float* out, char* msg, int len) {
    return pair_list<float>(p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}

}  // extern "C"

}  // namespace convkernel
