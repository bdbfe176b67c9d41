"""Every kind of bad input of tests/fixtures/make_bad.py, fed to the real stage that meets it.

Each kind ends in one of two ways, and the test says which: a clear error naming the file, the
line or sample, and the field; or a per-sample skip that the run counts in its report. Never a
crash of the whole run, never a silent wrong number (a NaN score passing a filter, a NaN reward
turning into a NaN advantage)."""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from pathlib import Path

import pytest
import torch
from make_bad import make_corpus

from ego3s.data.io import read_jsonl
from ego3s.data.schema import Sample, SampleError
from ego3s.data.video import VideoError, load_sample_clip
from ego3s.files import read_log
from ego3s.select.csm import CSMThresholds
from ego3s.select.run import SelectionConfig, run_selection
from ego3s.select.scoring import ScoringConfig

PIX = 56 * 56
SAMPLING = {"nframes": 4, "max_pixels": PIX, "min_pixels": 28 * 28}
KEEP_ALL = CSMThresholds(lambda_c=-1.0, lambda_f=-1e9, lambda_o=-1.0)  # a valid sample always passes


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, make_corpus(root)


@functools.lru_cache(maxsize=1)
def _stages() -> dict[str, str]:
    """kind -> stage, for parametrize (a throwaway corpus: well under a second)."""
    with tempfile.TemporaryDirectory() as d:
        return {k: v["stage"] for k, v in make_corpus(d).items()}


def _kinds(stage: str) -> list[str]:
    return [k for k, s in _stages().items() if s == stage]


def _good(corpus) -> dict:
    root, kinds = corpus
    rec = json.loads(json.dumps(kinds["clip_past_end"]["sample"]))  # a deep copy
    rec.pop("start"), rec.pop("end")
    rec["interaction"]["boxes"][0]["t"] = 0.0  # inside the 2 s clip
    return {**rec, "id": "good"}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ego3s.models.loading import load_model

    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def test_the_corpus_has_twenty_kinds_and_every_kind_is_tested(corpus):
    root, kinds = corpus
    assert len(kinds) >= 20
    tested = set(_kinds("video")) | set(_kinds("jsonl")) | set(CHECKS)
    assert set(kinds) == tested
    small = [p for p in root.rglob("*") if p.is_file() and p.name != "output_huge.txt"]
    assert all(p.stat().st_size < 64 * 1024 for p in small)


# ---------------------------------------------------------------------------------------- videos
@pytest.mark.parametrize("kind", _kinds("video"))
def test_video_loading_names_file_sample_and_field(corpus, kind):
    _, kinds = corpus
    bad = kinds[kind]
    s = Sample.from_dict(bad["sample"])
    with pytest.raises(VideoError) as e:
        load_sample_clip(s, **SAMPLING)
    msg = str(e.value)
    assert bad["video"] in msg and repr(s.id) in msg and "'video'" in msg


@pytest.fixture(scope="module")
def selection_over_bad_videos(corpus, tiny, tmp_path_factory):
    """CSM over one good sample and one sample per bad video kind, with thresholds that keep
    every valid sample."""
    _, kinds = corpus
    d = tmp_path_factory.mktemp("sel_videos")
    recs = [_good(corpus)] + [kinds[k]["sample"] for k in _kinds("video")]
    (d / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "relevance.json").write_text(json.dumps({r["id"]: 0.5 for r in recs}))
    cfg = SelectionConfig(
        method="csm",
        data=str(d / "pool.jsonl"),
        out=str(d / "sel"),
        csm=KEEP_ALL,
        scoring=ScoringConfig(**SAMPLING, batch_size=4),
        relevance_file=str(d / "relevance.json"),
    )
    report = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    return cfg, report


@pytest.mark.parametrize("kind", _kinds("video"))
def test_selection_skips_and_counts_bad_videos(selection_over_bad_videos, corpus, kind):
    import csv

    cfg, report = selection_over_bad_videos
    _, kinds = corpus
    n_bad = len(_kinds("video"))
    assert report["scoring"]["skipped_unreadable"] == n_bad and report["funnel"]["invalid"] == n_bad
    assert report["candidates"] == n_bad + 1 and report["selected"] == 1  # the good one
    with open(Path(cfg.out) / "scores.csv", newline="") as f:
        rows = {r["id"]: r for r in csv.DictReader(f)}
    row = rows[f"{kind}-bad"]
    assert row["invalid"] == "True" and row["kept"] == "False" and row["s_full"] == ""
    assert kinds[kind]["video"] in row["error"]
    assert f"{kind}-bad" not in (Path(cfg.out) / "selected.jsonl").read_text()


