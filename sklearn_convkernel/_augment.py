"""Flip averaging: ``K(x, y) <- (K(x, y) + K(x, flip y)) / 2`` on compiled programs.

The values of the ``augment`` parameter (:data:`AUGMENTS`) and their mirrors:

- ``"hflip"``: ``flip y`` is a left-right flip of ``y`` (reversal of the
  width axis, axis 2 of NHWC images), ``y[:, :, ::-1, :]``;
- ``"hflip_reverse_channels"``: the flip with the channel order reversed too,
  ``y[:, :, ::-1, ::-1]``.  This is the mirror image of channels that come in
  mirror pairs, channel ``j`` the mirror image of channel ``C - 1 - j``: the
  output of :class:`~sklearn_convkernel.PatchFeatures` with
  ``flip_equivariant=True``, which satisfies
  ``F(x[:, :, ::-1]) = F(x)[:, :, ::-1, ::-1]``, so that this augment on
  ``F(x)``, ``F(y)`` is ``"hflip"`` on the images ``x``, ``y`` behind the
  patch features: ``(K(F x, F y) + K(F x, F(flip y))) / 2``.

``augment`` averages every read-out of the kernel over the mirror of one
argument.  The result is symmetric and positive semi-definite when the
architecture is *flip-equivariant*: mirroring both images leaves the kernel
unchanged, ``K(flip x, flip y) = K(x, y)``; then
``K(x, flip y) = K(flip x, y) = K(y, flip x)`` (the mirrors are involutions)
and the averaged kernel is the kernel of the flip-averaged feature map.

Channels.  Every program reads its images only in the input op, as
``sum_c x_c(p) y_c(q)``: invariant under a permutation of the channels common
to both images.  So the channel reversal changes none of the checks below
and no self-variance: a program is equivariant under the channel-reversing
mirror exactly when it is under the plain flip, and the tapes are reused the
same way.

Equivariance is checked on the compiled program (:class:`~._plan.Plan`), op
by op: a convolution or pooling op is flip-equivariant when its width-axis
window map commutes with reversal (``J M J = M``, ``J`` the reversal of the
output / input width); nonlinearities, diagonal read-outs and stack ops act
position by position or not on positions at all.  An op code this module does
not know is *not checked* and raises, so a new op must declare itself here.

Reuse.  For an equivariant program the self-variances of ``flip x`` at every
stage are those of ``x`` reversed along the width, so the self-pass tape of
``flip x`` is ``x``'s tape with each nonlinearity's two per-position maps
(H x W each, at the op's tape offset) reversed along their last axis, and
``k(flip x, flip x) = k(x, x)``: flipped images need no self pass.
"""

from __future__ import annotations

import numpy as np

from sklearn_convkernel import arch as A
from sklearn_convkernel import _abi

__all__ = ["AUGMENTS", "check_augment", "check_flip_equivariant", "flip_images", "FlipPlan"]

# the accepted values of the ``augment`` parameter (besides None) and their mirrors
_MIRRORS = {
    "hflip": "a left-right flip of one image",
    "hflip_reverse_channels": ("a left-right flip of one image with its channel order "
                               "reversed, for PatchFeatures(flip_equivariant=True) channels"),
}
#: accepted values of the ``augment`` parameter (besides None)
AUGMENTS = tuple(_MIRRORS)

# the width-axis columns of a CONV row: window, stride, dilation, left pad, circular
_CONV_W = (_abi.C_CONV_KW, _abi.C_CONV_SW, _abi.C_CONV_DW, _abi.C_CONV_PAD_W,
           _abi.C_CONV_CIRC_W)
_IN_H, _IN_W, _OUT_W, _MODE_IN = _abi.C_IN_H, _abi.C_IN_W, _abi.C_OUT_W, _abi.C_MODE_IN

