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

// Checks a program's structure; reports the deepest stack and the largest
// state (in elements) so that engines can size their buffers.
int check_program_impl(const Program& P, int64_t* max_depth, int64_t* max_size, Error& err);

}  // namespace convkernel
