# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Thin binding of the C++ kernel core.

Python (``sklearn_convkernel._plan`` and ``_gram``) owns validation and the
dtype / contiguity contract; this module only unpacks typed memoryviews, runs
the core with the GIL released and turns status codes into exceptions.
"""

from libc.stdint cimport int64_t, int32_t

import warnings

import numpy as np

cdef extern from "convkernel/core.hpp" namespace "convkernel":
    ctypedef struct Program:
        const int64_t* ops
        const double* fops
        int64_t n_ops
        const int64_t* blob_i
        int64_t n_blob_i
        const double* blob_f
        int64_t n_blob_f
        int64_t height
        int64_t width
        int64_t channels
        int64_t tape_len
        int64_t n_outputs
        int32_t ntk
        int32_t variant
        int64_t max_depth
        int64_t max_size
        int32_t checked

    ctypedef struct AbiEntry:
        const char* group
        const char* name
        int64_t value

    const AbiEntry* ck_abi(int64_t* n)
    const char* ck_simd_variant_name(int v)
    int ck_simd_supported(int v)
    int ck_check_program(Program* prog, char* msg, int msg_len) nogil
    int ck_self_pass_f64(const Program* prog, const double* X, int64_t n,
                         double* tapes, double* self_out, char* msg, int msg_len) nogil
    int ck_self_pass_f32(const Program* prog, const float* X, int64_t n,
                         float* tapes, float* self_out, char* msg, int msg_len) nogil
    int ck_pair_tile_f64(const Program* prog,
                         const double* X, const double* tapes_x, int64_t nx, int64_t x0,
                         const double* Y, const double* tapes_y, int64_t ny, int64_t y0,
                         int upper_only, double* out,
                         int64_t s_out, int64_t s_row, int64_t s_col,
                         char* msg, int msg_len) nogil
    int ck_pair_tile_f32(const Program* prog,
                         const float* X, const float* tapes_x, int64_t nx, int64_t x0,
                         const float* Y, const float* tapes_y, int64_t ny, int64_t y0,
                         int upper_only, float* out,
                         int64_t s_out, int64_t s_row, int64_t s_col,
                         char* msg, int msg_len) nogil

    int ck_pair_list_f64(const Program* prog, const double* X, const double* tapes_x,
                         int64_t nx, const double* Y, const double* tapes_y, int64_t ny,
                         const int64_t* ii, const int64_t* jj, int64_t n_pairs, double* out,
                         char* msg, int msg_len) nogil
    int ck_pair_list_f32(const Program* prog, const float* X, const float* tapes_x,
                         int64_t nx, const float* Y, const float* tapes_y, int64_t ny,
                         const int64_t* ii, const int64_t* jj, int64_t n_pairs, float* out,
                         char* msg, int msg_len) nogil

ctypedef fused real:
    float
    double

cdef enum:
    MSG_LEN = 512


def abi():
    """The core's ABI constants, from the lists of ``convkernel/abi.hpp``.

    Returns
    -------
    dict
        ``{group: {name: value}}`` for the groups "op" (``OP_*``), "fn"
        (``FN_*``), "status" (``STATUS_*``), "size" (``N_INT``, ``N_FLOAT``,
        ``TAPE_FACTORS``), "column" (``C_*``, integer columns) and "fcolumn"
        (``F_*``, float columns).  ``sklearn_convkernel._abi`` exposes them
        as module constants.
    """
    cdef int64_t n = 0
    cdef const AbiEntry* table = ck_abi(&n)
    out = {}
    for k in range(n):
        out.setdefault(table[k].group.decode(), {})[table[k].name.decode()] = table[k].value
    return out


_ABI = abi()
_STATUS = _ABI["status"]
_N_INT = _ABI["size"]["N_INT"]
_N_FLOAT = _ABI["size"]["N_FLOAT"]
cdef int _OK = _STATUS["STATUS_OK"]

STATUS_NAMES = {
    _STATUS["STATUS_BAD_PROGRAM"]: "invalid program (a planner bug; please report it)",
    _STATUS["STATUS_BAD_ARGUMENT"]: "invalid argument",
    _STATUS["STATUS_NOT_FINITE"]: "non-finite kernel value",
    _STATUS["STATUS_NO_MEMORY"]: "out of memory",
}


def _variant_names():
    names = []
    while ck_simd_variant_name(len(names)) != NULL:
        names.append(ck_simd_variant_name(len(names)).decode())
    return tuple(names)


#: Every engine variant the core knows, in instruction-set order (each one's
#: CPU needs those before it).
VARIANTS = _variant_names()


def simd_variants():
    """The engine variants this build has and this CPU runs, in instruction-set order.

    Returns
    -------
    tuple of str
        A prefix of ``VARIANTS``: ``("generic",)``, ``("generic", "avx2")`` or
        ``("generic", "avx2", "avx512")``; the last one is the widest.
    """
    return tuple(name for code, name in enumerate(VARIANTS) if ck_simd_supported(code))


def simd_variant():
    """The engine variant this process runs: "avx512", "avx2" or "generic".

    Chosen once per process, on the core's first use, by
    ``sklearn_convkernel._simd`` (see :func:`simd_report` for why): the
    environment variable ``SKLEARN_CONVKERNEL_SIMD=generic|avx2|avx512``
    forces one (the best supported one at or below it), ``isa`` takes the
    widest supported one, and by default the fastest of a short
    micro-benchmark, measured once per machine and cached.
    """
    from sklearn_convkernel._simd import process_variant
    return process_variant()


def simd_report():
    """What :func:`simd_variant` chose and why (see ``sklearn_convkernel._simd.simd_report``)."""
    from sklearn_convkernel._simd import simd_report as report
    return report()


def _variant_code(variant):
    if variant is None:
        variant = simd_variant()
    if variant not in VARIANTS or not ck_simd_supported(VARIANTS.index(variant)):
        raise ValueError(f"variant={variant!r} is not an engine variant this CPU runs; "
                         f"choose one of {simd_variants()} (or None: this process's)")
    return VARIANTS.index(variant)


def _restore_program(args, variant):
    # unpickling: the variant the program was built with when this CPU runs it
    # (the processes of one computation then agree bit for bit), else this
    # process's own, with a warning (the tasks of _gram also report the
    # variant they ran with to the calling process)
    if variant in simd_variants():
        return CompiledProgram(*args, variant=variant)
    prog = CompiledProgram(*args)
    from sklearn_convkernel._simd import fallback_advice
    warnings.warn(
        f"this CPU does not run the {variant!r} engine variant of an unpickled kernel "
        f"program (sent by another process); it runs with {prog.variant!r} instead. "
        + fallback_advice(variant, prog.variant),
        UserWarning,  # attributed to the unpickling Python code (no Cython frame)
    )
    return prog


cdef object _raise(int status, char* msg):
    raise_status(status, msg.decode("utf-8", "replace"))


def raise_status(int status, str text):
    """Raise the exception of a failed core status: MemoryError, RuntimeError or ValueError."""
    if status == _STATUS["STATUS_NO_MEMORY"]:
        raise MemoryError(f"sklearn_convkernel core: {text}")
    if status == _STATUS["STATUS_BAD_PROGRAM"]:
        raise RuntimeError(f"sklearn_convkernel core: {STATUS_NAMES[status]}: {text}")
    if status == _STATUS["STATUS_NOT_FINITE"]:
        text += ("; if the images are of ordinary size, the architecture's variances "
                 "(weight_var, bias_var) are too large for this dtype and depth: lower them")
    raise ValueError(f"sklearn_convkernel core: {STATUS_NAMES.get(status, 'error')}: {text}")


cdef class CompiledProgram:
    """A checked program: keeps the op tables alive and exposes the passes.

    ``variant`` names the engine variant its passes run with (one of
    :func:`simd_variants`); None (the default) takes this process's,
    :func:`simd_variant`.  A pickled program keeps its variant where the
    unpickling CPU runs it; elsewhere it takes that process's, with a
    ``UserWarning``.
    """

    cdef Program prog
    cdef object _args
    cdef readonly int64_t tape_len, n_outputs, image_size
    cdef readonly bint ntk
    cdef readonly str variant

    def __cinit__(self, const int64_t[:, ::1] ops, const double[:, ::1] fops,
                  const int64_t[::1] blob_i, const double[::1] blob_f,
                  int64_t height, int64_t width, int64_t channels,
                  int64_t tape_len, int64_t n_outputs, bint ntk, variant=None):
        cdef char msg[MSG_LEN]
        cdef int status
        cdef int code = _variant_code(variant)
        if ops.shape[1] != _N_INT or fops.shape[1] != _N_FLOAT or ops.shape[0] != fops.shape[0]:
            raise ValueError(f"op tables must be (n_ops, {_N_INT}) int64 and "
                             f"(n_ops, {_N_FLOAT}) float64")
        # keep the buffers alive (the Program points into them) and picklable
        self._args = (np.asarray(ops), np.asarray(fops), np.asarray(blob_i),
                      np.asarray(blob_f), height, width, channels, tape_len,
                      n_outputs, bool(ntk))
        self.prog.ops = &ops[0, 0]
        self.prog.fops = &fops[0, 0]
        self.prog.n_ops = ops.shape[0]
        self.prog.blob_i = &blob_i[0]
        self.prog.n_blob_i = blob_i.shape[0]
        self.prog.blob_f = &blob_f[0]
        self.prog.n_blob_f = blob_f.shape[0]
        self.prog.height = height
        self.prog.width = width
        self.prog.channels = channels
        self.prog.tape_len = tape_len
        self.prog.n_outputs = n_outputs
        self.prog.ntk = 1 if ntk else 0
        self.prog.variant = code
        self.variant = VARIANTS[code]
        self.prog.checked = 0  # ck_check_program below sets it, with the buffer sizes
        self.tape_len = tape_len
        self.n_outputs = n_outputs
        self.image_size = height * width * channels
        self.ntk = ntk
        msg[0] = 0
        status = ck_check_program(&self.prog, msg, MSG_LEN)
        if status != _OK:
            _raise(status, msg)

    def __reduce__(self):
        return (_restore_program, (self._args, self.variant))

    def with_variant(self, variant):
        """The same program running with engine ``variant`` (one of :func:`simd_variants`)."""
        if variant == self.variant:
            return self
        return CompiledProgram(*self._args, variant=variant)

    def self_pass(self, const real[:, ::1] X, real[:, ::1] tapes, real[:, ::1] self_out):
        """Run the self pass on the images X (n, H*W*C), filling tapes and self_out."""
        cdef char msg[MSG_LEN]
        cdef int status = 0
        cdef int64_t n = X.shape[0]
        if X.shape[1] != self.image_size:
            raise ValueError("X has the wrong number of features")
        if tapes.shape[0] != n or tapes.shape[1] != self.tape_len:
            raise ValueError("tapes has the wrong shape")
        if self_out.shape[0] != n or self_out.shape[1] != self.n_outputs:
            raise ValueError("self_out has the wrong shape")
        if n == 0:
            return
        msg[0] = 0
        with nogil:
            if real is double:
                status = ck_self_pass_f64(&self.prog, &X[0, 0], n, &tapes[0, 0],
                                          &self_out[0, 0], msg, MSG_LEN)
            else:
                status = ck_self_pass_f32(&self.prog, &X[0, 0], n, &tapes[0, 0],
                                          &self_out[0, 0], msg, MSG_LEN)
        if status != _OK:
            _raise(status, msg)

    def pair_tile(self, const real[:, ::1] X, const real[:, ::1] tapes_x, int64_t x0,
                  const real[:, ::1] Y, const real[:, ::1] tapes_y, int64_t y0,
                  real[:, :, :] out, bint upper_only):
        """Kernel values of every pair (X[i], Y[j]) into out[:, i, j].

        With upper_only, pairs with x0 + i >= y0 + j are left untouched.
        """
        cdef char msg[MSG_LEN]
        cdef int status = 0
        cdef int64_t nx = X.shape[0], ny = Y.shape[0]
        cdef Py_ssize_t itemsize = sizeof(real)
        if X.shape[1] != self.image_size or Y.shape[1] != self.image_size:
            raise ValueError("X or Y has the wrong number of features")
        if tapes_x.shape[0] != nx or tapes_y.shape[0] != ny:
            raise ValueError("tapes do not match the images")
        if tapes_x.shape[1] != self.tape_len or tapes_y.shape[1] != self.tape_len:
            raise ValueError("tapes have the wrong length")
        if out.shape[0] != self.n_outputs or out.shape[1] != nx or out.shape[2] != ny:
            raise ValueError("out has the wrong shape")
        if nx == 0 or ny == 0:
            return
        cdef int64_t s0 = out.strides[0] // itemsize
        cdef int64_t s1 = out.strides[1] // itemsize
        cdef int64_t s2 = out.strides[2] // itemsize
        msg[0] = 0
        with nogil:
            if real is double:
                status = ck_pair_tile_f64(&self.prog, &X[0, 0], &tapes_x[0, 0], nx, x0,
                                          &Y[0, 0], &tapes_y[0, 0], ny, y0, upper_only,
                                          &out[0, 0, 0], s0, s1, s2, msg, MSG_LEN)
            else:
                status = ck_pair_tile_f32(&self.prog, &X[0, 0], &tapes_x[0, 0], nx, x0,
                                          &Y[0, 0], &tapes_y[0, 0], ny, y0, upper_only,
                                          &out[0, 0, 0], s0, s1, s2, msg, MSG_LEN)
        if status != _OK:
            _raise(status, msg)

    def pair_list(self, const real[:, ::1] X, const real[:, ::1] tapes_x,
                  const real[:, ::1] Y, const real[:, ::1] tapes_y,
                  const int64_t[::1] ii, const int64_t[::1] jj, real[:, ::1] out):
        """Kernel values of the pairs (X[ii[t]], Y[jj[t]]) into out[t, :]."""
        cdef char msg[MSG_LEN]
        cdef int status = 0
        cdef int64_t n = ii.shape[0]
        if X.shape[1] != self.image_size or Y.shape[1] != self.image_size:
            raise ValueError("X or Y has the wrong number of features")
        if tapes_x.shape[0] != X.shape[0] or tapes_y.shape[0] != Y.shape[0]:
            raise ValueError("tapes do not match the images")
        if tapes_x.shape[1] != self.tape_len or tapes_y.shape[1] != self.tape_len:
            raise ValueError("tapes have the wrong length")
        if jj.shape[0] != n or out.shape[0] != n or out.shape[1] != self.n_outputs:
            raise ValueError("ii, jj and out do not match")
        if n == 0:
            return
        if X.shape[0] == 0 or Y.shape[0] == 0:
            raise ValueError("pairs index into an empty image set")
        msg[0] = 0
        with nogil:
            if real is double:
                status = ck_pair_list_f64(&self.prog, &X[0, 0], &tapes_x[0, 0], X.shape[0],
                                          &Y[0, 0], &tapes_y[0, 0], Y.shape[0],
                                          &ii[0], &jj[0], n, &out[0, 0], msg, MSG_LEN)
            else:
                status = ck_pair_list_f32(&self.prog, &X[0, 0], &tapes_x[0, 0], X.shape[0],
                                          &Y[0, 0], &tapes_y[0, 0], Y.shape[0],
                                          &ii[0], &jj[0], n, &out[0, 0], msg, MSG_LEN)
        if status != _OK:
            _raise(status, msg)