@pytest.fixture(scope="module")
def eval_over_bad_videos(corpus, tiny, tmp_path_factory):
    from ego3s.eval.run import EvalConfig, run_eval

    _, kinds = corpus
    d = tmp_path_factory.mktemp("eval_videos")
    recs = [_good(corpus)] + [kinds[k]["sample"] for k in _kinds("video")]
    (d / "test_id.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = EvalConfig(
        data=["EgoSynth"],
        paths={"EgoSynth": str(d / "test_id.jsonl")},
        out=str(d / "out"),
        progress=False,
        batch_size=4,
        nframes=4,
        max_pixels=PIX,
        min_pixels=28 * 28,
    )
    return cfg, run_eval(cfg, tiny[0], tiny[1])


@pytest.mark.parametrize("kind", _kinds("video"))
def test_evaluation_skips_and_counts_bad_videos(eval_over_bad_videos, corpus, kind):
    cfg, res = eval_over_bad_videos
    _, kinds = corpus
    b = res["benchmarks"]["egosynth"]
    n_bad = len(_kinds("video"))
    assert b["n_scored"] == 1 and b["n_skipped"] == n_bad and b["metrics"]["n"] == 1
    preds = {r["id"]: r for r in read_log(Path(cfg.out) / "egosynth" / "predictions.rank0.jsonl")}
    rec = preds[f"{kind}-bad"]
    assert rec["skipped"] and kinds[kind]["video"] in rec["error"]


# ---------------------------------------------------------------------------------------- JSONL
@pytest.mark.parametrize("kind", _kinds("jsonl"))
def test_jsonl_error_names_file_line_id_and_field(corpus, kind):
    _, kinds = corpus
    bad = kinds[kind]
    with pytest.raises(SampleError) as e:
        read_jsonl(bad["file"])
    err = e.value
    assert err.file == bad["file"] and err.line == bad["line"]
    assert f"{bad['file']}:{bad['line']}" in str(err)
    if bad["id"] is not None:
        assert err.sample_id == bad["id"] and repr(bad["id"]) in str(err)
    if bad["field"] is not None:
        assert err.field == bad["field"] and repr(bad["field"]) in str(err)


@pytest.mark.parametrize("kind", _kinds("jsonl"))
def test_jsonl_bad_line_is_skipped_and_counted_by_a_run(corpus, kind, tmp_path):
    _, kinds = corpus
    bad = kinds[kind]
    errors: list = []
    assert [s.id for s in read_jsonl(bad["file"], skip_invalid=True, errors=errors)] == [f"{kind}-ok"]
    assert len(errors) == 1 and errors[0].line == 2
    report = run_selection(SelectionConfig(method="full", data=bad["file"], out=str(tmp_path / "sel")), progress=False)
    assert report["candidates"] == report["selected"] == 1 and report["invalid_records_skipped"] == 1
    assert f"{bad['file']}:2" in report["invalid_records"][0]
    assert "invalid records skipped: 1" in (tmp_path / "sel" / "report.md").read_text()


# ---------------------------------------------------------------------------------------- other stages
def check_score(kind, corpus, tiny, tmp_path):
    """A non-finite view score (from the model or a tampered cache) marks the sample invalid; it
    never passes a filter, even with thresholds that keep every valid sample."""
    _, kinds = corpus
    good = _good(corpus)
    recs = [good, {**good, "id": "victim"}]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (tmp_path / "rel.json").write_text(json.dumps({"good": 0.5, "victim": 0.5}))
    cfg = SelectionConfig(
        method="csm",
        data=str(tmp_path / "pool.jsonl"),
        out=str(tmp_path / "sel"),
        csm=KEEP_ALL,
        scoring=ScoringConfig(**SAMPLING, batch_size=2),
        relevance_file=str(tmp_path / "rel.json"),
    )
    first = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    assert first["selected"] == 2
    cache = next((tmp_path / "sel" / "cache").glob("scores-*.jsonl"))
    victim = [r for r in read_log(cache) if r["id"] == "victim" and r["view"] == "full"][-1]
    with open(cache, "a") as f:  # a later record of a (sample, view) wins, as after a rescore
        f.write(json.dumps({**victim, "score": kinds[kind]["value"]}) + "\n")  # same sample fingerprint
    report = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    assert report["scoring"]["cached"] == 2 and report["scoring"]["scored"] == 0
    assert report["funnel"]["invalid"] == 1 and report["selected"] == 1
    assert [s.id for s in read_jsonl(tmp_path / "sel" / "selected.jsonl")] == ["good"]


