"""Experiment tracking: `report_to` parsing, and what reaches TensorBoard's event files from a
two-step training (reward parts, ECR), a selection (funnel, score histograms) and an evaluation
(every metric per benchmark and split), read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ego3s.tracking import ecr_metrics, eval_metrics, report_to_list, selection_metrics
from helpers import REPO as ROOT
from helpers import tiny_grpo_config, write_video


def read_scalars(out: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from every TensorBoard event file under `out/runs`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    dirs = sorted({p.parent for p in (out / "runs").rglob("events.out.tfevents.*")})
    assert dirs, f"no event files under {out / 'runs'}"
    for d in dirs:
        acc = EventAccumulator(str(d), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["histograms"]:
            found.setdefault("hist:" + tag, []).extend((e.step, e.histogram_value.num) for e in acc.Histograms(tag))
    return found


def test_report_to_forms():
    assert report_to_list("none") == [] and report_to_list(None) == [] and report_to_list(["none"]) == []
    assert report_to_list("tensorboard") == ["tensorboard"]
    assert report_to_list("tensorboard, WandB") == ["tensorboard", "wandb"]
    assert report_to_list(["trackio", "tensorboard", "trackio"]) == ["trackio", "tensorboard"]
    with pytest.raises(ValueError, match="unknown tracker.*mlflw"):
        report_to_list("mlflw")
    with pytest.raises(ValueError, match="'none' cannot be combined"):
        report_to_list(["none", "wandb"])


def test_a_missing_tracker_package_is_named(monkeypatch):
    import importlib.util

    from ego3s.tracking import check_installed

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"training.report_to: 'wandb' needs .*'wandb'.*pip install wandb"):
        check_installed(["tensorboard", "wandb"], "training.report_to")


def test_tag_helpers_by_hand():
    assert selection_metrics({"scored": 10, "kept": 3, "x": None, "deep": {"a": 1}}) == {
        "select/funnel/scored": 10.0,
        "select/funnel/kept": 3.0,
        "select/funnel/deep/a": 1.0,
    }
    got = eval_metrics(
        "egothink",
        "all",
        {"score": 62.5, "n": 4, "em": None},
        {"dimension": {"Object/affordance": {"n": 2, "score": 50.0}}},
    )
    assert got == {
        "eval/egothink/all/score": 62.5,
        "eval/egothink/all/n": 4.0,
        "eval/egothink/all/dimension/Object/affordance/n": 2.0,
        "eval/egothink/all/dimension/Object/affordance/score": 50.0,
    }


def _train_samples(tmp_path, n=4):
    from ego3s.data import Sample

    return [
        Sample(
            id=f"s{i}",
            question="What did I pick up?",
            answer="A",
            task="closeqa",
            options=["cup", "knife"],
            video=write_video(tmp_path / f"s{i}.mp4", n=4, seed=i),
            interaction={
                "objects": [{"name": "cup"}],
                "action": "pick up",
                "boxes": [{"t": 0.0, "label": "cup", "box": [0.2, 0.2, 0.6, 0.6]}],
            },
        )
        for i in range(n)
    ]


def always_one(completions, **kw):
    return [1.0] * len(completions)


def zero_then_one(completions, **kw):  # the two completions of each group: 0, then 1
    return [float(i % 2) for i in range(len(completions))]


always_one.__name__ = "accuracy_reward"
zero_then_one.__name__ = "format_reward"


@pytest.mark.slow
def test_two_step_training_writes_reward_parts_and_ecr_to_tensorboard(tiny_model_dir, tmp_path, monkeypatch):
    import ego3s.rl.run as T
    from ego3s.curriculum.monitor import ECRConfig
    from ego3s.data import write_jsonl

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_one, zero_then_one])
    write_jsonl(tmp_path / "data.jsonl", _train_samples(tmp_path))
    cfg = tiny_grpo_config(
        tiny_model_dir,
        tmp_path / "data.jsonl",
        tmp_path / "run",
        max_steps=2,
        save_steps=10,
        report_to=["tensorboard"],
        ecr=ECRConfig(monitoring_interval=1, lambda_s=0.5),
    )
    T.run_training(cfg)
    tb = read_scalars(tmp_path / "run")
    # reward parts (TRL's names): every completion 1, and 0/1 inside each group (mean 0.5)
    assert [v for _, v in tb["train/rewards/accuracy_reward/mean"]] == [1.0, 1.0]
    assert [v for _, v in tb["train/rewards/format_reward/mean"]] == [0.5, 0.5]
    assert [s for s, _ in tb["train/rewards/format_reward/mean"]] == [1, 2]
    # ECR: totals 1 + {0, 1} = {1, 2} per group -> population variance 0.25 at every step; windows of
    # one step: the first sets the reference (ratio 1), the second has ratio 0.25 / 0.25 = 1
    assert [v for _, v in tb["train/ecr/step_variance"]] == [0.25, 0.25]
    assert [v for _, v in tb["train/ecr/window_mean"]] == [0.25, 0.25]
    assert [v for _, v in tb["train/ecr/variance_ratio"]] == [1.0, 1.0]
    assert [v for _, v in tb["train/ecr/zero_variance_share"]] == [0.0, 0.0]
    assert [v for _, v in tb["train/ecr/refreshes"]] == [0.0, 0.0]
    assert [v for _, v in tb["train/ecr/pool_size"]] == [4.0, 4.0]


def test_ecr_metrics_after_a_refresh_by_hand():
    from ego3s.curriculum.ecr import Curriculum
    from ego3s.curriculum.monitor import ECRConfig

    cur = Curriculum(ECRConfig(monitoring_interval=2, lambda_s=0.6, min_pool_size=1), ["a", "b", "c"], ["a", "b"])
    rec = lambda sid, tot: {"sample_id": sid, "rewards": {"total": tot, "accuracy": [1.0, 1.0]}}  # noqa: E731 - a one-line key
    assert cur.observe_step(0, [rec("a", [0.0, 2.0])]) is None  # variance 1
    d = cur.observe_step(1, [rec("a", [0.0, 2.0]), rec("b", [1.0, 1.0])])  # variances 1 and 0 -> 0.5
    m = ecr_metrics(cur, d)
    assert m["ecr/window_mean"] == 0.75 and m["ecr/variance_ratio"] == 1.0 and m["ecr/reference"] == 0.75
    assert m["ecr/step_variance"] == 0.5 and m["ecr/zero_variance_share"] == 0.5 and m["ecr/stagnant"] == 0.0
    cur.observe_step(2, [rec("a", [1.0, 1.0])])
    d = cur.observe_step(3, [rec("a", [0.0, 1.0])])  # variances 0 and 0.25 -> window 0.125, ratio 1/6
    cur.apply_refresh(3, d, ["c"])
    m = ecr_metrics(cur, d)
    assert m["ecr/window_mean"] == 0.125 and m["ecr/variance_ratio"] == pytest.approx(0.125 / 0.75, rel=1e-12)
    # "a" (right in its last 2 groups) retires, "b" (one group seen) stays, "c" joins: pool 2
    assert m["ecr/stagnant"] == 1.0 and m["ecr/refreshes"] == 1.0 and m["ecr/pool_size"] == 2.0


@pytest.mark.slow
def test_evaluation_metrics_reach_tensorboard(tiny_model_dir, tmp_path, monkeypatch):
    from ego3s.eval.run import EvalConfig, run_eval

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = EvalConfig(
        data=["EgoThink", "egotextvqa_indoor"],
        root=str(ROOT / "data" / "benchmarks"),
        model=tiny_model_dir,
        view="blind",
        limit=2,
        max_new_tokens=4,
        out=str(tmp_path / "o"),
        progress=False,
        report_to="tensorboard",
        tracking_step=7,
        device="cpu",
    )
    res = run_eval(cfg)
    tb = read_scalars(tmp_path / "o")
    think = res["benchmarks"]["egothink"]["metrics"]
    text = res["benchmarks"]["egotextvqa-indoor"]["metrics"]
    assert think["em"] is not None and text["em"] is not None
    assert tb["eval/egothink/all/em"] == [(7, pytest.approx(think["em"]))]
    assert tb["eval/egothink/all/rouge_l"] == [(7, pytest.approx(think["rouge_l"]))]
    assert tb["eval/egothink/all/n"] == [(7, 2.0)]
    assert tb["eval/egotextvqa/indoor/rouge_l"] == [(7, pytest.approx(text["rouge_l"]))]
    dim = res["benchmarks"]["egothink"]["by"]["dimension"]["Activity"]
    assert tb["eval/egothink/all/dimension/Activity/em"] == [(7, pytest.approx(dim["em"]))]
    # no judge: the judge metrics are None and are not logged (no fake zeros)
    assert think["score"] is None and "eval/egothink/all/score" not in tb
    logged = {t for t in tb if t.startswith("eval/egothink/all/") and "/dimension/" not in t}
    numeric = {f"eval/egothink/all/{k}" for k, v in think.items() if isinstance(v, (int, float))}
    assert logged == numeric  # every numeric metric, nothing else
    # the same run exported in lmms-eval's layout: the EgoThink dimension found is its lmms-eval task
    from ego3s.eval.lmms_eval import export_lmms_eval

    doc = json.loads(export_lmms_eval(res, tmp_path / "o").read_text())
    assert doc["group_subtasks"]["egothink"] == ["egothink_activity"]
    assert doc["results"]["egothink_activity"]["gpt_eval_score,none"] is None  # no judge: no made-up score
    assert doc["results"]["egothink_activity"]["ego3s_em,none"] == pytest.approx(dim["em"])
    assert doc["n-samples"]["egotextvqa-indoor"] == {"original": 2, "effective": 2}


def test_selection_funnel_and_score_histograms_reach_tensorboard(tmp_path, monkeypatch):
    from ego3s.select.run import SelectionConfig, _track

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = SelectionConfig(out=str(tmp_path / "sel"), report_to="tensorboard")
    rows = [
        {"id": "a", "s_full": 0.9, "coarse": 0.4, "fine": 0.5},
        {"id": "b", "s_full": 0.2, "coarse": None},
        {"id": "c", "s_full": float("nan"), "coarse": -0.1},
    ]
    _track(cfg, {"candidates": 3, "selected": 1, "funnel": {"scored": 3, "invalid": 1, "kept": 1}}, rows)
    tb = read_scalars(tmp_path / "sel")
    assert {k: v for k, v in tb.items() if k.startswith("select/funnel/")} == {
        "select/funnel/candidates": [(0, 3.0)],
        "select/funnel/selected": [(0, 1.0)],
        "select/funnel/scored": [(0, 3.0)],
        "select/funnel/invalid": [(0, 1.0)],
        "select/funnel/kept": [(0, 1.0)],
    }
    # one histogram per score, counting the finite values only
    assert tb["hist:select/score/s_full"] == [(0, 2.0)] and tb["hist:select/score/coarse"] == [(0, 2.0)]
    assert tb["hist:select/score/fine"] == [(0, 1.0)] and "hist:select/score/relevance" not in tb


def test_trainer_arguments_take_the_list_and_log_completions():
    from ego3s.rl.run import TrainingConfig, grpo_args
    from ego3s.train.sft import SFTRunConfig, sft_args
    from ego3s.train.warmup import WarmupConfig

    args = grpo_args(
        TrainingConfig(
            out="/tmp/x",
            batch_size=4,
            per_device_train_batch_size=4,
            num_generations=2,
            report_to="tensorboard",
            log_completions=True,
        )
    )
    assert args.report_to == ["tensorboard"] and args.log_completions is True
    assert (
        grpo_args(
            TrainingConfig(out="/tmp/x", batch_size=4, per_device_train_batch_size=4, num_generations=2)
        ).report_to
        == []
    )
    assert sft_args(SFTRunConfig(out="/tmp/x", report_to=["tensorboard"]), bf16=False).report_to == ["tensorboard"]
    assert WarmupConfig().report_to == "none" and report_to_list(WarmupConfig(report_to=["tensorboard"]).report_to)
    with pytest.raises(ValueError, match="report_to: unknown tracker"):  # at construction: the config checks it
        grpo_args(
            TrainingConfig(
                out="/tmp/x", batch_size=4, per_device_train_batch_size=4, num_generations=2, report_to="tensorbord"
            )
        )


def test_the_run_level_report_to_fills_stages_left_at_none():
    from ego3s.eval.run import EvalConfig
    from ego3s.pipeline import RunConfig, _tracked
    from ego3s.select.run import SelectionConfig

    run = RunConfig(report_to=["tensorboard"])
    assert _tracked(run, SelectionConfig()).report_to == ["tensorboard"]
    assert _tracked(run, EvalConfig(data=["egosynth"], report_to="wandb")).report_to == "wandb"  # its own wins
    assert _tracked(RunConfig(), SelectionConfig()).report_to == "none"
