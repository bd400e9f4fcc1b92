// The one definition of the core's ABI: op codes, nonlinearity codes, status
// codes, the widths of an op row and the meaning of every column.
//
// Each list is an X-macro: core.hpp expands it into the enums the C++ code
// uses, core.cpp into the table that the Python binding returns from
// sklearn_convkernel._core.abi(), which sklearn_convkernel/_abi.py turns into
// the constants the planner writes op rows with.  Nothing else spells a code
// or a column number: a new op or nonlinearity is one line here.
#pragma once

// Operation codes (column C_CODE of an op row): X(NAME, code).
#define CK_OP_CODES(X)                                                         \
    X(INPUT, 0)    /* K = scale * sum_c x_c(p) y_c(q); Theta = 0 */             \
    X(CONV, 1)     /* window mean with shared offsets, * w + b (+ K on Theta) */ \
    X(NONLIN, 2)   /* entrywise dual activation using the tapes' factors */    \
    X(POOL, 3)     /* K' = P K P^T, P separable (CSR matrices in the blobs) */ \
    X(DIAGSUM, 4)  /* scale * sum_p K[p, p] -> 1x1 */                          \
    X(TODIAG, 5)   /* keep only the spatial diagonal */                        \
    X(PUSH, 6)     /* duplicate the top state */                               \
    X(SWAP, 7)     /* swap the two top states */                               \
    X(ADD, 8)      /* pop the top state and add it to the new top */           \
    X(POP, 9)      /* discard the top state */                                 \
    X(OUTPUT, 10)  /* record the (1x1) top state as output number `slot` */    \
    X(SHIFTSUM, 11) /* sum_{p,q} wh[q_h - p_h] ww[q_w - p_w] K[p, q] -> 1x1 */

// Nonlinearity codes (column C_NONLIN_FN of a NONLIN row): X(NAME, code).
// The codes are consecutive from 0 (the program check relies on it).
#define CK_FN_CODES(X) \
    X(RELU, 0)         \
    X(ERF, 1)          \
    X(EXP, 2)          \
    X(ARCCOS0, 3)      \
    X(ARCCOS1, 4)      \
    X(POLY, 5)         \
    X(LINEAR, 6)

// Status codes returned by every entry point: X(NAME, code).
#define CK_STATUS_CODES(X)                                                 \
    X(OK, 0)                                                               \
    X(BAD_PROGRAM, 1)  /* malformed op list (a bug in the planner) */      \
    X(BAD_ARGUMENT, 2) /* inconsistent sizes passed by the caller */       \
    X(NOT_FINITE, 3)   /* a kernel value came out NaN or infinite */       \
    X(NO_MEMORY, 4)    /* allocation failed */

// Sizes: the widths of the integer and float op tables, and the number of
// per-position factors a nonlinearity records on the tape (inv and sq, H*W
// values each).  X(NAME, value).
#define CK_SIZES(X) \
    X(N_INT, 20)    \
    X(N_FLOAT, 4)   \
    X(TAPE_FACTORS, 2)

// Integer columns common to every op: X(NAME, column).  Modes: 1 = full
// tensor over pairs of positions, 0 = spatial diagonal only.
#define CK_COMMON_COLUMNS(X) \
    X(CODE, 0)               \
    X(IN_H, 1)               \
    X(IN_W, 2)               \
    X(OUT_H, 3)              \
    X(OUT_W, 4)              \
    X(MODE_IN, 5)            \
    X(MODE_OUT, 6)

// Integer parameter columns of each op: X(OP, NAME, column), named
// C_<OP>_<NAME>.  Per-axis pairs are (height, width) in that order.
#define CK_INT_COLUMNS(X)                                                        \
    X(INPUT, CHANNELS, 8)                                                        \
    X(CONV, KH, 8)        /* window size */                                      \
    X(CONV, KW, 9)                                                               \
    X(CONV, SH, 10)       /* stride */                                           \
    X(CONV, SW, 11)                                                              \
    X(CONV, DH, 12)       /* dilation */                                         \
    X(CONV, DW, 13)                                                              \
    X(CONV, PAD_H, 14)    /* padding before the first row / column */            \
    X(CONV, PAD_W, 15)                                                           \
    X(CONV, CIRC_H, 16)   /* 1: circular padding */                              \
    X(CONV, CIRC_W, 17)                                                          \
    X(CONV, TRAINABLE, 18) /* 1: the weights count in the NTK */                 \
    X(NONLIN, FN, 8)      /* FN_* code */                                        \
    X(NONLIN, TAPE, 9)    /* tape offset of the factors [inv | sq] */            \
    X(NONLIN, DEGREE, 10) /* degree of FN_POLY */                                \
    X(POOL, H_PTR, 8)     /* blob_i offsets of the height matrix's CSR pointers */ \
    X(POOL, H_IDX, 9)     /* and of its indices (= blob_f offset of its weights) */ \
    X(POOL, W_PTR, 10)    /* the same for the width matrix */                    \
    X(POOL, W_IDX, 11)                                                           \
    X(SHIFTSUM, H_WEIGHTS, 8) /* blob_f offset of wh (2H-1 values, symmetric) */ \
    X(SHIFTSUM, W_WEIGHTS, 9) /* blob_f offset of ww (2W-1 values, symmetric) */ \
    X(OUTPUT, SLOT, 8)

// Float parameter columns of each op: X(OP, NAME, column), named F_<OP>_<NAME>.
#define CK_FLOAT_COLUMNS(X)     \
    X(INPUT, SCALE, 0)          \
    X(CONV, WEIGHT_VAR, 0)      \
    X(CONV, BIAS_VAR, 1)        \
    X(NONLIN, SIGMA, 0) /* of FN_EXP: exp((rho - 1) / sigma^2) */ \
    X(DIAGSUM, SCALE, 0)
