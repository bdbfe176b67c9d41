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
