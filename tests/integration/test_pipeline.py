"""`ego3s run` end to end at toy size on the CPU: every stage's outputs, a SIGKILL in the middle of
training followed by a resume that must end where an uninterrupted run ends, and `--from select`.

One config (the tiny model, a 12-sample EgoSynth, 2 warm-up steps, CSM with relaxed thresholds,
4 GRPO steps with ECR checking every step, evaluation on EgoSynth) runs three times, each in its
own folder: uninterrupted (`ref`), killed after checkpoint-2 and resumed (`resumed`), and `ref`
again from `select`. Runs go through `python -m ego3s.cli run` in subprocesses with the same
environment, so the two trainings see the same thread count and seeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PIX = 56 * 56  # one 56 px frame: 2 x 2 patches of 28 px after merging
CONFIG = {
    "seed": 0,
    "model": "tiny",
    "egosynth": {"train": 12, "test": 4, "probe": 4, "frames": 8, "size": 56},
    "warmup_egosynth": {"train": 10, "test": 0, "probe": 0, "p_typical": 0.5, "frames": 8, "size": 56},
    "warmup": {
        "steps": 2,
        "batch_size": 2,
        "nframes": 4,
        "max_pixels": PIX,
        "min_pixels": PIX,
        "vision_pretrain": {"steps": 1, "batch_size": 2, "workers": 0},
    },
    "selection": {
        "method": "csm",
        # relaxed so that samples survive a random tiny model's scores
        "csm": {"lambda_c": -1.0, "lambda_f": -1.0e9, "lambda_o": -1.0},
        "scoring": {"estimator": "likelihood", "nframes": 4, "max_pixels": PIX, "min_pixels": PIX, "batch_size": 4},
    },
    "training": {
        "strategy": "grpo",
        "max_steps": 4,
        "num_generations": 2,
        "batch_size": 8,
        "per_device_train_batch_size": 8,
        "max_completion_length": 8,
        "beta": 0.0,
        "save_steps": 1,
        "nframes": 4,
        "max_pixels": PIX,
        "min_pixels": PIX,
        "ecr": {"ecr": True, "monitoring_interval": 1, "probing_set_size": 4, "lambda_s": 0.6},
    },
    "evaluation": {
        "fmt": "reasoning",
        "reasoning_max_new_tokens": 8,
        "nframes": 4,
        "max_pixels": PIX,
        "min_pixels": PIX,
        "batch_size": 8,
        "progress": False,
    },
}
STEPS = CONFIG["training"]["max_steps"]
KILL_AFTER = 2  # checkpoint step after which the first attempt is killed
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}


# ---------------------------------------------------------------------------------------- helpers
def _cmd(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ego3s.cli", "run", "--config", str(cfg), f"out={out}", *extra]


def _run(cfg: Path, out: Path, *extra: str) -> None:
    log = out.parent / f"{out.name}.log"
    with open(log, "a") as f:
        p = subprocess.run(_cmd(cfg, out, *extra), stdout=f, stderr=subprocess.STDOUT, env=ENV, timeout=600)
    assert p.returncode == 0, f"`ego3s run` failed ({p.returncode}):\n{_tail(log)}"


def _tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _rewards(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train" / "rewards.jsonl").read_text().splitlines() if line.strip()]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _metrics(out: Path, tag: str) -> dict:
    res = json.loads((out / "eval" / tag / "results.json").read_text())
    return {
        name: {"metrics": b["metrics"], "by": b["by"], "n_scored": b["n_scored"]}
        for name, b in res["benchmarks"].items()
    }


def _selected(out: Path) -> str:
    # Samples carry absolute video paths inside the run folder: the same bytes up to that prefix.
    return (out / "select" / "selected.jsonl").read_text().replace(str(out), "<RUN>")


# ---------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pipeline") / "cfg.yaml"
    p.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def ref(cfg_file) -> Path:
    """The uninterrupted run."""
    out = cfg_file.parent / "ref"
    _run(cfg_file, out)
    return out


@pytest.fixture(scope="module")
def interrupted(cfg_file) -> dict:
    """First attempt SIGKILLed (whole process group) right after checkpoint-2 is complete, then the
    same command again. Returns what the folder looked like at the kill, and the folder."""
    out = cfg_file.parent / "resumed"
    log = cfg_file.parent / "resumed.log"
    ckpt = out / "train" / f"checkpoint-{KILL_AFTER}"
    # ecr_state.json is the last file of a checkpoint (ECRCallback.on_save runs after the
    # trainer wrote weights, optimizer, RNG and trainer_state.json)
    marker = ckpt / "ecr_state.json"
    with open(log, "w") as f:
        p = subprocess.Popen(_cmd(cfg_file, out), stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not marker.exists():
                if p.poll() is not None:
                    pytest.fail(f"run ended ({p.returncode}) before {marker} appeared:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {marker} after 600 s:\n{_tail(log)}")
                time.sleep(0.02)
            os.killpg(p.pid, signal.SIGKILL)
        finally:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=60)
    at_kill = {
        "returncode": p.returncode,
        "checkpoints": sorted(d.name for d in (out / "train").glob("checkpoint-*")),
        "manifest": _manifest(out),
        "final_exists": (out / "train" / "final").exists(),
        "eval_exists": (out / "eval").exists(),
        "rewards": _rewards(out),
    }
    _run(cfg_file, out)
    return {"out": out, "at_kill": at_kill}


# ---------------------------------------------------------------------------------------- tests
def test_warmup_pool_is_warmup_data_then_its_own_egosynth_then_the_training_pool(tmp_path):
    from ego3s.data.egosynth import EgoSynthConfig
    from ego3s.pipeline import RunConfig, warmup_pool

    assert warmup_pool(RunConfig(), tmp_path, "rl.jsonl") == "rl.jsonl"
    own = tmp_path / "cold.jsonl"
    own.write_text("")
    synth = EgoSynthConfig(train=3, test=0, probe=0, frames=8, size=56)
    assert warmup_pool(RunConfig(warmup_data=str(own), warmup_egosynth=synth), tmp_path, "rl.jsonl") == str(own)
    with pytest.raises(FileNotFoundError, match="warmup_data: .*missing.jsonl"):
        warmup_pool(RunConfig(warmup_data=str(tmp_path / "missing.jsonl")), tmp_path, "rl.jsonl")
    made = warmup_pool(RunConfig(seed=4, warmup_egosynth=synth), tmp_path, "rl.jsonl")
    assert made == str(tmp_path / "warmup_data" / "train.jsonl")
    assert json.loads((tmp_path / "warmup_data" / "config.json").read_text())["config"]["seed"] == 5


def test_every_stage_writes_its_outputs(ref):
    m = _manifest(ref)
    assert list(m["stages"]) == ["data", "model", "warmup", "select", "train", "eval", "report"]
    for name, st in m["stages"].items():
        assert st["status"] == "done" and st["attempts"] == 1, name
        assert isinstance(st["seconds"], (int, float)) and st["seconds"] >= 0, name
    assert m["seeds"] == {"run": 0} and m["config"]["training"]["max_steps"] == STEPS
    assert m["versions"]["torch"] and m["versions"]["transformers"]

    # data: EgoSynth splits with readable clips
    from ego3s.data.io import read_jsonl

    sizes = {"train": 12, "test_id": 4, "test_atypical": 4, "probe": 4}
    for split, n in sizes.items():
        samples = read_jsonl(ref / "data" / f"{split}.jsonl")
        assert len(samples) == n, split
        assert all(Path(s.video).is_file() for s in samples), split
    assert m["stages"]["data"]["outputs"]["pool"] == str(ref / "data" / "train.jsonl")

    # model and warm-up
    base = Path(m["stages"]["model"]["outputs"]["base"])
    assert (
        base == ref / "model" / "tiny" and (base / "config.json").is_file() and (base / "model.safetensors").is_file()
    )
    warm = ref / "warmup" / "final"
    assert Path(m["stages"]["warmup"]["outputs"]["model"]) == warm
    assert (warm / "model.safetensors").is_file() and (warm / "tokenizer.json").is_file()
    vp = json.loads((ref / "warmup" / "vision_pretrain.json").read_text())
    assert vp["steps"] == 1 and vp["usable"] == 10 and vp["unreadable"] == 0  # its own pool (warmup_egosynth)
    wpool = read_jsonl(m["stages"]["warmup"]["outputs"]["pool"])
    assert m["stages"]["warmup"]["outputs"]["pool"] == str(ref / "warmup_data" / "train.jsonl") and len(wpool) == 10
    rl = {(s.question, s.answer, s.meta["scene"]) for s in read_jsonl(ref / "data" / "train.jsonl")}
    assert sum((s.question, s.answer, s.meta["scene"]) in rl for s in wpool) < 5  # another seed, not a copy

    # selection: some samples kept, report consistent with the file
    sel = read_jsonl(ref / "select" / "selected.jsonl")
    report = json.loads((ref / "select" / "report.json").read_text())
    assert 0 < len(sel) <= 12
    assert report["selected"] == len(sel) == m["stages"]["select"]["outputs"]["kept"]
    assert report["candidates"] == 12 and (ref / "select" / "scores.csv").is_file()

    # training: every checkpoint with the curriculum state, the final model, the reward log
    tr = ref / "train"
    assert m["stages"]["train"]["outputs"] == {"model": str(tr / "final"), "steps": STEPS}
    for k in range(1, STEPS + 1):
        ck = tr / f"checkpoint-{k}"
        assert (ck / "model.safetensors").is_file() and (ck / "ecr_state.json").is_file(), ck
        assert json.loads((ck / "trainer_state.json").read_text())["global_step"] == k
    assert (tr / "final" / "model.safetensors").is_file() and (tr / "final" / "tokenizer.json").is_file()
    rewards = _rewards(ref)
    assert sorted({r["step"] for r in rewards}) == list(range(STEPS))  # step = global_step at rollout time
    assert all(len(r["rewards"]["total"]) == 2 for r in rewards)  # G = 2
    assert len(rewards) == STEPS * 8 // 2  # 4 prompts per step
    assert (tr / "log_history.json").is_file() and (tr / "ecr_state.json").is_file()

    # evaluation: base and trained on EgoSynth's two test splits
    for tag in ("base", "trained"):
        res = json.loads((ref / "eval" / tag / "results.json").read_text())
        eg = res["benchmarks"]["egosynth"]
        assert eg["n_scored"] == 8 and eg["metrics"]["n"] == 8, tag
        assert m["stages"]["eval"]["outputs"][tag] == str(ref / "eval" / tag / "results.json")
    assert json.loads((ref / "eval" / "trained" / "results.json").read_text())["model"] == str(tr / "final")

    # report, and summary.json beside it (every figure of the schema present)
    html = ref / "report" / "index.html"
    assert Path(m["stages"]["report"]["outputs"]["html"]) == html and html.stat().st_size > 1000
    s = json.loads((ref / "summary.json").read_text())
    assert s["select"]["pool"] == 12 and s["select"]["kept"] == len(sel)
    for tag in ("base", "trained"):
        for split in ("test_id", "test_atypical"):
            e = s["eval"][tag][split]
            assert e["n_closed"] + e["n_open"] == 4 and len(e["accuracy_ci95"]) == 2, (tag, split)
    assert set(s["paired"]) == {"test_id", "test_atypical"} and s["ecr"]["refreshes"] is not None
    assert "What this run shows" in html.read_text()


def test_killed_mid_training(interrupted):
    k = interrupted["at_kill"]
    assert k["returncode"] == -signal.SIGKILL
    assert f"checkpoint-{KILL_AFTER}" in k["checkpoints"] and f"checkpoint-{STEPS}" not in k["checkpoints"]
    assert not k["final_exists"] and not k["eval_exists"]
    st = k["manifest"]["stages"]
    assert all(st[s]["status"] == "done" for s in ("data", "model", "warmup", "select"))
    assert st["train"]["status"] == "running" and "eval" not in st


def test_resume_ends_where_an_uninterrupted_run_ends(ref, interrupted):
    out = interrupted["out"]
    m = _manifest(out)
    assert all(s["status"] == "done" for s in m["stages"].values())
    assert m["stages"]["train"]["attempts"] == 2 and m["stages"]["select"]["attempts"] == 1
    assert m["stages"]["eval"]["attempts"] == 1

    assert _selected(out) == _selected(ref)
    assert m["stages"]["train"]["outputs"]["steps"] == _manifest(ref)["stages"]["train"]["outputs"]["steps"] == STEPS
    state = json.loads((out / "train" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS

    # reward log: the records written after checkpoint-2 by the killed attempt were dropped and
    # redone; the batches (which sample at which step) are those of the uninterrupted run
    got, want = _rewards(out), _rewards(ref)
    keys = [(r["step"], r["sample_id"]) for r in got]
    assert len(keys) == len(set(keys)), "duplicate reward records after the resume"
    assert keys == [(r["step"], r["sample_id"]) for r in want]
    assert [k for k in keys if k[0] >= KILL_AFTER]  # something was trained after the resume point
    assert (out / "train" / "ecr_events.jsonl").read_text() == (ref / "train" / "ecr_events.jsonl").read_text()

    for tag in ("base", "trained"):
        assert _metrics(out, tag) == _metrics(ref, tag), tag


def test_resume_restores_the_trained_weights(ref, interrupted):
    out = interrupted["out"]
    # the weights in the last checkpoint before the kill are the uninterrupted run's
    import torch

    a, b = _weights(ref / "train" / f"checkpoint-{KILL_AFTER}"), _weights(out / "train" / f"checkpoint-{KILL_AFTER}")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and so must every later one be, if the resume started from them
    for sub in [f"checkpoint-{k}" for k in range(KILL_AFTER + 1, STEPS + 1)] + ["final"]:
        a, b = _weights(ref / "train" / sub), _weights(out / "train" / sub)
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        assert not diff, f"{sub}: {len(diff)} tensors differ from the uninterrupted run, e.g. {diff[:3]}"
    assert [r["rewards"] for r in _rewards(out)] == [r["rewards"] for r in _rewards(ref)]


def test_training_keeps_the_vision_tower_frozen(ref):
    import torch

    a, b = _weights(ref / "warmup" / "final"), _weights(ref / "train" / "final")
    vision = [k for k in a if "visual." in k]
    assert vision
    changed = [k for k in vision if not torch.equal(a[k], b[k])]
    assert not changed, f"{len(changed)} of {len(vision)} vision tensors changed, e.g. {changed[:3]}"


def test_resume_skips_a_half_written_checkpoint(ref, tmp_path):
    import shutil

    from ego3s.train.plumbing import last_checkpoint

    shutil.copytree(ref / "train" / "checkpoint-2", tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-3").mkdir()  # what a SIGKILL during save_model leaves
    shutil.copy(ref / "train" / "checkpoint-3" / "config.json", tmp_path / "checkpoint-3")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


def test_from_select_redoes_select_and_later_stages(ref):
    """`--from select` (here through run_pipeline in process) deletes select/train/eval/report and
    redoes them; data, model and warm-up are kept. Runs last: it rewrites `ref`."""
    from ego3s.config import load_config
    from ego3s.pipeline import RunConfig, run_pipeline

    before = _manifest(ref)["stages"]
    sel_before = _selected(ref)
    for d in ("warmup", "select", "train", "eval", "report"):
        (ref / d / "SENTINEL").write_text("x")
    cfg = load_config(RunConfig, ref.parent / "cfg.yaml", [f"out={ref}"])
    msgs: list[str] = []
    html = run_pipeline(cfg, from_stage="select", echo=msgs.append)

    assert html == ref / "report" / "index.html" and html.is_file()
    for s in ("data", "model", "warmup"):
        assert f"[{s}] done already, skipping" in msgs
    for s in ("select", "train", "eval", "report"):
        assert f"[{s}] running" in msgs and not (ref / s / "SENTINEL").exists(), s
    assert (ref / "warmup" / "SENTINEL").exists()
    after = _manifest(ref)["stages"]
    for s in ("data", "model", "warmup"):
        assert after[s] == before[s], s  # untouched, timings included
    for s in ("select", "train", "eval", "report"):
        assert after[s]["status"] == "done" and after[s]["attempts"] == 1, s
    assert _selected(ref) == sel_before
    assert after["train"]["outputs"]["steps"] == STEPS
    assert sorted(d.name for d in (ref / "train").glob("checkpoint-*")) == [
        f"checkpoint-{k}" for k in range(1, STEPS + 1)
    ]
    assert len(_rewards(ref)) == STEPS * 4  # a fresh log, not appended to the old one
    for tag in ("base", "trained"):
        assert (ref / "eval" / tag / "results.json").is_file()
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(cfg, from_stage="nope", echo=msgs.append)
