"""Presets reproducing the kernels of the peer systems exactly.

Each function returns an ordinary architecture of :mod:`sklearn_convkernel.arch`
whose kernel, computed by :func:`sklearn_convkernel.conv_kernel`, equals the
numbers of the original system (in float64, for any image size, including
non-square images that some of the originals reject):

* :func:`from_ckn_kernel` -- Bietti's ``ckn_kernel`` (CKN kernels and their NTK);
* :func:`arora_cntk` -- the CNTK code of Arora et al. (2019);
* :class:`cnn_gp` -- a mirror of the API of Garriga-Alonso et al.'s ``cnn_gp``,
  with the paper's MNIST networks :func:`cnn_gp_convnet`,
  :func:`cnn_gp_residual` and :func:`cnn_gp_resnet32`;
* :func:`myrtle` -- the Myrtle networks of Shankar et al. (2020) in
  neural-tangents' conventions (neural-tangents' layers map one to one onto
  ours with ``weight_var = W_std**2`` and ``bias_var = b_std**2``);
* :func:`li_lap` -- the CNTK / CNN-GP with local average pooling of Li et
  al. (2019), the most accurate kernel measured on Fashion-MNIST here (used
  with ``augment="hflip"`` for their flips).

The constant factors of each system are spelled out in ``docs/conventions.rst``.
"""

from __future__ import annotations

import numbers

from . import _ckn
from .arch import (
    ArchitectureError,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    Layer,
    ReLU,
    Sequential,
    ShiftAverage,
    Sum,
    Trace,
    validate,
)

__all__ = [
    "from_ckn_kernel",
    "arora_cntk",
    "cnn_gp",
    "cnn_gp_convnet",
    "cnn_gp_residual",
    "cnn_gp_resnet32",
    "myrtle",
    "li_lap",
]


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ArchitectureError(f"{what} must be a positive int, got {value!r}.")
    return int(value)


def _check_shape(arch, input_shape):
    if input_shape is not None:
        validate(arch, input_shape)
    return arch


# ---------------------------------------------------------------------------
# ckn_kernel
# ---------------------------------------------------------------------------

_CKN_KEYS = ("npatch", "subsampling", "poolfactor", "pooling", "kernel", "sigma")


def _ckn_layer(i, spec, ntk):
    where = f"ckn model layer {i}"
    if not isinstance(spec, dict):
        raise ArchitectureError(
            f"{where}: expected a dict such as {{'npatch': 3, 'subsampling': 2, "
            f"'pooling': 'gaussian', 'kernel': 'exp', 'sigma': 0.6}}, got {spec!r}."
        )
    unknown = sorted(set(spec) - set(_CKN_KEYS), key=str)
    if unknown:
        raise ArchitectureError(
            f"{where}: unknown key(s) {unknown}; ckn_kernel's layer keys are "
            f"{list(_CKN_KEYS)}."
        )
    for key in ("npatch", "subsampling"):
        if key not in spec:
            raise ArchitectureError(f"{where}: the required key {key!r} is missing.")
    s = _positive_int(spec["npatch"], f"{where}: 'npatch'")
    d = _positive_int(spec["subsampling"], f"{where}: 'subsampling'")
    p = spec.get("poolfactor", None)
    p = d if p is None else _positive_int(p, f"{where}: 'poolfactor'")

    pooling = spec.get("pooling", "gaussian")
    if pooling not in _ckn.POOLINGS:
        raise ArchitectureError(
            f"{where}: 'pooling' must be one of {list(_ckn.POOLINGS)}, got {pooling!r}."
        )
    kernel = spec.get("kernel", "relu" if ntk else "exp")
    if kernel == "square":
        raise ArchitectureError(
            f"{where}: the non-homogeneous 'square' kernel (Nx Ny c)**2 is not supported; "
            f"use one of the homogeneous kernels {list(_ckn.CKN_KERNEL_KERNELS)}."
        )
    if kernel not in _ckn.CKN_KERNEL_KERNELS:
        raise ArchitectureError(
            f"{where}: 'kernel' must be one of {list(_ckn.CKN_KERNEL_KERNELS)}, got {kernel!r}."
        )
    if ntk and kernel != "relu":
        raise ArchitectureError(
            f"{where}: ckn_kernel defines the NTK (ntk=True) only for the 'relu' kernel, "
            f"got {kernel!r}. Build the architecture with ntk=False; its kind='ntk' "
            "kernel is then our generalisation Q = T kappa'(c) + M (see the docstring)."
        )
    sigma = spec.get("sigma", 1.0)
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not sigma > 0:
        raise ArchitectureError(f"{where}: 'sigma' must be a real number > 0, got {sigma!r}.")
    sigma = float(sigma)

    # the patch step: a window SUM (weight_var = s*s on our window mean), times
    # sigma for ckn_kernel's "linear" kernel sigma * c
    return _ckn.ckn_layer(s, kernel, sigma, pooling, d, poolfactor=p,
                          weight_scale=sigma if kernel == "linear" else 1.0)


