"""A few real GRPO steps on the CPU (tiny model, tiny EgoSynth): checkpoints, logged loss and
rewards, the per-(step, sample) reward log, and a resume that continues to the new max_steps
without duplicating reward records of steps it redoes."""

import json
from dataclasses import replace

import pytest

from ego3s.data.egosynth import EgoSynthConfig, generate
from ego3s.data.io import read_jsonl
from ego3s.files import read_log
from ego3s.rl.run import run_training
from helpers import tiny_grpo_config

N = 8
G = 2
PROMPTS_PER_STEP = 8 // G  # batch 8 completions = 4 prompts x G


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=N, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


def _cfg(tiny_model_dir, synth, out, max_steps):
    return tiny_grpo_config(
        tiny_model_dir,
        synth / "train.jsonl",
        out,
        batch=8,
        num_generations=G,
        max_completion_length=8,
        max_steps=max_steps,
        save_steps=2,
    )


def _keys(records):
    return [(r["step"], r["sample_id"]) for r in records]


def test_train_checkpoint_and_resume(tiny_model_dir, synth, tmp_path):
    out = tmp_path / "run"
    ids = {s.id for s in read_jsonl(synth / "train.jsonl")}
    cfg = _cfg(tiny_model_dir, synth, out, max_steps=4)
    trainer = run_training(cfg)
    assert trainer.state.global_step == 4
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    assert (out / "final" / "config.json").exists()
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    acc = [h["rewards/accuracy_reward/mean"] for h in hist if "rewards/accuracy_reward/mean" in h]
    assert len(losses) == 4 and len(acc) == 4
    assert all(isinstance(x, float) and x == x for x in losses + acc)  # finite, not NaN

    log = read_log(out / "rewards.jsonl")
    assert sorted({r["step"] for r in log}) == [0, 1, 2, 3]
    assert len(log) == 4 * PROMPTS_PER_STEP and len(set(_keys(log))) == len(log)
    for step in range(4):
        assert sum(r["step"] == step for r in log) == PROMPTS_PER_STEP
    assert {r["sample_id"] for r in log} == ids  # 2 epochs of 8 samples, 4 prompts a step
    for r in log:
        assert set(r["rewards"]) == {"accuracy", "format", "interaction", "correct", "total"}
        assert all(len(v) == G for v in r["rewards"].values())

    # a crash after checkpoint-4: records of a step the resumed run redoes, and a torn last line
    crashed = [{**r, "step": 4} for r in log[:2]]
    with open(out / "rewards.jsonl", "a") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in crashed) + '{"step": 4, "epoch": 2.0, "sample_')

    resumed = run_training(replace(cfg, max_steps=6), resume=True)
    assert resumed.state.global_step == 6
    assert (out / "checkpoint-6").is_dir()
    log2 = read_log(out / "rewards.jsonl")
    keys = _keys(log2)
    assert len(keys) == len(set(keys)), "duplicate (step, sample) records after resume"
    assert log2[: len(log)] == log  # steps 0-3 untouched
    assert sorted({r["step"] for r in log2}) == list(range(6))
    assert len(log2) == 6 * PROMPTS_PER_STEP
    # the resumed run trained (and logged) only steps 5 and 6
    hist2 = [h for h in resumed.state.log_history if "loss" in h]
    assert [h["step"] for h in hist2][-2:] == [5, 6]
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
