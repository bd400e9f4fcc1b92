"""sklearn-convkernel: exact convolutional kernels (CKN, CNTK, CNN-GP) with a scikit-learn API.

Data flows one way: an architecture (:mod:`sklearn_convkernel.arch`) is planned
for an input shape, run by a compiled C++ core (per-image self passes, then
pair passes), and assembled into tiled Gram matrices by :func:`conv_kernel`.
"""

from sklearn_convkernel import arch
from sklearn_convkernel._gram import conv_kernel

__version__ = "0.1.0"

__all__ = ["arch", "conv_kernel", "__version__"]
