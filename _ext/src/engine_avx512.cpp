// The engine compiled for AVX-512 (F, DQ, VL, BW) + FMA, 512-bit vectors
// (built with -mavx512f -mavx512dq -mavx512vl -mavx512bw -mfma
// -mprefer-vector-width=512; used only on CPUs and kernels that support it).
#define CK_ARCH avx512
#include "interpreter.hpp"
#include "variants.hpp"

namespace convkernel {
namespace avx512 {
#include "variant_entries.inc"
}  // namespace avx512
}  // namespace convkernel
