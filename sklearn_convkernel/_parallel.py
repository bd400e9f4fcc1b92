"""The package's one parallel-execution and BLAS-thread policy.

* :func:`parallel` is the only way the package runs tasks in parallel: a
  :class:`joblib.Parallel` that *prefers* threads (the compiled core and
  NumPy's BLAS release the GIL) but never forces them, so a backend chosen by
  the caller with :func:`joblib.parallel_config` (``"loky"``, ``"dask"``,
  ``"sequential"``, a registered one...) and its ``n_jobs`` take precedence.
  Tasks must therefore be functions of picklable arguments that *return*
  their results (no writes into shared arrays).
* :func:`blas_limit` is the only BLAS-thread policy: one BLAS thread while the
  package's own workers run GEMMs side by side or the systems are small (on
  busy cores multi-threaded BLAS on such GEMMs is many times slower), the
  library default for dense solves of order ``>= BLAS_THREADED_MIN_SIZE``.
"""

from __future__ import annotations

from joblib import Parallel
from threadpoolctl import threadpool_limits

__all__ = ["parallel", "blas_limit", "BLAS_THREADED_MIN_SIZE"]

#: Order of a dense system from which multi-threaded BLAS pays off.
BLAS_THREADED_MIN_SIZE = 1500


def parallel(n_jobs, *, unordered=False):
    """A :class:`joblib.Parallel` preferring threads, honouring ``parallel_config``.

    Parameters
    ----------
    n_jobs : int or None
        joblib semantics (None: the ``parallel_config`` value, else 1).
    unordered : bool, default=False
        Results in completion order, as they come (``return_as=
        "generator_unordered"``, joblib >= 1.4), when the backend supports it;
        otherwise (and when False) a list in task order.
    """
    if unordered:
        try:
            return Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator_unordered")
        except ValueError:  # a backend without result generators, e.g. "multiprocessing"
            pass
    return Parallel(n_jobs=n_jobs, prefer="threads")


def blas_limit(size=None):
    """Context manager applying the BLAS-thread policy.

    Parameters
    ----------
    size : int, default=None
        Order of the dense system about to be factorised or solved; None for
        work that the package parallelises itself (one BLAS thread).
    """
    threaded = size is not None and size >= BLAS_THREADED_MIN_SIZE
    return threadpool_limits(limits=None if threaded else 1, user_api="blas")
