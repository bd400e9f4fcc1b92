"""Shared pytest configuration.

Run the tests against an *installed* package: ``pytest tests`` from the
repository root (see README.md). ``python -m pytest`` from the root would put
the source tree first on sys.path; the source tree has no compiled ``_core``.
"""

import importlib.util

import pytest


def pytest_configure(config):
    try:
        import sklearn_convkernel._core  # noqa: F401
    except ImportError as exc:
        spec = importlib.util.find_spec("sklearn_convkernel")
        where = spec.origin if spec is not None else "nowhere"
        raise pytest.UsageError(
            f"cannot import the compiled module sklearn_convkernel._core ({exc}); "
            f"sklearn_convkernel resolves to {where}. Install the package first "
            "(pip install . or pip install --no-build-isolation -e .) and run "
            "'pytest tests' from the repository root."
        ) from exc