# op codes that commute with the width reversal by construction: they act on each
# position separately, sum over all positions, or only move states on the stack.
# A new op code goes here (a read-out whose weights are mirror-symmetric along the
# width, e.g.) or gets a check below; unknown codes raise.
_ALWAYS_EQUIVARIANT = {
    # K = scale * sum_c x_c(p) y_c(q): also invariant under a common permutation of
    # the channels, which "hflip_reverse_channels" relies on (see the module docstring)
    _abi.OP_INPUT: "the input layer",
    _abi.OP_NONLIN: "a nonlinearity",
    _abi.OP_DIAGSUM: "a diagonal read-out (Flatten/Trace)",
    _abi.OP_TODIAG: "a diagonal extraction",
    _abi.OP_PUSH: "a stack push",
    _abi.OP_SWAP: "a stack swap",
    _abi.OP_ADD: "a branch sum",
    _abi.OP_POP: "a stack pop",
    _abi.OP_OUTPUT: "a read-out slot",
}
# op codes that come from no layer of the architecture (planner bookkeeping)
_STRUCTURAL = {_abi.OP_INPUT, _abi.OP_TODIAG, _abi.OP_PUSH, _abi.OP_SWAP, _abi.OP_ADD,
               _abi.OP_POP, _abi.OP_OUTPUT}


def check_augment(augment):
    """Validate the ``augment`` parameter (None or one of :data:`AUGMENTS`)."""
    if augment is None or (isinstance(augment, str) and augment in AUGMENTS):
        return augment
    values = "; ".join(f"{name!r} (average the kernel over {what})"
                       for name, what in _MIRRORS.items())
    raise ValueError(
        f"augment must be None (no augmentation) or one of {values}; got {augment!r}."
    )


# ---------------------------------------------------------------------------
# the equivariance check
# ---------------------------------------------------------------------------


def _conv_taps(row):
    """Width-axis tap table of a CONV row: (k, W_out) input columns, -1 in zero padding."""
    n, n_out = int(row[_IN_W]), int(row[_OUT_W])
    k, s, d, lo, circ = (int(row[c]) for c in _CONV_W)
    idx = s * np.arange(n_out)[None, :] + d * np.arange(k)[:, None] - lo
    if circ:
        return idx % n
    return np.where((idx >= 0) & (idx < n), idx, -1)


def _flip_taps(tab, n):
    """J S_t J for each row S_t of a tap table (J reverses input and output)."""
    rev = tab[:, ::-1]
    return np.where(rev >= 0, n - 1 - rev, -1)


def _conv_problem(row):
    """Why a CONV row is not flip-equivariant, or None when it is.

    The shared-offset window map ``K'[a, a'] = mean_t K[S_t a, S_t a']`` is
    equivariant when the set of tap maps ``{S_t}`` is closed under
    ``S -> J S J``; in diagonal mode only ``M = sum_t S_t`` matters
    (``J M J = M``).
    """
    n, n_out = int(row[_IN_W]), int(row[_OUT_W])
    tab = _conv_taps(row)
    flipped = _flip_taps(tab, n)
    if int(row[_MODE_IN]):
        ok = sorted(map(tuple, tab.tolist())) == sorted(map(tuple, flipped.tolist()))
    else:
        ok = np.array_equal(_tap_counts(tab, n), _tap_counts(flipped, n))
    if ok:
        return None
    k, s, d, lo, circ = (int(row[c]) for c in _CONV_W)
    ext = d * (k - 1) + 1
    hi = s * (n_out - 1) + ext - n - lo  # padding the last window reaches on the right
    where = (f"width window {k}" + (f", stride {s}" if s != 1 else "")
             + (f", dilation {d}" if d != 1 else "") + f" on width {n} -> {n_out}")
    wrap = "wraps" if circ else "pads"
    if hi >= 0:
        geometry = f"{wrap} {lo} left / {hi} right ({where})"
    else:
        geometry = (f"{wrap} {lo} left and leaves the last {-hi} column(s) unused "
                    f"({where})")
    fixes = []
    if ext % 2 == 0:
        fixes.append(f"use an odd window (this one spans {ext} columns)")
    if s != 1:
        fixes.append(f"choose a width for which the stride {s} reaches both borders alike "
                     f"((width + left + right padding - {ext}) divisible by {s}), or stride 1")
    fixes.append("pad symmetrically (padding='same' with an odd window, or explicit "
                 "((top, bottom), (p, p)))")
    return f"{geometry}: {'; '.join(fixes)}"