def from_ckn_kernel(model, input_shape=None, *, ntk=False):
    """Architecture equal to ckn_kernel's ``compute_kernel_matrix(..., model=model)``.

    Parameters
    ----------
    model : list of dict
        ckn_kernel's model, one dict per layer with the keys ``npatch`` (patch
        size s, required), ``subsampling`` (d, required), ``poolfactor``
        (p, default d), ``pooling`` ("gaussian" (default), "average" or
        "strided"), ``kernel`` ("exp", "relu", "linear", "poly2", "poly3",
        "poly4"; default "relu" if ``ntk`` else "exp", as in ckn_kernel) and
        ``sigma`` (default 1.0; used by "exp", exp((c-1)/sigma**2), and
        "linear", sigma*c).
    input_shape : (H, W) or (H, W, C), optional
        If given, the architecture is validated for this image shape now
        (errors name the offending layer).
    ntk : bool, default=False
        Whether the kernel is meant to reproduce ckn_kernel's ``ntk=True``: it
        selects ckn_kernel's default kernel ("relu") and raises an
        :class:`~sklearn_convkernel.arch.ArchitectureError` if a layer uses
        another kernel (ckn_kernel defines the NTK for "relu" only).

    Returns
    -------
    Sequential
        With ``input_norm="sum"``.  ``kind="nngp"`` gives ckn_kernel's
        ``ntk=False`` kernel and ``kind="ntk"`` its ``ntk=True`` kernel.  For
        non-relu kernels ``kind="ntk"`` is the natural generalisation
        ``Q = T kappa'(c) + M`` (not available in ckn_kernel).

    Notes
    -----
    Each ckn layer ``(s, d, p, kernel, sigma)`` becomes

    ``Conv(s, padding=((s//2, s-1-s//2),)*2, weight_var=s*s)`` (the patch
    step: a window *sum*, zero padding, size preserved, even s reaching one
    further up/left; ``weight_var = s*s*sigma`` for "linear"), then the kernel
    (``ExpKernel(sigma)``, ``ArcCosKernel(1)`` for "relu", ``LinearKernel()``,
    ``PolyKernel(deg)``), then the pooling (``GaussianPool``, ``BoxPool`` for
    "average", ``StridedPool``); the network ends with ``Trace(), Dense()``.

    **NNGP.**  The Conv gives the patch Gram ``P_l = sum_window(G_{l-1})`` of
    the pooled previous layer (``G_0 = x^T y``, a channel sum); the kernel
    layer gives ``M_l = sqrt(P_l(x,x) P_l(y,y)) kappa(c_l)``; the pool gives
    ``G_l``; ``Trace`` sums the diagonal: ckn_kernel's ``tr G_L`` exactly.

    **NTK.**  ckn_kernel computes ``Q_l = T_l kappa'(c_l) + M_l`` with
    ``T_1 = P_1`` and ``T_l = sum_window(pool(Q_{l-1}))``, and returns
    ``tr pool(Q_L)``.  Our recursion (every Conv trained, pools untrained):
    after the Conv of layer l, ``Theta^c_l = sum_window(pool(Theta_{l-1}))
    + P_l``; after the kernel layer ``Theta_l = Theta^c_l kappa'(c_l)``.
    By induction ``Theta^c_l = T_l`` and ``Theta_l + M_l = Q_l``:
    at l = 1, ``Theta^c_1 = 0 + P_1 = T_1``; if ``Theta_{l-1} + M_{l-1} =
    Q_{l-1}``, then ``Theta^c_l = sum_window(pool(Theta_{l-1})) +
    sum_window(pool(M_{l-1})) = sum_window(pool(Q_{l-1})) = T_l``, hence
    ``Theta_l + M_l = T_l kappa'(c_l) + M_l = Q_l``.  The trained readout
    ``Trace(), Dense()`` returns ``tr pool(Theta_L) + tr pool(M_L) =
    tr pool(Q_L)``: ckn_kernel's NTK exactly.  (For "relu", ``kappa =
    kappa_1`` and ``kappa' = kappa_0 = (pi - arccos c)/pi``.  For "linear" the
    factor sigma sits in the Conv, so that ``M = sigma P`` and
    ``Theta = sigma T``, i.e. ``kappa' = sigma``.)

    Differences from ckn_kernel (its defects, not reproduced): it works in
    float32 only, asserts square images (and its column patch pass uses the
    height), floors inverse patch norms at 1e-6 (we use exactly 0 for a zero
    norm; the two differ only for norms below 1e-6), and its precomputed-norm
    path ignores the ``ntk`` flag.

    Examples
    --------
    >>> from sklearn_convkernel.presets import from_ckn_kernel
    >>> model = [
    ...     {'npatch': 3, 'subsampling': 2, 'pooling': 'gaussian', 'kernel': 'exp', 'sigma': 0.6},
    ...     {'npatch': 3, 'subsampling': 5, 'pooling': 'gaussian', 'kernel': 'exp', 'sigma': 0.6}]
    >>> arch = from_ckn_kernel(model, input_shape=(28, 28))
    >>> arch.output_shape((28, 28))
    (1, 1)
    """
    if isinstance(model, dict):
        model = [model]
    if not isinstance(model, (list, tuple)) or len(model) == 0:
        raise ArchitectureError(
            f"model must be a non-empty list of layer dicts (ckn_kernel's format), got {model!r}."
        )
    layers = []
    for i, spec in enumerate(model):
        layers.extend(_ckn_layer(i, spec, bool(ntk)))
    arch = Sequential(*layers, Trace(), Dense(weight_var=1.0), input_norm="sum")
    return _check_shape(arch, input_shape)


