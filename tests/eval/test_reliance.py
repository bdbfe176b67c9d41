"""Paired comparisons (`ego3s.eval.paired`) and the counterfactual reliance of `--icu` runs:
hand-computed differences, exact McNemar p, the bootstrap interval against the normal
approximation, and the reliance of a scored benchmark from hand-made predictions."""

from __future__ import annotations

import json
import math

import pytest

from ego3s.data.schema import Sample
from ego3s.eval.paired import compare_predictions, correctness, mcnemar_exact, paired_difference, read_correctness

INTER = {
    "objects": [{"name": "cup"}],
    "action": "pick up",
    "boxes": [{"t": 0.0, "label": "cup", "box": [0, 0, 0.5, 0.5]}],
}


def test_mcnemar_exact_by_hand():
    # 1 vs 9 discordant pairs: P(X <= 1 | n=10, 1/2) = (1 + 10) / 1024, two-sided doubles it
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024, abs=1e-15)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0  # 2 * P(X <= 3 | 6) = 2 * 42/64 > 1 -> capped
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32, abs=1e-15)
    assert 0 < mcnemar_exact(0, 3000) < 1e-300 or mcnemar_exact(0, 3000) == 0.0  # no overflow for large n


def test_paired_difference_counts_and_value():
    a = [1, 1, 1, 0, 0, 1, 0, 1]
    b = [1, 0, 0, 0, 1, 1, 0, 0]
    r = paired_difference(a, b)
    assert r["n"] == 8 and r["a"] == 62.5 and r["b"] == 37.5 and r["value"] == 25.0
    assert (r["n_a_only"], r["n_b_only"]) == (3, 1)
    assert r["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)
    lo, hi = r["ci95"]
    assert lo <= 25.0 <= hi and -100 <= lo and hi <= 100
    assert paired_difference(a, b) == r  # fixed seed: the same interval every time
    same = paired_difference(a, a)
    assert same["value"] == 0.0 and same["ci95"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    empty = paired_difference([], [])
    assert empty["value"] is None and empty["n"] == 0 and empty["mcnemar_p"] == 1.0
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])


def test_bootstrap_interval_matches_the_normal_approximation():
    # n = 400 questions: 60 only a right, 20 only b right, 150 both, 170 neither
    a = [1] * 60 + [0] * 20 + [1] * 150 + [0] * 170
    b = [0] * 60 + [1] * 20 + [1] * 150 + [0] * 170
    r = paired_difference(a, b)
    d_mean = (60 - 20) / 400
    var = (60 + 20) / 400 - d_mean**2  # E[d^2] - E[d]^2 of the per-question difference
    se = math.sqrt(var / 400)
    # The bootstrap quantiles carry Monte Carlo error sqrt(p(1-p)/B) / density ~ 0.0006 (B = 10,000,
    # p = 0.025) and the percentile interval differs from the normal one by the skewness term
    # O(se / sqrt(n)) ~ 0.001; 0.005 (0.5 points) is several times both.
    assert r["value"] == pytest.approx(100 * d_mean)
    assert r["ci95"][0] == pytest.approx(100 * (d_mean - 1.959964 * se), abs=0.5)
    assert r["ci95"][1] == pytest.approx(100 * (d_mean + 1.959964 * se), abs=0.5)
    # pairing matters: the unpaired interval of two independent proportions is wider
    pa, pb = sum(a) / 400, sum(b) / 400
    unpaired = math.sqrt(pa * (1 - pa) / 400 + pb * (1 - pb) / 400)
    assert unpaired > 1.3 * se


def test_graded_scores_have_no_mcnemar():
    r = paired_difference([0.5, 1.0, 0.25], [0.0, 1.0, 0.25])
    assert r["value"] == pytest.approx(100 * 0.5 / 3, abs=1e-4) and "mcnemar_p" not in r


def test_compare_predictions_pairs_on_shared_ids_and_reads_per_sample_rows(tmp_path):
    a = {"q1": 1.0, "q2": 0.0, "q3": 1.0, "only_a": 1.0, "none": None}
    b = {"q1": 0.0, "q2": 0.0, "q3": 1.0, "only_b": 0.0}
    r = compare_predictions(a, b)
    assert r["n"] == 3 and r["only_a"] == 1 and r["only_b"] == 1 and r["value"] == pytest.approx(100 / 3, abs=1e-4)
    assert "bootstrap" in r["interval"]
    rows = [
        {"id": "c", "accuracy": 1.0},
        {"id": "o", "em": 0.0, "accuracy": None},
        {"id": "k", "correct": 0.0},
        {"id": "h", "correct": None},
    ]
    assert [correctness(x) for x in rows] == [1.0, 0.0, 0.0, None]
    p = tmp_path / "per_sample.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in rows))
    assert read_correctness(p) == {"c": 1.0, "o": 0.0, "k": 0.0}