def _tap_counts(tab, n):
    """M[a, i] = number of taps t with S_t[a] = i (padding taps dropped)."""
    k, n_out = tab.shape
    M = np.zeros((n_out, n), dtype=np.int64)
    for t in range(k):
        ok = tab[t] >= 0
        np.add.at(M, (np.arange(n_out)[ok], tab[t][ok]), 1)
    return M


def _pool_width_matrix(plan, row):
    """Dense width pooling matrix (W_out x W_in) of a POOL row from the CSR blobs."""
    n, n_out = int(row[_IN_W]), int(row[_OUT_W])
    ptr_off, idx_off = int(row[_abi.C_POOL_W_PTR]), int(row[_abi.C_POOL_W_IDX])
    ptr = plan.blob_i[ptr_off:ptr_off + n_out + 1]
    M = np.zeros((n_out, n))
    for a in range(n_out):
        for u in range(int(ptr[a]), int(ptr[a + 1])):
            M[a, int(plan.blob_i[idx_off + u])] += plan.blob_f[idx_off + u]
    return M


def _pool_problem(plan, row):
    M = _pool_width_matrix(plan, row)
    if np.array_equal(M[::-1, ::-1], M):
        return None
    n, n_out = int(row[_IN_W]), int(row[_OUT_W])
    first = np.flatnonzero(M[0])
    last = np.flatnonzero(M[-1])

    def span(cols):
        return f"{cols[0]}..{cols[-1]}" if len(cols) else "nothing"

    reads = (f"its only output reads columns {span(first)}" if n_out == 1 else
             f"the first output reads columns {span(first)}, the last reads {span(last)}")
    return (
        f"its width pooling (width {n} -> {n_out}) is not mirror-symmetric: {reads} "
        f"(mirrored: {span(n - 1 - last[::-1])}): choose the input width, window, stride or "
        "subsampling so that the pooling windows sit symmetrically (e.g. an odd width "
        "for GaussianPool/StridedPool(2), a width divisible by the stride otherwise)"
    )


def _shiftsum_problem(plan, row):
    """A SHIFTSUM read-out weighs width displacements d; equivariant when w(d) = w(-d)."""
    n = int(row[_IN_W])
    off = int(row[_abi.C_SHIFTSUM_W_WEIGHTS])
    w = plan.blob_f[off:off + 2 * n - 1]
    if np.array_equal(w, w[::-1]):
        return None
    return "its width displacement weights are not symmetric"


def _leaf_names(architecture):
    """Layer reprs in the order the planner emits their ops (combinators skipped)."""
    return [repr(layer) for layer in A.iter_layers(architecture) if not layer._combinator]


def check_flip_equivariant(plan, architecture=None, augment="hflip"):
    """Raise unless the compiled program is equivariant under a left-right flip.

    The same check holds for both values of :data:`AUGMENTS`: programs read
    the channels only through sums over them (see the module docstring).

    Parameters
    ----------
    plan : Plan
        A program from :func:`~sklearn_convkernel._plan.make_plan`.
    architecture : Layer, optional
        The architecture the plan was compiled from, only to name the
        offending layer in the error message.
    augment : str, default="hflip"
        The augment value asked for, only for the error message.

    Raises
    ------
    ArchitectureError
        Naming the first op that does not commute with the width reversal
        (its layer when ``architecture`` is given) and how to fix it; also
        for op codes this check does not know.
    """
    for k, row in enumerate(plan.ops):
        code = int(row[_abi.C_CODE])
        if code in _ALWAYS_EQUIVARIANT:
            continue
        if code == _abi.OP_CONV:
            problem = _conv_problem(row)
        elif code == _abi.OP_POOL:
            problem = _pool_problem(plan, row)
        elif code == _abi.OP_SHIFTSUM:
            problem = _shiftsum_problem(plan, row)
        else:
            problem = (f"op code {code} is not checked for flip equivariance; declare it "
                       "in sklearn_convkernel/_augment.py")
        if problem is None:
            continue
        raise A.ArchitectureError(
            f"augment={augment!r} needs an architecture whose kernel is unchanged when both "
            f"images are flipped left-right, for images of width {plan.input_shape[1]}; "
            f"{_describe(plan, k, architecture)}: {problem}. Or use augment=None."
        )


