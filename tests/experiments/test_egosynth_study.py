"""The EgoSynth study's statistics and config checks (experiments/egosynth/run.py), without a run:
seeds pooled per question, intervals from ego3s.summary / ego3s.eval.paired, the paired comparison,
and the config refusing test, curve and training data that could share questions or an ECR
schedule that cannot refresh in time."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from ego3s.eval.paired import compare_predictions
from ego3s.summary import wilson
from helpers import REPO


@pytest.fixture(scope="module")
def drv():
    spec = importlib.util.spec_from_file_location("egosynth_study_driver", REPO / "experiments/egosynth/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seeds_pool_per_question_on_the_questions_all_answered(drv):
    pooled = drv.pool_seeds([{"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 1.0}])
    assert pooled == {"a": 1.0, "b": 0.5}


def test_one_seed_gets_wilson_several_the_bootstrap(drv):
    one = drv.mean_interval({str(i): float(i < 30) for i in range(100)})
    assert one["mean"] == 30.0 and one["ci95"] == wilson(30, 100) and one["interval"] == "wilson"
    two = drv.mean_interval({str(i): (1.0 if i < 20 else 0.5 if i < 40 else 0.0) for i in range(100)})
    assert two["mean"] == 30.0 and two["ci95"][0] < 30.0 < two["ci95"][1] and two["interval"].startswith("bootstrap")
    assert drv.mean_interval({})["mean"] is None


def test_paired_is_the_shared_helper(drv):
    a = {str(i): float(i % 2) for i in range(50)}
    b = {str(i): float(i % 3 == 0) for i in range(50)}
    r, ref = drv.paired(a, b), compare_predictions(a, b)
    assert r["value"] == ref["value"] and r["ci95"] == ref["ci95"] and r["mcnemar_p"] == ref["mcnemar_p"]
    assert drv.paired(a, {}) is None


def test_question_scores_read_closed_accuracy_and_open_em(drv, tmp_path):
    rows = [
        {"id": "q1", "task": "closeqa", "split": "test_id", "accuracy": 1.0, "em": None},
        {"id": "q2", "task": "openqa", "split": "test_atypical", "accuracy": None, "em": 0.0},
        {"id": "q3", "task": "closeqa", "split": "test_atypical", "accuracy": 0.0},
    ]
    (tmp_path / "eval2" / "egosynth").mkdir(parents=True)
    (tmp_path / "eval2" / "egosynth" / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = drv.eval_scores(tmp_path / "eval")
    assert got["second_test_id"]["accuracy"] == {"q1": 1.0}
    assert got["second_test_atypical"] == {"accuracy": {"q3": 0.0}, "em": {"q2": 0.0}}
    assert "test_id" not in got  # no eval/ folder


def test_config_refuses_shared_seeds_and_late_ecr(drv):
    cfg = drv.load_table_config(REPO / "experiments/egosynth/table.yaml")
    drv.check_config(cfg)
    bad = copy.deepcopy(cfg)
    bad["curve_seed"] = bad["data"]["seed"]
    with pytest.raises(SystemExit, match="own seed"):
        drv.check_config(bad)
    late = copy.deepcopy(cfg)
    late["train"]["ecr"]["monitoring_interval"] = 80  # 10 steps: the first refresh at step 19 of 30
    with pytest.raises(SystemExit, match="ECR cannot refresh"):
        drv.check_config(late)
    drv.check_config(drv.load_table_config(REPO / "experiments/egosynth/table.yaml", smoke=True))


def _curve_point(root, d, correct):
    """One curve evaluation's per-question answers: `correct[i]` for closed question i of test_id."""
    (root / d / "egosynth").mkdir(parents=True)
    rows = [{"id": f"q{i}", "task": "closeqa", "split": "test_id", "accuracy": float(c)} for i, c in enumerate(correct)]
    (root / d / "egosynth" / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"step": 0, "dir": d, "gpu_s": 0.0, "accuracy": 100.0 * sum(correct) / len(correct)}