def _sample(i: int, closed: bool, split: str, inter=True) -> Sample:
    return Sample.from_dict(
        {
            "id": f"s{i}",
            "question": "What did I pick up?",
            "answer": "B" if closed else "a cup",
            "task": "closeqa" if closed else "openqa",
            "options": ["a knife", "a cup", "a towel", "a bowl"] if closed else None,
            "video": f"v{i}.mp4",
            "interaction": INTER if inter else None,
            "meta": {"split": split},
        }
    )


def test_reliance_of_a_scored_benchmark_from_hand_made_predictions(tmp_path):
    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.eval.run import EvalConfig, results_csv, results_markdown, results_table, score_benchmark

    bench = get_benchmark("EgoSynth")
    samples = [
        _sample(0, True, "test_id"),
        _sample(1, True, "test_id"),
        _sample(2, False, "test_id"),
        _sample(3, True, "test_atypical"),
        _sample(4, False, "test_atypical"),
        _sample(5, True, "test_id", inter=False),
        _sample(6, True, "test_id"),
        _sample(7, True, "test_id"),
    ]
    full = {
        "s0": "B",
        "s1": "B",
        "s2": "<answer>a cup</answer>",
        "s3": "B",
        "s4": "a cup",
        "s5": "B",
        "s6": "A",
        "s7": "B",
    }
    ctx = {"s0": "A", "s1": "B", "s2": "a bowl", "s3": "C", "s4": "the cup"}  # s6 skipped, s7 not predicted
    records = {k: {"id": k, "output": v} for k, v in full.items()}
    crecords = {k: {"id": k, "output": v} for k, v in ctx.items()}
    crecords["s6"] = {"id": "s6", "skipped": "unreadable_video"}
    cfg = EvalConfig(data=["EgoSynth"], icu=True)
    summary, _ = score_benchmark(bench, tmp_path, samples, records, cfg, context_records=crecords)
    cr = summary["icu"]["counterfactual_reliance"]
    # paired: s0 (1, 0), s1 (1, 1), s2 open (1, 0), s3 (1, 0), s4 open (1 "a cup", 0 "the cup" -> EM
    # normalises articles away, so 1): full 5/5, context 2/5
    assert cr["n_paired"] == 5 and cr["n_excluded"] == 3
    assert cr["excluded"] == {"no_context": 2, "no_interaction": 1}
    al = cr["splits"]["all"]
    assert al["n"] == 5 and al["full"] == 100.0 and al["context"] == 40.0 and al["value"] == 60.0
    assert (al["n_full_only"], al["n_context_only"]) == (3, 0) and al["mcnemar_p"] == pytest.approx(2 / 8)
    assert al["ci95"][0] <= 60.0 <= al["ci95"][1]
    tid = cr["splits"]["test_id"]
    assert tid["n"] == 3 and tid["value"] == pytest.approx(200 / 3, abs=1e-3)
    atyp = cr["splits"]["test_atypical"]
    assert atyp["n"] == 2 and atyp["value"] == 50.0
    op = al["by_task"]["openqa"]
    assert op["n"] == 2 and op["value"] == 50.0 and set(op["rouge_l"]) >= {"value", "ci95", "n"}
    assert al["by_task"]["closeqa"]["n"] == 3
    # ROUGE-L of "a bowl" vs "a cup" and "the cup" vs "a cup" (stemmed, normalised: bowl/cup, cup/cup)
    assert op["rouge_l"]["value"] == pytest.approx(100 * ((1 - 0) + (1 - 1)) / 2, abs=1e-4)
    results = {
        "model": "m",
        "model_fingerprint": "f",
        "world_size": 1,
        "config": cfg.public(),
        "benchmarks": {"egosynth": {**summary, "benchmark": "egosynth"}},
    }
    assert "counterfactual reliance" in results_markdown(results)
    assert "counterfactual reliance" in results_table(results)
    assert "counterfactual_reliance,all,5,reliance,60.0" in results_csv(results)
    # other views: no reliance, and it says why
    s2, _ = score_benchmark(bench, tmp_path, samples, records, EvalConfig(data=["EgoSynth"], icu=True, view="context"))
    assert s2["icu"]["counterfactual_reliance"] is None and "full view" in s2["icu"]["counterfactual_reliance_note"]
