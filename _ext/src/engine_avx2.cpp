// The engine compiled for one instruction set: AVX2 + FMA (built with -mavx2 -mfma; used only on CPUs that have them).
#define CK_ARCH avx2
#include "engine.hpp"
#include "variants.hpp"

namespace convkernel {
namespace avx2 {

int self_pass_f64(const Program* p, const double* X, int64_t n, double* tapes, double* so,
                  char* msg, int len) {
    return self_pass<double>(p, X, n, tapes, so, msg, len);
}
int self_pass_f32(const Program* p, const float* X, int64_t n, float* tapes, float* so,
                  char* msg, int len) {
    return self_pass<float>(p, X, n, tapes, so, msg, len);
}
int pair_tile_f64(const Program* p, const double* X, const double* tx, int64_t nx, int64_t x0,
                  const double* Y, const double* ty, int64_t ny, int64_t y0, int upper,
                  double* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return pair_tile<double>(p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2, msg, len);
}
int pair_tile_f32(const Program* p, const float* X, const float* tx, int64_t nx, int64_t x0,
                  const float* Y, const float* ty, int64_t ny, int64_t y0, int upper,
                  float* out, int64_t s0, int64_t s1, int64_t s2, char* msg, int len) {
    return pair_tile<float>(p, X, tx, nx, x0, Y, ty, ny, y0, upper, out, s0, s1, s2, msg, len);
}
int pair_list_f64(const Program* p, const double* X, const double* tx, int64_t nx,
                  const double* Y, const double* ty, int64_t ny, const int64_t* ii,
                  const int64_t* jj, int64_t n, double* out, char* msg, int len) {
    return pair_list<double>(p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}
int pair_list_f32(const Program* p, const float* X, const float* tx, int64_t nx,
                  const float* Y, const float* ty, int64_t ny, const int64_t* ii,
                  const int64_t* jj, int64_t n, float* out, char* msg, int len) {
    return pair_list<float>(p, X, tx, nx, Y, ty, ny, ii, jj, n, out, msg, len);
}

}  // namespace avx2
}  // namespace convkernel
