// Entry points of each compiled engine variant (see engine_*.cpp), declared
// from core.hpp's one list of typed entry points; core.cpp dispatches the C
// ABI to one of them at run time.
#pragma once

#include "internal.hpp"

#define CK_DECLARE_VARIANT_ENTRY(NAME, T, SUFFIX, PARAMS, ARGS) int NAME##SUFFIX PARAMS;
#define CK_DECLARE_VARIANT(NS)                \
    namespace NS {                            \
    CK_ENTRY_POINTS(CK_DECLARE_VARIANT_ENTRY) \
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
