// Structural check of a program (op codes, shapes, modes, stack discipline,
// blob bounds), run once per program before any computation.
#include <algorithm>
#include <vector>

#include "internal.hpp"

namespace convkernel {
namespace {

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

}  // namespace

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
            if (oh != P.height || ow != P.width || r[C_INPUT_CHANNELS] != P.channels)
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
                    for (int c : {C_CONV_KH, C_CONV_KW, C_CONV_SH, C_CONV_SW, C_CONV_DH, C_CONV_DW})
                        if (r[c] < 1) return err.fail(STATUS_BAD_PROGRAM, "op %lld: bad conv size", k);
                    if (mi != mo && !(oh == 1 && ow == 1 && mo == 0))
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: conv changes mode", k);
                    top = {oh, ow, mo};
                    break;
                }
                case OP_NONLIN: {
                    if (ih != oh || iw != ow || mi != mo)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: nonlinearity changes shape", k);
                    if (r[C_NONLIN_FN] < 0 || r[C_NONLIN_FN] >= N_FN)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: unknown nonlinearity", k);
                    if (r[C_NONLIN_TAPE] < 0 || r[C_NONLIN_TAPE] + TAPE_FACTORS * ih * iw > P.tape_len)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: tape offset out of range", k);
                    if (P.ntk && r[C_NONLIN_FN] == FN_ARCCOS0)
                        return err.fail(STATUS_BAD_PROGRAM, "arc-cosine order 0 has no NTK");
                    break;
                }
                case OP_POOL: {
                    if (mi == 0 && mo != 0)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: pool cannot restore full mode", k);
                    if (mi != mo && !(oh == 1 && ow == 1 && mo == 0))
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: pool changes mode", k);
                    int s = check_csr(P, r[C_POOL_H_PTR], r[C_POOL_H_IDX], oh, ih, err);
                    if (s) return s;
                    s = check_csr(P, r[C_POOL_W_PTR], r[C_POOL_W_IDX], ow, iw, err);
                    if (s) return s;
                    if (mi == 0) {  // diagonal mode needs at most one tap per output row
                        for (int ax = 0; ax < 2; ++ax) {
                            const int64_t* ptr = P.blob_i + r[ax ? C_POOL_W_PTR : C_POOL_H_PTR];
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
                case OP_SHIFTSUM: {
                    if (oh != 1 || ow != 1 || mo != 0)
                        return err.fail(STATUS_BAD_PROGRAM, "op %lld: SHIFTSUM must give 1x1", k);
                    for (int ax = 0; ax < 2; ++ax) {
                        const int64_t n = ax ? iw : ih, off = r[ax ? C_SHIFTSUM_W_WEIGHTS : C_SHIFTSUM_H_WEIGHTS], len = 2 * n - 1;
                        if (off < 0 || off + len > P.n_blob_f)
                            return err.fail(STATUS_BAD_PROGRAM, "op %lld: shift weights out of range", k);
                        const double* w = P.blob_f + off;
                        for (int64_t d = 1; d < n; ++d)
                            if (w[n - 1 + d] != w[n - 1 - d])
                                return err.fail(STATUS_BAD_PROGRAM,
                                                "op %lld: shift weights must be symmetric", k);
                        // diagonal mode holds displacement 0 only
                        if (mi == 0)
                            for (int64_t d = 1; d < n; ++d)
                                if (w[n - 1 + d] != 0.0)
                                    return err.fail(STATUS_BAD_PROGRAM,
                                                    "op %lld: SHIFTSUM needs full mode", k);
                    }
                    top = {1, 1, 0};
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
                    int64_t slot = r[C_OUTPUT_SLOT];
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

}  // namespace convkernel
