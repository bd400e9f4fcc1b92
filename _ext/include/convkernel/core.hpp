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

namespace convkernel {

enum Status : int {
    STATUS_OK = 0,
    STATUS_BAD_PROGRAM = 1,   // malformed op list (a bug in the planner)
    STATUS_BAD_ARGUMENT = 2,  // inconsistent sizes passed by the caller
    STATUS_NOT_FINITE = 3,    // a kernel value came out NaN or infinite
    STATUS_NO_MEMORY = 4,     // allocation failed
};

// Operation codes (column 0 of an op row).  Keep in sync with _plan.py.
enum OpCode : int64_t {
    OP_INPUT = 0,    // K = scale * sum_c x_c(p) y_c(q); Theta = 0
    OP_CONV = 1,     // window mean with shared offsets, * w + b (+ K' on Theta)
    OP_NONLIN = 2,   // entrywise nonlinearity using the tapes' self-variances
    OP_POOL = 3,     // K' = P K P^T, P separable (CSR matrices in the blobs)
    OP_DIAGSUM = 4,  // scale * sum_p K[p, p]  -> 1x1
    OP_TODIAG = 5,   // keep only the spatial diagonal
    OP_PUSH = 6,     // duplicate the top state
    OP_SWAP = 7,     // swap the two top states
    OP_ADD = 8,      // pop the top state and add it to the new top
    OP_POP = 9,      // discard the top state
    OP_OUTPUT = 10,  // record the (1x1) top state as output number `slot`
    OP_SHIFTSUM = 11,  // sum_{p,q} wh[q_h - p_h] ww[q_w - p_w] K[p, q] -> 1x1
                       // (displacement weights in blob_f at columns 8, 9;
                       // lengths 2H-1 and 2W-1, symmetric)
};

// Nonlinearity codes (column 8 of an OP_NONLIN row).
enum NonlinCode : int64_t {
    FN_RELU = 0,
    FN_ERF = 1,
    FN_EXP = 2,
    FN_ARCCOS0 = 3,
    FN_ARCCOS1 = 4,
    FN_POLY = 5,
    FN_LINEAR = 6,
};

// Row widths of the integer and float op tables.
constexpr int N_INT = 20;
constexpr int N_FLOAT = 4;

// Integer columns common to every op.
enum Col : int {
    C_CODE = 0, C_IN_H = 1, C_IN_W = 2, C_OUT_H = 3, C_OUT_W = 4,
    C_MODE_IN = 5, C_MODE_OUT = 6,  // 1 = full tensor, 0 = diagonal only
    C_P0 = 8,                       // first op-specific column
};

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
};

extern "C" {

// Name of the engine variant used on this CPU ("avx2" or "generic").
const char* ck_simd_variant(void);

// Checks the program's structure once (op codes, shapes, stack discipline,
// blob bounds).  Every other entry point assumes a checked program.
int ck_check_program(const Program* prog, char* msg, int msg_len);

// Self pass over n images X (n x H*W*C): writes the tapes (n x tape_len) and
// each image's own read-outs k(x, x) (n x n_outputs).
int ck_self_pass_f64(const Program* prog, const double* X, int64_t n,
                     double* tapes, double* self_out, char* msg, int msg_len);
int ck_self_pass_f32(const Program* prog, const float* X, int64_t n,
                     float* tapes, float* self_out, char* msg, int msg_len);

// Pair pass over a tile: rows X (nx images, tapes_x) against columns Y (ny
// images, tapes_y).  Output o of pair (i, j) goes to
// out[o * s_out + i * s_row + j * s_col] (strides in elements).  With
// upper_only, pairs whose global indices satisfy x0 + i >= y0 + j are skipped.
int ck_pair_tile_f64(const Program* prog,
                     const double* X, const double* tapes_x, int64_t nx, int64_t x0,
                     const double* Y, const double* tapes_y, int64_t ny, int64_t y0,
                     int upper_only, double* out,
                     int64_t s_out, int64_t s_row, int64_t s_col,
                     char* msg, int msg_len);
int ck_pair_tile_f32(const Program* prog,
                     const float* X, const float* tapes_x, int64_t nx, int64_t x0,
                     const float* Y, const float* tapes_y, int64_t ny, int64_t y0,
                     int upper_only, float* out,
                     int64_t s_out, int64_t s_row, int64_t s_col,
                     char* msg, int msg_len);

// Pair pass over an explicit list of pairs (X[ii[t]], Y[jj[t]]), t < n_pairs:
// output o of pair t goes to out[t * n_outputs + o].
int ck_pair_list_f64(const Program* prog, const double* X, const double* tapes_x, int64_t nx,
                     const double* Y, const double* tapes_y, int64_t ny,
                     const int64_t* ii, const int64_t* jj, int64_t n_pairs, double* out,
                     char* msg, int msg_len);
int ck_pair_list_f32(const Program* prog, const float* X, const float* tapes_x, int64_t nx,
                     const float* Y, const float* tapes_y, int64_t ny,
                     const int64_t* ii, const int64_t* jj, int64_t n_pairs, float* out,
                     char* msg, int msg_len);

}  // extern "C"

}  // namespace convkernel
