"""scikit-learn's common estimator checks on every public estimator and transformer.

Estimators are discovered from ``sklearn_convkernel.__all__``; each is
checked with cheap settings on 1-D "images" (``image_shape=(1, -1)``: each
row of the checks' 2-D data is a one-row image), since the checks feed flat
data with arbitrary feature counts.
"""

import inspect

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sklearn_convkernel


def all_estimators():
    """Public estimator classes of the package."""
    found = []
    for name in sklearn_convkernel.__all__:
        obj = getattr(sklearn_convkernel, name)
        if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
            found.append(obj)
    return sorted(found, key=lambda c: c.__name__)


# cheap parameters for the checks (small networks valid on 1 x n images)
CHECK_PARAMS = {
    "ConvKernel": dict(kind="ntk"),
    "ConvNystroem": dict(kind="ntk", n_components=5, random_state=0),
    "CNTKClassifier": dict(depth=2),
    "CNTKRegressor": dict(depth=2),
    "CNNGPClassifier": dict(depth=2, kernel_size=3),
    "CNNGPRegressor": dict(depth=2, kernel_size=3),
    "CKNClassifier": dict(depth=1, pooling="average", subsampling=1),
    "CKNRegressor": dict(depth=1, pooling="average", subsampling=1),
    "CKNFeatures": dict(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,),
                        pooling="average", n_patches=200, random_state=0),
    "SupervisedCKNClassifier": dict(n_filters=(4,), patch_sizes=(3,), subsamplings=(1,),
                                    pooling="average", n_patches=200, max_iter=2,
                                    random_state=0),
    "ZCAWhitening": dict(),
    "PatchFeatures": dict(n_filters=3, patch_size=1, n_patches=200, random_state=0),
}

# {estimator name: {check name: reason}}
EXPECTED_FAILED_CHECKS = {}


def _instances():
    for cls in all_estimators():
        params = dict(CHECK_PARAMS.get(cls.__name__, {}))
        if "cache" in cls().get_params():
            params["cache"] = None
        yield cls(image_shape=(1, -1), **params)


def test_every_estimator_has_check_params():
    assert {c.__name__ for c in all_estimators()} == set(CHECK_PARAMS)


@parametrize_with_checks(
    list(_instances()),
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
