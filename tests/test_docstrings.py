"""Run the doctest examples of the public docstrings (they must stay true)."""

import doctest
import importlib

import pytest

MODULES = [
    "sklearn_convkernel._gram",
    "sklearn_convkernel._store",
    "sklearn_convkernel._serialize",
    "sklearn_convkernel._conv_nystroem",
    "sklearn_convkernel._transformers",
    "sklearn_convkernel._estimators",
    "sklearn_convkernel._preprocessing",
    "sklearn_convkernel._supervised",
    "sklearn_convkernel.arch",
    "sklearn_convkernel.presets",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