def test_a_target_inside_the_curve_noise_is_flagged(drv, tmp_path):
    # 200 questions: step 0 right on 140, the last point on 144 (4 gained, none lost) -> +2.0: the
    # bootstrap's interval leaves out 0, the exact McNemar test (p 0.125) does not, so it is noise;
    # the same curve with 40 gained is a gain the target can stand on
    n = 200
    first = [i < 140 for i in range(n)]
    small = [
        _curve_point(tmp_path, "prep/base_curve", first),
        _curve_point(tmp_path, "rows/a/curve/step-30", [i < 144 for i in range(n)]),
    ]
    g = drv.curve_gain(tmp_path, [{"curve": small}])
    assert g["value"] == pytest.approx(2.0) and g["n"] == n and g["mcnemar_p"] > 0.1 and g["target_in_noise"]
    assert "McNemar p 0.12" in drv.gain_sentence(g) and "Not above the noise" in drv.gain_sentence(g)
    large = [small[0], _curve_point(tmp_path, "rows/b/curve/step-30", [i < 180 for i in range(n)])]
    g = drv.curve_gain(tmp_path, [{"curve": large}])
    assert g["value"] == pytest.approx(20.0) and g["ci95"][0] > 0 and g["mcnemar_p"] < 0.05
    assert not g["target_in_noise"]
    # seeds pooled per question give graded scores: no McNemar, the bootstrap's interval decides
    other = [small[0], _curve_point(tmp_path, "rows/c/curve/step-30", [i < 170 for i in range(n)])]
    g = drv.curve_gain(tmp_path, [{"curve": large}, {"curve": other}])
    assert g["value"] == pytest.approx(17.5) and g.get("mcnemar_p") is None and not g["target_in_noise"]
    g = drv.curve_gain(tmp_path, [{"curve": small}, {"curve": small}, {"curve": small[:1] + other[1:]}])
    assert g.get("mcnemar_p") is None and g["value"] > 0
    assert "McNemar" not in drv.gain_sentence(g) and "n 200)" in drv.gain_sentence(g)
    assert drv.curve_gain(tmp_path, [{"curve": small[:1]}]) is None  # one point: no gain to judge
    assert drv.curve_gain(tmp_path, []) is None


def test_the_base_is_found_in_a_restored_pack(drv, tmp_path):
    # a table rebuilt from a pack alone has the base model's files under restored/prep/
    restored = tmp_path / drv.RESTORED / "prep"
    _curve_point(tmp_path / drv.RESTORED, "prep/base_curve", [True, False])
    assert drv.prep_dir(tmp_path) == tmp_path / "prep"  # no manifest there: nothing to take
    (restored / "manifest.json").write_text("{}")
    assert drv.prep_dir(tmp_path) == restored
    assert drv.point_dir(tmp_path, "prep/base_curve") == restored / "base_curve"
    assert drv.point_dir(tmp_path, "rows/x/curve/step-10") == tmp_path / "rows/x/curve/step-10"
    (tmp_path / "prep").mkdir()
    (tmp_path / "prep" / "manifest.json").write_text("{}")  # this machine's own base wins
    assert drv.point_dir(tmp_path, "prep/base_curve") == tmp_path / "prep" / "base_curve"


def _row_answers(root, name, seed, right: list[bool]):
    folder = root / "rows" / f"{name}_s{seed}" / "eval" / "egosynth"
    folder.mkdir(parents=True)
    rows = [{"id": f"q{i}", "task": "closeqa", "split": "test_id", "accuracy": float(ok)} for i, ok in enumerate(right)]
    (folder / "per_sample.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"seed": seed, "eval": {"done": True}, "curve": []}


def test_each_part_of_the_method_is_compared_with_the_row_without_it(drv, tmp_path):
    """`ablations`: Ego3S - CSM + IRL (what ECR adds), CSM + IRL - CSM + GRPO (IRL), CSM + GRPO -
    full and - random (the selection), paired per question with seeds pooled; a pair whose rows
    have not both run is left out."""
    n = 100
    answers = {
        "full": [[i < 60 for i in range(n)], [i < 62 for i in range(n)]],
        "csm_grpo": [[i < 61 for i in range(n)]],
        "csm_irl": [[i < 80 for i in range(n)]],
        "ego3s": [[i < 80 or i == 99 for i in range(n)]],
    }
    rows = {
        name: {"runs": [_row_answers(tmp_path, name, s, right) for s, right in enumerate(per_seed)]}
        for name, per_seed in answers.items()
    }
    st = drv.question_stats(tmp_path, rows, base_here=False)
    got = {(a["row"], a["reference"]): a for a in st["ablations"]}
    assert list(got) == [("ego3s", "csm_irl"), ("csm_irl", "csm_grpo"), ("csm_grpo", "full")]  # no random row
    ecr = got[("ego3s", "csm_irl")]["paired"]["test_id"]["accuracy"]
    assert ecr["value"] == pytest.approx(1.0) and ecr["n_a_only"] == 1 and ecr["n_b_only"] == 0
    irl = got[("csm_irl", "csm_grpo")]["paired"]["test_id"]["accuracy"]
    assert irl["value"] == pytest.approx(19.0) and irl["ci95"][0] > 0
    sel = got[("csm_grpo", "full")]["paired"]["test_id"]["accuracy"]  # full's two seeds pooled: 61 - 61
    assert sel["value"] == pytest.approx(0.0) and sel.get("mcnemar_p") is None
    assert got[("csm_irl", "csm_grpo")]["adds"] == "IRL"
    md = "\n".join(drv.intervals_markdown({"stats": st, "rows": {k: {"runs": v["runs"]} for k, v in rows.items()}}))
    assert "## What each part adds" in md and "| IRL | csm_irl - csm_grpo | 19.0 [" in md
