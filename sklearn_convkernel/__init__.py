"""sklearn-convkernel: exact convolutional kernels (CKN, CNTK, CNN-GP) with a scikit-learn API.

Data flows one way: an architecture (:mod:`sklearn_convkernel.arch`) is planned
for an input shape, run by a compiled C++ core (per-image self passes, then
pair passes), assembled into tiled Gram matrices (:func:`conv_kernel`, shared
through a :class:`KernelCache`) and used by the transformer :class:`ConvKernel`
and the CKN / CNTK / CNN-GP estimators.
"""

from importlib import metadata as _metadata

from sklearn_convkernel import arch, presets
from sklearn_convkernel._cache import KernelCache, get_default_cache
from sklearn_convkernel._conv_nystroem import ConvNystroem
from sklearn_convkernel._estimators import (
    CKNClassifier,
    CKNRegressor,
    CNNGPClassifier,
    CNNGPRegressor,
    CNTKClassifier,
    CNTKRegressor,
    ckn_architecture,
    cnngp_architecture,
    cntk_architecture,
)
from sklearn_convkernel._gram import conv_kernel
from sklearn_convkernel._nystrom import CKNFeatures
from sklearn_convkernel._preprocessing import PatchFeatures, ZCAWhitening
from sklearn_convkernel._serialize import architecture_from_json, architecture_to_json
from sklearn_convkernel._store import load_gram
from sklearn_convkernel._supervised import SupervisedCKNClassifier
from sklearn_convkernel._transformers import ConvKernel, default_architecture

try:  # the installed distribution's version (written once, in meson.build)
    __version__ = _metadata.version("sklearn-convkernel")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "arch",
    "presets",
    "conv_kernel",
    "load_gram",
    "architecture_to_json",
    "architecture_from_json",
    "ConvKernel",
    "ConvNystroem",
    "KernelCache",
    "get_default_cache",
    "default_architecture",
    "CKNClassifier",
    "CKNRegressor",
    "CKNFeatures",
    "SupervisedCKNClassifier",
    "ZCAWhitening",
    "PatchFeatures",
    "CNNGPClassifier",
    "CNNGPRegressor",
    "CNTKClassifier",
    "CNTKRegressor",
    "ckn_architecture",
    "cnngp_architecture",
    "cntk_architecture",
    "__version__",
]
