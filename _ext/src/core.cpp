// C ABI of the core: checks, and run-time dispatch to the best compiled
// engine variant for this CPU (AVX-512, else AVX2+FMA, else the baseline).
// The environment variable SKLEARN_CONVKERNEL_SIMD=generic|avx2|avx512 asks
// for a variant (used by the tests to check them all); a variant the CPU or
// the build lacks falls back to the best available one below it.
#include <cstdlib>
#include <cstring>

#include "convkernel/core.hpp"
#include "internal.hpp"
#include "variants.hpp"

namespace convkernel {
namespace {

enum Variant { V_GENERIC = 0, V_AVX2 = 1, V_AVX512 = 2 };

Variant detect_variant() {
    int best = V_GENERIC;
#if defined(CK_HAVE_AVX2) || defined(CK_HAVE_AVX512)
    __builtin_cpu_init();
#endif
#ifdef CK_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = V_AVX2;
#endif
#ifdef CK_HAVE_AVX512
    if (best == V_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw"))
        best = V_AVX512;
#endif
    const char* forced = std::getenv("SKLEARN_CONVKERNEL_SIMD");
    if (forced) {
        int want = best;
        if (std::strcmp(forced, "generic") == 0) want = V_GENERIC;
        else if (std::strcmp(forced, "avx2") == 0) want = V_AVX2;
        else if (std::strcmp(forced, "avx512") == 0) want = V_AVX512;
        if (want < best) best = want;
    }
    return (Variant)best;
}

// Chosen once per process (the environment is read on the first call).
Variant best_variant() {
    static const Variant chosen = detect_variant();
    return chosen;
}

}  // namespace

#if defined(CK_HAVE_AVX512)
#define CK_DISPATCH(fn, ARGS)                     \
    (best_variant() == V_AVX512 ? avx512::fn ARGS \
     : best_variant() == V_AVX2 ? avx2::fn ARGS   \
                                : generic::fn ARGS)
#elif defined(CK_HAVE_AVX2)
#define CK_DISPATCH(fn, ARGS) (best_variant() == V_AVX2 ? avx2::fn ARGS : generic::fn ARGS)
#else
#define CK_DISPATCH(fn, ARGS) generic::fn ARGS
#endif

#define CK_ABI_OP(NAME, V) {"op", "OP_" #NAME, V},
#define CK_ABI_FN(NAME, V) {"fn", "FN_" #NAME, V},
#define CK_ABI_STATUS(NAME, V) {"status", "STATUS_" #NAME, V},
#define CK_ABI_SIZE(NAME, V) {"size", #NAME, V},
#define CK_ABI_COMMON(NAME, V) {"column", "C_" #NAME, V},
#define CK_ABI_INT(OP, NAME, V) {"column", "C_" #OP "_" #NAME, V},
#define CK_ABI_FLOAT(OP, NAME, V) {"fcolumn", "F_" #OP "_" #NAME, V},
const AbiEntry kAbiTable[] = {
    CK_OP_CODES(CK_ABI_OP) CK_FN_CODES(CK_ABI_FN) CK_STATUS_CODES(CK_ABI_STATUS)
    CK_SIZES(CK_ABI_SIZE) CK_COMMON_COLUMNS(CK_ABI_COMMON) CK_INT_COLUMNS(CK_ABI_INT)
    CK_FLOAT_COLUMNS(CK_ABI_FLOAT)
};

extern "C" {

const AbiEntry* ck_abi(int64_t* n) {
    *n = (int64_t)(sizeof kAbiTable / sizeof kAbiTable[0]);
    return kAbiTable;
}

const char* ck_simd_variant(void) {
    static const char* names[] = {"generic", "avx2", "avx512"};
    return names[best_variant()];
}

int ck_check_program(Program* prog, char* msg, int msg_len) {
    Error err{msg, msg_len};
    prog->checked = 0;
    try {
        const int status = check_program_impl(*prog, &prog->max_depth, &prog->max_size, err);
        prog->checked = status == STATUS_OK;
        return status;
    } catch (...) {
        return err.fail(STATUS_NO_MEMORY, "out of memory while checking the program");
    }
}

// each typed entry point dispatches to the same function of the chosen variant
#define CK_DEFINE_ENTRY(NAME, T, SUFFIX, PARAMS, ARGS) \
    int ck_##NAME##SUFFIX PARAMS { return CK_DISPATCH(NAME##SUFFIX, ARGS); }
CK_ENTRY_POINTS(CK_DEFINE_ENTRY)
#undef CK_DEFINE_ENTRY

}  // extern "C"

}  // namespace convkernel
