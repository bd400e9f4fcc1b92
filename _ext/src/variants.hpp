// Entry points of each compiled engine variant (see engine_*.cpp); core.cpp
// dispatches the C ABI to one of them at run time.
#pragma once

#include "internal.hpp"

#define CK_DECLARE_VARIANT(NS)                                                                   \
    namespace NS {                                                                               \
    int self_pass_f64(const Program*, const double*, int64_t, double*, double*, char*, int);     \
    int self_pass_f32(const Program*, const float*, int64_t, float*, float*, char*, int);        \
    int pair_tile_f64(const Program*, const double*, const double*, int64_t, int64_t,            \
                      const double*, const double*, int64_t, int64_t, int, double*, int64_t,     \
                      int64_t, int64_t, char*, int);                                             \
    int pair_tile_f32(const Program*, const float*, const float*, int64_t, int64_t,              \
                      const float*, const float*, int64_t, int64_t, int, float*, int64_t,        \
                      int64_t, int64_t, char*, int);                                             \
    int pair_list_f64(const Program*, const double*, const double*, int64_t, const double*,      \
                      const double*, int64_t, const int64_t*, const int64_t*, int64_t, double*,  \
                      char*, int);                                                               \
    int pair_list_f32(const Program*, const float*, const float*, int64_t, const float*,         \
                      const float*, int64_t, const int64_t*, const int64_t*, int64_t, float*,    \
                      char*, int);                                                               \
    }

namespace convkernel {
CK_DECLARE_VARIANT(generic)
#ifdef CK_HAVE_AVX2
CK_DECLARE_VARIANT(avx2)
#endif
#ifdef CK_HAVE_AVX512
CK_DECLARE_VARIANT(avx512)
#endif
}  // namespace convkernel