def _describe(plan, k, architecture):
    """The layer behind op row k (its repr when the architecture is known)."""
    layer_rows = [j for j, r in enumerate(plan.ops) if int(r[_abi.C_CODE]) not in _STRUCTURAL]
    names = _leaf_names(architecture) if architecture is not None else []
    if len(names) == len(layer_rows) and k in layer_rows:
        return f"{names[layer_rows.index(k)]} (program op {k})"
    # the planner's emission order is unknown here: describe the op only
    code = int(plan.ops[k][_abi.C_CODE])
    return {_abi.OP_CONV: "a convolution", _abi.OP_POOL: "a pooling"}.get(code, "an op") + \
        f" (program op {k})"


# ---------------------------------------------------------------------------
# flipped images and tapes
# ---------------------------------------------------------------------------


def flip_images(Xf, image_shape, reverse_channels=False):
    """Left-right flipped copies of flat images (n, H*W*C): axis 2 of NHWC reversed.

    With ``reverse_channels`` axis 3 (the channel order) is reversed too.
    """
    H, W, C = image_shape
    n = Xf.shape[0]
    channels = slice(None, None, -1 if reverse_channels else 1)
    return np.ascontiguousarray(Xf.reshape(n, H, W, C)[:, :, ::-1, channels].reshape(n, -1))


def _tape_permutation(plan):
    """Index array p with tape(flip x) = tape(x)[p] for a flip-equivariant plan."""
    perm = np.arange(plan.tape_len)
    for row in plan.ops:
        if int(row[_abi.C_CODE]) != _abi.OP_NONLIN:
            continue
        h, w = int(row[_IN_H]), int(row[_IN_W])
        off, n = int(row[_abi.C_NONLIN_TAPE]), _abi.TAPE_FACTORS * h * w
        # TAPE_FACTORS H x W maps (the factors [inv | sq]), each reversed along the width
        maps = np.arange(off, off + n).reshape(_abi.TAPE_FACTORS, h, w)
        perm[off:off + n] = maps[:, :, ::-1].ravel()
    return perm


class FlipPlan:
    """What the Gram engine needs to average over flips: flipped images and their tapes.

    Parameters
    ----------
    plan : Plan
        Checked with :func:`check_flip_equivariant` on construction.
    architecture : Layer, optional
        Only for the error message.
    augment : {"hflip", "hflip_reverse_channels"}, default="hflip"
        The mirror: the second also reverses the channel order of the images
        (their tapes are the same, see the module docstring).
    """

    def __init__(self, plan, architecture=None, augment="hflip"):
        if check_augment(augment) is None:
            raise ValueError("FlipPlan needs an augment value, got None.")
        check_flip_equivariant(plan, architecture, augment)
        self.plan = plan
        self.augment = augment
        self.image_shape = plan.input_shape
        self.tape_perm = _tape_permutation(plan)

    def images(self, Xf):
        """Mirrored flat images (flipped; channels reversed for "hflip_reverse_channels")."""
        return flip_images(Xf, self.image_shape,
                           reverse_channels=self.augment == "hflip_reverse_channels")

    def tapes(self, tapes):
        """Tapes of the mirrored images (no self pass)."""
        return np.ascontiguousarray(tapes[:, self.tape_perm])
