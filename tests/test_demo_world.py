"""The demo's world at a smaller size, end to end through `ego3s run`: CSM must keep mostly the
samples only the hand answers, and summary.json must hold every figure the demo reports.

The config is `configs/demo.yaml` (the mini backbone, the 84 px EgoSynth world, the warm-up on a
pool of its own) with fewer clips and steps; what it asserts is the mechanism that shows at this
size (selection). The full demo's figures are in README.md and docs/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "egosynth": {"train": 200, "test": 40, "probe": 40},
    "warmup_egosynth": {"train": 500},
    "warmup": {"steps": 100, "save_steps": 100, "vision_pretrain": {"steps": 50, "held_out": 60}},
    "selection": {"min_kept": 8},
    "training": {"max_steps": 4, "save_steps": 4, "ecr": {"monitoring_interval": 2, "probing_set_size": 16}},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo_world")
    cfg = _merge(yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text()), SMALL)
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = d / "run"
    with open(d / "run.log", "w") as f:
        p = subprocess.run([sys.executable, "-m", "ego3s.cli", "run", "--config", str(d / "cfg.yaml"), f"out={out}"],
                           stdout=f, stderr=subprocess.STDOUT, env=env, timeout=1400)
    assert p.returncode == 0, (d / "run.log").read_text(errors="replace")[-4000:]
    return out


def test_csm_keeps_mostly_atypical_samples(run):
    s = json.loads((run / "summary.json").read_text())["select"]
    assert s["method"] == "csm" and s["pool"] == 200 and s["kept"] >= 8
    # the pool is 10% atypical (p_typical 0.9); the kept samples at least 3 times that
    assert s["share_atypical_pool"] == pytest.approx(100 * sum(
        not r["meta"]["typical"] for r in map(json.loads, (run / "data" / "train.jsonl").read_text().splitlines())) / 200)
    assert s["share_atypical_kept"] >= 3 * s["share_atypical_pool"], s


def test_summary_holds_every_figure(run):
    s = json.loads((run / "summary.json").read_text())
    for model in ("base", "trained"):
        for split in ("test_id", "test_atypical"):
            e = s["eval"][model][split]
            assert e["n_closed"] + e["n_open"] == 40 and e["n_closed"] > 0 and e["n_open"] > 0, (model, split)
            lo, hi = e["accuracy_ci95"]
            assert 0 <= lo <= e["accuracy"] <= hi <= 100 and 0 <= e["em"] <= 100
        assert set(s["reliance"][model]) == {"test_id", "test_atypical"}, model
    for split in ("test_id", "test_atypical"):
        p = s["paired"][split]
        assert p["n"] == s["eval"]["base"][split]["n_closed"]
        assert p["ci95"][0] <= p["accuracy_delta"] <= p["ci95"][1]
    assert s["ecr"]["refreshes"] is not None and s["ecr"]["refreshes_used"] is not None
    assert s["seconds"] > 0
    assert set(s["mechanisms"]) == {"csm_enrichment", "atypical_gain", "ecr_refresh", "reliance_rises"}
    assert all(m["showed"] in (True, False) for m in s["mechanisms"].values())
    assert "What this run shows" in (run / "report" / "index.html").read_text()
