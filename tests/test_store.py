"""Resumable Gram stores: conv_kernel(..., out=PATH), load_gram, crash safety."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sklearn_convkernel import _gram, _store, conv_kernel, load_gram
from sklearn_convkernel._store import GramStore, StoreError, sidecar_path, tile_list
from sklearn_convkernel.arch import Conv, Dense, Flatten, GlobalAvgPool, ReLU, Sequential, Tap

ARCH = Sequential(Conv(3, weight_var=2.0), ReLU(), Conv(3, weight_var=2.0), ReLU(),
                  GlobalAvgPool(), Dense())
TAPPED = Sequential(Conv(3, weight_var=2.0), ReLU(), Tap(GlobalAvgPool(), Dense()),
                    Conv(3, weight_var=2.0), ReLU(), Flatten(), Dense())


def _images(n, seed=0, side=6):
    return np.random.default_rng(seed).random((n, side, side, 1))


def _log_lines(path):
    with open(os.path.join(sidecar_path(path), "tiles.log")) as f:
        return f.read().split("\n")[:-1]


def _count_tiles(monkeypatch, variants=None, run_with=None):
    """Record the tiles the store path computes, as their (first row, first column).

    Both ways a store is filled call ``_tile_task`` once per tile (tiles
    written by the calling process in batches, or by the workers).  With a
    list ``variants``, the engine variant of each tile's program is appended
    to it too.  With a variant ``run_with``, each tile's program runs with
    that one instead, as on a worker whose CPU lacks the program's variant.
    """
    computed = []
    original = _gram._tile_task

    def counting(prog, Xr, tr, r0, Yc, tc, c0, *rest):
        computed.append((r0, c0))
        if run_with is not None:
            prog = prog.with_variant(run_with)
        if variants is not None:
            variants.append(prog.variant)
        return original(prog, Xr, tr, r0, Yc, tc, c0, *rest)

    monkeypatch.setattr(_gram, "_tile_task", counting)
    return computed


def _numbers(starts, n, tile):
    """Tile numbers of a symmetric n x n store from their (first row, first column)."""
    number = {(rows[0], cols[0]): t for t, (rows, cols) in enumerate(tile_list(n, n, tile, True))}
    return sorted(number[start] for start in starts)


@pytest.mark.parametrize("kind", ["nngp", "ntk"])
@pytest.mark.parametrize("arch", [ARCH, TAPPED], ids=["single", "tapped"])
@pytest.mark.parametrize("with_y", [False, True])
def test_store_equals_in_memory_result(tmp_path, kind, arch, with_y):
    X, Y = _images(11), (_images(5, seed=1) if with_y else None)
    expected = conv_kernel(X, Y, architecture=arch, kind=kind)
    path = tmp_path / "K.npy"
    K = conv_kernel(X, Y, architecture=arch, kind=kind, out=path, tile_size=3, n_jobs=2)
    assert isinstance(K, np.memmap)
    np.testing.assert_array_equal(K, expected)
    np.testing.assert_array_equal(load_gram(path), expected)
    assert _log_lines(path)[-1] == "complete"


def test_thread_backend_writes_tiles_in_batches_from_the_calling_process(tmp_path, monkeypatch):
    X = _images(12)
    expected = conv_kernel(X, architecture=ARCH, kind="ntk")
    flushes = []
    original_commit = _store.BatchedTileWriter.commit

    def commit(self):
        flushes.append(len(self._pending))
        original_commit(self)

    def no_worker_writes(*args):
        raise AssertionError("write_tile called on the thread backend")

    monkeypatch.setattr(_store.BatchedTileWriter, "commit", commit)
    monkeypatch.setattr(_gram, "write_tile", no_worker_writes)
    path = tmp_path / "K.npy"
    K = conv_kernel(X, architecture=ARCH, kind="ntk", out=path, tile_size=2, n_jobs=2)
    np.testing.assert_array_equal(K, expected)
    np.testing.assert_array_equal(load_gram(path), expected)
    n_tiles = len(tile_list(12, 12, 2, True))
    assert sum(flushes) == n_tiles  # every tile marked, after a flush
    assert len(flushes) < n_tiles  # in batches, not one flush per tile


def test_rerun_of_a_complete_store_computes_nothing(tmp_path, monkeypatch):
    X = _images(9)
    path = tmp_path / "K.npy"
    first = np.array(conv_kernel(X, architecture=ARCH, out=path, tile_size=2))
    computed = _count_tiles(monkeypatch)
    again = conv_kernel(X, architecture=ARCH, out=str(path))
    assert computed == []
    np.testing.assert_array_equal(again, first)


def test_resume_computes_only_missing_tiles(tmp_path, monkeypatch):
    X = _images(10)
    expected = conv_kernel(X, architecture=ARCH, kind="ntk")
    path = tmp_path / "K.npy"
    conv_kernel(X, architecture=ARCH, kind="ntk", out=path, tile_size=3)
    n_tiles = len(tile_list(10, 10, 3, True))
    # forget some tiles, spoil their entries, and tear the last log line
    keep = [str(t) for t in range(n_tiles) if t % 3]
    log = os.path.join(sidecar_path(path), "tiles.log")
    with open(log, "w") as f:
        f.write("\n".join(keep) + "\n0")  # "0" without its newline: not finished
    arr = np.load(path, mmap_mode="r+")
    arr[:] = -1.0
    arr.flush()
    del arr
    with pytest.raises(StoreError, match=rf"{n_tiles - len(keep)} of {n_tiles} tiles are missing"):
        load_gram(path)
    computed = _count_tiles(monkeypatch)
    K = conv_kernel(X, architecture=ARCH, kind="ntk", out=path)
    assert _numbers(computed, 10, 3) == [t for t in range(n_tiles) if t % 3 == 0]
    # the kept tiles were not rewritten: their entries are still -1
    spoiled = np.asarray(K) == -1.0
    assert spoiled.any()
    tiles = tile_list(10, 10, 3, True)
    for t in range(n_tiles):
        (r0, r1), (c0, c1) = tiles[t]
        block = np.asarray(K)[r0:r1, c0:c1]
        upper = np.arange(r0, r1)[:, None] < np.arange(c0, c1)[None, :]
        if t % 3 == 0:
            np.testing.assert_array_equal(block[upper], expected[r0:r1, c0:c1][upper])
        else:
            assert np.all(block[upper] == -1.0)


def test_kill_9_then_resume_is_bitwise_equal(tmp_path, monkeypatch):
    n, tile = 36, 2
    path = tmp_path / "K.npy"
    data = tmp_path / "X.npy"
    X = np.random.default_rng(3).random((n, 14, 14, 1))
    np.save(data, X)
    script = textwrap.dedent(f"""
        import numpy as np
        from sklearn_convkernel import _store, conv_kernel, presets
        _store.COMMIT_INTERVAL = 0.005  # marks often, so that the kill lands mid-run
        X = np.load({str(data)!r})
        conv_kernel(X, architecture=presets.arora_cntk(3, gap=True), kind="ntk",
                    out={str(path)!r}, tile_size={tile}, n_jobs=1)
    """)
    n_tiles = len(tile_list(n, n, tile, True))
    rng = random.Random()
    target = rng.randint(1, n_tiles // 2)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)  # not the checkout root
    log = os.path.join(sidecar_path(path), "tiles.log")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(log) and len(_log_lines(path)) >= target:
                break
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the computation finished before it was killed"
    done = {int(v) for v in _log_lines(path) if v.isdigit()}
    assert "complete" not in _log_lines(path) and 0 < len(done) < n_tiles
    with pytest.raises(StoreError, match="unfinished"):
        load_gram(path)

    from sklearn_convkernel import presets

    arch = presets.arora_cntk(3, gap=True)
    expected = conv_kernel(X, architecture=arch, kind="ntk")
    # every logged tile is on disk before the rerun
    partial = np.load(path)
    tiles = tile_list(n, n, tile, True)
    for t in done:
        (r0, r1), (c0, c1) = tiles[t]
        upper = np.arange(r0, r1)[:, None] < np.arange(c0, c1)[None, :]
        np.testing.assert_array_equal(partial[r0:r1, c0:c1][upper],
                                      expected[r0:r1, c0:c1][upper])
    computed = _count_tiles(monkeypatch)
    K = conv_kernel(X, architecture=arch, kind="ntk", out=path, n_jobs=2)
    assert _numbers(computed, n, tile) == sorted(set(range(n_tiles)) - done)
    np.testing.assert_array_equal(K, expected)
    np.testing.assert_array_equal(load_gram(path, mmap_mode=None), expected)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(X=_images(9, seed=5)), "content of X"),
        (dict(architecture=Sequential(Conv(3), ReLU(), GlobalAvgPool(), Dense())),
         "architecture"),
        (dict(kind="ntk"), "kind"),
        (dict(dtype=np.float32), "dtype"),
        (dict(Y=_images(9, seed=6)), "Y"),
        (dict(tile_size=3), "tile_size=2"),
    ],
)
def test_a_store_is_never_reused_for_another_computation(tmp_path, change, match):
    path = tmp_path / "K.npy"
    args = dict(X=_images(9), architecture=ARCH, kind="nngp", dtype=np.float64)
    conv_kernel(out=path, tile_size=2, **args)
    before = np.load(path)
    with pytest.raises(StoreError, match=match):
        conv_kernel(out=path, **{**args, **change})
    np.testing.assert_array_equal(np.load(path), before)


@pytest.mark.parametrize("first, second", [(None, "hflip"), ("hflip", "hflip_reverse_channels"),
                                           ("hflip_reverse_channels", "hflip")])
def test_a_store_of_one_augment_is_never_reused_for_another(tmp_path, first, second):
    path = tmp_path / "K.npy"
    args = dict(X=_images(9, side=5), architecture=ARCH, tile_size=2)
    conv_kernel(out=path, augment=first, **args)
    before = np.load(path)
    with pytest.raises(StoreError, match=r"different computation \(augment differs\)"):
        conv_kernel(out=path, augment=second, **args)
    np.testing.assert_array_equal(np.load(path), before)
    # its own augment reuses it
    np.testing.assert_array_equal(conv_kernel(out=path, augment=first, **args), before)


def test_load_gram_refuses_what_is_not_a_finished_store(tmp_path):
    plain = tmp_path / "plain.npy"
    np.save(plain, np.eye(3))
    with pytest.raises(StoreError, match="no store record"):
        load_gram(plain)
    with pytest.raises(FileNotFoundError):
        load_gram(tmp_path / "missing.npy")
    path = tmp_path / "K.npy"
    conv_kernel(_images(6), architecture=ARCH, out=path, tile_size=2)
    log = os.path.join(sidecar_path(path), "tiles.log")
    with open(log) as f:
        lines = f.read().split("\n")
    with open(log, "w") as f:  # every tile, no diagonal
        f.write("\n".join(v for v in lines if v.isdigit()) + "\n")
    with pytest.raises(StoreError, match="diagonal"):
        load_gram(path)


def test_input_mapped_from_the_output_file_is_refused(tmp_path):
    path = tmp_path / "K.npy"
    np.save(path, _images(5))
    Xm = np.load(path, mmap_mode="r")
    with pytest.raises(StoreError, match="X is a memory map of out"):
        conv_kernel(Xm, architecture=ARCH, out=path)
    with pytest.raises(StoreError, match="Y is a memory map of out"):
        conv_kernel(_images(5), Xm[1:], architecture=ARCH, out=str(path))
    np.testing.assert_array_equal(Xm, _images(5))  # untouched


def test_a_store_in_use_is_locked(tmp_path):
    path = tmp_path / "K.npy"
    X = _images(5)
    conv_kernel(X, architecture=ARCH, out=path)
    from sklearn_convkernel._store import make_key

    key = make_key(X.astype(np.float64), None, ARCH, "nngp", np.float64, "auto")
    with GramStore.open(path, key, (5, 5), True, None, 32):
        with pytest.raises(StoreError, match="another process"):
            conv_kernel(X, architecture=ARCH, out=path)
    np.testing.assert_array_equal(conv_kernel(X, architecture=ARCH, out=path),
                                  conv_kernel(X, architecture=ARCH))


# -- engine variants ------------------------------------------------------------------


def _key_json(path):
    import json

    with open(os.path.join(sidecar_path(path), "key.json")) as f:
        return json.load(f)


def _write_key_json(path, record):
    import json

    with open(os.path.join(sidecar_path(path), "key.json"), "w") as f:
        json.dump(record, f)


def _forget_tiles(path, keep_every=2):
    """Drop every other finished tile from the log (and the 'complete' line)."""
    lines = [v for v in _log_lines(path) if v.isdigit()]
    with open(os.path.join(sidecar_path(path), "tiles.log"), "w") as f:
        f.write("".join(f"{v}\n" for i, v in enumerate(lines) if i % keep_every))


def _other_variant():
    """(started, resumed): two variants this CPU runs, resumed = this process's."""
    core = _gram._core()
    here = core.simd_variant()
    others = [v for v in core.simd_variants() if v != here]
    if not others:
        pytest.skip("this CPU runs a single engine variant")
    return others[0], here


