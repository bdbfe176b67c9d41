"""Selection end to end on the CPU: CSM with the tiny model on a tiny EgoSynth (all three views,
funnel, histograms, subset), the score cache surviving a SIGKILL and a torn line, the baselines
through `run_selection`, and unreadable videos counted, never fatal."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ego3s.data.egosynth import EgoSynthConfig, generate
from ego3s.data.io import read_jsonl
from ego3s.files import read_log
from ego3s.select.baselines import learning_impact, trajectories_from_log
from ego3s.select.csm import CSMThresholds
from ego3s.select.run import SelectionConfig, run_selection
from ego3s.select.scoring import ScoringConfig

N = 32
VIEWS = ("full", "blind", "context")
SCORING = {"nframes": 4, "max_pixels": 56 * 56, "min_pixels": 28 * 28, "batch_size": 8}
# The tiny model is random: loose coarse/fine thresholds so the funnel keeps some but not all.
TH = CSMThresholds(lambda_c=0.0, lambda_f=0.0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=N, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


@pytest.fixture(scope="module")
def csm_run(synth, tiny_model_dir, tmp_path_factory):
    """One uninterrupted CSM run; it also leaves the relevance scores (MiniLM) in a JSON file
    that the other tests reuse instead of loading the embedder again."""
    root = tmp_path_factory.mktemp("csm")
    cfg = SelectionConfig(
        method="csm",
        data=str(synth / "train.jsonl"),
        model=tiny_model_dir,
        out=str(root / "sel"),
        csm=TH,
        scoring=ScoringConfig(**SCORING),
        relevance_file=str(root / "relevance.json"),
    )
    return cfg, run_selection(cfg, progress=False)


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(x):
    return float(x) if x not in ("", None) else None


def _cache_file(out) -> Path:
    files = list((Path(out) / "cache").glob("scores-*.jsonl"))
    assert len(files) <= 1, files
    return files[0] if files else None


def test_csm_end_to_end(csm_run, synth):
    cfg, report = csm_run
    out = Path(cfg.out)
    rows = _csv(out / "scores.csv")
    assert [r["id"] for r in rows] == [s.id for s in read_jsonl(synth / "train.jsonl")]
    for r in rows:
        for v in VIEWS:
            x = _f(r[f"s_{v}"])
            assert x is not None and math.isfinite(x) and 0.0 <= x <= 1.0, (r["id"], v, r[f"s_{v}"])
        assert r["invalid"] == "False"
        rel = _f(r["relevance"])
        assert rel is not None and -1.0 <= rel <= 1.0
    # every (sample, view) pair is in the cache exactly once
    keys = [(c["id"], c["view"]) for c in read_log(_cache_file(out))]
    assert len(keys) == len(set(keys)) == 3 * N

    f = report["funnel"]
    assert f["scored"] == N and f["invalid"] == 0
    assert N >= f["after_coarse"] >= f["after_fine"] >= f["after_relevance"] == f["kept"] == report["selected"]
    assert f["failed_coarse"] == N - f["after_coarse"]
    assert report["scoring"]["scored"] == N and report["scoring"]["skipped_unreadable"] == 0
    # funnel recomputed from the table, with the thresholds of the run
    kept = [
        r["id"]
        for r in rows
        if _f(r["s_full"]) - _f(r["s_blind"]) > TH.lambda_c
        and (_f(r["s_full"]) - _f(r["s_context"])) / max(_f(r["s_full"]), TH.eps) >= TH.lambda_f
        and _f(r["relevance"]) >= TH.lambda_o
    ]
    assert [r["id"] for r in rows if r["kept"] == "True"] == kept
    assert 0 < len(kept) < N  # the loose thresholds keep some, not all (else the check is vacuous)
    assert len(kept) == f["kept"]

    selected = read_jsonl(out / "selected.jsonl")
    assert [s.id for s in selected] == kept
    by_id = {s.id: s for s in read_jsonl(synth / "train.jsonl")}
    assert all(s.to_dict() == by_id[s.id].to_dict() for s in selected)  # schema unchanged

    for name in ("hist_coarse.png", "hist_fine.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    md = (out / "report.md").read_text()
    assert "## Funnel" in md and f"| after interaction relevance | {f['after_relevance']} |" in md
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["funnel"] == f and on_disk["selected"] == len(kept)
    assert set(on_disk["breakdown"]["typical"]) == {"True", "False"}


def _select_cmd(cfg: SelectionConfig, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ego3s.cli",
        "select",
        "--quiet",
        "method=csm",
        f"data={cfg.data}",
        f"model={cfg.model}",
        f"out={out}",
        f"relevance_file={cfg.relevance_file}",
        f"csm.lambda_c={TH.lambda_c}",
        f"csm.lambda_f={TH.lambda_f}",
        "dtype=float32",
        "device=cpu",
        *[f"scoring.{k}={v}" for k, v in SCORING.items()],
    ]


def test_kill_and_resume(csm_run, tmp_path):
    """SIGKILL `ego3s select` mid-scoring, tear the cache's last line, resume: same outputs as
    the uninterrupted run, and no finished (sample, view) pair scored twice."""
    ref_cfg, _ = csm_run
    ref = Path(ref_cfg.out)
    out = tmp_path / "sel"
    cmd = _select_cmd(ref_cfg, out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    kill_at = SCORING["batch_size"] + 1  # the first batch's full view plus one more pair

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            cache = _cache_file(out) if (out / "cache").is_dir() else None
            if cache is not None and cache.exists() and len(cache.read_bytes().splitlines()) >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == -signal.SIGKILL, f"the run was not killed mid-scoring (rc {rc}): {proc.stdout.read().decode()[-2000:]}"
    cache = _cache_file(out)
    before = read_log(cache)
    assert kill_at <= len(before) < 3 * N
    assert not (out / "scores.csv").exists()
    # a crash tears the last line: the resumed run drops it and rescores that pair
    torn = json.dumps({"id": before[-1]["id"], "view": "context", "score": 0.5})[:25]
    with open(cache, "a") as fh:
        fh.write(torn)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    records = read_log(cache)  # raises on a corrupt line that is not the last
    keys = [(r["id"], r["view"]) for r in records]
    assert len(keys) == len(set(keys)) == 3 * N  # nothing rescored, nothing missing
    assert records[: len(before)] == before  # the finished pairs are kept as they were
    lines = cache.read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") and json.loads(line) for line in lines)  # the torn line was cut, not glued
    assert len(lines) == 3 * N

    a, b = _csv(ref / "scores.csv"), _csv(out / "scores.csv")
    assert [r["id"] for r in a] == [r["id"] for r in b] and list(a[0]) == list(b[0])
    for ra, rb in zip(a, b):
        for k in ra:
            x, y = ra[k], rb[k]
            if k.startswith("s_") or k in ("relevance", "coarse", "fine"):
                assert abs(float(x) - float(y)) <= 1e-6, (ra["id"], k, x, y)
            else:
                assert x == y, (ra["id"], k, x, y)
    assert (out / "selected.jsonl").read_bytes() == (ref / "selected.jsonl").read_bytes()
    report = json.loads((out / "report.json").read_text())
    assert report["scoring"]["cached"] + report["scoring"]["scored"] == N
    assert report["scoring"]["scored"] == N - len(_complete(before))  # only samples with a view missing


def _complete(records) -> set:
    views: dict = {}
    for r in records:
        views.setdefault(r["id"], set()).add(r["view"])
    return {i for i, v in views.items() if v == set(VIEWS)}


def _baseline(synth, tmp_path, method, name=None, **kw):
    cfg = SelectionConfig(method=method, data=str(synth / "train.jsonl"), out=str(tmp_path / (name or method)), **kw)
    report = run_selection(cfg, progress=False)
    return report, [s.id for s in read_jsonl(Path(cfg.out) / "selected.jsonl")]


def test_random_and_full(synth, tmp_path):
    ids = [s.id for s in read_jsonl(synth / "train.jsonl")]
    rep, a = _baseline(synth, tmp_path, "random", "r1", budget=5, seed=1)
    _, a2 = _baseline(synth, tmp_path, "random", "r2", budget=5, seed=1)
    _, b = _baseline(synth, tmp_path, "random", "r3", budget=5, seed=2)
    assert len(a) == len(set(a)) == 5 and set(a) <= set(ids)
    assert a == a2 and a != b
    assert rep["selected"] == rep["budget"] == 5 and rep["candidates"] == N
    rows = _csv(tmp_path / "r1" / "scores.csv")
    assert len(rows) == N and sorted(r["id"] for r in rows if r["kept"] == "True") == sorted(a)
    # default budget: budget_fraction of the pool
    rep, c = _baseline(synth, tmp_path, "random", "r4", seed=1)
    assert len(c) == rep["budget"] == round(0.265 * N)

    rep, full = _baseline(synth, tmp_path, "full")
    assert full == ids and rep["selected"] == N and rep["budget"] is None
    assert (tmp_path / "full" / "report.md").exists()


def test_s1_with_tiny_model(synth, tiny_model_dir, tmp_path):
    rep, sel = _baseline(
        synth, tmp_path, "s1", model=tiny_model_dir, budget=6, seed=0, scoring=ScoringConfig(**SCORING)
    )
    assert 0 < len(sel) <= 6 and len(set(sel)) == len(sel)
    assert rep["budget"] == 6 and rep["scoring"]["scored"] == N
    rows = {r["id"]: r for r in _csv(tmp_path / "s1" / "scores.csv")}
    assert len(rows) == N and "s_blind" not in next(iter(rows.values()))  # one view only
    assert all(rows[i]["greedy_correct"] == "False" for i in sel)  # what the base model answers is dropped
    assert all(float(rows[i]["reasoning_words"]) >= 0 for i in sel)
    _, again = _baseline(
        synth, tmp_path, "s1", "s1b", model=tiny_model_dir, budget=6, seed=0, scoring=ScoringConfig(**SCORING)
    )
    assert again == sel


def test_limo_with_tiny_model(synth, tiny_model_dir, tmp_path):
    """K rollouts per sample on the full view, pass counts from the cached rollouts, band filter."""
    rep, sel = _baseline(
        synth,
        tmp_path,
        "limo",
        model=tiny_model_dir,
        budget=4,
        seed=0,
        limit=6,
        limo_k=2,
        limo_band=[0, 2],
        scoring=ScoringConfig(**{**SCORING, "max_new_tokens": 4}),
    )
    assert len(sel) == 4 and len(set(sel)) == 4  # band [0, 2] of 2 admits every scored sample
    assert rep["budget"] == 4 and rep["scoring"]["scored"] == 6
    rows = _csv(tmp_path / "limo" / "scores.csv")
    assert len(rows) == 6 and all(0.0 <= float(r["s_full"]) <= 1.0 for r in rows)


def test_limr_from_reward_log(synth, tmp_path):
    ids = [s.id for s in read_jsonl(synth / "train.jsonl")]
    log = tmp_path / "rewards.jsonl"
    recs = []
    for epoch in range(2):
        for j, sid in enumerate(ids[:-2]):  # the last two were never drawn: no score
            acc = [float((j + epoch * (j % 3) + g) % 2) for g in range(4)]
            recs.append(
                {
                    "step": epoch * 10 + j // 8,
                    "epoch": epoch,
                    "sample_id": sid,
                    "rewards": {
                        "accuracy": acc,
                        "format": [1.0] * 4,
                        "interaction": [0.0] * 4,
                        "total": [a + 1.0 for a in acc],
                    },
                }
            )
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep, sel = _baseline(synth, tmp_path, "limr", limr_log=str(log), budget=7)
    assert len(sel) == 7 == rep["selected"] and not set(sel) & set(ids[-2:])
    impact = learning_impact({i: trajectories_from_log(recs).get(i, {}) for i in ids})
    ranked = sorted((v for v in impact.values() if v is not None), reverse=True)
    assert sorted((impact[i] for i in sel), reverse=True) == ranked[:7]
    rows = {r["id"]: r for r in _csv(tmp_path / "limr" / "scores.csv")}
    assert rows[ids[-1]]["learning_impact"] == "" and rows[ids[-1]]["kept"] == "False"


def test_unreadable_videos_are_counted_not_fatal(csm_run, synth, tmp_path):
    ref_cfg, _ = csm_run
    samples = read_jsonl(synth / "train.jsonl")[:4]
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    recs = [s.to_dict() for s in samples]
    for r in recs:
        r["video"] = str(synth / r["video"])
    recs[1]["video"] = str(tmp_path / "missing.mp4")
    recs[2]["video"] = str(bad)
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = SelectionConfig(
        method="csm",
        data=str(data),
        model=ref_cfg.model,
        out=str(tmp_path / "sel"),
        csm=TH,
        scoring=ScoringConfig(**SCORING),
        relevance_file=ref_cfg.relevance_file,
    )
    report = run_selection(cfg, progress=False)
    assert report["candidates"] == 4 and report["invalid_records_skipped"] == 0
    assert report["scoring"]["skipped_unreadable"] == 2 and report["scoring"]["scored"] == 4
    assert report["funnel"]["scored"] == 4 and report["funnel"]["invalid"] == 2
    rows = {r["id"]: r for r in _csv(Path(cfg.out) / "scores.csv")}
    for s in (samples[1], samples[2]):
        r = rows[s.id]
        assert r["invalid"] == "True" and r["kept"] == "False" and r["s_full"] == "" and r["error"]
    for s in (samples[0], samples[3]):
        assert rows[s.id]["invalid"] == "False" and 0.0 <= float(rows[s.id]["s_full"]) <= 1.0
    assert "unreadable (skipped, counted): 2" in (Path(cfg.out) / "report.md").read_text()
    assert not {samples[1].id, samples[2].id} & {s.id for s in read_jsonl(Path(cfg.out) / "selected.jsonl")}


def test_cache_key_ignores_decode_threads_and_nothing_that_changes_a_score(tmp_path):
    from dataclasses import asdict

    from ego3s.select.cache import ScoreCache

    key = lambda sc: ScoreCache(tmp_path, model="m", **asdict(sc)).key  # noqa: E731 - a one-line key
    assert key(ScoringConfig(decode_threads=4)) == key(ScoringConfig()) == key(ScoringConfig(decode_threads=1))
    assert key(ScoringConfig(nframes=8)) != key(ScoringConfig(nframes=16))
    settings = {k: v for k, v in asdict(ScoringConfig()).items() if k != "decode_threads"}
    assert ScoreCache(tmp_path, model="m", **settings).key == key(ScoringConfig())  # caches written before it