# ---------------------------------------------------------------------------
# Arora et al. CNTK
# ---------------------------------------------------------------------------


def arora_cntk(depth, gap=True, fix=False, input_shape=None):
    """Arora et al. (2019)'s CNTK (``CNTK.py --depth d --gap yes|no --fix yes|no``).

    Parameters
    ----------
    depth : int >= 2
        Their ``depth``: the number of convolutional layers plus one.
    gap : bool, default=True
        Global average pooling readout (mean of Theta over all position pairs)
        rather than the vanilla readout (trace of Theta).
    fix : bool, default=False
        Whether the first conv layer and the readout are fixed (not trained).
        (Their script's default is ``--fix yes``; their Table 1 uses
        ``--gap no --fix no`` for CNTK-V and ``--gap yes --fix yes`` for CNTK-GAP.)
    input_shape : optional
        Validate for this image shape now.  Any image size works (theirs is
        hard-coded to 32x32x3).

    Returns
    -------
    Sequential
        ``[Conv(3, weight_var=2), ReLU()] * (depth - 1)`` with
        ``input_norm="sum"``, then ``GlobalAvgPool()`` (gap) or ``Trace()``,
        then ``Dense()``.  ``kind="ntk"`` gives their kernel value;
        ``kind="nngp"`` the corresponding Sigma readout.

    Notes
    -----
    Their recursion on S (Sigma) and T (Theta): ``S = conv3(x^T x)`` (a 3x3
    SAME window *sum* of the channel-sum Gram), ``T = S`` (0 if fix); then
    ``depth - 1`` times ``BS = (2/9) E[relu relu](S)``,
    ``T = T (2/9) (pi - theta)/(2 pi) + BS``, ``S = BS``, each but the last
    followed by ``S, T = conv3(S), conv3(T)``; if fix, ``T -= S``; output
    ``mean(T)`` (gap) or ``trace(T)``.  Ours with ``weight_var = 2`` on our
    window *mean* multiplies the window sum by 2/9; by 1-homogeneity of the
    ReLU expectation our K after each ReLU equals their BS and our Theta
    after each ReLU plus K equals their T, so the readout ``GlobalAvgPool()
    | Trace()`` followed by a trained ``Dense()`` (``+ K``) gives ``mean(T)``
    | ``trace(T)``; an untrained first Conv gives their ``T = 0`` start and an
    untrained Dense their ``T -= S``.  Equivalently, with mean inputs,
    Arora(gap) = C * nt and Arora(vanilla) = C * H * W * nt for the
    neural-tangents network ``[Conv(W_std=sqrt(2)), Relu()] * (depth-1) +
    GlobalAvgPool() | Flatten() + Dense(W_std=1)``.
    """
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 2:
        raise ArchitectureError(
            f"arora_cntk: depth must be an int >= 2 (number of conv layers + 1), got {depth!r}."
        )
    layers = []
    for i in range(int(depth) - 1):
        layers += [Conv(3, padding="same", weight_var=2.0, trainable=not (fix and i == 0)),
                   ReLU()]
    layers.append(GlobalAvgPool() if gap else Trace())
    layers.append(Dense(weight_var=1.0, trainable=not fix))
    return _check_shape(Sequential(*layers, input_norm="sum"), input_shape)