def _variant_counting_tiles(monkeypatch):
    used = []
    _count_tiles(monkeypatch, variants=used)
    return used


def _half_done_store_of_variant(path, X, variant):
    """A finished store of ARCH on X, relabelled as computed by ``variant``, half its tiles forgotten."""
    conv_kernel(X, architecture=ARCH, out=path, tile_size=2)
    record = _key_json(path)
    record["variant"] = variant
    _write_key_json(path, record)
    _forget_tiles(path)


def _half_done_store_started_elsewhere(tmp_path, n_images):
    """(started, here, X, path): a half-done store on n images started with another variant."""
    started, here = _other_variant()
    X = _images(n_images)
    path = tmp_path / "K.npy"
    _half_done_store_of_variant(path, X, started)
    return started, here, X, path


def test_a_new_store_records_its_engine_variant(tmp_path):
    path = tmp_path / "K.npy"
    conv_kernel(_images(5), architecture=ARCH, out=path)
    assert _key_json(path)["variant"] == _gram._core().simd_variant()


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_store_resumes_with_the_variant_it_was_started_with(tmp_path, monkeypatch, n_jobs):
    started, here = _other_variant()
    X = _images(10)
    path_ = tmp_path / "K.npy"
    from sklearn_convkernel import _simd

    # the store is started by a process whose variant is `started`
    with monkeypatch.context() as m:
        m.setattr(_simd, "process_variant", lambda: started)
        assert _gram._core().simd_variant() == started
        expected = conv_kernel(X, architecture=ARCH, kind="ntk")
        conv_kernel(X, architecture=ARCH, kind="ntk", out=path_, tile_size=2)
    assert _key_json(path_)["variant"] == started
    _forget_tiles(path_)
    used = _variant_counting_tiles(monkeypatch)
    K = conv_kernel(X, architecture=ARCH, kind="ntk", out=path_, n_jobs=n_jobs)
    assert used and set(used) == {started}  # not this process's `here`
    np.testing.assert_array_equal(K, expected)
    assert "variants" not in _key_json(path_)


