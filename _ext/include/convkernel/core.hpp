// sklearn-convkernel compiled core: the exact convolutional-kernel recursion.
//
// A *program* is the compiled form of an architecture for one input shape
// (built by sklearn_convkernel/_plan.py).  It is a flat list of operations of a
// small stack machine acting on *states*; a state holds, for one image pair
// (x, y), the NNGP covariance K and (for kind="ntk") the NTK Theta at one stage
// of the network, either as the full tensor over pairs of positions
// (layout [i][i'][j][j'] for p = (i, j), q = (i', j')) or as its spatial
// diagonal only (layout [i][j]).
//
// Nonlinearities need the self-variances Vx[p] = K(x,x)[p,p] of each image at
// that stage.  They are computed once per image by the *self pass* (the
// program run on the pair (x, x)), which records per-position factors derived
// from them (1/sqrt(V) and sqrt(V), or 1/sqrt(1 + 2V) for erf: 2*H*W values
// per nonlinearity, at the op's tape offset) on a per-image *tape*; the *pair
// pass* then reads the two tapes.
//
// All entry points have a C ABI, return a Status, write a message into `msg`
// on failure and never throw.
#pragma once

#include <cstdint>

#include "convkernel/abi.hpp"

namespace convkernel {

// The enums below are generated from the lists of abi.hpp (the one
// definition of codes and columns, also read by Python).
#define CK_ENUM_ENTRY(NAME, VALUE) NAME = VALUE,
#define CK_STATUS_ENTRY(NAME, VALUE) STATUS_##NAME = VALUE,
#define CK_OP_ENTRY(NAME, VALUE) OP_##NAME = VALUE,
#define CK_FN_ENTRY(NAME, VALUE) FN_##NAME = VALUE,
#define CK_FN_COUNT(NAME, VALUE) +1
#define CK_COMMON_ENTRY(NAME, COL) C_##NAME = COL,
#define CK_INT_ENTRY(OP, NAME, COL) C_##OP##_##NAME = COL,
#define CK_FLOAT_ENTRY(OP, NAME, COL) F_##OP##_##NAME = COL,

enum Status : int { CK_STATUS_CODES(CK_STATUS_ENTRY) };

// Operation codes (column C_CODE of an op row).
enum OpCode : int64_t { CK_OP_CODES(CK_OP_ENTRY) };

// Nonlinearity codes (column C_NONLIN_FN of a NONLIN row), 0 .. N_FN - 1.
enum NonlinCode : int64_t { CK_FN_CODES(CK_FN_ENTRY) };
constexpr int64_t N_FN = 0 CK_FN_CODES(CK_FN_COUNT);

// Row widths of the integer and float op tables; tape factors per position.
enum Size : int { CK_SIZES(CK_ENUM_ENTRY) };

// Integer columns: common to every op (C_CODE .. C_MODE_OUT), then each op's
// named parameters (C_CONV_KH, C_NONLIN_FN, ...); float columns F_<OP>_<NAME>.
enum Col : int { CK_COMMON_COLUMNS(CK_COMMON_ENTRY) CK_INT_COLUMNS(CK_INT_ENTRY) };
enum FCol : int { CK_FLOAT_COLUMNS(CK_FLOAT_ENTRY) };

struct Program {
    const int64_t* ops;     // n_ops x N_INT
    const double* fops;     // n_ops x N_FLOAT
    int64_t n_ops;
    const int64_t* blob_i;  // CSR index data of pooling matrices
    int64_t n_blob_i;
    const double* blob_f;   // CSR weights (same positions as blob_i)
    int64_t n_blob_f;
    int64_t height, width, channels;  // input image shape (row-major H, W, C)
    int64_t tape_len;       // self-variance values recorded per image
    int64_t n_outputs;      // read-outs per pair
    int32_t ntk;            // 1: propagate Theta and output it; 0: output K
    int32_t variant;        // engine variant to run with (ck_simd_variant_name); the
                            // check refuses one that ck_simd_supported denies
    // written by ck_check_program: the deepest stack and the largest state (in
    // elements) the engines size their buffers for, and 1 once it passed
    int64_t max_depth, max_size;
    int32_t checked;
};

// One named constant of the ABI, for the Python binding: group ("op", "fn",
// "status", "size", "column", "fcolumn"), the name as spelled above
// ("OP_CONV", "C_CONV_KH", ...) and its value.
struct AbiEntry {
    const char* group;
    const char* name;
    int64_t value;
};

extern "C" {

// Every constant of abi.hpp; *n receives their number.
const AbiEntry* ck_abi(int64_t* n);

// Engine variants, in instruction-set order: the name of variant code v
// ("generic", "avx2", "avx512"; NULL past the last one), and whether this
// build has it and this CPU runs it (1) or not (0).  The baseline is always
// supported.
const char* ck_simd_variant_name(int v);
int ck_simd_supported(int v);

// Checks the program's structure once (supported variant, op codes, shapes,
// stack discipline, blob bounds) and records max_depth, max_size and checked in it.  The other
// entry points run only a checked program (they refuse one whose `checked`
// is 0) and never check it again.
int ck_check_program(Program* prog, char* msg, int msg_len);

// The typed entry points, each signature written once: the list expands to
// ck_<name>_f64 (T = double) and ck_<name>_f32 (T = float) here, to their
// dispatch in core.cpp and to each engine variant's <name>_f64 / _f32
// (variants.hpp, variant_entries.inc).  ENTRY(name, T, suffix, (parameters),
// (arguments)).
//
// self_pass: over n images X (n x H*W*C): writes the tapes (n x tape_len) and
// each image's own read-outs k(x, x) (n x n_outputs).
//
// pair_tile: rows X (nx images, tapes_x) against columns Y (ny images,
// tapes_y).  Output o of pair (i, j) goes to out[o * s_out + i * s_row + j *
// s_col] (strides in elements).  With upper_only, pairs whose global indices
// satisfy x0 + i >= y0 + j are skipped.
//
// pair_list: an explicit list of pairs (X[ii[t]], Y[jj[t]]), t < n_pairs:
// output o of pair t goes to out[t * n_outputs + o].
#define CK_TYPED_ENTRY_POINTS(ENTRY, T, SUFFIX)                                                   \
    ENTRY(self_pass, T, SUFFIX,                                                                   \
          (const Program* prog, const T* X, int64_t n, T* tapes, T* self_out, char* msg,          \
           int msg_len),                                                                          \
          (prog, X, n, tapes, self_out, msg, msg_len))                                            \
    ENTRY(pair_tile, T, SUFFIX,                                                                   \
          (const Program* prog, const T* X, const T* tapes_x, int64_t nx, int64_t x0, const T* Y, \
           const T* tapes_y, int64_t ny, int64_t y0, int upper_only, T* out, int64_t s_out,       \
           int64_t s_row, int64_t s_col, char* msg, int msg_len),                                 \
          (prog, X, tapes_x, nx, x0, Y, tapes_y, ny, y0, upper_only, out, s_out, s_row, s_col,   \
           msg, msg_len))                                                                         \
    ENTRY(pair_list, T, SUFFIX,                                                                   \
          (const Program* prog, const T* X, const T* tapes_x, int64_t nx, const T* Y,            \
           const T* tapes_y, int64_t ny, const int64_t* ii, const int64_t* jj, int64_t n_pairs,   \
           T* out, char* msg, int msg_len),                                                       \
          (prog, X, tapes_x, nx, Y, tapes_y, ny, ii, jj, n_pairs, out, msg, msg_len))
#define CK_ENTRY_POINTS(ENTRY) \
    CK_TYPED_ENTRY_POINTS(ENTRY, double, _f64) CK_TYPED_ENTRY_POINTS(ENTRY, float, _f32)

#define CK_DECLARE_ENTRY(NAME, T, SUFFIX, PARAMS, ARGS) int ck_##NAME##SUFFIX PARAMS;
CK_ENTRY_POINTS(CK_DECLARE_ENTRY)
#undef CK_DECLARE_ENTRY

}  // extern "C"

}  // namespace convkernel
