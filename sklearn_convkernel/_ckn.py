"""One description of a convolutional kernel network (CKN) layer.

A CKN layer in Bietti's ``ckn_kernel`` conventions (Mairal 2016) is

1. a patch *sum* over the zero-padded ``p x p`` windows of the previous map
   (size preserved; odd ``p`` centred, even ``p`` reaching one further up/left:
   :func:`patch_pads`), i.e. a window-mean :class:`~.arch.Conv` with
   ``weight_var = p * p``;
2. a homogeneous dot-product kernel ``kappa`` with ``kappa(1) = 1``
   (:func:`nonlinearity`);
3. a linear pooling with subsampling ``d`` (:func:`pooling_layer`).

:func:`ckn_layer` builds the three layers.  The estimators'
:func:`~sklearn_convkernel._estimators.ckn_architecture`, the preset
:func:`~sklearn_convkernel.presets.from_ckn_kernel` and the Nyström features
(:class:`~sklearn_convkernel.CKNFeatures`: its patches, its pooling matrices
and, through ``from_ckn_kernel``, its exact kernel) all use this module.
"""

from __future__ import annotations

from sklearn_convkernel import arch as A

#: every dot-product kernel by its ckn_kernel name ("arccos0" is ours).
KERNELS = ("exp", "relu", "arccos0", "linear", "poly2", "poly3", "poly4")
#: the kernels of ckn_kernel itself (the keys a ckn_kernel model may name).
CKN_KERNEL_KERNELS = tuple(k for k in KERNELS if k != "arccos0")
#: the kernels with a Nyström feature map (:class:`~sklearn_convkernel.CKNFeatures`).
NYSTROM_KERNELS = ("exp", "relu", "poly2", "poly3", "poly4")
#: the poolings by their ckn_kernel names.
POOLINGS = ("gaussian", "average", "strided")


def patch_pads(p):
    """Zero padding (before, after) of a ``p``-wide patch (even p: one more before)."""
    return p // 2, p - 1 - p // 2


def nonlinearity(kernel, sigma):
    """The layer of the dot-product kernel named ``kernel``.

    ``sigma`` is the bandwidth of "exp", ``kappa(c) = exp((c - 1) / sigma**2)``;
    "relu" is the arc-cosine kernel of order 1 normalised to ``kappa(1) = 1``.
    """
    if kernel == "exp":
        return A.ExpKernel(sigma)
    if kernel == "relu":
        return A.ArcCosKernel(1)
    if kernel == "arccos0":
        return A.ArcCosKernel(0)
    if kernel == "linear":
        return A.LinearKernel()
    return A.PolyKernel(int(kernel[-1]))


def pooling_layer(pooling, subsampling, poolfactor=None):
    """The pooling named ``pooling`` with subsampling ``d`` and pool factor ``p`` (default d).

    "gaussian" is :class:`~.arch.GaussianPool`, "average" :class:`~.arch.BoxPool`
    and "strided" :class:`~.arch.StridedPool` (which has no pool factor).
    """
    if poolfactor == subsampling:
        poolfactor = None
    if pooling == "gaussian":
        return A.GaussianPool(subsampling=subsampling, poolfactor=poolfactor)
    if pooling == "average":
        return A.BoxPool(subsampling=subsampling, poolfactor=poolfactor)
    return A.StridedPool(subsampling=subsampling)


def largest_fitting_subsampling(wanted, fits):
    """The largest subsampling ``d <= wanted`` with ``fits(d)`` true, or None.

    The one rule by which every CKN (the estimators' exact kernel, the Nyström
    features, the supervised CKN) adapts its subsamplings to small images: the
    defaults, made for 28x28 images, also run on e.g. 8x8 digits.
    """
    for d in range(int(wanted), 0, -1):
        if fits(d):
            return d
    return None


def ckn_layer(patch_size, kernel, sigma, pooling, subsampling, poolfactor=None,
              weight_scale=1.0):
    """The layers ``[Conv, kernel, pooling]`` of one CKN layer.

    ``weight_scale`` multiplies the patch sum (ckn_kernel's "linear" kernel is
    ``sigma * c``).  Names are not checked here: the callers validate them
    against :data:`KERNELS` / :data:`POOLINGS` with their own messages.
    """
    lo, hi = patch_pads(patch_size)
    conv = A.Conv(patch_size, padding=((lo, hi), (lo, hi)),
                  weight_var=float(patch_size * patch_size) * weight_scale)
    return [conv, nonlinearity(kernel, sigma), pooling_layer(pooling, subsampling, poolfactor)]