def test_a_store_whose_variant_this_cpu_lacks_resumes_with_a_warning(tmp_path, monkeypatch):
    started, here, X, path = _half_done_store_started_elsewhere(tmp_path, 8)
    core = _gram._core()
    monkeypatch.setattr(core, "simd_variants", lambda: [here])
    used = _variant_counting_tiles(monkeypatch)
    with pytest.warns(UserWarning, match=rf"started with the '{started}' engine variant"):
        K = conv_kernel(X, architecture=ARCH, out=path)
    assert set(used) == {here}
    assert _key_json(path)["variants"] == [started, here]
    np.testing.assert_allclose(K, conv_kernel(X, architecture=ARCH), rtol=1e-12)


@pytest.mark.parametrize("bad, match", [(3, "not a name"), ("avx1024", "does not know")])
def test_a_store_record_with_a_bad_variant_is_refused(tmp_path, bad, match):
    X = _images(6)
    path = tmp_path / "K.npy"
    _half_done_store_of_variant(path, X, bad)
    with pytest.raises(StoreError, match=match):
        conv_kernel(X, architecture=ARCH, out=path)


def _marks_after_recording(monkeypatch, path, variant):
    """From now on, logging a tile of the store at ``path`` checks that key.json lists ``variant``."""
    original = GramStore.mark

    def mark(self, index):
        assert variant in _key_json(path).get("variants", []), "tile logged before its variant"
        original(self, index)

    monkeypatch.setattr(GramStore, "mark", mark)


