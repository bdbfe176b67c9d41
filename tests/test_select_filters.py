import csv
import json
import math

import pytest

from ego3s.data import Sample
from ego3s.select.baselines import (learning_impact, select_limo, select_limr, select_random, select_s1,
                                    trajectories_from_log)
from ego3s.select.csm import CSMThresholds, apply_filters, funnel

TH = CSMThresholds()  # lambda_c 0.1, lambda_f 0.5, lambda_o 0.21


def row(full, blind, context, rel=0.5, id="x"):
    return {"id": id, "s_full": full, "s_blind": blind, "s_context": context, "relevance": rel}


@pytest.mark.parametrize("r, expect", [
    # (pass_coarse, pass_fine, pass_relevance)
    (row(0.9, 0.2, 0.1), (True, True, True)),
    (row(0.9, 0.85, 0.1), (False, True, True)),        # answerable blind: language-prior shortcut
    (row(0.9, 0.2, 0.8), (True, False, True)),         # answerable from context: global-scene shortcut
    (row(0.9, 0.2, 0.1, rel=0.1), (True, True, False)),
    (row(0.9, 0.2, 0.1, rel=None), (True, True, False)),  # no annotation: nothing says it needs it
    (row(0.0, 0.0, 0.0), (False, False, True)),        # s_full = 0: ratio uses eps, no division error
    (row(0.0, 0.0, 0.3), (False, False, True)),
    (row(0.6, 0.2, 0.3), (True, True, True)),          # fine tie at exactly 0.5 passes (>=)
    (row(0.9, 0.2, 0.1, rel=0.21), (True, True, True)),  # relevance tie passes (>=)
])
def test_filters_hand_table(r, expect):
    (out,) = apply_filters([r], TH)
    assert (out["pass_coarse"], out["pass_fine"], out["pass_relevance"]) == expect
    assert out["kept"] == all(expect)


def test_nonfinite_scores_are_invalid_not_kept():
    rows = apply_filters([row(float("nan"), 0.1, 0.1), row(None, 0.1, 0.1, id="y"), row(0.9, 0.1, 0.0, id="z")], TH)
    assert [r["kept"] for r in rows] == [False, False, True]
    f = funnel(rows)
    assert f == {"scored": 3, "invalid": 2, "after_coarse": 1, "after_fine": 1, "after_relevance": 1, "kept": 1,
                 "failed_coarse": 0, "failed_fine": 0, "failed_relevance": 0}


def test_empty_input():
    assert apply_filters([], TH) == []
    assert funnel([])["kept"] == 0


def test_ties_exactly_representable():
    th = CSMThresholds(lambda_c=0.125, lambda_f=0.5, lambda_o=0.25)
    (out,) = apply_filters([row(0.625, 0.5, 0.3125, rel=0.25)], th)
    assert out["coarse"] == 0.125 and out["fine"] == 0.5
    assert (out["pass_coarse"], out["pass_fine"], out["pass_relevance"]) == (False, True, True)


def test_thresholds_are_keys():
    (out,) = apply_filters([row(0.9, 0.85, 0.1)], CSMThresholds(lambda_c=0.0))
    assert out["kept"]


def _samples(n):
    return [Sample(id=f"s{i:02d}", question=f"what did I do with item {i}?", answer=f"a{i}", task="openqa",
                   meta={"template": f"t{i % 3}"}) for i in range(n)]


def test_random_budget_and_seed():
    ids = [f"s{i}" for i in range(50)]
    a = select_random(ids, 10, seed=1)
    assert len(a) == 10 and len(set(a)) == 10 and a == select_random(list(reversed(ids)), 10, seed=1)
    assert a != select_random(ids, 10, seed=2)
    assert select_random(ids, 100) and len(select_random(ids, 100)) == 50


def test_s1_contract():
    ss = _samples(30)
    solved = {s.id: i % 2 == 0 for i, s in enumerate(ss)}
    solved.pop("s29")  # unscored (unreadable video): dropped by the quality stage
    lens = {s.id: float(i) for i, s in enumerate(ss)}
    out = select_s1(ss, solved, lens, budget=6, seed=0)
    assert len(out) == 6 and all(not solved[i] for i in out) and "s29" not in out
    assert out == select_s1(ss, solved, lens, budget=6, seed=0)
    # round-robin: the 6 picks cover all three categories twice
    cats = [int(i[1:]) % 3 for i in out]
    assert sorted(cats) == [0, 0, 1, 1, 2, 2]
    # longest reasoning first inside a category
    cat0 = [i for i in out if int(i[1:]) % 3 == 0]
    assert cat0 == sorted(cat0, key=lambda i: -lens[i])


def test_limo_band_and_rank():
    counts = {"a": 0, "b": 1, "c": 3, "d": 4, "e": 2, "f": 32}
    quality = {"b": 0.1, "c": 0.9, "e": 0.5}
    assert select_limo(counts, quality, budget=10) == ["c", "e", "b"]
    assert select_limo(counts, quality, budget=2) == ["c", "e"]


