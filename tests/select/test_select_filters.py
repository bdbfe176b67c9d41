import csv
import json
import math

import pytest

from ego3s.data import Sample
from ego3s.select.baselines import (
    learning_impact,
    select_limo,
    select_limr,
    select_random,
    select_s1,
    trajectories_from_log,
)
from ego3s.select.csm import CSMThresholds, apply_filters, funnel

TH = CSMThresholds()  # lambda_c 0.1, lambda_f 0.5, lambda_o 0.21


def row(full, blind, context, rel=0.5, id="x"):
    return {"id": id, "s_full": full, "s_blind": blind, "s_context": context, "relevance": rel}


@pytest.mark.parametrize(
    "r, expect",
    [
        # (pass_coarse, pass_fine, pass_relevance)
        (row(0.9, 0.2, 0.1), (True, True, True)),
        (row(0.9, 0.85, 0.1), (False, True, True)),  # answerable blind: language-prior shortcut
        (row(0.9, 0.2, 0.8), (True, False, True)),  # answerable from context: global-scene shortcut
        (row(0.9, 0.2, 0.1, rel=0.1), (True, True, False)),
        (row(0.9, 0.2, 0.1, rel=None), (True, True, False)),  # no annotation: nothing says it needs it
        (row(0.0, 0.0, 0.0), (False, False, True)),  # s_full = 0: ratio uses eps, no division error
        (row(0.0, 0.0, 0.3), (False, False, True)),
        (row(0.6, 0.2, 0.3), (True, True, True)),  # fine tie at exactly 0.5 passes (>=)
        (row(0.9, 0.2, 0.1, rel=0.21), (True, True, True)),  # relevance tie passes (>=)
    ],
)
def test_filters_hand_table(r, expect):
    (out,) = apply_filters([r], TH)
    assert (out["pass_coarse"], out["pass_fine"], out["pass_relevance"]) == expect
    assert out["kept"] == all(expect)


def test_nonfinite_scores_are_invalid_not_kept():
    rows = apply_filters([row(float("nan"), 0.1, 0.1), row(None, 0.1, 0.1, id="y"), row(0.9, 0.1, 0.0, id="z")], TH)
    assert [r["kept"] for r in rows] == [False, False, True]
    f = funnel(rows)
    assert f == {
        "scored": 3,
        "invalid": 2,
        "after_coarse": 1,
        "after_fine": 1,
        "after_relevance": 1,
        "kept": 1,
        "failed_coarse": 0,
        "failed_fine": 0,
        "failed_relevance": 0,
    }


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
    return [
        Sample(
            id=f"s{i:02d}",
            question=f"what did I do with item {i}?",
            answer=f"a{i}",
            task="openqa",
            meta={"template": f"t{i % 3}"},
        )
        for i in range(n)
    ]


def test_random_budget_and_seed():
    ids = [f"s{i}" for i in range(50)]
    a = select_random(ids, 10, seed=1)
    assert len(a) == 10 and len(set(a)) == 10 and a == select_random(list(reversed(ids)), 10, seed=1)
    assert a != select_random(ids, 10, seed=2)
    assert select_random(ids, 100) and len(select_random(ids, 100)) == 50


def _cat_samples(sizes: dict[str, int]):
    return [
        Sample(
            id=f"{c}{i:02d}",
            question=f"what did I do with item {i}?",
            answer=f"a{i}",
            task="openqa",
            meta={"template": c},
        )
        for c, n in sizes.items()
        for i in range(n)
    ]


def test_s1_quality_and_difficulty():
    ss = _samples(6)
    ss[0].question = "why?"  # quality: fewer than 3 words
    solved = {s.id: False for s in ss}
    solved["s01"] = True  # difficulty: the base model answers it
    solved.pop("s02")  # no greedy answer (unreadable video)
    out = select_s1(ss, solved, {}, budget=10, seed=0)
    assert sorted(out) == ["s03", "s04", "s05"]


