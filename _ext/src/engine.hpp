// The kernel engine: the stack machine of core.hpp run on image pairs, one
// Engine per thread with its buffers reused across pairs.
//
// This class holds the workspace (every buffer, by name); its operations are
// defined by responsibility in
//   conv.hpp          convolutions (full tensors block by block; diagonal maps)
//   ops.hpp           input, nonlinearities (self pass: tape recording), pools,
//                     read-outs, drop to the diagonal
//   slab.hpp          the slab-major path (a same-size conv prefix slab by slab)
//   displacement.hpp  the displacement path (shift-averaged read-outs)
//   interpreter.hpp   the op loop (run) and the passes behind the C ABI
// on top of vecmath.hpp (polynomial acos / asin / exp, row primitives),
// dual.hpp (dual activations) and workspace.hpp (buffers, states, conv axes).
// Compiled once per instruction-set variant, in namespace CK_ARCH.
#pragma once

#include <utility>
#include <vector>

#include "dual.hpp"
#include "workspace.hpp"

namespace convkernel {
namespace CK_ARCH {

template <class T>
class Engine {
  public:
    Engine(const Program& P, int64_t max_depth, int64_t max_size) : P_(P), ntk_(P.ntk != 0) {
        stack_.resize((size_t)max_depth);
        for (auto& s : stack_) {
            s.K.reserve((size_t)max_size);
            if (ntk_) s.Th.reserve((size_t)max_size);
        }
        next_K_.reserve((size_t)max_size);
        if (ntk_) next_T_.reserve((size_t)max_size);
        conv_axes_.resize((size_t)(2 * P.n_ops));
        slab_analyze();
        if (!slab_path_ && P.n_ops >= 2) {
            const int64_t* r0 = op_row(P, 0);
            const int64_t* r1 = op_row(P, 1);
            input_conv_ = r0[C_CODE] == OP_INPUT && r0[C_MODE_OUT] == 1 &&
                          r1[C_CODE] == OP_CONV && r1[C_MODE_IN] == 1 && r1[C_MODE_OUT] == 1 &&
                          r1[C_IN_H] == r0[C_OUT_H] && r1[C_IN_W] == r0[C_OUT_W];
        }
    }

    // Runs the program on (x, y).  For the self pass, x == y, tape_x ==
    // tape_y == tape_rec and `self` is set: nonlinearity inputs are recorded
    // on the tape and coincident entries use exact values.
    int run(const T* x, const T* y, const T* tape_x, const T* tape_y, T* tape_rec, bool self,
            T* out, Error& err);

  private:
    State<T>& top() { return stack_[(size_t)(sp_ - 1)]; }

    // -----------------------------------------------------------------------
    // slab-major path
    //
    // A stride-1 convolution with zero padding whose output has the input's
    // size maps the blocks (i, i') of a full tensor only from blocks of the
    // same height displacement i' - i, and a nonlinearity is entrywise; so
    // when a program starts INPUT, then only such convolutions and
    // nonlinearities, with every read-out a pooling to 1x1 (global average
    // pooling, possibly tapped after any layer), each "slab" of blocks with
    // one displacement goes through all the layers on its own while it stays
    // in the L2 cache (the layer-by-layer order streams every layer's 4-D
    // tensor through the shared cache), and each read-out accumulates its
    // weighted sum.  The ops of that prefix are then replayed on 1x1 states
    // (slab_replay); everything after a read-out runs as usual.
    // -----------------------------------------------------------------------

    enum Role { R_NORMAL = 0, R_INPUT, R_SKIP, R_PUSH, R_REDUCE };

    bool is_reduction(const int64_t* r, int64_t H, int64_t W) const;

    void add_reduction(int64_t k, int64_t H, int64_t W);

    void slab_analyze();

    // the ops of the slab prefix, on 1x1 states
    void slab_replay(int64_t k, const int64_t* r);

    // height axis of conv op slab_chain_[ci] restricted to a slab of h blocks
    // (zero outside: the blocks where one image is outside are absent)
    const ConvAxis* slab_axis(size_t ci, int64_t h, const int64_t* r);

    // One W x W block (rows j of image x, columns j' of image y); in float
    // two rows at a time (nonlin_rows2).
    template <int FN>
    void block_nonlin(T* K, T* Th, int64_t W, const T* ix, const T* sx, const T* iy,
                     const T* sy, double p);

    // A flat nonlinearity in a function of its own: inlined into the block
    // loops above, GCC left the loop scalar (measured: 4x slower in float).
    template <int FN>
    __attribute__((noinline)) void nonlin_flat(T* K, T* Th, int64_t n, const T* ix,
                                               const T* sx, const T* iy, const T* sy,
                                               double p);

    // `count` runs of n entries, run c with x-side factors ix[2c], sx[2c]
    // where second[t] == 0 and ix[2c + 1], sx[2c + 1] elsewhere.
    template <int FN>
    __attribute__((noinline)) void nonlin_rows2(T* K, T* Th, int64_t n, int64_t count,
                                                const T* second, const T* ix, const T* sx,
                                                const T* iy, const T* sy, double p);