def _reward_trainer(tiny_model_dir, tmp_path, G=3):
    from ego3s.models.inputs import vision_token_ids
    from ego3s.models.loading import load_model
    from ego3s.rl.run import TrainingConfig, grpo_args, reward_functions, training_dataset
    from ego3s.rl.trainer import VideoGRPOTrainer

    samples = [
        Sample(id="t1", question="What colour is a banana?", answer="yellow", task="openqa"),
        Sample(id="t2", question="What do I cut bread with?", answer="a knife", task="openqa"),
    ]
    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    cfg = TrainingConfig(
        model=tiny_model_dir,
        out=str(tmp_path / "run"),
        batch_size=G * 2,
        per_device_train_batch_size=G * 2,
        num_generations=G,
        max_completion_length=4,
        max_steps=1,
        beta=0.0,
    )
    return VideoGRPOTrainer(
        model=model,
        processing_class=processor,
        args=grpo_args(cfg, suppress_tokens=vision_token_ids(processor.tokenizer)),
        reward_funcs=reward_functions(cfg, []),
        train_dataset=training_dataset(samples),
        reward_log=str(tmp_path / "rewards.jsonl"),
    )


def check_reward(kind, corpus, tiny_model_dir, tmp_path, monkeypatch):
    """A non-finite reward component makes that completion unscorable: zero advantage, left out of
    its group's baseline, counted (`rewards/non_finite`), logged as null; the others keep theirs."""
    from trl import GRPOTrainer

    _, kinds = corpus
    trainer = _reward_trainer(tiny_model_dir, tmp_path)
    # (accuracy, format, interaction) per completion; groups of 3
    rewards = torch.tensor(
        [
            [kinds[kind]["value"], 1.0, 0.0],
            [1.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        ]
    )
    rewards = torch.cat([rewards, torch.zeros(6, len(trainer.reward_funcs) - 3)], 1)  # correctness: weight 0
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *a: rewards.clone())
    rows = [r for r in trainer.train_dataset for _ in range(3)]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    out = trainer._generate_and_score_completions(rows)
    adv = out["advantages"]
    assert torch.isfinite(adv).all()
    # first group: the bad completion gets 0; the other two are a group of (2, 1)
    ref = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(adv[:3], torch.tensor([0.0, ref, -ref]), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        adv[3:], torch.tensor([2 / 3, -1 / 3, -1 / 3]) / (math.sqrt(1 / 3) + 1e-4), atol=1e-5, rtol=0
    )
    assert trainer._metrics["train"]["rewards/non_finite"] == [1.0]
    log = {r["sample_id"]: r for r in read_log(tmp_path / "rewards.jsonl")}
    assert log["t1"]["rewards"]["total"] == [None, 2.0, 1.0] and log["t1"]["rewards"]["accuracy"][0] is None
    assert torch.isfinite(trainer._compute_loss(trainer.model, out))


def check_curriculum(kind, corpus):
    """A group whose rewards are not all finite is left out of the step's variance, and counted."""
    from ego3s.curriculum.ecr import Curriculum
    from ego3s.curriculum.monitor import ECRConfig

    _, kinds = corpus
    cur = Curriculum(ECRConfig(monitoring_interval=1), ["a", "b"], ["a", "b"])
    bad = kinds[kind]["value"]
    records = [
        {"sample_id": "a", "rewards": {"total": [1.0, bad], "accuracy": [1.0, None]}},
        {"sample_id": "b", "rewards": {"total": [0.0, 2.0], "accuracy": [0.0, 1.0]}},
    ]
    decision = cur.observe_step(0, records)
    assert decision["window_mean"] == 1.0  # the variance of (0, 2) alone
    assert cur.monitor["non_finite_groups"] == 1
    assert json.loads(json.dumps(cur.state_dict()))["monitor"]["non_finite_groups"] == 1  # checkpointed
    assert cur.outcomes["a"] == [False]  # an unscorable group never counts as mastered


