"""The `gram` command line: in-process main() and a real subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sklearn_convkernel import __version__, architecture_to_json, cntk_architecture, conv_kernel
from sklearn_convkernel import load_gram
from sklearn_convkernel.__main__ import main
from sklearn_convkernel._store import sidecar_path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.random((9, 8, 8, 1)), rng.random((4, 8, 8, 1))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    return X, Y


def test_help_lists_every_command_with_an_example(capsys):
    assert main(["--help"], prog="sklearn-convkernel") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sklearn-convkernel")
    for command in ("demo", "gram"):
        assert f"example: sklearn-convkernel {command} " in out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_gram_in_process(tmp_path, images, capsys):
    X, Y = images
    out = tmp_path / "K.npy"
    argv = ["gram", str(tmp_path / "X.npy"), "--architecture", "cntk:depth=2,gap=false",
            "--kind", "ntk", "--out", str(out), "--n-jobs", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "entries/s" in captured.err
    expected = conv_kernel(X, architecture=cntk_architecture(2, gap=False)[0], kind="ntk")
    np.testing.assert_array_equal(load_gram(out), expected)

    # resumable: forget half the tiles, rerun the same command
    log = os.path.join(sidecar_path(out), "tiles.log")
    lines = open(log).read().split("\n")[:-1]
    open(log, "w").write("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(ValueError, match="unfinished"):
        load_gram(out)
    assert main(argv + ["--quiet"]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(load_gram(out), expected)

    # another architecture on the same store: an error, not a reuse
    assert main(argv[:3] + ["cntk:depth=3"] + argv[4:]) == 1
    assert "different computation" in capsys.readouterr().err


def test_gram_with_y_json_float32_and_flat_rows(tmp_path, images, capsys):
    X, Y = images
    a = cntk_architecture(2)[0]
    (tmp_path / "arch.json").write_text(architecture_to_json(a))
    np.save(tmp_path / "Xflat.npy", X.reshape(9, -1))
    out = tmp_path / "KT.npy"
    assert main(["gram", str(tmp_path / "Xflat.npy"), "--image-shape", "8,8,1",
                 "--y", str(tmp_path / "Y.npy"), "--architecture", str(tmp_path / "arch.json"),
                 "--dtype", "float32", "--out", str(out), "--n-jobs", "2", "--quiet"]) == 0
    K = load_gram(out)
    assert K.dtype == np.float32 and K.shape == (9, 4)
    np.testing.assert_array_equal(K, conv_kernel(X, Y, architecture=a, dtype=np.float32))


@pytest.mark.parametrize("augment", ["hflip", "hflip_reverse_channels"])
def test_gram_preset_by_name_with_flips(tmp_path, capsys, augment):
    from sklearn_convkernel.presets import li_lap

    X = np.random.default_rng(1).random((6, 8, 8, 3))
    np.save(tmp_path / "X3.npy", X)
    out = tmp_path / "KF.npy"
    assert main(["gram", str(tmp_path / "X3.npy"), "--architecture",
                 "li_lap:depth=3,max_shift=1", "--kind", "ntk", "--augment", augment, "--out",
                 str(out), "--n-jobs", "1", "--quiet"]) == 0
    arch = li_lap(3, 1)
    plain = conv_kernel(X, architecture=arch, kind="ntk")
    mirror = X[:, :, ::-1] if augment == "hflip" else X[:, :, ::-1, ::-1]
    flipped = conv_kernel(X, mirror, architecture=arch, kind="ntk")
    np.testing.assert_allclose(load_gram(out), (plain + flipped) / 2, rtol=1e-12)


def test_gram_errors_are_messages(tmp_path, images, capsys):
    bad = ["gram", str(tmp_path / "X.npy"), "--architecture", "nosuch", "--out",
           str(tmp_path / "K.npy")]
    assert main(bad) == 1
    assert "neither a preset" in capsys.readouterr().err
    assert main(["gram", str(tmp_path / "missing.npy"), "--architecture", "cntk",
                 "--out", str(tmp_path / "K.npy")]) == 1
    assert "cannot read X" in capsys.readouterr().err
    # the output file is the input's file: refused (no SIGBUS)
    assert main(["gram", str(tmp_path / "X.npy"), "--architecture", "cntk", "--out",
                 str(tmp_path / "X.npy"), "--quiet"]) == 1
    assert "memory map of out" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["module", "script"])
def test_gram_as_a_subprocess(tmp_path, images, how):
    X, _ = images
    if how == "module":
        cmd = [sys.executable, "-m", "sklearn_convkernel"]
        name = "python -m sklearn_convkernel"
    else:
        script = os.path.join(os.path.dirname(sys.executable), "sklearn-convkernel")
        if not os.path.exists(script):
            pytest.skip("the sklearn-convkernel script is not installed next to python")
        cmd, name = [script], "sklearn-convkernel"
    out = tmp_path / "K.npy"
    run = subprocess.run(cmd + ["gram", "X.npy", "--architecture", "cntk:depth=2",
                                "--out", "K.npy", "--n-jobs", "1"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "entries/s" in run.stderr and "<" in run.stderr  # rate and elapsed<remaining
    np.testing.assert_array_equal(load_gram(out),
                                  conv_kernel(X, architecture=cntk_architecture(2)[0]))
    usage = subprocess.run(cmd + ["gram"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2
    assert usage.stderr.startswith(f"usage: {name} gram")