def test_limr_learning_impact_hand_computed():
    # two epochs; rbar = (0.5, 0.75)
    traj = {"up": {0: 0.5, 1: 1.0}, "flat": {0: 0.5, 1: 0.5}, "never": {}}
    lis = learning_impact(traj)
    # up: 1 - ((0)^2 + (0.25)^2) / ((0.5)^2 + (0.25)^2) = 1 - 0.0625/0.3125 = 0.8
    assert lis["up"] == pytest.approx(0.8)
    assert lis["flat"] == pytest.approx(0.8)  # symmetric deviation from the mean trajectory
    assert lis["never"] is None
    assert select_limr({"a": 0.2, "b": 0.9, "c": None, "d": -math.inf}, budget=5) == ["b", "a"]


def test_limr_trajectories_from_log():
    log = [{"step": 0, "epoch": 0, "sample_id": "a", "rewards": {"accuracy": [1, 0, 1, 0]}},
           {"step": 5, "epoch": 1, "sample_id": "a", "rewards": {"accuracy": [1, 1, 1, 1]}},
           {"step": 1, "epoch": 0, "sample_id": "b", "rewards": {"accuracy": [float("nan"), 0]}}]
    assert trajectories_from_log(log) == {"a": {0: 0.5, 1: 1.0}, "b": {0: 0.0}}


def _limr_log(path, trajectories):
    """A reward log with one line per (epoch, sample): 2 completions whose accuracies average to the value."""
    recs = []
    for sid, traj in trajectories.items():
        for k, r in traj.items():
            recs.append({"step": 10 * k, "epoch": k + 0.25, "sample_id": sid,
                         "rewards": {"accuracy": [1.0, 0.0] if r == 0.5 else [r, r]}})
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


LIMR_TRAJ = {"s00": {0: 0.5, 1: 1.0}, "s01": {0: 0.0, 1: 0.5}, "s02": {0: 1.0, 1: 1.0}, "s03": {0: 1.0, 1: 1.0},
             "s04": {0: 0.5}}  # s04: one epoch only, no trajectory


def test_limr_selection_on_a_crafted_log(tmp_path):
    from ego3s.data import write_jsonl
    from ego3s.select.run import SelectionConfig, run_selection

    write_jsonl(tmp_path / "pool.jsonl", _samples(5))
    _limr_log(tmp_path / "rewards.jsonl", LIMR_TRAJ)
    rep = run_selection(SelectionConfig(method="limr", data=str(tmp_path / "pool.jsonl"), out=str(tmp_path / "out"),
                                        limr_log=str(tmp_path / "rewards.jsonl"), budget=2, limr_min_coverage=0.8),
                        progress=False)
    # epoch means over every sample drawn: rbar_0 = (0.5 + 0 + 1 + 1 + 0.5) / 5 = 0.6, rbar_1 = 3.5 / 4 = 0.875
    den = (1 - 0.6) ** 2 + (1 - 0.875) ** 2
    want = {"s00": 1 - ((0.5 - 0.6) ** 2 + (1.0 - 0.875) ** 2) / den,   # 0.8541
            "s01": 1 - ((0.0 - 0.6) ** 2 + (0.5 - 0.875) ** 2) / den,   # -1.8505
            "s02": 0.0, "s03": 0.0}                                      # the mean's deviation exactly: 1 - 1
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "out" / "scores.csv"))}
    for sid, v in want.items():
        assert float(rows[sid]["learning_impact"]) == pytest.approx(v, abs=1e-12)
    assert rows["s04"]["learning_impact"] == ""  # one epoch: no trajectory, not scored
    sel = [json.loads(line)["id"] for line in open(tmp_path / "out" / "selected.jsonl")]
    assert sel[0] == "s00" and sel[1] in ("s02", "s03")
    m = rep["limr"]
    assert (m["epochs"], m["seen"], m["covered"], m["coverage"]) == (2, 5, 4, 0.8)
    assert (m["tied"], m["tie_groups"], m["largest_tie"], m["tied_selected"]) == (2, 1, 2, 1)
    assert "tied scores: 2 samples in 1 group(s)" in open(tmp_path / "out" / "report.md").read()


@pytest.mark.parametrize("traj, kw, says", [
    (LIMR_TRAJ, {}, "4 (80.0%) were drawn in at least 2 epochs, and LIMR needs 90%"),   # coverage below 0.9
    ({k: {0: v[0]} for k, v in LIMR_TRAJ.items()}, {"limr_min_coverage": 0.0}, "spans 1 epoch(s)"),
    (LIMR_TRAJ, {"limr_min_epochs": 3, "limr_min_coverage": 0.5}, "0 (0.0%) were drawn in at least 3 epochs"),
])
def test_limr_refuses_a_log_without_trajectories(tmp_path, traj, kw, says):
    from ego3s.data import write_jsonl
    from ego3s.select.run import SelectionConfig, run_selection

    write_jsonl(tmp_path / "pool.jsonl", _samples(5))
    _limr_log(tmp_path / "rewards.jsonl", traj)
    with pytest.raises(ValueError, match="too little training for LIMR") as e:
        run_selection(SelectionConfig(method="limr", data=str(tmp_path / "pool.jsonl"), out=str(tmp_path / "out"),
                                      limr_log=str(tmp_path / "rewards.jsonl"), budget=2, **kw), progress=False)
    assert str(tmp_path / "rewards.jsonl") in str(e.value) and says in str(e.value)
    assert "of the 5 candidates" in str(e.value)