def check_output(kind, corpus, tmp_path):
    """Empty or huge outputs: extraction and every reward stay in range and fast; evaluation scores
    the sample (wrong, not skipped) with finite metrics."""
    from ego3s.answers import extract_answer, extract_letter, extract_think, format_ok
    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.eval.run import EvalConfig, score_benchmark
    from ego3s.rewards import compute_rewards

    _, kinds = corpus
    bad = kinds[kind]
    text = Path(bad["text_file"]).read_text(encoding="utf-8") if "text_file" in bad else bad["text"]
    closed = Sample.from_dict(_good(corpus))
    opened = Sample(
        id="open", question="What is in my hand?", answer="a cup", task="openqa", interaction=closed.interaction
    )
    t0 = time.perf_counter()
    for s in (closed, opened):
        cols = {
            "task": [s.task],
            "answer": [s.answer],
            "options": [json.dumps(s.options)],
            "interaction": [json.dumps(s.to_dict()["interaction"])],
        }
        r = compute_rewards([text], cols)
        assert 0.0 <= r["accuracy"][0] <= 1.0 and r["format"][0] in (0.0, 1.0)
        assert -0.5 <= r["interaction"][0] <= 1.0 and all(math.isfinite(v[0]) for v in r.values())
    assert extract_letter(text, closed.options) in (None, "A", "B", "C", "D")
    extract_answer(text), extract_think(text), format_ok(text)
    assert time.perf_counter() - t0 < 30, "a huge output must not stall a training step"
    records = {s.id: {"id": s.id, "output": text} for s in (closed, opened)}
    summary, _ = score_benchmark(
        get_benchmark("EgoSynth"), "x", [closed, opened], records, EvalConfig(data=["EgoSynth"])
    )
    assert summary["n_scored"] == 2 and summary["n_skipped"] == 0
    m = summary["metrics"]
    assert 0.0 <= m["rouge_l"] <= 100.0 and m["accuracy"] in (0.0, 100.0)


def check_judge(kind, corpus, judge_server):
    """A judge that times out, keeps failing with 500s or replies with nonsense: each item fails
    after its retries, is counted (`judge_failed`, with the error by sample id) and is left out of
    the score; the others are scored."""
    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.judge import Judge

    _, kinds = corpus
    samples = [
        Sample(
            id=f"q{i}", question="What am I holding?", answer="a red cup", task="openqa", meta={"dimension": "Activity"}
        )
        for i in range(2)
    ]
    preds = {"q0": "a red cup", "q1": ""}  # an empty prediction is rated 0 without a request
    judge = Judge(
        kinds[kind]["model"],
        base_url=judge_server.base_url,
        api_key="test",
        timeout=0.5,
        max_retries=1,
        parse_retries=1,
        backoff=0.01,
        max_backoff=0.02,
    )
    res = get_benchmark("EgoThink").score(samples, preds, judge=judge)
    j = res["judge"]
    assert j["judge_failed"] == 1 and j["judged"] == 1 and j["errors"]["q0"]
    rows = {r["id"]: r for r in res["per_sample"]}
    assert rows["q0"]["score"] is None and rows["q1"]["score"] == 0.0
    assert res["metrics"]["score_micro"] == 0.0  # the mean over the judged item (q1) alone


CHECKS = {
    "score_nan": check_score,
    "score_inf": check_score,
    "reward_nan": check_reward,
    "reward_inf": check_reward,
    "reward_log_nan": check_curriculum,
    "output_empty": check_output,
    "output_huge": check_output,
    "judge_timeout": check_judge,
    "judge_500": check_judge,
    "judge_unparseable": check_judge,
}


@pytest.fixture(scope="module")
def judge_server():
    from judge_server import JudgeServer

    with JudgeServer() as srv:
        yield srv


@pytest.mark.parametrize("kind", sorted(CHECKS))
def test_other_stages(kind, corpus, request, tmp_path, monkeypatch):
    check = CHECKS[kind]
    if check is check_score:
        check(kind, corpus, request.getfixturevalue("tiny"), tmp_path)
    elif check is check_reward:
        check(kind, corpus, request.getfixturevalue("tiny_model_dir"), tmp_path, monkeypatch)
    elif check is check_curriculum:
        check(kind, corpus)
    elif check is check_output:
        check(kind, corpus, tmp_path)
    else:
        check(kind, corpus, request.getfixturevalue("judge_server"))
