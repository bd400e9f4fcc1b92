"""sklearn-convkernel: exact convolutional kernels (CKN, CNTK, CNN-GP) with a scikit-learn API.

Data flows one way: an architecture (:mod:`sklearn_convkernel.arch`) is planned
for an input shape, run by a compiled C++ core (per-image self passes, then
pair passes), assembled into tiled Gram matrices (:func:`conv_kernel`, shared
through a :class:`KernelCache`) and used by the transformer :class:`ConvKernel`
and the CKN / CNTK / CNN-GP estimators.
"""

from sklearn_convkernel import arch, presets
from sklearn_convkernel._cache import KernelCache, get_default_cache
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
from sklearn_convkernel._finite import FiniteNetwork, empirical_kernel, sample_network
from sklearn_convkernel._gram import conv_kernel
from sklearn_convkernel._nystrom import CKNFeatures
from sklearn_convkernel._preprocessing import PatchFeatures, ZCAWhitening
from sklearn_convkernel._supervised import SupervisedCKNClassifier
from sklearn_convkernel._transformers import ConvKernel, default_architecture

__version__ = "0.1.0"

__all__ = [
    "arch",
    "presets",
    "conv_kernel",
    "sample_network",
    "empirical_kernel",
    "FiniteNetwork",
    "ConvKernel",
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