def test_s1_draws_a_category_uniformly_then_prefers_long_reasoning():
    """s1's diversity step. Three categories of 10, budget 3: each pick takes a category uniformly
    among those left, so the three picks hit three different categories with probability
    1 x 2/3 x 1/3 = 2/9 (a round-robin would always). One category with reasoning of 30, 20 and
    10 words: weights 2^-rank = 1, 1/2, 1/4, so the first pick is the longest with probability
    4/7, the middle one 2/7, the shortest 1/7. Over 2,000 seeds the binomial standard error is at
    most sqrt(0.25 / 2000) = 0.011; the tolerance 0.05 is 4.5 of them."""
    n = 2000
    ss = _cat_samples({"a": 10, "b": 10, "c": 10})
    never = {s.id: False for s in ss}
    distinct = sum(len({i[0] for i in select_s1(ss, never, {}, 3, seed=k)}) == 3 for k in range(n)) / n
    assert distinct == pytest.approx(2 / 9, abs=0.05)
    one = _cat_samples({"a": 3})
    lens = {"a00": 30.0, "a01": 20.0, "a02": 10.0}
    firsts = [select_s1(one, {s.id: False for s in one}, lens, 1, seed=k)[0] for k in range(n)]
    for sid, p in (("a00", 4 / 7), ("a01", 2 / 7), ("a02", 1 / 7)):
        assert firsts.count(sid) / n == pytest.approx(p, abs=0.05)
    # uniform over categories, not samples: a category of 1 against one of 9 is drawn first half the time
    lop = _cat_samples({"a": 9, "b": 1})
    first_b = sum(select_s1(lop, {s.id: False for s in lop}, {}, 1, seed=k)[0] == "b00" for k in range(n)) / n
    assert first_b == pytest.approx(0.5, abs=0.05)
    # exhausted categories leave the draw; deterministic by seed
    assert sorted(select_s1(lop, {s.id: False for s in lop}, {}, 10, seed=3)) == sorted(s.id for s in lop)
    assert select_s1(ss, never, {}, 5, seed=7) == select_s1(ss, never, {}, 5, seed=7)


def test_s1_stats_from_greedy_answers():
    from ego3s.rewards import correct_reward
    from ego3s.select.baselines import s1_stats

    close = Sample(id="c", question="What did I pick up?", answer="B", task="closeqa", options=["cup", "knife"])
    wrong = Sample(id="w", question="What did I pick up?", answer="A", task="closeqa", options=["cup", "knife"])
    open_ = Sample(id="o", question="What did I pick up?", answer="the red cup", task="openqa")
    greedy = {
        "c": "<think>the hand holds a knife</think><answer>B</answer>",
        "w": "<think>a knife</think><answer>B</answer>",
        "o": "red cup",
    }  # no <think>: the whole text counts as the reasoning
    solved, length = s1_stats([close, wrong, open_, _samples(1)[0]], greedy, lambda c, cols: correct_reward(c, **cols))
    assert solved == {"c": True, "w": False, "o": True}  # "red cup" vs "the red cup": ROUGE-L 1 after normalising
    assert length == {"c": 5.0, "w": 2.0, "o": 2.0}


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
    log = [
        {"step": 0, "epoch": 0, "sample_id": "a", "rewards": {"accuracy": [1, 0, 1, 0]}},
        {"step": 5, "epoch": 1, "sample_id": "a", "rewards": {"accuracy": [1, 1, 1, 1]}},
        {"step": 1, "epoch": 0, "sample_id": "b", "rewards": {"accuracy": [float("nan"), 0]}},
    ]
    assert trajectories_from_log(log) == {"a": {0: 0.5, 1: 1.0}, "b": {0: 0.0}}