    void slab_nonlin_block(int64_t fn, T* K, T* Th, int64_t W, const T* ix, const T* sx,
                           const T* iy, const T* sy, double p);

    // The self pass (x == y, `self`) runs the slab of displacement 0 first,
    // recording each nonlinearity's factors on the tape from its diagonal
    // (as op_nonlin does) and setting the coincident entries exactly; the
    // slabs of displacement di and -di of a self kernel are transposes with
    // the same read-out sums, so only di > 0 follow, counted twice.
    // Returns false on a non-finite self-variance.
    bool slab_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self);


    // -----------------------------------------------------------------------
    // displacement path
    //
    // When every read-out of a slab-path prefix weighs displacements
    // (ShiftAverage), the prefix runs once per displacement d = q - p with a
    // non-zero weight, on the map D_d[p] = K[p, p + d] over the positions p
    // where both p and p + d are inside: a same-size stride-1 zero-padded
    // convolution sums K[p + t, p + d + t] over the taps t that keep both
    // inside, i.e. it is the same convolution on that smaller map (the
    // diagonal path's conv_diag); nonlinearities read x's factors at p and
    // y's at p + d.  d = 0 is the diagonal path itself and goes first in the
    // self pass (it records the tape); d and -d of a self kernel have equal
    // sums (weights are symmetric), so the self pass counts d > 0 twice.
    // -----------------------------------------------------------------------

    void disp_analyze(int64_t H, int64_t W);

    // conv axis of slab_chain_[ci] on a map of n rows (axis 0) or columns (axis 1)
    const ConvAxis* disp_axis(size_t ci, int axis, int64_t n, const int64_t* r);

    // the channel-major copy of image x in buf (cached: the source pointer)
    const T* disp_channel_major(const T* x, Buffer<T>& buf, const T*& cached, int64_t HW,
                                int64_t C);

    // a convolution of a map stored with row stride W (flat when it can)
    void disp_conv(const T* src, T* o, int64_t h, int64_t w, int64_t W, T c, T b);

    // Maps are stored with the image's row stride, the factors and input
    // channels then sit at constant offsets (see displacement.hpp).
    bool disp_compute(const T* x, const T* y, const T* tx, const T* ty, T* tape_rec, bool self);


    bool disp_path_ = false;
    std::vector<std::pair<int64_t, int64_t>> displacements_;  // displacements (dh, dw), (0, 0) first
    std::vector<ConvAxis> disp_axes_;
    Buffer<T> disp_x_cm_, disp_y_cm_, disp_conv_tmp_;  // channel-major images,
    const T* disp_x_src_ = nullptr;    // copied from these
    const T* disp_y_src_ = nullptr;

    struct Reduction {
        std::vector<double> hw, ww;  // read-out weights per row / column,
        bool disp = false;           // or per displacement (length 2n - 1)
    };
    std::vector<char> slab_needed_;         // per height displacement: weighed by a read-out
    bool slab_path_ = false;
    std::vector<int> op_role_;
    std::vector<int64_t> readout_slot_;    // per op: its read-out's index
    std::vector<int64_t> slab_chain_;   // the prefix's convs, nonlinearities and read-outs, in order
    std::vector<Reduction> readouts_;
    std::vector<double> readout_K_, readout_T_;
    std::vector<ConvAxis> slab_axes_;
    Buffer<T> slab_K_, slab_T_, slab_next_K_, slab_next_T_, expanded_factors_;

    void resize(State<T>& s, int64_t h, int64_t w, int full);

    void op_input(const int64_t* r, const double* f, const T* x, const T* y);

    // INPUT in full mode followed by a full-mode CONV (any stride, dilation,
    // padding): the window sum of the input covariance at (p, q) is the
    // inner product of the zero-padded patches of x at p and y at q, so the
    // conv's output is computed as small matrix products (kh kw C terms per
    // entry), a row of blocks (a, *) at a time, instead of the covariance's
    // H^2 W^2 products and the window sums over them; in the pair pass the
    // nonlinearity after the conv is applied to each block of the row while
    // it is in cache (as op_conv does for its blocks).  Returns
    // the index of the last op done (1, or 2 with the nonlinearity).
    bool input_conv_ = false;  // the program starts so (set by the constructor)
    int64_t op_input_conv(const T* x, const T* y, const T* tape_x, const T* tape_y, bool self);

    // patches of img at the conv's output positions q (Ho Wo of them), taps
    // m = (u, v, channel) (M = kh kw C): dst[q * M + m] (x side, times
    // `scale`) or dst[m * Ho Wo + q] (y side); zero in the padding
    void conv_patches(const T* img, T* dst, bool by_position, T scale, int64_t C, int64_t W);
    Buffer<T> patches_x_, patches_y_;

    // One output block (a, a2) of a full tensor: o = c * (window sums) + b.
    // Height taps are summed into tmp (W x W) in one pass, then width taps
    // into o, every output element summing all its taps in registers and
    // being stored once (sum_rows); in the contiguous case (stride 1, zero
    // padding) the few border columns where some tap falls in the padding
    // are summed separately.
    void conv_block(const T* src, T* o, int64_t a, int64_t a2, int64_t H, int64_t W, T c,
                    T b);

