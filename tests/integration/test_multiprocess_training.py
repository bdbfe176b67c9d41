"""`ego3s train` under torchrun with 2 gloo processes equals 1 process at the same global batch:
same rollouts and rewards (layout-invariant sampling), same losses and weights, and an ECR
refresh decided on rank 0 that every rank follows."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from ego3s.data.egosynth import EgoSynthConfig, generate
from ego3s.data.io import read_jsonl
from ego3s.files import read_log


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=12, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


def _train(cfg: dict, path, nproc: int) -> subprocess.CompletedProcess:
    path.write_text(yaml.safe_dump(cfg))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }  # CPU, gloo
    cmd = [sys.executable, "-m"]
    if nproc > 1:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m"]
    proc = subprocess.run(
        [*cmd, "ego3s.cli", "train", "--config", str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def test_two_processes_train_like_one(synth, tmp_path, tiny_model_dir):
    samples = read_jsonl(synth / "train.jsonl")
    (tmp_path / "selected.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples[:4]))
    (tmp_path / "relevance.json").write_text(json.dumps({s.id: 1.0 for s in samples}))
    base = dict(
        model=tiny_model_dir,
        data=str(tmp_path / "selected.jsonl"),
        candidates=str(synth / "train.jsonl"),
        batch_size=8,
        num_generations=2,
        max_completion_length=6,
        max_steps=5,
        save_steps=5,
        learning_rate=1e-3,
        beta=0.0,
        nframes=4,
        max_pixels=56 * 56,
        min_pixels=28 * 28,
        dtype="float32",
        layout_invariant_sampling=True,
        relevance_file=str(tmp_path / "relevance.json"),
        # the random tiny model gets every rollout wrong: zero variance, so ECR refreshes at step 3
        ecr={
            "ecr": True,
            "monitoring_interval": 2,
            "monitoring_unit": "steps",
            "probing_set_size": 6,
            "mastered_window": 2,
            "min_pool_size": 1,
        },
        csm={"lambda_c": -2.0, "lambda_f": -1.0e9, "lambda_o": -2.0},
    )
    _train({**base, "out": str(tmp_path / "one"), "per_device_train_batch_size": 8}, tmp_path / "one.yaml", 1)
    _train({**base, "out": str(tmp_path / "two"), "per_device_train_batch_size": 4}, tmp_path / "two.yaml", 2)
    one, two = tmp_path / "one", tmp_path / "two"

    # the same prompts, completions' rewards and group records, step by step
    r1, r2 = read_log(one / "rewards.jsonl"), read_log(two / "rewards.jsonl")
    assert len(r1) == 5 * 4 and [(r["step"], r["sample_id"], r["rewards"]) for r in r1] == [
        (r["step"], r["sample_id"], r["rewards"]) for r in r2
    ]

    # ECR: one refresh, the same decision and pool in both layouts, later batches from the new pool
    e1, e2 = read_log(one / "ecr_events.jsonl"), read_log(two / "ecr_events.jsonl")
    assert len(e1) == len(e2) >= 1
    for a, b in zip(e1, e2):
        assert {k: a[k] for k in ("step", "added", "removed", "pool_after")} == {
            k: b[k] for k in ("step", "added", "removed", "pool_after")
        }
    s1 = json.loads((one / "checkpoint-5" / "ecr_state.json").read_text())
    s2 = json.loads((two / "checkpoint-5" / "ecr_state.json").read_text())
    assert s1["active"] == s2["active"] and s1["refreshes"] == s2["refreshes"] >= 1
    after = {r["sample_id"] for r in r2 if r["step"] > e1[0]["step"]}
    assert after and after <= set(s2["active"]) | set(e1[0]["added"])

    # the same losses and gradient norms and, after 5 optimizer steps, the same weights (float32 on
    # CPU; gradients averaged over 2 processes add in another order, and Adam's normalised steps of
    # lr 1e-3 turn a 1e-7 gradient difference on a near-zero gradient into up to ~1e-4)
    def logged(run, key):
        hist = json.loads((run / "checkpoint-5" / "trainer_state.json").read_text())["log_history"]
        return [h[key] for h in hist if key in h]

    assert len(logged(one, "loss")) == 5 and logged(one, "loss") == pytest.approx(logged(two, "loss"), abs=1e-6)
    norms = logged(one, "grad_norm")
    assert max(norms) > 1.0 and norms == pytest.approx(logged(two, "grad_norm"), rel=1e-4, abs=1e-6)
    from safetensors.torch import load_file

    w1, w2 = load_file(one / "final" / "model.safetensors"), load_file(two / "final" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=3e-4, rtol=0)
    w0 = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    moved = sum(int(not torch.equal(w0[k], w1[k])) for k in w1 if k in w0)
    assert moved > 0  # training did change the weights


def test_dapo_dynamic_sampling_under_two_processes(synth, tmp_path, tiny_model_dir):
    """Each rank refills its own uninformative groups, in lockstep (the random tiny model gets
    every rollout wrong, so every group is dead and every round refills)."""
    cfg = dict(
        model=tiny_model_dir,
        data=str(synth / "train.jsonl"),
        out=str(tmp_path / "dapo"),
        strategy="dapo",
        dynamic_sampling_rounds=2,
        optimizer_steps_per_generation=1,
        batch_size=8,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=4,
        max_steps=2,
        save_steps=2,
        learning_rate=1e-3,
        beta=0.0,
        nframes=4,
        max_pixels=56 * 56,
        min_pixels=28 * 28,
        dtype="float32",
        ecr={"ecr": False},
    )
    _train(cfg, tmp_path / "dapo.yaml", 2)
    log = read_log(tmp_path / "dapo" / "rewards.jsonl")
    hist = json.loads((tmp_path / "dapo" / "log_history.json").read_text())
    dead = [h["dapo/uninformative_groups"] for h in hist if "dapo/uninformative_groups" in h]
    assert dead and max(dead) > 0
    # 4 groups per step, plus 2 refill rounds of up to 2 groups on each of the 2 ranks
    per_step = {s: sum(r["step"] == s for r in log) for s in (0, 1)}
    assert all(n > 4 for n in per_step.values()), per_step