# ---------------------------------------------------------------------------
# cnn_gp (Garriga-Alonso et al.)
# ---------------------------------------------------------------------------


def _cg_pair(value, what):
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (_positive_int(value[0], what), _positive_int(value[1], what))
    v = _positive_int(value, what)
    return (v, v)


class cnn_gp:
    """Mirror of the API of ``cnn_gp`` (Garriga-Alonso, Aitchison, Rasmussen, ICLR 2019).

    ``cnn_gp.Sequential``, ``cnn_gp.Conv2d``, ``cnn_gp.ReLU``, ``cnn_gp.Sum``
    and ``cnn_gp.resnet_block`` take cnn_gp's arguments and return our
    architectures (layers of :mod:`sklearn_convkernel.arch`) whose kernels
    equal cnn_gp's.  cnn_gp's conventions: channel *mean* at the input;
    ``Conv2d``: ``K' = var_weight * mean_window(K) + var_bias``; ``ReLU``:
    ``E[relu(u) relu(v)]`` (no factor 2); ``Sum`` adds branch kernels (also
    after a ReLU, as in the paper's residual network); the dense readout is a
    ``Conv2d`` whose window covers the whole map with ``padding=0``.

    Padding ``"same"`` is cnn_gp's, not TensorFlow's: ``dilation *
    (kernel_size // 2)`` zeros on both sides (PyTorch style), with the first
    tap of an even window dropped, i.e. taps at offsets ``dilation *
    (-((k-1)//2) .. k//2)``.  With stride 1 and dilation 1 this is
    TensorFlow's SAME; with a stride (e.g. the stride-2 ResNet blocks) the
    windows are centred on ``stride * a`` where TensorFlow's SAME would start
    them there, so we translate it to explicit pads.

    Examples
    --------
    >>> from sklearn_convkernel.presets import cnn_gp
    >>> arch = cnn_gp.Sequential(
    ...     cnn_gp.Conv2d(kernel_size=3, var_weight=2.0), cnn_gp.ReLU(),
    ...     cnn_gp.Conv2d(kernel_size=28, padding=0))
    >>> arch.output_shape((28, 28))
    (1, 1)
    """

    def __init__(self):  # pragma: no cover - a namespace, not a class to instantiate
        raise TypeError("cnn_gp is a namespace: call cnn_gp.Conv2d(...), cnn_gp.ReLU(), ...")

    @staticmethod
    def Conv2d(kernel_size, stride=1, padding="same", dilation=1, var_weight=1.0,
               var_bias=0.0, in_channel_multiplier=1, out_channel_multiplier=1):
        """cnn_gp's ``Conv2d``: ``K' = var_weight * mean_window(K) + var_bias``.

        ``kernel_size``, ``stride``, ``dilation`` are ints (or (h, w) pairs,
        an extension); ``padding`` is ``"same"`` (cnn_gp's, see
        :class:`cnn_gp`) or an int (zeros on every side).  The channel
        multipliers only matter for finite networks and are accepted and ignored.
        """
        k = _cg_pair(kernel_size, "cnn_gp.Conv2d: kernel_size")
        s = _cg_pair(stride, "cnn_gp.Conv2d: stride")
        d = _cg_pair(dilation, "cnn_gp.Conv2d: dilation")
        if isinstance(padding, str):
            if padding != "same":
                raise ArchitectureError(
                    f"cnn_gp.Conv2d: padding must be 'same' or a non-negative int, got {padding!r}."
                )
            pads = tuple((d[ax] * ((k[ax] - 1) // 2), d[ax] * (k[ax] // 2)) for ax in range(2))
        elif (isinstance(padding, numbers.Integral) and not isinstance(padding, bool)
              and padding >= 0):
            pads = ((int(padding), int(padding)), (int(padding), int(padding)))
        else:
            raise ArchitectureError(
                f"cnn_gp.Conv2d: padding must be 'same' or a non-negative int, got {padding!r}."
            )
        return Conv(k, stride=s, dilation=d, padding=pads, weight_var=var_weight,
                    bias_var=var_bias)

    @staticmethod
    def ReLU():
        """cnn_gp's ``ReLU``: ``E[relu(u) relu(v)]`` (no factor 2)."""
        return ReLU()

    @staticmethod
    def Sequential(*mods):
        """cnn_gp's ``Sequential(*mods)`` (channel-mean input; empty = identity)."""
        return Sequential(*mods)

    @staticmethod
    def Sum(mods):
        """cnn_gp's ``Sum(mods)``: a list of branches whose kernels add up."""
        if isinstance(mods, Layer) or not hasattr(mods, "__iter__"):
            raise ArchitectureError(
                f"cnn_gp.Sum takes a list of branches, e.g. Sum([Sequential(), Conv2d(3)]), "
                f"got {mods!r}."
            )
        return Sum(*mods)

    @staticmethod
    def resnet_block(stride=1, projection_shortcut=False, multiplier=1):
        """cnn_gp's ``resnet_block``.

        Without projection (and stride 1): ``Sum([Sequential(), Sequential(ReLU(),
        Conv2d(3, stride), ReLU(), Conv2d(3))])``; otherwise ``Sequential(ReLU(),
        Sum([Conv2d(1, stride), Sequential(Conv2d(3, stride), ReLU(), Conv2d(3))]))``.
        ``multiplier`` only sets finite channel counts and is ignored.
        """
        C = cnn_gp.Conv2d
        if stride == 1 and not projection_shortcut:
            return Sum(Sequential(),
                       Sequential(ReLU(), C(3, stride=stride), ReLU(), C(3)))
        return Sequential(
            ReLU(),
            Sum(C(1, stride=stride), Sequential(C(3, stride=stride), ReLU(), C(3))),
        )


def _shape2(input_shape):
    if input_shape is None:
        raise ArchitectureError("input_shape must be given as (H, W) or (H, W, C).")
    try:
        H, W = (int(v) for v in tuple(input_shape)[:2])
    except (TypeError, ValueError):
        raise ArchitectureError(f"input_shape must be (H, W) or (H, W, C), got {input_shape!r}.")
    if min(H, W) < 1:
        raise ArchitectureError(f"input_shape must be positive, got {input_shape!r}.")
    return H, W


def cnn_gp_convnet(input_shape=(28, 28), *, n_layers=7, kernel_size=7, var_weight=2.79,
                   var_bias=7.86):
    """The paper's "ConvNet GP" (MNIST test error 1.03%).

    cnn_gp's ``configs/mnist_paper_convnet_gp.py``: ``n_layers`` times
    ``[Conv2d(kernel_size, "same", var_weight=var_weight * kernel_size**2,
    var_bias=var_bias), ReLU()]`` then the dense readout
    ``Conv2d(kernel_size=28, padding=0, var_weight=var_weight,
    var_bias=var_bias)`` -- here a window covering the whole ``input_shape``
    map, so that any image size works.
    """
    H, W = _shape2(input_shape)
    n_layers = _positive_int(n_layers, "cnn_gp_convnet: n_layers")
    C = cnn_gp.Conv2d
    layers = []
    for _ in range(n_layers):
        layers += [C(kernel_size, padding="same", var_weight=var_weight * kernel_size ** 2,
                     var_bias=var_bias), ReLU()]
    layers.append(C((H, W), padding=0, var_weight=var_weight, var_bias=var_bias))
    return _check_shape(Sequential(*layers), (H, W))


def cnn_gp_residual(input_shape=(28, 28), *, n_blocks=8, kernel_size=4, var_weight=7.27,
                    var_bias=4.69):
    """The paper's "Residual CNN GP" (MNIST test error 0.96%).

    cnn_gp's ``configs/mnist_paper_residual_cnn_gp.py``: ``n_blocks`` times
    ``Sum([Sequential(), Sequential(Conv2d(kernel_size, "same",
    var_weight * kernel_size**2, var_bias), ReLU())])`` (the branches are summed
    *after* the ReLU, as in the paper, whose kernel is valid though not the
    limit of a network), then ``Conv2d(kernel_size, "same", ...)``, ``ReLU()``
    and the dense readout ``Conv2d(28, padding=0, var_weight, var_bias)``
    (window = the whole map).  Note the even kernel size 4: "same" reaches one
    further down/right.
    """
    H, W = _shape2(input_shape)
    n_blocks = _positive_int(n_blocks, "cnn_gp_residual: n_blocks")
    C = cnn_gp.Conv2d
    vw = var_weight * kernel_size ** 2
    layers = [
        Sum(Sequential(), Sequential(C(kernel_size, padding="same", var_weight=vw,
                                       var_bias=var_bias), ReLU()))
        for _ in range(n_blocks)
    ]
    layers += [C(kernel_size, padding="same", var_weight=vw, var_bias=var_bias), ReLU(),
               C((H, W), padding=0, var_weight=var_weight, var_bias=var_bias)]
    return _check_shape(Sequential(*layers), (H, W))


def cnn_gp_resnet32(input_shape=(28, 28)):
    """The paper's "ResNet-32 GP" (MNIST test error 0.84%).

    cnn_gp's ``configs/mnist_as_tf.py`` (the configuration of the paper's
    experiments): ``Conv2d(3)``, three stages of five ``resnet_block``s (the
    first of each with a projection shortcut, strides 1, 2, 2), then
    ``Conv2d(7, padding=0)`` (a mean over the final 7x7 map, standing in for
    average pooling), ``ReLU()``, ``Conv2d(1, padding=0)``.  All variances are
    cnn_gp's defaults (weight 1, bias 0).  For other image sizes the
    ``Conv2d(7)`` window is the size of the final map.
    """
    H, W = _shape2(input_shape)
    C, block = cnn_gp.Conv2d, cnn_gp.resnet_block
    body = [C(3)]
    for stage_stride in (1, 2, 2):
        body.append(block(stride=stage_stride, projection_shortcut=True))
        body += [block(stride=1, projection_shortcut=False) for _ in range(4)]
    h, w = Sequential(*body).output_shape((H, W))
    arch = Sequential(*body, C((h, w), padding=0), ReLU(), C(1, padding=0))
    return _check_shape(arch, (H, W))


# ---------------------------------------------------------------------------
# Myrtle (Shankar et al. 2020), neural-tangents conventions
# ---------------------------------------------------------------------------

_MYRTLE_FACTORS = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def myrtle(depth=5, *, weight_var=2.0, bias_var=0.0, final_pool="global", input_shape=None):
    """Myrtle CNTK / CNN-GP architecture (Shankar et al., 2020) in neural-tangents terms.

    Parameters
    ----------
    depth : {5, 7, 10}
        Number of layers; the three stages have (2, 1, 1), (2, 2, 2) or
        (3, 3, 3) ``[Conv 3x3 SAME, ReLU]`` pairs.
    weight_var, bias_var : float, default 2.0 and 0.0
        ``W_std**2`` and ``b_std**2`` of every Conv and of the readout Dense
        (the published kernel uses ``W_std = sqrt(2)``, ``b_std = 0``).
    final_pool : {"global", "avg"}, default="global"
        The published network ends with three ``AvgPool((2, 2), strides=(2,
        2))`` on the 8x8 map of 32x32 inputs, i.e. a global average.
        ``"global"`` uses ``GlobalAvgPool()`` instead: identical for 32x32
        inputs and defined for any input of at least 8x8 (and non-square
        ones).  ``"avg"`` keeps the three 2x2 pools literally (inputs >= 32).
    input_shape : optional
        Validate for this image shape now.

    Returns
    -------
    Sequential
        Channel-mean input: ``[Conv(3, weight_var, bias_var), ReLU()] * n1,
        AvgPool(2, stride=2), [...] * n2, AvgPool(2, stride=2), [...] * n3``,
        the final pooling, ``Flatten()`` (when ``"avg"``) and
        ``Dense(weight_var, bias_var)``.
    """
    if depth not in _MYRTLE_FACTORS or isinstance(depth, bool):
        raise ArchitectureError(f"myrtle: depth must be 5, 7 or 10, got {depth!r}.")
    if final_pool not in ("global", "avg"):
        raise ArchitectureError(
            f"myrtle: final_pool must be 'global' or 'avg', got {final_pool!r}."
        )
    n1, n2, n3 = _MYRTLE_FACTORS[depth]

    def block(n):
        out = []
        for _ in range(n):
            out += [Conv(3, padding="same", weight_var=weight_var, bias_var=bias_var), ReLU()]
        return out

    layers = block(n1) + [AvgPool(2, stride=2)] + block(n2) + [AvgPool(2, stride=2)] + block(n3)
    if final_pool == "global":
        layers.append(GlobalAvgPool())
    else:
        layers += [AvgPool(2, stride=2)] * 3 + [Flatten()]
    layers.append(Dense(weight_var=weight_var, bias_var=bias_var))
    return _check_shape(Sequential(*layers), input_shape)



# ---------------------------------------------------------------------------
# Li et al. (2019): CNTK / CNN-GP with local average pooling (LAP)
# ---------------------------------------------------------------------------


def li_lap(depth=5, max_shift=1, *, one_sided=False, input_shape=None):
    """CNTK / CNN-GP with local average pooling (Li et al., 2019, "Enhanced CNTKs").

    The vanilla CNTK network of :func:`~sklearn_convkernel.cntk_architecture`
    (``depth - 1`` times ``[Conv(3, "same", weight_var=2), ReLU()]``, channel
    mean at the input) whose flatten read-out is replaced by Li et al.'s local
    average pooling, :class:`~sklearn_convkernel.arch.ShiftAverage`: the
    flatten kernel averaged over shifts of both images by up to
    ``max_shift`` pixels, then ``Dense()``.  The two kernels of the paper are
    the two kinds of this one architecture:

    * ``kind="ntk"``: **CNTK-LAP**, the most accurate kernel measured with
      this package on Fashion-MNIST: depth 5, ``max_shift=1``, 85.17 % on the
      10 000 test images with 1000 training images (vanilla CNTK 82.42 %, RBF
      SVC 81.48 %; ``benchmarks/results/full_fashion_mnist.md``, model
      ``cntk-lap1``, depth and ridge chosen by 3-fold CV on the training
      images); on 16 k-means patch channels
      (``PatchFeatures(n_filters=16, patch_size=5)`` in front, model
      ``cntk-lap1-patches``): 85.92 % with 1000 and 90.16 % with 5000
      training images (depth 2 and 3 by CV);
    * ``kind="nngp"``: **CNN-GP-LAP**, Li et al.'s CNN-GP (the Gaussian
      process of the same network, only the read-out trained), the kernel of
      their best CIFAR-10 result together with flips.

    Equal to ``cntk_architecture(depth, gap=False, max_shift=max_shift)[0]``
    (the same network as ``CNTKClassifier(depth, gap=False,
    max_shift=max_shift)``); this preset adds the one-sided variant, the
    validation of ``input_shape`` and the measured costs below.

    **Flips** are not part of an architecture: Li et al.'s horizontal flips
    are the ``augment="hflip"`` argument of the computation, which averages
    the kernel over a left-right flip of one image (``(K(x, y) + K(x, flip
    y)) / 2``, about twice the cost).  This network is flip-equivariant (odd
    3x3 windows with symmetric zero padding, a symmetric read-out), so the
    flip-averaged kernel is positive semi-definite::

        conv_kernel(X, architecture=li_lap(), kind="ntk", augment="hflip")
        CNTKClassifier(architecture=li_lap(), augment="hflip")
        CNNGPClassifier(architecture=li_lap(), augment="hflip")   # CNN-GP-LAP
        sklearn-convkernel gram X.npy --architecture li_lap:depth=5,max_shift=1 \\
            --kind ntk --augment hflip --out K.npy

    (On Fashion-MNIST flips did not help the vanilla CNTK:
    ``benchmarks/results/flip_accuracy.md``; search ``augment`` in a
    ``GridSearchCV`` rather than assume it.)

    Parameters
    ----------
    depth : int >= 2, default=5
        Layers with weights, the read-out included (Arora et al.'s depth).
    max_shift : int or (int, int), default=1
        Largest shift per axis (Li et al.'s LAP window ``c`` is ``2 max_shift
        + 1`` wide).  0 gives the vanilla (flatten) CNTK.
    one_sided : bool, default=False
        Shift one image only (box weights over ``|d| <= max_shift``): fewer
        displacements, hence cheaper, but not positive semi-definite in
        general (see :class:`~sklearn_convkernel.arch.ShiftAverage`).
    input_shape : (H, W) or (H, W, C), optional
        Validate the architecture for this image shape now.

    Returns
    -------
    Sequential

    Notes
    -----
    **Cost per kernel entry** on 28x28x1 images (Fashion-MNIST), relative to
    the flatten (vanilla) CNTK of the same depth, and in entries per second
    of one thread, measured by ``python3 benchmarks/bench_presets.py`` on an
    Intel(R) Xeon(R) Processor: ``conv_kernel(X, Y, n_jobs=1)`` of 16 x m
    images, best of 3 repeats, CPU time of the process (the machine was
    shared with other jobs, load 8-18 on 2 cores, so the wall clock was 2-6x
    slower and the figures vary by about +-30 % from run to run):

    ==============================================  ===============  ===============
    kernel on 28x28x1 images                        float32          float64
    ==============================================  ===============  ===============
    flatten CNTK, depth 5 (the reference)           1x, 65 800/s     1x, 49 800/s
    ``li_lap(5, 1)``, ``kind="ntk"`` (CNTK-LAP)     25x, 2 700/s     27x, 1 800/s
    ``li_lap(5, 1)``, ``kind="nngp"`` (CNN-GP-LAP)  17x, 3 800/s     31x, 1 600/s
    ``li_lap(5, 1)``, ntk, ``augment="hflip"``      50x, 1 300/s     85x, 590/s
    ``li_lap(5, 1, one_sided=True)``, ntk           13x, 5 200/s     11x, 4 500/s
    ``li_lap(5, 2)``, ntk                           73x, 900/s       85x, 580/s
    ==============================================  ===============  ===============

    The cost grows like the number of displacements the read-out weights,
    ``(4 max_shift + 1)**2`` two-sided (25 for ``max_shift=1``, 81 for 2)
    and ``(2 max_shift + 1)**2`` one-sided (9), each about one flatten
    kernel; flips double it.  With ``n_jobs=2`` the full Fashion-MNIST run
    with 1000 training images (``cntk-lap1`` above) took 78.5 min on the
    same shared machine.

    Examples
    --------
    >>> from sklearn_convkernel.presets import li_lap
    >>> arch = li_lap(depth=5, max_shift=1, input_shape=(28, 28))
    >>> arch.layers[-2]
    ShiftAverage(max_shift=(1, 1), one_sided=False, circular=False)
    """
    from ._estimators import cntk_architecture

    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 2:
        raise ArchitectureError(
            f"li_lap: depth must be an int >= 2 (number of conv layers + 1), got {depth!r}."
        )
    readout = ShiftAverage(max_shift, one_sided=one_sided)  # validates max_shift, one_sided
    arch, _ = cntk_architecture(int(depth), gap=False, max_shift=max_shift)
    arch = Sequential(*arch.layers[:-2], readout, arch.layers[-1], input_norm=arch.input_norm)
    return _check_shape(arch, input_shape)
