"""The README's "At scale" path, end to end on the CPU: experiments/ego4d_scale/run.sh with the tiny
model on two small stand-in Ego4D videos. The same driver, the same README commands and the same
examples/ scripts as the 7B run on a GPU (docs/at_scale.md), so a break anywhere on that path
(annotation layout, build-ego4d, select, the examples' arguments, accelerate launch, LoRA and
full fine-tuning with ECR, merge, eval under both views) fails here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO as ROOT


@pytest.mark.slow
def test_at_scale_driver_on_cpu(tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    env = {
        **os.environ,
        "SCALE": "tiny",
        "WORK": str(work),
        "MODEL": tiny_model_dir,
        "PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        # accelerate's CLI from the interpreter running the tests; `ego3s` the driver supplies itself
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "CUDA_VISIBLE_DEVICES": "",
        "STAGES": "standin,model,build,select,lora,merge,eval,ft",
        "TOKENIZERS_PARALLELISM": "false",
    }
    r = subprocess.run(
        ["bash", str(ROOT / "experiments/ego4d_scale/run.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]

    stages = {}
    for line in (work / "stages.jsonl").read_text().splitlines():
        rec = json.loads(line)
        stages[rec["name"]] = rec
    assert list(stages) == [
        "standin",
        "build-ego4d",
        "select",
        "train-lora",
        "merge-lora",
        "eval-full",
        "eval-context",
        "train-full",
    ]
    assert all(s["rc"] == 0 and s["wall_s"] > 0 for s in stages.values())

    # the stand-in: 2 videos x 0.5 min x 4 actions per minute = 4 NLQ queries, one per action, of the
    # usable templates for these (video, action) indices (every fifth query is a count: none here)
    report = json.loads((work / "data/ego4d/report.json").read_text())
    assert report["read"] == 4 and report["built"] == 4 and report["dropped_total"] == 0
    assert len(list((work / "ego4d_data/v2/full_scale").glob("*.mp4"))) == 2

    # CSM topped up to min_kept=2 of the 4; both training runs took 2 steps, ECR refreshed at step 1
    assert len((work / "select/selected.jsonl").read_text().splitlines()) == 2
    for run in ("lora", "full"):
        hist = json.loads((work / run / "log_history.json").read_text())
        assert max(h.get("step", 0) for h in hist) == 2
        events = [json.loads(x) for x in (work / run / "ecr_events.jsonl").read_text().splitlines()]
        assert [e["step"] for e in events] == [1] and events[0]["probed"] == 4
        assert not list((work / run).glob("checkpoint-*"))  # save_checkpoints=false
    assert (work / "lora/final/adapter_config.json").exists()
    assert (work / "lora_merged/config.json").exists() and (work / "full/final/config.json").exists()

    # both views evaluated the first EVAL_LIMIT=4 questions of the pool
    for view in ("full", "context"):
        res = json.loads((work / f"eval-{view}/results.json").read_text())
        assert res["config"]["view"] == view and res["model"] == str(work / "lora_merged")
        assert res["benchmarks"]["egosynth"]["n_samples"] == 4
        assert stages[f"eval-{view}"]["note"] == "4 questions"
    assert "| train-lora |" in (work / "table.md").read_text()