def _limr_log(path, trajectories):
    """A reward log with one line per (epoch, sample): 2 completions whose accuracies average to the value."""
    recs = []
    for sid, traj in trajectories.items():
        for k, r in traj.items():
            recs.append(
                {
                    "step": 10 * k,
                    "epoch": k + 0.25,
                    "sample_id": sid,
                    "rewards": {"accuracy": [1.0, 0.0] if r == 0.5 else [r, r]},
                }
            )
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


LIMR_TRAJ = {
    "s00": {0: 0.5, 1: 1.0},
    "s01": {0: 0.0, 1: 0.5},
    "s02": {0: 1.0, 1: 1.0},
    "s03": {0: 1.0, 1: 1.0},
    "s04": {0: 0.5},
}  # s04: one epoch only, no trajectory


def test_limr_selection_on_a_crafted_log(tmp_path):
    from ego3s.data import write_jsonl
    from ego3s.select.run import SelectionConfig, run_selection

    write_jsonl(tmp_path / "pool.jsonl", _samples(5))
    _limr_log(tmp_path / "rewards.jsonl", LIMR_TRAJ)
    rep = run_selection(
        SelectionConfig(
            method="limr",
            data=str(tmp_path / "pool.jsonl"),
            out=str(tmp_path / "out"),
            limr_log=str(tmp_path / "rewards.jsonl"),
            budget=2,
            limr_min_coverage=0.8,
        ),
        progress=False,
    )
    # epoch means over every sample drawn: rbar_0 = (0.5 + 0 + 1 + 1 + 0.5) / 5 = 0.6, rbar_1 = 3.5 / 4 = 0.875
    den = (1 - 0.6) ** 2 + (1 - 0.875) ** 2
    want = {
        "s00": 1 - ((0.5 - 0.6) ** 2 + (1.0 - 0.875) ** 2) / den,  # 0.8541
        "s01": 1 - ((0.0 - 0.6) ** 2 + (0.5 - 0.875) ** 2) / den,  # -1.8505
        "s02": 0.0,
        "s03": 0.0,
    }  # the mean's deviation exactly: 1 - 1
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


@pytest.mark.parametrize(
    "traj, kw, says",
    [
        (LIMR_TRAJ, {}, "4 (80.0%) were drawn in at least 2 epochs, and LIMR needs 90%"),  # coverage below 0.9
        ({k: {0: v[0]} for k, v in LIMR_TRAJ.items()}, {"limr_min_coverage": 0.0}, "spans 1 epoch(s)"),
        (LIMR_TRAJ, {"limr_min_epochs": 3, "limr_min_coverage": 0.5}, "0 (0.0%) were drawn in at least 3 epochs"),
    ],
)
def test_limr_refuses_a_log_without_trajectories(tmp_path, traj, kw, says):
    from ego3s.data import write_jsonl
    from ego3s.select.run import SelectionConfig, run_selection

    write_jsonl(tmp_path / "pool.jsonl", _samples(5))
    _limr_log(tmp_path / "rewards.jsonl", traj)
    with pytest.raises(ValueError, match="too little training for LIMR") as e:
        run_selection(
            SelectionConfig(
                method="limr",
                data=str(tmp_path / "pool.jsonl"),
                out=str(tmp_path / "out"),
                limr_log=str(tmp_path / "rewards.jsonl"),
                budget=2,
                **kw,
            ),
            progress=False,
        )
    assert str(tmp_path / "rewards.jsonl") in str(e.value) and says in str(e.value)
    assert "of the 5 candidates" in str(e.value)


def test_greedy_scoring_has_its_own_cache_key_and_keeps_the_others():
    from dataclasses import asdict

    from ego3s.select.cache import setup_key
    from ego3s.select.scoring import ScoringConfig

    plain = asdict(ScoringConfig(estimator="sampling", num_samples=1))
    before = {k: v for k, v in plain.items() if k != "greedy"}  # settings as cached before `greedy` existed
    assert setup_key(**plain) == setup_key(**before)
    assert setup_key(**{**plain, "greedy": True}) != setup_key(**plain)
