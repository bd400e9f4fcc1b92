"""The command line main job (a small run of the demo)."""

import pytest

from sklearn_convkernel.__main__ import main, run_demo


def test_demo_runs_end_to_end_on_a_small_split(capsys):
    rows = run_demo(n_train=30, n_test=10, n_jobs=1)
    out = capsys.readouterr().out
    assert [r["model"].split()[0] for r in rows] == ["RBF", "CNTK", "CNN-GP", "CKN"]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["t_fit"] > 0
    assert rows[1]["rate"] is not None
    assert "test acc" in out and "CKN exp" in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["demo", "--n-train", "5"]])
def test_bad_command_lines_exit_2(argv, capsys):
    if argv[:1] == ["demo"]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    else:
        assert main(argv) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.parametrize("n_train", [10, 20])
def test_demo_runs_at_the_smallest_allowed_sizes(n_train, capsys):
    """10 images = 1 per class (no CV possible), 20 = 2 per class (2 folds)."""
    rows = run_demo(n_train=n_train, n_test=5, n_jobs=1)
    out = capsys.readouterr().out
    assert len(rows) == 4
    assert ("no CV" in out) == (n_train == 10)
    assert ("2-fold CV" in out) == (n_train == 20)


def test_demo_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--n-train" in out and "Fashion-MNIST" in out
    assert "``" not in out and ":class:" not in out
