"""SIGKILL `ego3s select`, `ego3s train` (ECR on) and `ego3s eval` at three seeded points each
(training also once while it saves its final model), resume after every kill, and compare with
an uninterrupted run.

Kill points are not wall-clock sleeps: a seeded draw picks progress targets (score-cache lines,
reward-log lines or checkpoint folders, prediction lines), the test polls the artefact and kills
the whole process group as soon as the target is reached. The kills are chained: the second
lands in the first resumed run, the third in the second, so a resume of a resume is exercised
too. After every kill the output folder is checked: nothing a reader would take for complete
may be partial or corrupt. The final outputs must equal the uninterrupted run's (selection and
evaluation identical; training: the same checkpoints, rewards and curriculum state).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ego3s.data.egosynth import EgoSynthConfig, generate
from ego3s.data.io import read_jsonl
from ego3s.files import read_log

pytestmark = pytest.mark.timeout(600)

SEED = 11  # of the kill points
PIX = 56 * 56
N_TRAIN, N_TEST = 8, 4
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crash_synth")
    generate(
        out, EgoSynthConfig(train=N_TRAIN, test=N_TEST, probe=0, frames=8, size=56), workers=1, audit=False, log=None
    )
    ids = [s.id for s in read_jsonl(out / "train.jsonl")]
    (out / "relevance.json").write_text(json.dumps({i: 0.5 for i in ids}))  # no embedder needed
    return out


# ---------------------------------------------------------------------------------------- helpers
def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "a") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, timeout=300)
    assert p.returncode == 0, f"{' '.join(cmd[3:5])} failed ({p.returncode}):\n{log.read_text()[-3000:]}"


def _kill_when(cmd: list[str], reached, log: Path, what: str) -> None:
    """Start `cmd` in its own process group; SIGKILL the group as soon as `reached()` is true."""
    with open(log, "a") as f:
        f.write(f"\n=== run to be killed at {what}\n")
        f.flush()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while p.poll() is None and time.monotonic() < deadline:
                if reached():
                    os.killpg(p.pid, signal.SIGKILL)
                    break
                time.sleep(0.002)
        finally:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, f"not killed at {what} (rc {p.returncode}):\n{log.read_text()[-3000:]}"


def _targets(rng: random.Random, total: int, k: int = 3, gap: int = 2) -> list[int]:
    """`k` increasing progress targets in [1, total - 1], at least `gap` apart (a kill may overshoot
    its target by a line or two, and the next target must still lie ahead)."""
    while True:
        t = sorted(rng.sample(range(1, total), k))
        if all(b - a >= gap for a, b in zip(t, t[1:])):
            return t


def _no_partial_outputs(out: Path, final: tuple[str, ...], unfinished: tuple[Path, ...] = ()) -> None:
    """After a kill: the final outputs do not exist yet; every JSON file parses; every log reads
    (a torn last line is dropped by its readers); temporary files are hidden `.*.tmp` files that
    no reader opens. `unfinished`: folders that lack their completion marker (a checkpoint killed
    while being saved), which no reader takes for complete; their files are not checked."""
    for name in final:
        assert not (out / name).exists(), f"{name} exists after a kill mid-run"
    for p in out.rglob("*"):
        if not p.is_file() or any(d in p.parents for d in unfinished):
            continue
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), p
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except ValueError as e:
                raise AssertionError(f"{p}: not valid JSON after a kill ({e})") from None
        elif p.suffix == ".jsonl":
            read_log(p)


# ---------------------------------------------------------------------------------------- select
SELECT = [
    "csm.lambda_c=0",
    "csm.lambda_f=0",
    "dtype=float32",
    "device=cpu",
    "scoring.nframes=4",
    f"scoring.max_pixels={PIX}",
    "scoring.min_pixels=784",
    "scoring.batch_size=1",
]


def test_select_survives_three_kills(synth, tiny_model_dir, tmp_path):
    def cmd(out):
        return [
            sys.executable,
            "-m",
            "ego3s.cli",
            "select",
            "--quiet",
            "method=csm",
            f"data={synth / 'train.jsonl'}",
            f"model={tiny_model_dir}",
            f"out={out}",
            f"relevance_file={synth / 'relevance.json'}",
            *SELECT,
        ]

    ref, out, log = tmp_path / "ref", tmp_path / "killed", tmp_path / "select.log"
    _run(cmd(ref), log)
    cache = lambda: next((out / "cache").glob("scores-*.jsonl"), out / "none")  # noqa: E731 - a one-line predicate
    total = 3 * N_TRAIN  # one cache line per (sample, view)
    for t in _targets(random.Random(SEED), total, gap=3):
        _kill_when(cmd(out), lambda t=t: _lines(cache()) >= t, log, f"select: score-cache line {t} of {total}")
        _no_partial_outputs(out, ("scores.csv", "selected.jsonl", "report.json", "report.md"))
        assert _lines(cache()) < total
    _run(cmd(out), log)

    keys = [(r["id"], r["view"]) for r in read_log(cache())]
    assert len(keys) == len(set(keys)) == total  # nothing scored twice, nothing missing
    for name in ("selected.jsonl", "scores.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    a, b = (json.loads((d / "report.json").read_text()) for d in (ref, out))
    assert a["funnel"] == b["funnel"] and a["selected"] == b["selected"]
    assert b["scoring"]["cached"] + b["scoring"]["scored"] == N_TRAIN and b["scoring"]["cached"] > 0


# ---------------------------------------------------------------------------------------- train
TRAIN = [
    "max_steps=6",
    "num_generations=2",
    "batch_size=4",
    "per_device_train_batch_size=4",
    "max_completion_length=8",
    "beta=0.0",
    "save_steps=1",
    "nframes=4",
    f"max_pixels={PIX}",
    f"min_pixels={PIX}",
    "learning_rate=1e-3",
    "ecr.ecr=true",
    "ecr.monitoring_interval=1",
    "ecr.probing_set_size=4",
    "ecr.min_pool_size=2",
    "csm.lambda_c=-1",
    "csm.lambda_f=-1e9",
    "csm.lambda_o=-1",
    "ecr_batch_size=4",
]
STEPS, PROMPTS = 6, 2  # 4 completions per step = 2 prompts x G 2


def _train_events() -> list[tuple[str, int]]:
    """Progress in the order a step makes it: its reward-log lines, then its checkpoint folder
    (a kill there leaves a half-written checkpoint). The last step is left out."""
    ev = []
    for s in range(1, STEPS):
        ev += [("rewards", PROMPTS * (s - 1) + j) for j in range(1, PROMPTS + 1)] + [("checkpoint", s)]
    return ev


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_train_with_ecr_survives_three_kills(synth, tiny_model_dir, tmp_path):
    import torch

    from ego3s.train.plumbing import last_checkpoint

    def cmd(out):
        return [
            sys.executable,
            "-m",
            "ego3s.cli",
            "train",
            "--resume",
            f"model={tiny_model_dir}",
            f"data={synth / 'train.jsonl'}",
            f"out={out}",
            f"relevance_file={synth / 'relevance.json'}",
            *TRAIN,
        ]

    ref, out, log = tmp_path / "ref", tmp_path / "killed", tmp_path / "train.log"
    _run(cmd(ref), log)
    assert (ref / "ecr_events.jsonl").exists(), "the test needs ECR refreshes to happen"
    events = _train_events()
    for i in _targets(random.Random(SEED + 1), len(events), gap=3):
        kind, n = events[i]
        if kind == "rewards":
            reached = lambda n=n: _lines(out / "rewards.jsonl") >= n  # noqa: E731 - a one-line predicate
        else:
            reached = lambda n=n: (out / f"checkpoint-{n}").is_dir()  # noqa: E731 - a one-line predicate
        _kill_when(cmd(out), reached, log, f"train: {kind} {n}")
        marks = ("trainer_state.json", "ecr_state.json")  # written last, in this order
        half = tuple(d for d in out.glob("checkpoint-*") if not all((d / m).exists() for m in marks))
        _no_partial_outputs(out, ("final",), half)
        ckpt = last_checkpoint(out, marks)
        assert ckpt is None or Path(ckpt) not in half
        if ckpt is not None:  # what resume would start from is complete and equals the reference
            step = Path(ckpt).name
            w, r = _weights(Path(ckpt)), _weights(ref / step)
            assert all(torch.equal(w[k], r[k]) for k in r), step
    # a fourth kill, while the final model is being saved: no `final` that looks complete
    _kill_when(cmd(out), lambda: (out / "final.partial").is_dir(), log, "train: saving the final model")
    assert not (out / "final").exists()
    _run(cmd(out), log)
    assert not (out / "final.partial").exists()

    for k in list(range(1, STEPS + 1)):
        sub = f"checkpoint-{k}"
        a, b = _weights(ref / sub), _weights(out / sub)
        assert all(torch.equal(a[x], b[x]) for x in a), f"{sub} differs from the uninterrupted run"
        for f in ("ecr_state.json",):
            assert json.loads((out / sub / f).read_text()) == json.loads((ref / sub / f).read_text()), (sub, f)
        assert json.loads((out / sub / "trainer_state.json").read_text())["global_step"] == k
    a, b = _weights(ref / "final"), _weights(out / "final")
    assert all(torch.equal(a[x], b[x]) for x in a)
    assert json.loads((out / "ecr_state.json").read_text()) == json.loads((ref / "ecr_state.json").read_text())
    assert (out / "ecr_events.jsonl").read_text() == (ref / "ecr_events.jsonl").read_text()
    got, want = read_log(out / "rewards.jsonl"), read_log(ref / "rewards.jsonl")
    assert [(r["step"], r["sample_id"]) for r in got] == [(r["step"], r["sample_id"]) for r in want]
    assert [r["rewards"] for r in got] == [r["rewards"] for r in want]


# ---------------------------------------------------------------------------------------- eval
TIMING = ("t_load", "t_generate", "t_icu")


def test_eval_survives_three_kills(synth, tiny_model_dir, tmp_path):
    def cmd(out):
        return [
            sys.executable,
            "-m",
            "ego3s.cli",
            "eval",
            "--data",
            "EgoSynth",
            "--path",
            f"EgoSynth={synth}",
            "--model",
            tiny_model_dir,
            "--out",
            str(out),
            "--batch-size",
            "1",
            "--frames",
            "4",
            "--max-pixels",
            str(PIX),
            "--min-pixels",
            "784",
            "--quiet",
        ]

    ref, out, log = tmp_path / "ref", tmp_path / "killed", tmp_path / "eval.log"
    _run(cmd(ref), log)
    preds = out / "egosynth" / "predictions.rank0.jsonl"
    total = 2 * N_TEST  # test_id and test_atypical
    for t in _targets(random.Random(SEED + 2), total, gap=2):
        _kill_when(cmd(out), lambda t=t: _lines(preds) >= t, log, f"eval: prediction line {t} of {total}")
        _no_partial_outputs(out, ("results.json", "results.md", "results.csv", "egosynth/per_sample.jsonl"))
    _run(cmd(out), log)

    strip = lambda recs: {r["id"]: {k: v for k, v in r.items() if k not in TIMING} for r in recs}  # noqa: E731 - a one-line predicate
    got = read_log(preds)
    assert len(got) == len({r["id"] for r in got}) == total  # nothing generated twice
    assert strip(got) == strip(read_log(ref / "egosynth" / "predictions.rank0.jsonl"))
    assert (out / "egosynth" / "per_sample.jsonl").read_bytes() == (ref / "egosynth" / "per_sample.jsonl").read_bytes()
    a, b = (json.loads((d / "results.json").read_text())["benchmarks"]["egosynth"] for d in (ref, out))
    for k in ("metrics", "by", "n_scored", "n_skipped", "n_missing"):
        assert a[k] == b[k], k
