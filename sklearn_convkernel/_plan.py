"""Lower an architecture for a given input shape into the compiled core's program.

The program is a flat list of operations of a small stack machine (see
``_ext/include/convkernel/core.hpp``; its codes and columns are the constants
of ``_abi``): branches (:class:`~.arch.Sum`) and
intermediate read-outs (:class:`~.arch.Tap`) become PUSH / SWAP / ADD / POP /
OUTPUT operations.

Spatial mode.  For each stage the planner decides whether the full covariance
over pairs of positions ``K[p, q]`` is needed or only its spatial diagonal
``K[p, p]``.  Convolutions and nonlinearities read only the diagonal of their
input to produce the diagonal of their output (the window offset is shared by
both sides), and so do pools with at most one tap per output row (strided
pools).  Only position-mixing pools (average, Gaussian, global average)
need off-diagonal entries.  A backward pass over the program propagates that
demand; the state is kept in full mode only while some later op needs it, and
an explicit TODIAG op drops to the cheap diagonal mode as early as possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import numpy as np

from sklearn_convkernel import arch as A
from sklearn_convkernel import _abi

KINDS = ("nngp", "ntk")
SPATIAL_MODES = ("auto", "full")


@dataclass
class _Op:
    code: int
    in_shape: Tuple[int, int]
    out_shape: Tuple[int, int]
    ints: dict = field(default_factory=dict)  # column -> value
    floats: dict = field(default_factory=dict)
    mixing: bool = False  # needs off-diagonal entries of its input
    needs_full_in: bool = False  # filled by the backward pass


@dataclass
class Plan:
    """A compiled architecture for one input shape and kernel kind.

    Attributes
    ----------
    ops, fops : ndarray
        Integer (n_ops, N_INT) and float (n_ops, N_FLOAT) op tables.
    blob_i, blob_f : ndarray
        Pooling matrices in CSR form (indices and weights at the same positions).
    input_shape : (H, W, C)
    tape_len : int
        Self-variance values recorded per image by the self pass.
    n_outputs : int
        Read-outs per pair (taps first, the final output last).
    kind : {"nngp", "ntk"}
    full_ops : int
        Number of ops run on full spatial tensors (0 = diagonal-only path).
    """

    ops: np.ndarray
    fops: np.ndarray
    blob_i: np.ndarray
    blob_f: np.ndarray
    input_shape: Tuple[int, int, int]
    tape_len: int
    n_outputs: int
    kind: str
    full_ops: int

    @property
    def diagonal_only(self):
        """Whether only spatial diagonals are ever computed (DESIGN §3)."""
        return self.full_ops == 0


class _Lowering:
    """The program under construction, and the core's row format of each operation.

    A layer lowers itself (its ``_lower(lowering, shape)`` method, see
    :class:`~.arch.Layer`) by calling the builders below; they alone know the
    op codes and the parameter columns of the core (``_abi``, from
    ``_ext/include/convkernel/abi.hpp``).
    """

    def __init__(self, kind):
        self.kind = kind
        self.ops: List[_Op] = []
        self.blob_i: List[int] = []
        self.blob_f: List[float] = []
        self.tape_len = 0
        self.n_taps = 0

    # -- emission (forward: shapes) ---------------------------------------
    def emit(self, layer, shape):
        """Append the ops of ``layer`` for an input of spatial shape ``shape``; its output shape."""
        return layer._lower(self, tuple(shape))

    # stack machine (branches and taps)
    def push(self, shape):
        self.ops.append(_Op(_abi.OP_PUSH, shape, shape))

    def swap(self, out, shape):
        self.ops.append(_Op(_abi.OP_SWAP, out, shape))

    def add(self, shape):
        self.ops.append(_Op(_abi.OP_ADD, shape, shape))

    def pop(self, out, shape):
        self.ops.append(_Op(_abi.OP_POP, out, shape))

    def new_tap_slot(self):
        """The next read-out slot (taps are numbered in order of appearance)."""
        slot = self.n_taps
        self.n_taps += 1
        return slot

    def output(self, shape, slot):
        """Read the current state out into tap ``slot``."""
        self.ops.append(_Op(_abi.OP_OUTPUT, shape, shape, ints={_abi.C_OUTPUT_SLOT: slot}))

    # layers
    def conv(self, shape, out, size, stride, dilation, lo, circular, trainable, weight_var,
             bias_var):
        """A window-mean convolution; ``lo`` and ``circular`` are per-axis (h, w) pairs."""
        ints = {
            _abi.C_CONV_KH: size[0], _abi.C_CONV_KW: size[1],
            _abi.C_CONV_SH: stride[0], _abi.C_CONV_SW: stride[1],
            _abi.C_CONV_DH: dilation[0], _abi.C_CONV_DW: dilation[1],
            _abi.C_CONV_PAD_H: lo[0], _abi.C_CONV_PAD_W: lo[1],
            _abi.C_CONV_CIRC_H: int(circular[0]), _abi.C_CONV_CIRC_W: int(circular[1]),
            _abi.C_CONV_TRAINABLE: int(trainable),
        }
        floats = {_abi.F_CONV_WEIGHT_VAR: weight_var, _abi.F_CONV_BIAS_VAR: bias_var}
        self.ops.append(_Op(_abi.OP_CONV, shape, out, ints, floats))

    def nonlinearity(self, shape, fn, degree, sigma):
        """An entrywise dual activation, core function code ``fn`` (``_abi.FN_*``)."""
        ints = {_abi.C_NONLIN_FN: fn, _abi.C_NONLIN_TAPE: self.tape_len,
                _abi.C_NONLIN_DEGREE: degree}
        floats = {_abi.F_NONLIN_SIGMA: sigma}
        self.tape_len += _abi.TAPE_FACTORS * shape[0] * shape[1]  # per-position factors
        self.ops.append(_Op(_abi.OP_NONLIN, shape, shape, ints, floats))

    def pool(self, shape, mh, mw):
        """A separable linear map on positions (dense 1-D matrices, stored as CSR)."""
        out = (mh.shape[0], mw.shape[0])
        ints = {}
        mixing = False
        for ax, m in enumerate((mh, mw)):
            ptr, idx, val = [0], [], []
            for row in m:
                nz = np.flatnonzero(row)
                idx.extend(int(v) for v in nz)
                val.extend(float(row[v]) for v in nz)
                ptr.append(len(idx))
                mixing |= len(nz) > 1
            ptr_off = len(self.blob_i)
            self.blob_i.extend(ptr)
            self.blob_f.extend([0.0] * len(ptr))
            idx_off = len(self.blob_i)
            self.blob_i.extend(idx)
            self.blob_f.extend(val)
            ints[(_abi.C_POOL_H_PTR, _abi.C_POOL_W_PTR)[ax]] = ptr_off
            ints[(_abi.C_POOL_H_IDX, _abi.C_POOL_W_IDX)[ax]] = idx_off
        self.ops.append(_Op(_abi.OP_POOL, shape, out, ints, mixing=mixing))
        return out

    def shift_sum(self, shape, weights):
        """A read-out summing K[p, q] weighted by the displacement q - p (per-axis weights)."""
        # displacement weights of both axes, stored in the float blob
        # (the int blob is padded alongside: the blobs share offsets)
        offsets = {}
        mixing = False
        for ax, w in enumerate(weights):
            offsets[(_abi.C_SHIFTSUM_H_WEIGHTS, _abi.C_SHIFTSUM_W_WEIGHTS)[ax]] = len(self.blob_f)
            self.blob_f.extend(float(v) for v in w)
            self.blob_i.extend([0] * len(w))
            n = shape[ax]
            mixing |= bool(np.any(np.delete(w, n - 1)))  # weight off displacement 0
        self.ops.append(_Op(_abi.OP_SHIFTSUM, shape, (1, 1), offsets, mixing=mixing))
        return (1, 1)

    def diag_sum(self, shape, scale):
        """A read-out ``scale * sum_p K[p, p]``."""
        self.ops.append(_Op(_abi.OP_DIAGSUM, shape, (1, 1),
                            floats={_abi.F_DIAGSUM_SCALE: scale}))
        return (1, 1)

    # -- demand (backward: which states must be full) ----------------------
    def backward_demand(self, force_full):
        """Set op.needs_full_in for every op, walking the stack machine backwards."""
        # demand flags of the stack slots after the last op: the final 1x1 state
        stack = [False]
        for op in reversed(self.ops):
            c = op.code
            if c == _abi.OP_OUTPUT:
                out_demand = stack[-1]
                op.needs_full_in = out_demand
                continue
            if c == _abi.OP_POP:
                stack.append(False)  # the popped state was the tap's, used by OUTPUT only
                op.needs_full_in = False
                continue
            if c == _abi.OP_PUSH:
                a = stack.pop()
                b = stack.pop()
                stack.append(a or b)
                op.needs_full_in = stack[-1]
                continue
            if c == _abi.OP_SWAP:
                stack[-1], stack[-2] = stack[-2], stack[-1]
                op.needs_full_in = stack[-1]
                continue
            if c == _abi.OP_ADD:
                d = stack[-1]
                stack.append(d)
                op.needs_full_in = d
                continue
            out_demand = stack.pop()
            if c == _abi.OP_DIAGSUM:
                need = False
            elif op.mixing:  # position-mixing pools and shift read-outs
                need = True
            else:
                need = out_demand
            if force_full:
                need = True
            if op.in_shape == (1, 1):
                need = False
            op.needs_full_in = need
            stack.append(need)
        return stack[-1] if stack else False

    # -- final emission with modes ----------------------------------------
    def finalize(self, input_shape, input_norm, force_full):
        H, W, C = input_shape
        start_full = self.backward_demand(force_full)
        if (H, W) == (1, 1):
            start_full = False
        rows = []
        # mode of each stack slot during the forward walk
        modes = [int(start_full)]
        scale = 1.0 / C if input_norm == "mean" else 1.0
        rows.append(self._row(_abi.OP_INPUT, (H, W), (H, W), 0, modes[0],
                              {_abi.C_INPUT_CHANNELS: C}, {_abi.F_INPUT_SCALE: scale}))

        def todiag(shape):
            rows.append(self._row(_abi.OP_TODIAG, shape, shape, 1, 0, {}, {}))

        for op in self.ops:
            c = op.code
            cur = modes[-1]
            want = int(op.needs_full_in)
            if c == _abi.OP_ADD:
                # both operands must be in the demanded mode
                if modes[-1] and not want:
                    todiag(op.in_shape)
                    modes[-1] = 0
                if modes[-2] and not want:
                    rows.append(self._row(_abi.OP_SWAP, op.in_shape, op.in_shape,
                                          modes[-1], 1, {}, {}))
                    todiag(op.in_shape)
                    rows.append(self._row(_abi.OP_SWAP, op.in_shape, op.in_shape, 0,
                                          modes[-1], {}, {}))
                    modes[-2] = 0
                assert modes[-1] == modes[-2] == want, "planner: inconsistent ADD modes"
                modes.pop()
                rows.append(self._row(c, op.in_shape, op.out_shape, want, want, {}, {}))
                continue
            if cur and not want:
                todiag(op.in_shape)
                modes[-1] = cur = 0
            assert cur == want, "planner: a diagonal state cannot be made full"
            if c == _abi.OP_PUSH:
                modes.append(cur)
                out_mode = cur
            elif c == _abi.OP_SWAP:
                modes[-1], modes[-2] = modes[-2], modes[-1]
                out_mode = modes[-1]
                # in: the old top (branch output); out: the new top (the shared input)
                rows.append(self._row(c, op.in_shape, op.out_shape, cur, out_mode, {}, {}))
                continue
            elif c == _abi.OP_POP:
                modes.pop()
                out_mode = modes[-1]
                rows.append(self._row(c, op.in_shape, op.in_shape, cur, cur, {}, {}))
                continue
            elif c in (_abi.OP_DIAGSUM,):
                out_mode = 0
                modes[-1] = 0
            elif c == _abi.OP_OUTPUT:
                out_mode = cur
            else:
                out_mode = 0 if op.out_shape == (1, 1) else cur
                modes[-1] = out_mode
            rows.append(self._row(c, op.in_shape, op.out_shape, cur, out_mode, op.ints, op.floats))
        # the final output
        # the final output (validate() guarantees a single output position)
        assert len(modes) == 1 and modes[0] == 0, "planner: unbalanced stack"
        rows.append(self._row(_abi.OP_OUTPUT, (1, 1), (1, 1), 0, 0,
                              {_abi.C_OUTPUT_SLOT: self.n_taps}, {}))
        ops = np.zeros((len(rows), _abi.N_INT), dtype=np.int64)
        fops = np.zeros((len(rows), _abi.N_FLOAT), dtype=np.float64)
        for k, (ir, fr) in enumerate(rows):
            ops[k] = ir
            fops[k] = fr
        full_ops = int(sum(1 for ir, _ in rows
                           if ir[_abi.C_MODE_IN] == 1 and ir[_abi.C_CODE] != _abi.OP_TODIAG))
        return ops, fops, full_ops

    @staticmethod
    def _row(code, in_shape, out_shape, mode_in, mode_out, ints, floats):
        ir = np.zeros(_abi.N_INT, dtype=np.int64)
        fr = np.zeros(_abi.N_FLOAT, dtype=np.float64)
        ir[_abi.C_CODE] = code
        ir[_abi.C_IN_H], ir[_abi.C_IN_W] = in_shape
        ir[_abi.C_OUT_H], ir[_abi.C_OUT_W] = out_shape
        ir[_abi.C_MODE_IN], ir[_abi.C_MODE_OUT] = mode_in, mode_out
        for col, v in ints.items():
            ir[col] = v
        for col, v in floats.items():
            fr[col] = v
        return ir, fr


def make_plan(architecture, input_shape, kind="nngp", spatial="auto"):
    """Validate ``architecture`` for images of shape (H, W, C) and compile it.

    Parameters
    ----------
    architecture : Layer
    input_shape : tuple (H, W, C)
    kind : {"nngp", "ntk"}
    spatial : {"auto", "full"}
        "auto" keeps only spatial diagonals where that is exact; "full" forces
        the full tensors everywhere (slower; for checking).

    Returns
    -------
    Plan
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'nngp' or 'ntk', got {kind!r}.")
    if spatial not in SPATIAL_MODES:
        raise ValueError(f"spatial must be 'auto' or 'full', got {spatial!r}.")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}.")
    H, W, C = (int(v) for v in input_shape)
    A.validate(architecture, (H, W))
    low = _Lowering(kind)
    low.emit(architecture, (H, W))
    ops, fops, full_ops = low.finalize((H, W, C), architecture._input_norm, spatial == "full")
    blob_i = np.asarray(low.blob_i + [0], dtype=np.int64)
    blob_f = np.asarray(low.blob_f + [0.0], dtype=np.float64)
    return Plan(
        ops=ops,
        fops=fops,
        blob_i=blob_i,
        blob_f=blob_f,
        input_shape=(H, W, C),
        tape_len=max(low.tape_len, 1),
        n_outputs=low.n_taps + 1,
        kind=kind,
        full_ops=full_ops,
    )
