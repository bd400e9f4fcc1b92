"""The command line main job (a small run of the demo)."""

import time

import pytest

from sklearn_convkernel.__main__ import (
    KNOWN_ACCURACY,
    _candidates,
    _choose,
    _entries_needed,
    _Heartbeat,
    main,
    run_demo,
)


def test_demo_runs_end_to_end_on_a_small_split(capsys):
    rows = run_demo(n_train=30, n_test=10, n_jobs=1)
    captured = capsys.readouterr()
    labels = [c["label"] for c in _candidates()]
    assert rows[0]["model"].startswith("RBF") and len(rows) == 2
    assert rows[1]["model"] in labels
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["t_fit"] > 0
    assert rows[1]["rate"] is not None and rows[1]["estimate"] > 0
    assert "test acc" in captured.out and rows[1]["model"] in captured.out
    # every candidate is listed with its estimate and the reason of the choice
    for label in labels:
        assert label in captured.out
    assert "-> chosen" in captured.out
    # the kernel stage reports its progress while it computes (tqdm bars on stderr)
    assert "kernel entries" in captured.err and "entries/s" in captured.err


def test_candidates_are_ranked_by_known_accuracy():
    known = [KNOWN_ACCURACY[c["key"]] for c in _candidates()]
    assert known == sorted(known, reverse=True)
    assert known[-1] > KNOWN_ACCURACY["rbf"]


def test_choice_follows_the_budget():
    cands = [{"key": "cntk-lap", "label": "slow"}, {"key": "cntk", "label": "fast"}]
    # 1000 entries at 100 and 1000 entries/s: 10 s and 1 s
    assert _choose(cands, [100.0, 1000.0], 1000, budget=20)[0] == 0
    assert _choose(cands, [100.0, 1000.0], 1000, budget=10)[0] == 0
    chosen, estimates, reasons = _choose(cands, [100.0, 1000.0], 1000, budget=5)
    assert chosen == 1 and estimates == [10.0, 1.0]
    assert "over the budget" in reasons[0] and "-> chosen" in reasons[1]
    # nothing fits: the fastest, whichever it is, and the output says so
    chosen, _, reasons = _choose(cands, [100.0, 1000.0], 1000, budget=0.5)
    assert chosen == 1 and "nothing fits" in reasons[1]
    assert _choose(cands, [1000.0, 100.0], 1000, budget=0.5)[0] == 0


def test_entries_needed_counts_the_training_triangle_and_the_test_kernel():
    # 3 training images: pairs (0,0) (0,1) (0,2) (1,1) (1,2) (2,2); 2 test images x 3
    assert _entries_needed(3, 2) == 6 + 6


def test_demo_choice_changes_with_the_budget(capsys):
    generous = run_demo(n_train=10, n_test=5, n_jobs=1, budget=1e6)
    tiny = run_demo(n_train=10, n_test=5, n_jobs=1, budget=1e-9)
    out = capsys.readouterr().out
    labels = [c["label"] for c in _candidates()]
    assert generous[1]["model"] == labels[0]  # the most accurate fits a generous budget
    # nothing fits a nanosecond: the fastest candidate, the vanilla CNTK (~25x cheaper)
    assert tiny[1]["model"] == labels[-1]
    assert "nothing fits" in out


def test_heartbeat_prints_while_a_stage_works(capsys):
    seen = ""
    with _Heartbeat("stage", every=0.01):
        deadline = time.monotonic() + 30
        while "still working" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
            seen += capsys.readouterr().out
    assert "[stage]   still working" in seen
    capsys.readouterr()  # lines printed before the stage ended
    time.sleep(0.05)
    assert capsys.readouterr().out == ""  # the thread is stopped with the stage


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["demo", "--n-train", "5"],
                                  ["demo", "--budget", "0"]])
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
    assert len(rows) == 2
    assert ("no CV" in out) == (n_train == 10)
    assert ("2-fold CV" in out) == (n_train == 20)


def test_demo_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--n-train" in out and "--budget" in out and "Fashion-MNIST" in out
    assert "``" not in out and ":class:" not in out


def test_info_names_the_engine_variant_and_why(capsys):
    from sklearn_convkernel import _core

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"engine variant: {_core.simd_variant()} ({_core.simd_report()['source']}" in out
    assert "supported: " + ", ".join(_core.simd_variants()) in out
