// The engine compiled for one instruction set: the baseline of the target (any CPU).
#define CK_ARCH generic
#include "interpreter.hpp"
#include "variants.hpp"

namespace convkernel {
namespace generic {
#include "variant_entries.inc"
}  // namespace generic
}  // namespace convkernel
