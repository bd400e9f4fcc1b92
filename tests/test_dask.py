"""Gram tiles on a dask.distributed cluster through joblib's dask backend.

Needs the ``dask`` extra (``pip install sklearn-convkernel[dask]``); skipped
only when dask.distributed is not importable.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
from joblib import parallel_config

distributed = pytest.importorskip("distributed")

from sklearn_convkernel import CNTKClassifier, conv_kernel, load_gram, presets  # noqa: E402
from sklearn_convkernel._store import sidecar_path, tile_list  # noqa: E402

ARCH = presets.arora_cntk(3, gap=True)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def _log(path):
    with open(os.path.join(sidecar_path(path), "tiles.log")) as f:
        return f.read().split("\n")[:-1]


def _images(n, seed=0, side=10):
    return np.random.default_rng(seed).random((n, side, side, 1))


def test_dask_backend_equals_the_local_run(client, tmp_path):
    X, Y = _images(13), _images(4, seed=1)
    local = conv_kernel(X, architecture=ARCH, kind="ntk")
    local_xy = conv_kernel(X, Y, architecture=ARCH, kind="ntk")
    with parallel_config(backend="dask"):
        np.testing.assert_array_equal(conv_kernel(X, architecture=ARCH, kind="ntk"), local)
        K = conv_kernel(X, Y, architecture=ARCH, kind="ntk", out=tmp_path / "K.npy", tile_size=3)
        np.testing.assert_array_equal(K, local_xy)
        y = np.arange(13) % 2
        remote = CNTKClassifier(architecture=ARCH, cache=None).fit(X, y).decision_function(Y)
    np.testing.assert_array_equal(load_gram(tmp_path / "K.npy"), local_xy)
    np.testing.assert_array_equal(
        remote, CNTKClassifier(architecture=ARCH, cache=None).fit(X, y).decision_function(Y))


def test_store_survives_a_killed_worker_and_resumes(client, tmp_path):
    n, tile = 30, 2
    X = _images(n, seed=2, side=14)
    expected = conv_kernel(X, architecture=ARCH, kind="ntk")
    path = tmp_path / "K.npy"
    n_tiles = len(tile_list(n, n, tile, True))
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one_worker():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = os.path.join(sidecar_path(path), "tiles.log")
            if os.path.exists(log) and len(_log(path)) >= n_tiles // 4:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    # dask runs the killed worker's tasks again elsewhere (their data travel with
    # them); should the run still fail, the store resumes below
    try:
        with parallel_config(backend="dask"):
            conv_kernel(X, architecture=ARCH, kind="ntk", out=path, tile_size=tile)
    except Exception:  # noqa: BLE001 - whatever the cluster raised
        pass
    finally:
        killer.join()
    assert killed, "the Gram finished before a worker could be killed"
    before = [v for v in _log(path) if v.isdigit()]
    assert len(set(before)) == len(before)
    if before[-1:] != ["complete"]:
        # an interrupted run on top: forget two thirds of what was logged
        before = before[: len(before) // 3]
        with open(os.path.join(sidecar_path(path), "tiles.log"), "w") as f:
            f.write("\n".join(before) + "\n")
    with parallel_config(backend="dask"):
        K = conv_kernel(X, architecture=ARCH, kind="ntk", out=path)
    after = _log(path)
    # each computed tile is logged once: the log grows by the missing tiles only
    assert after[: len(before)] == before and after[-1] == "complete"
    assert sorted(int(v) for v in after[len(before):-1]) == sorted(
        set(range(n_tiles)) - {int(v) for v in before})
    np.testing.assert_array_equal(K, expected)
    np.testing.assert_array_equal(load_gram(path), expected)


def test_store_tasks_return_only_the_tile_number_and_variant(tmp_path):
    # what travels back from a worker: the tile's number and the engine variant
    # it ran with, not its entries
    from sklearn_convkernel._gram import _store_tile_task, compile_architecture, self_passes
    from sklearn_convkernel._store import GramStore, make_key

    X = _images(4)
    prog, _ = compile_architecture(ARCH, X.shape[1:], "ntk")
    Xf = X.reshape(4, -1)
    tx, _ = self_passes(prog, Xf)
    key = make_key(X, None, ARCH, "ntk", np.float64, "auto")
    with GramStore.open(tmp_path / "K.npy", key, (4, 4), True, 2, 2) as store:
        (r0, r1), (c0, c1) = store.tiles()[1]
        res = _store_tile_task(prog, (Xf[r0:r1], tx[r0:r1], Xf[c0:c1], tx[c0:c1]), r0, c0, True,
                               store.path, 1)
    assert res == (1, prog.variant, None)
    K = np.load(tmp_path / "K.npy")
    expected = conv_kernel(X, architecture=ARCH, kind="ntk")
    np.testing.assert_array_equal(K[r0:r1, c0:c1], expected[r0:r1, c0:c1])
    np.testing.assert_array_equal(K[c0:c1, r0:r1], expected[c0:c1, r0:r1])


def test_command_line_on_a_scheduler(client, tmp_path, capsys):
    from sklearn_convkernel.__main__ import main

    X = _images(9)
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "K.npy"
    assert main(["gram", str(tmp_path / "X.npy"), "--architecture", "arora_cntk:depth=3",
                 "--kind", "ntk", "--out", str(out), "--tile-size", "3", "--quiet",
                 "--scheduler", client.scheduler.address]) == 0
    np.testing.assert_array_equal(load_gram(out), conv_kernel(X, architecture=ARCH, kind="ntk"))
