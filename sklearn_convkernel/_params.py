"""Parameter constraints shared by the kernel transformer and the kernel estimators.

:class:`~sklearn_convkernel.ConvKernel` and every kernel-ridge estimator take
``image_shape``, ``dtype``, ``n_jobs``, ``cache``, ``verbose`` and ``augment`` with the same
meaning; their scikit-learn ``_parameter_constraints`` include these.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import StrOptions

from sklearn_convkernel._augment import AUGMENTS
from sklearn_convkernel._cache import KernelCache

__all__ = ["COMMON_CONSTRAINTS"]

COMMON_CONSTRAINTS = {
    "image_shape": [tuple, list, None],
    "dtype": [StrOptions({"float64", "float32"}), type, np.dtype],
    "n_jobs": [Integral, None],
    "cache": [StrOptions({"auto"}), KernelCache, None],
    "verbose": ["verbose"],
    "augment": [StrOptions(set(AUGMENTS)), None],
}