    // The rest of conv_block, from the nk source blocks of the height taps
    // (or, when `folded`, their sum already in scratch_).
    void conv_block_rows(const T* const* rows, int nk, bool folded, T* o, int64_t W, T c, T b);

    // The zero-padded W x W block used by conv_block's width stage: the
    // block sits at rows/columns [top, top + W) of a (top + W + right + 1) x
    // (top + W + right) buffer whose padding is zeroed once per convolution.
    void conv_pad_layout(int64_t W);

    // Window sums of a diagonal-mode map (H x W) into o (Ho x Wo), o = c * sums + b.
    // Contiguous axes: the height taps from the map's rows into rows padded
    // with zeros (margins written once per layout), then the width taps as
    // constant offsets of the padded rows, straight into o (no copies).
    // lds / ldo: row strides of src / o (0: dense, W / Wo); the columns
    // between a row's end and the next row are neither read nor written.
    void conv_diag(const T* src, T* o, int64_t H, int64_t W, T c, T b, int64_t lds = 0,
                   int64_t ldo = 0);

    // conv_diag's height taps into the padded rows: block prefix / suffix
    // sums (unit axis, k >= kBlockSumMinTaps) or direct sums.
    void conv_diag_blocks(const T* src, T* pad, int64_t H, int64_t W, int64_t lds, int64_t Wp);
    void conv_diag_rows(const T* src, T* pad, int64_t W, int64_t lds, int64_t Wp);

    // Strided, dilated-with-stride or circular axes: tap tables.
    void conv_diag_generic(const T* src, T* o, int64_t W, int64_t lds, int64_t ldo);

    // Convolution; when `nl` is given (the pair pass, full mode), the next
    // op's nonlinearity is applied to each output block while it is in cache.
    void op_conv(int64_t op, const int64_t* r, const double* f, const int64_t* nl = nullptr,
                 const double* nlf = nullptr, const T* tape_x = nullptr,
                 const T* tape_y = nullptr);

    struct Nl {
        const T *ix = nullptr, *sx = nullptr, *iy = nullptr, *sy = nullptr;
        double p = 0.0;
    };

    // Full-mode convolution into next_K_/next_T_, output blocks visited along
    // diagonals (a2 - a constant) so that consecutive blocks share most of
    // their input blocks; FN >= 0 fuses that nonlinearity.
    template <int FN>
    void conv_full(State<T>& s, T c, T b, bool trainable, const Nl& q);

    template <int FN>
    void nonlin_apply(State<T>& s, const T* ix, const T* sx, const T* iy, const T* sy,
                      double p);

    // The tape of an image holds, per nonlinearity, its per-position factors
    // [inv (H*W) | sq (H*W)] (see position_factors), computed by the self pass
    // from the self-variances, so that the pair pass takes no square root.
    // Returns false when the self pass meets a non-finite self-variance.
    // the self pass's nonlinearity, shared by the three paths (ops.hpp)
    template <class Entry, class Apply>
    bool self_nonlin(int64_t fn, double p, int64_t off, T* K, T* Th, int64_t H, int64_t W,
                     T* tape_rec, Entry entry, Apply apply);

    bool op_nonlin(const int64_t* r, const double* f, const T* tape_x, const T* tape_y,
                   T* tape_rec, bool self);

    // P M P^T with separable CSR matrices, full mode; or the diagonal rule.
    void pool_apply(const int64_t* r, const T* src, T* dst, bool full, int64_t H, int64_t W,
                    int64_t Ho, int64_t Wo);

    void op_pool(const int64_t* r);

    double diag_sum(const Buffer<T>& M, const State<T>& s) const;

    void op_diagsum(const double* f);

    // sum_{i,i'} wh[i'-i] sum_{j,j'} ww[j'-j] M[i][i'][j][j'] (full mode), or
    // wh[0] ww[0] sum_p M[p] (diagonal mode: displacement 0 only)
    double shift_sum(const Buffer<T>& M, const State<T>& s, const double* wh,
                     const double* ww) const;

    void op_shiftsum(const int64_t* r);

    void op_todiag();

    const Program& P_;
    const bool ntk_;
    std::vector<State<T>> stack_;
    int64_t sp_ = 0;
    Buffer<T> zero_row_;  // zeros: the rows outside the map in block_sums
    std::vector<const T*> block_rows_;  // conv_diag_blocks' row table
    Buffer<T> next_K_, next_T_, scratch_, pool_height_, y_channel_major_, diag_padded_, block_padded_, pool_weights_;
    std::vector<const T*> pool_rows_;
    int64_t block_pad_top_ = 0, block_pad_width_ = 0;
    int64_t diag_pad_layout_[4] = {-1, -1, -1, -1};  // conv_diag's (Ho, W, PL, Wp)
    std::vector<double> self_factors_, self_diag_K_, self_diag_T_;
    std::vector<ConvAxis> conv_axes_;  // 2 per op (height, width), built on first use
    const ConvAxis* axis_h_ = nullptr;
    const ConvAxis* axis_w_ = nullptr;
};

}  // namespace CK_ARCH
}  // namespace convkernel
