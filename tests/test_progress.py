"""One progress mechanism (tqdm on stderr, plain lines in a log): shown with verbose > 0, silent otherwise."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV

from sklearn_convkernel import CNTKClassifier, ConvKernel, KernelCache, conv_kernel
from sklearn_convkernel.arch import Conv, Dense, GlobalAvgPool, ReLU, Sequential

ARCH = Sequential(Conv(3, weight_var=2.0), ReLU(), GlobalAvgPool(), Dense())


def _data(n=12):
    rng = np.random.default_rng(0)
    return rng.random((n, 6, 6, 1)), np.arange(n) % 2


@pytest.mark.parametrize("out", [None, "path"])
def test_conv_kernel_reports_only_when_verbose(capsys, tmp_path, out):
    X, _ = _data()
    target = None if out is None else tmp_path / "K.npy"
    conv_kernel(X, architecture=ARCH, out=target)
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    if target is not None:
        target = tmp_path / "K2.npy"
    conv_kernel(X, X[:3], architecture=ARCH, verbose=1, out=target)
    loud = capsys.readouterr()
    assert loud.out == ""
    assert "self passes" in loud.err and "kernel entries" in loud.err
    # rate and the total number of entries: 12 x 3 off-diagonal pairs
    assert "entries/s" in loud.err and "36.0/36.0" in loud.err


@pytest.mark.parametrize("cache", [None, "own"])
def test_estimator_fits_report_kernel_progress(capsys, cache):
    X, y = _data()
    cache = KernelCache() if cache == "own" else None
    CNTKClassifier(architecture=ARCH, cache=cache).fit(X, y)
    assert capsys.readouterr().err == ""
    cache = KernelCache() if cache is not None else None
    CNTKClassifier(architecture=ARCH, cache=cache, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "kernel entries" in err and "entries/s" in err


def test_grid_search_cache_fills_report_progress(capsys):
    X, y = _data()
    cache = KernelCache()
    search = GridSearchCV(CNTKClassifier(architecture=ARCH, cache=cache, verbose=1),
                          {"alpha": [1e-3, 1e-1]}, cv=2)
    search.fit(X, y)
    err = capsys.readouterr().err
    # the first fold fills the cache, later fits find their entries there
    assert err.count("kernel entries") >= 1
    assert cache.computed_pairs_ == 12 * 11 // 2


def test_transformer_reports_progress(capsys):
    X, _ = _data()
    ConvKernel(ARCH, cache=None).fit_transform(X)
    assert capsys.readouterr().err == ""
    ConvKernel(ARCH, cache=None, verbose=1).fit_transform(X)
    assert "kernel entries" in capsys.readouterr().err


def _stderr_to(monkeypatch, path):
    log = open(path, "w")  # an io.TextIOWrapper on a regular file, as `2> log` gives
    monkeypatch.setattr("sys.stderr", log)
    return log


def test_progress_to_a_log_file_is_plain_lines(monkeypatch, tmp_path):
    X, _ = _data()
    path = tmp_path / "log"
    with _stderr_to(monkeypatch, path):
        conv_kernel(X, X[:3], architecture=ARCH, verbose=1)
    text = path.read_text()
    # no tqdm redraws: one line per report, the last state of each (all well
    # within LOG_INTERVAL): the two self passes and the 12 x 3 entries
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3, text
    assert lines[0].startswith("self passes: 100% 12.0/12.0 [")
    assert lines[1].startswith("self passes: 100% 3.00/3.00 [")
    assert lines[2].startswith("kernel entries: 100% 36.0/36.0 [") and "entries/s]" in lines[2]


def test_progress_to_a_log_writes_a_line_per_interval(monkeypatch, tmp_path):
    from sklearn_convkernel import _progress

    X, _ = _data()
    path = tmp_path / "log"
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)  # every update is due
    with _stderr_to(monkeypatch, path):
        with _progress.progress(36, "kernel entries", 1) as bar:
            for _ in range(3):
                bar.update(12)
    lines = path.read_text().splitlines()
    assert [line.split("[")[0] for line in lines] == [
        "kernel entries:  33% 12.0/36.0 ", "kernel entries:  67% 24.0/36.0 ",
        "kernel entries: 100% 36.0/36.0 "]  # the last state once, not again at close


def test_log_detection(tmp_path):
    import io
    import os

    from sklearn_convkernel._progress import _is_log

    r, w = os.pipe()
    with open(w, "w") as pipe, open(tmp_path / "f", "w") as f:
        assert _is_log(pipe) and _is_log(f)
    os.close(r)
    assert not _is_log(io.StringIO())
