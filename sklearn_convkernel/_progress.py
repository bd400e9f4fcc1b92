"""The one progress mechanism of the package: tqdm bars, shown only when asked.

Every long computation (Gram tiles, kernel-cache fills, Nyström fits, the
command line) reports through :func:`progress`; ``verbose=0`` (the default in
the Python API) shows nothing, ``verbose > 0`` a bar on stderr with the rate
and the remaining time.  When stderr is a file or a pipe (a log), a bar redrawn
twice a second would pile up there: the same report is then written as plain
lines, one every :data:`LOG_INTERVAL` seconds and one at the end.
"""

from __future__ import annotations

import io
import os
import stat
import sys
import time

#: Seconds between the lines of a progress report written to a file or a pipe.
LOG_INTERVAL = 30.0

_LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


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


class _LogLines(_Silent):
    """A progress report as plain lines: at most one per ``interval`` seconds, and the last."""

    def __init__(self, total, desc, unit, initial, stream, interval):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.initial = initial
        self.stream, self.interval = stream, interval
        self.start = self.last = time.monotonic()
        self.shown = None  # the count of the last line written

    def update(self, n=1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def close(self):
        if self.shown != self.n:
            self._line(time.monotonic())

    def _line(self, now):
        from tqdm import tqdm

        elapsed = now - self.start
        done = self.n - self.initial
        text = tqdm.format_meter(
            self.n, self.total, elapsed, prefix=self.desc, unit=self.unit, unit_scale=True,
            rate=done / elapsed if done and elapsed > 0 else None, initial=self.initial,
            bar_format=_LOG_FORMAT)
        self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = self.n

    def __exit__(self, *exc):
        self.close()


def _is_log(stream):
    """True when ``stream`` is a file stream on a regular file or a pipe.

    A terminal is not a log, nor are the streams of a notebook kernel or of
    ``capsys`` (not ``io.TextIOWrapper`` objects), which show tqdm's redraws.
    """
    if not isinstance(stream, io.TextIOWrapper):
        return False
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):  # no file descriptor, or closed
        return False
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode)


def progress(total, desc, verbose, unit="entries", initial=0):
    """A context-managed progress bar (``update(n)``, ``close()``).

    Parameters
    ----------
    total : int
        Work units in all (kernel entries by default).
    desc : str
        What is computed, shown before the bar.
    verbose : int
        0 (or False): no output at all; > 0: a tqdm bar on stderr (lines
        every :data:`LOG_INTERVAL` seconds when stderr is a file or a pipe).
    unit : str
    initial : int
        Units already done (a resumed computation).
    """
    if not verbose:
        return _Silent()
    stream = sys.stderr
    if _is_log(stream):
        return _LogLines(total, desc, unit, initial, stream, LOG_INTERVAL)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, initial=initial,
                file=stream, mininterval=0.5, smoothing=0.1, dynamic_ncols=True)
