"""The one progress mechanism of the package: tqdm bars, shown only when asked.

Every long computation (Gram tiles, kernel-cache fills, Nyström fits, the
command line) reports through :func:`progress`; ``verbose=0`` (the default in
the Python API) shows nothing, ``verbose > 0`` a bar on stderr with the rate
and the remaining time.
"""

from __future__ import annotations

import sys


class _Silent:
    """A progress bar that shows nothing."""

    def update(self, n=1):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def progress(total, desc, verbose, unit="entries", initial=0):
    """A context-managed progress bar (``update(n)``, ``close()``).

    Parameters
    ----------
    total : int
        Work units in all (kernel entries by default).
    desc : str
        What is computed, shown before the bar.
    verbose : int
        0 (or False): no output at all; > 0: a tqdm bar on stderr.
    unit : str
    initial : int
        Units already done (a resumed computation).
    """
    if not verbose:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, initial=initial,
                file=sys.stderr, mininterval=0.5, smoothing=0.1, dynamic_ncols=True)
