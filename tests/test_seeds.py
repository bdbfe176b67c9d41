"""`ego3s seeds`: runs of one config with different seeds, per seed and pooled."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ego3s.cli import app
from ego3s.seeds import check_runs, summarize_seeds, t975


def _run(root, seed, outcomes, config=None):
    """A finished run folder: its manifest and per-question results of base and trained.
    `outcomes`: {split: [(base correct, trained correct), ...]} over closed questions."""
    run = root / f"s{seed}"
    cfg = {"out": str(run), "seed": seed, "training": {"learning_rate": 5e-5, "seed": seed}, **(config or {})}
    (run / "eval").mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"config": cfg, "stages": {}}))
    for m, col in (("base", 0), ("trained", 1)):
        d = run / "eval" / m / "egosynth"
        d.mkdir(parents=True)
        rows = [
            {"id": f"egosynth-{split}-{i:05d}", "split": split, "task": "closeqa", "accuracy": float(pair[col])}
            for split, pairs in outcomes.items()
            for i, pair in enumerate(pairs)
        ]
        (d / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_per_seed_pooled_and_over_seeds_figures(tmp_path):
    # seed 0: 10 atypical questions, trained wins 2 (+20 points); seed 1: 10 questions, wins 1 loses 1 (0)
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)] * 2 + [(1, 1)] * 8, "test_id": [(1, 1)] * 10})
    b = _run(tmp_path, 1, {"test_atypical": [(0, 1), (1, 0)] + [(0, 0)] * 8, "test_id": [(1, 0)] + [(1, 1)] * 9})
    s = summarize_seeds([a, b])
    assert s["seeds"] == [0, 1]
    assert [p["paired"]["test_atypical"]["accuracy_delta"] for p in s["per_seed"]] == pytest.approx([20.0, 0.0])
    pooled = s["pooled"]["test_atypical"]
    # the same question ids in both worlds are different questions: 20 in all, 3 won and 1 lost
    assert pooled["n"] == 20 and pooled["n_trained_only"] == 3 and pooled["n_base_only"] == 1
    assert pooled["accuracy_delta"] == pytest.approx(10.0)
    over = s["over_seeds"]["test_atypical"]
    assert over["mean"] == pytest.approx(10.0) and over["sd"] == pytest.approx(14.14, abs=0.01)
    half = 12.706 * 14.1421 / 2**0.5  # t(0.975, 1 df), from the printed tables
    assert over["ci95"] == pytest.approx([10 - half, 10 + half], abs=0.02)
    assert s["pooled"]["test_id"]["accuracy_delta"] == pytest.approx(-5.0)


def test_a_seed_given_twice_is_refused(tmp_path):
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)]})
    b = _run(tmp_path / "again", 0, {"test_atypical": [(0, 1)]})
    with pytest.raises(ValueError, match="both ran seed 0"):
        check_runs([a, b])


def test_runs_of_different_configs_are_refused(tmp_path):
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)]})
    b = _run(tmp_path, 1, {"test_atypical": [(0, 1)]}, config={"training": {"learning_rate": 1e-4, "seed": 1}})
    with pytest.raises(ValueError, match="training.learning_rate"):
        check_runs([a, b])


def test_one_run_or_an_unfinished_folder_is_refused(tmp_path):
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)]})
    with pytest.raises(ValueError, match="at least two"):
        check_runs([a])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty/manifest.json"):
        check_runs([a, tmp_path / "empty"])


def test_t_quantiles():
    """scipy's quantiles against the printed tables (3 decimals) and exact large-df values."""
    assert [round(t975(df), 3) for df in (1, 2, 4, 10, 30)] == [12.706, 4.303, 2.776, 2.228, 2.042]
    for df, exact in ((40, 2.0211), (60, 2.0003), (120, 1.9799), (1000, 1.9623)):
        assert t975(df) == pytest.approx(exact, abs=0.001)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        t975(0)


def test_the_command_prints_the_figures_and_fails_clearly(tmp_path):
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)] * 3 + [(1, 1)] * 7, "test_id": [(1, 1)] * 10})
    b = _run(tmp_path, 1, {"test_atypical": [(0, 1)] * 2 + [(1, 1)] * 8, "test_id": [(1, 1)] * 10})
    out = tmp_path / "seeds.json"
    res = CliRunner().invoke(app, ["seeds", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "test_atypical, pooled over 20 questions: +25.0" in res.output
    assert json.loads(out.read_text())["shown"]["atypical_gain"] in (0, 1, 2)
    res = CliRunner().invoke(app, ["seeds", str(a), str(a)])
    assert res.exit_code != 0 and "both ran seed 0" in res.output


def test_runs_that_share_their_test_questions_are_refused(tmp_path):
    a = _run(tmp_path, 0, {"test_atypical": [(0, 1)]})
    b = _run(tmp_path, 1, {"test_atypical": [(0, 1)]})
    for run in (a, b):  # e.g. one fixed data set evaluated after two training seeds
        (run / "data").mkdir()
        (run / "data" / "test_atypical.jsonl").write_text('{"id": "q0", "question": "What does my hand take?"}\n')
    with pytest.raises(ValueError, match="same test questions"):
        check_runs([a, b])
    (b / "data" / "test_atypical.jsonl").write_text('{"id": "q0", "question": "Where do I put it?"}\n')
    assert check_runs([a, b]) == [0, 1]
