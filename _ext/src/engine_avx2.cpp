// The engine compiled for one instruction set: AVX2 + FMA (built with -mavx2 -mfma; used only on CPUs that have them).
#define CK_ARCH avx2
#include "interpreter.hpp"
#include "variants.hpp"

namespace convkernel {
namespace avx2 {
#include "variant_entries.inc"
}  // namespace avx2
}  // namespace convkernel
