// Internal declarations shared by the program check and the engines.
#pragma once

#include <cstdint>
#include <cstdio>

#include "convkernel/core.hpp"

namespace convkernel {

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

// The two separable matrices of a POOL row in CSR form: row pointers, column
// indices and weights (the weights sit at the indices' offset in blob_f), for
// the height axis then the width axis.
struct PoolCsr {
    const int64_t *hp, *hi;
    const double* hv;
    const int64_t *wp, *wi;
    const double* wv;
};
inline PoolCsr pool_csr(const Program& P, const int64_t* r) {
    return {P.blob_i + r[C_POOL_H_PTR], P.blob_i + r[C_POOL_H_IDX], P.blob_f + r[C_POOL_H_IDX],
            P.blob_i + r[C_POOL_W_PTR], P.blob_i + r[C_POOL_W_IDX], P.blob_f + r[C_POOL_W_IDX]};
}

// Checks a program's structure; reports the deepest stack and the largest
// state (in elements) so that engines can size their buffers.
int check_program_impl(const Program& P, int64_t* max_depth, int64_t* max_size, Error& err);

}  // namespace convkernel
