"""Shared pytest configuration.

Run the tests against an *installed* package: ``pytest tests`` from the
repository root (see README.md). ``python -m pytest`` from the root would put
the source tree first on sys.path; the source tree has no compiled ``_core``.
"""

import importlib.util
import os
import shutil
import tempfile

import pytest

_SIMD_CACHE = None


def pytest_configure(config):
    # the engine variant's cached choice (sklearn_convkernel._simd) goes to a
    # directory of the session, not the user's cache (child processes inherit it)
    global _SIMD_CACHE
    if not os.environ.get("SKLEARN_CONVKERNEL_CACHE_DIR"):
        _SIMD_CACHE = tempfile.mkdtemp(prefix="convkernel_simd_")
        os.environ["SKLEARN_CONVKERNEL_CACHE_DIR"] = _SIMD_CACHE
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


def pytest_unconfigure(config):
    if _SIMD_CACHE is not None:
        shutil.rmtree(_SIMD_CACHE, ignore_errors=True)