def _fallback_warnings(record):
    return [str(w.message) for w in record if "engine variant instead of" in str(w.message)]


def test_tiles_computed_with_another_variant_are_recorded_and_warned_about(tmp_path,
                                                                           monkeypatch):
    # the calling process's threads, each tile's program running another variant
    # (as a worker whose CPU lacks the store's variant would)
    started, here, X, path = _half_done_store_started_elsewhere(tmp_path, 8)
    _count_tiles(monkeypatch, run_with=here)
    _marks_after_recording(monkeypatch, path, here)
    with pytest.warns(UserWarning) as record:
        K = conv_kernel(X, architecture=ARCH, out=path, n_jobs=2)
    (message,) = _fallback_warnings(record)  # once, not once per tile
    assert f"ran with the '{here}' engine variant instead of '{started}'" in message
    assert "key.json" in message and "SKLEARN_CONVKERNEL_SIMD" in message
    assert _key_json(path)["variants"] == [started, here]
    np.testing.assert_allclose(load_gram(path), conv_kernel(X, architecture=ARCH), rtol=1e-12)
    np.testing.assert_array_equal(K, load_gram(path))


def test_a_worker_without_the_store_variant_is_recorded_and_warned_about(tmp_path,
                                                                         monkeypatch):
    # loky worker processes whose "CPU" lacks the store's variant: the
    # unpickled program falls back to the worker's own (with a warning there)
    # and the tile reports it back to the calling process
    from joblib import parallel_config

    started, here, X, path = _half_done_store_started_elsewhere(tmp_path, 8)
    store_tile_task = _gram._store_tile_task

    def on_a_cpu_without_its_variant(prog, *args):  # runs in a worker (pickled by value)
        import pickle
        import warnings

        from sklearn_convkernel import _core

        runs = _core.simd_variants
        _core.simd_variants = lambda: tuple(v for v in runs() if v != prog.variant)
        try:
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                prog = pickle.loads(pickle.dumps(prog))
        finally:
            _core.simd_variants = runs
        assert any("SKLEARN_CONVKERNEL_SIMD" in str(w.message) for w in record), record
        return store_tile_task(prog, *args)

    monkeypatch.setattr(_gram, "_store_tile_task", on_a_cpu_without_its_variant)
    _marks_after_recording(monkeypatch, path, here)
    with parallel_config(backend="loky"), pytest.warns(UserWarning) as record:
        conv_kernel(X, architecture=ARCH, out=path, n_jobs=2)
    (message,) = _fallback_warnings(record)
    assert f"ran with the '{here}' engine variant instead of '{started}'" in message
    assert _key_json(path)["variants"] == [started, here]
    np.testing.assert_allclose(load_gram(path), conv_kernel(X, architecture=ARCH), rtol=1e-12)


def test_a_self_pass_with_another_variant_is_recorded(tmp_path, monkeypatch):
    # the self passes give the diagonal (and the tapes of every tile)
    started, here, X, path = _half_done_store_started_elsewhere(tmp_path, 6)
    self_task = _gram._self_task
    monkeypatch.setattr(_gram, "_self_task",
                        lambda prog, *args: self_task(prog.with_variant(here), *args))
    _marks_after_recording(monkeypatch, path, here)
    with pytest.warns(UserWarning) as record:
        conv_kernel(X, architecture=ARCH, out=path)
    assert len(_fallback_warnings(record)) == 1
    assert _key_json(path)["variants"] == [started, here]
