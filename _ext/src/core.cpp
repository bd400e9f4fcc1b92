// C ABI of the core: checks, and run-time dispatch to the best compiled
// engine variant for this CPU (AVX2+FMA when available, else the baseline).
// The environment variable SKLEARN_CONVKERNEL_SIMD=generic forces the
// baseline engine (used by the tests to check both variants).
#include <cstdlib>
#include <cstring>

#include "convkernel/core.hpp"
#include "internal.hpp"
#include "variants.hpp"

namespace convkernel {
namespace {

bool use_avx2() {
#ifdef CK_HAVE_AVX2
    const char* forced = std::getenv("SKLEARN_CONVKERNEL_SIMD");
    if (forced && std::strcmp(forced, "generic") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

}  // namespace

#ifdef CK_HAVE_AVX2
#define CK_DISPATCH(fn, ...) (use_avx2() ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define CK_DISPATCH(fn, ...) generic::fn(__VA_ARGS__)
#endif

extern "C" {

const char* ck_simd_variant(void) { return use_avx2() ? "avx2" : "generic"; }

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
    return CK_DISPATCH(self_pass_f64, p, X, n, tapes, so, msg, len);
}
int ck_self_pass_f32(const Program* p, const float* X, int64_t n, float* tapes, float* so,
                     char* msg, int len) {
    return CK_DISPATCH(self_pass_f32, p, X, n, tapes, so, msg, len);
}
int ck_pair_tile_f64(const Program* p, const double* X, const double* tx, int64_t nx, int64_t x0,
                     const double* Y, const double* ty, int64_t ny, int64_t y0, int upper,
                     double* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return CK_DISPATCH(pair_tile_f64, p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2,
                       msg, len);
}
int ck_pair_tile_f32(const Program* p, const float* X, const float* tx, int64_t nx, int64_t x0,
                     const float* Y, const float* ty, int64_t ny, int64_t y0, int upper,
                     float* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return CK_DISPATCH(pair_tile_f32, p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2,
                       msg, len);
}
int ck_pair_list_f64(const Program* p, const double* X, const double* tx, int64_t nx,
                     const double* Y, const double* ty, int64_t ny, const int64_t* ii,
                     const int64_t* jj, int64_t n, double* out, char* msg, int len) {
    return CK_DISPATCH(pair_list_f64, p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}
int ck_pair_list_f32(const Program* p, const float* X, const float* tx, int64_t nx,
                     const float* Y, const float* ty, int64_t ny, const int64_t* ii,
                     const int64_t* jj, int64_t n, float* out, char* msg, int len) {
    return CK_DISPATCH(pair_list_f32, p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}

}  // extern "C"

}  // namespace convkernel
