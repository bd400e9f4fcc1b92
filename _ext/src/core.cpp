// C ABI of the core: checks, and run-time dispatch of each program to the
// compiled engine variant it asks for (Program::variant: the baseline, AVX2 +
// FMA or AVX-512).  The core only answers which variants this build and CPU
// support (ck_simd_supported) and refuses, at check time, a program asking for
// another one; which variant a process uses (instruction-set order, a
// measurement cached per machine, or SKLEARN_CONVKERNEL_SIMD) is decided in
// Python (sklearn_convkernel/_simd.py), which writes it into every program.
#include <cstdint>

#include "convkernel/core.hpp"
#include "internal.hpp"
#include "variants.hpp"

namespace convkernel {
namespace {

// Variant codes, in instruction-set order (each one's CPU needs those below it).
enum Variant { V_GENERIC = 0, V_AVX2 = 1, V_AVX512 = 2, N_VARIANTS = 3 };
const char* const kVariantNames[N_VARIANTS] = {"generic", "avx2", "avx512"};

bool detect_supported(int v) {
    if (v == V_GENERIC) return true;
    bool ok = false;
#if defined(CK_HAVE_AVX2) || defined(CK_HAVE_AVX512)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#ifdef CK_HAVE_AVX2
    if (v == V_AVX2) ok = avx2;
#endif
#ifdef CK_HAVE_AVX512
    if (v == V_AVX512)
        ok = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
#endif
    return ok;
}

// Whether the build has variant v and the CPU can run it (asked once per process).
bool supported(int64_t v) {
    static const bool table[N_VARIANTS] = {detect_supported(V_GENERIC),
                                           detect_supported(V_AVX2),
                                           detect_supported(V_AVX512)};
    return v >= 0 && v < N_VARIANTS && table[v];
}

// The variant a program runs with: the one it asks for once ck_check_program
// accepted it, else the baseline (whose entry points refuse an unchecked
// program), so that no unchecked variant code can reach a foreign instruction set.
inline int variant_of(const Program* prog) { return prog->checked ? prog->variant : V_GENERIC; }

}  // namespace

#if defined(CK_HAVE_AVX512)
#define CK_DISPATCH(fn, ARGS)                          \
    (variant_of(prog) == V_AVX512 ? avx512::fn ARGS    \
     : variant_of(prog) == V_AVX2 ? avx2::fn ARGS      \
                                  : generic::fn ARGS)
#elif defined(CK_HAVE_AVX2)
#define CK_DISPATCH(fn, ARGS) (variant_of(prog) == V_AVX2 ? avx2::fn ARGS : generic::fn ARGS)
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

const char* ck_simd_variant_name(int v) { return v >= 0 && v < N_VARIANTS ? kVariantNames[v] : nullptr; }

int ck_simd_supported(int v) { return supported(v) ? 1 : 0; }

int ck_check_program(Program* prog, char* msg, int msg_len) {
    Error err{msg, msg_len};
    prog->checked = 0;
    if (!supported(prog->variant))
        return err.fail(STATUS_BAD_ARGUMENT,
                        "engine variant %lld is not supported by this CPU or build "
                        "(ck_simd_supported)", (long long)prog->variant);
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
