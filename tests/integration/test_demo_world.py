"""The demo's world and backbone at a smaller size, end to end on the CPU.

`configs/demo.yaml` (the mini backbone on the smaller EgoSynth world) with every size cut: a
200-sample pool, 60 questions per test split, a 1,200-clip warm-up pool, 250 vision pretraining
steps, 300 QA warm-up steps and 20 GRPO steps. It checks what the demo rests on: the vision tower
learns to name the grasped object from the hand (far above chance on atypical clips, and far
less with the hand masked), CSM keeps a larger share of atypical samples than the pool holds, and
`summary.json` carries every field of its schema. The full demo's figures are in docs/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

SMALLER = [
    "egosynth.train=200",
    "egosynth.test=60",
    "egosynth.probe=40",
    "warmup_egosynth.train=1200",
    "warmup.vision_pretrain.steps=250",
    "warmup.vision_pretrain.held_out=100",
    "warmup.steps=300",
    "training.max_steps=20",
    "training.save_steps=10",
    "training.ecr.probing_set_size=60",  # a refresh samples 4 rollouts per view of each probed clip
    "selection.min_kept=8",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_world") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "ego3s.cli", "run", "--config", str(REPO / "configs" / "demo.yaml"), f"out={out}"]
    proc = subprocess.run(cmd + SMALLER, env=env, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_the_tower_reads_the_hand(run):
    held = json.loads((run / "warmup" / "vision_pretrain.json").read_text())["held_out"]
    full, context = held["full"]["atypical"], held["context"]["atypical"]
    # chance is 1/9 (3 scenes x 3 objects); the hand masked leaves only the scene, which never
    # shows an atypical object
    # (a trial on the 2-core machine: 38% full, 4% context)
    assert full >= 0.25, held
    assert context <= full - 0.15, held


def test_csm_keeps_more_atypical_samples_than_the_pool_holds(run):
    sel = json.loads((run / "summary.json").read_text())["select"]
    assert sel["method"] == "csm" and sel["pool"] == 200 and sel["kept"] >= 8
    assert sel["share_atypical_kept"] > sel["share_atypical_pool"], sel


def test_summary_is_complete(run):
    s = json.loads((run / "summary.json").read_text())
    assert set(s["select"]) >= {"method", "pool", "kept", "share_atypical_pool", "share_atypical_kept"}
    for model in ("base", "trained"):
        for split in ("test_id", "test_atypical"):
            e = s["eval"][model][split]
            assert set(e) >= {"accuracy", "accuracy_ci95", "n_closed", "n_open", "em"}, (model, split)
            assert e["n_closed"] + e["n_open"] == 60
            lo, hi = e["accuracy_ci95"]
            assert lo <= e["accuracy"] <= hi
    for split in ("test_id", "test_atypical"):
        p = s["paired"][split]
        assert p["ci95"][0] <= p["accuracy_delta"] <= p["ci95"][1]
    assert s["ecr"]["refreshes"] is not None and s["ecr"]["refreshes_used"] is not None
    assert s["ecr"]["refreshes_used"] <= s["ecr"]["refreshes"]
    assert s["seconds"] > 0
    assert set(s["mechanisms"]) == {"csm_enrichment", "atypical_gain", "ecr_refresh", "reliance_rises"}
    assert all(m["showed"] is not None for m in s["mechanisms"].values()), s["mechanisms"]
