"""The evaluation runner (`ego3s eval`) and ICU: files, resume, views, torchrun, blind real
benchmarks, ICU geometry and an end-to-end ICU run. CPU, tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ego3s.data.schema import Interaction, InteractionObject, Sample, TimedBox
from ego3s.eval.icu import attention_in_box, cell_coverage, named_interaction, summarize_attention, textual_icu
from ego3s.eval.run import EvalConfig, read_predictions, run_eval, shard
from ego3s.files import read_log
from helpers import REPO, write_video

SHARED = REPO / "data" / "benchmarks"
PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=56 * 56)  # 56x56 frames: 2x2 cells per temporal patch
INTERACTION = {
    "objects": [{"name": "cup", "synonyms": ["mug"]}],
    "action": "pick up",
    "boxes": [
        {"t": 0.0, "label": "cup", "box": [0.0, 0.0, 0.5, 0.5]},
        {"t": 2.0, "label": "cup", "box": [0.5, 0.5, 1.0, 1.0]},
        {"t": 1.0, "label": "right_hand", "box": [0.2, 0.2, 0.4, 0.4]},
    ],
}


def make_egosynth(root: Path, n: int = 6, bad: bool = True) -> Path:
    """An EgoSynth-like folder: test_id.jsonl (n samples, mixed closed/open, the last without an
    interaction, then a missing and a corrupt video) and test_atypical.jsonl (2 samples)."""
    d = root / "egosynth"
    (d / "videos").mkdir(parents=True)
    splits = {"test_id": [], "test_atypical": []}
    for i in range(n + 2):
        split = "test_id" if i < n else "test_atypical"
        write_video(d / "videos" / f"v{i}.mp4", n=8, size=56, fps=4, seed=i)
        closed = i % 2 == 0
        splits[split].append(
            {
                "id": f"s{i}",
                "question": "What did I pick up?" if closed else "What is in my hand?",
                "answer": "B" if closed else "a cup",
                "task": "closeqa" if closed else "openqa",
                "options": ["a knife", "a cup", "a towel", "a bowl"] if closed else None,
                "video": f"videos/v{i}.mp4",
                "interaction": None if i == n - 1 else INTERACTION,
                "meta": {"split": split, "typical": i % 3 == 0, "kind": "object"},
            }
        )
    if bad:
        (d / "videos" / "corrupt.mp4").write_bytes(os.urandom(2000))
        for sid, video in (("bad-missing", "videos/missing.mp4"), ("bad-corrupt", "videos/corrupt.mp4")):
            splits["test_id"].append(
                {
                    "id": sid,
                    "question": "What is in my hand?",
                    "answer": "a cup",
                    "task": "openqa",
                    "video": video,
                    "meta": {"split": "test_id"},
                }
            )
    for split, recs in splits.items():
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from ego3s.models.loading import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_egosynth(tmp_path_factory.mktemp("bench"))


def config(data_dir: Path, out: Path, model: str = "", **kw) -> EvalConfig:
    base = dict(
        data=["EgoSynth"],
        paths={"EgoSynth": str(data_dir)},
        model=model,
        out=str(out),
        progress=False,
        batch_size=3,
        **PIXELS,
    )
    return EvalConfig(**{**base, **kw})


def count_generate(monkeypatch, model) -> list[int]:
    """Rows passed to model.generate, per call."""
    calls: list[int] = []
    original = model.generate

    def generate(**kw):
        calls.append(int(kw["input_ids"].shape[0]))
        return original(**kw)

    monkeypatch.setattr(model, "generate", generate)
    return calls


# ----------------------------------------------------------------------------------------------
# Runner


def test_run_writes_predictions_results_and_counts_bad_samples(tiny, synth, tmp_path, tiny_model_dir):
    model, processor = tiny
    lines: list[str] = []
    res = run_eval(config(synth, tmp_path / "a", tiny_model_dir, verbose=True), model, processor, echo=lines.append)
    out = tmp_path / "a"
    for name in (
        "results.json",
        "results.md",
        "results.csv",
        "run.json",
        "egosynth/predictions.rank0.jsonl",
        "egosynth/per_sample.jsonl",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(res, default=str))
    b = res["benchmarks"]["egosynth"]
    assert b["n_samples"] == 10 and b["n_scored"] == 8 and b["n_missing"] == 0
    assert b["skipped"] == {"missing_video": 1, "unreadable_video": 1}
    assert set(b["metrics"]) >= {"accuracy", "em", "rouge_l", "n_closed", "n_open"}
    assert set(b["by"]) == {"split", "typical", "kind"}
    assert set(b["by"]["split"]) == {"test_id", "test_atypical"}
    assert all(0 <= (b["metrics"][k] or 0) <= 100 for k in ("accuracy", "em", "rouge_l"))
    preds = read_log(out / "egosynth" / "predictions.rank0.jsonl")
    assert len(preds) == 10
    for r in preds:
        if "skipped" in r:
            assert r["id"].startswith("bad-") and r["error"]
        else:
            assert {"id", "output", "extracted", "prompt_tokens", "new_tokens", "t_generate", "t_load"} <= set(r)
            assert r["new_tokens"] <= 32 and r["prompt_tokens"] > 8  # 8 video tokens + text
    csv_head = (out / "results.csv").read_text().splitlines()[0]
    assert csv_head == "benchmark,group,category,n,metric,value"
    md = (out / "results.md").read_text()
    assert "## egosynth" in md and "by split" in md and "missing_video 1" in md
    table = lines[-1]
    assert "egosynth" in table and "n=8" in table and "skipped 2" in table
    assert any("extracted" in ln and "gold" in ln for ln in lines)  # --verbose samples
    # batching does not change greedy answers
    res1 = run_eval(config(synth, tmp_path / "b", tiny_model_dir, batch_size=1), model, processor)
    a = {r["id"]: r.get("output") for r in preds}
    b1 = {r["id"]: r.get("output") for r in read_log(tmp_path / "b" / "egosynth" / "predictions.rank0.jsonl")}
    assert a == b1
    assert res1["benchmarks"]["egosynth"]["metrics"] == b["metrics"]


def test_resume_skips_done_ids_and_survives_a_torn_line(tiny, synth, tmp_path, tiny_model_dir, monkeypatch):
    model, processor = tiny
    calls = count_generate(monkeypatch, model)
    out = tmp_path / "r"
    run_eval(config(synth, out, tiny_model_dir, limit=2), model, processor)
    assert sum(calls) == 2
    res = run_eval(config(synth, out, tiny_model_dir, limit=4), model, processor)
    assert sum(calls) == 4  # the first 2 were not generated again
    assert res["benchmarks"]["egosynth"]["n_scored"] == 4
    path = out / "egosynth" / "predictions.rank0.jsonl"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["id"]
    path.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # a crash mid-write
    res = run_eval(config(synth, out, tiny_model_dir, limit=4), model, processor)
    assert sum(calls) == 5  # only the torn sample again
    recs = [json.loads(ln) for ln in path.read_text().splitlines()]  # the file is whole again
    assert sorted(r["id"] for r in recs) == sorted({r["id"] for r in recs}) and torn_id in {r["id"] for r in recs}
    assert res["benchmarks"]["egosynth"]["n_scored"] == 4
    # a previous run with more ranks left a rank-1 file (with a torn tail): merged, not regenerated
    # (its line carries the sample's fingerprint, as every prediction line does)
    from ego3s.eval.run import _load_benchmark
    from ego3s.identity import sample_fingerprint

    fp4 = sample_fingerprint(next(s for s in _load_benchmark("EgoSynth", config(synth, out))[2] if s.id == "s4"))
    s4 = {
        "id": "s4",
        "fp": fp4,
        "rank": 1,
        "output": "B",
        "extracted": "B",
        "prompt_tokens": 1,
        "new_tokens": 1,
        "t_generate": 0.1,
        "t_load": 0.0,
        "batch_size": 1,
    }
    (out / "egosynth" / "predictions.rank1.jsonl").write_text(json.dumps(s4) + "\n" + '{"id": "s5", "outp')
    res = run_eval(config(synth, out, tiny_model_dir, limit=5), model, processor)
    assert sum(calls) == 5
    b = res["benchmarks"]["egosynth"]
    assert b["n_scored"] == 5 and b["rank_files"] == ["predictions.rank0.jsonl", "predictions.rank1.jsonl"]
    assert read_predictions(out / "egosynth")["s4"]["output"] == "B"
    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        run_eval(config(synth, out, tiny_model_dir, limit=5, view="blind"), model, processor)


def test_views_blind_needs_no_files_context_skips_unannotated(tiny, tmp_path, tiny_model_dir):
    model, processor = tiny
    d = make_egosynth(tmp_path / "data", n=4)
    full = run_eval(config(d, tmp_path / "full", tiny_model_dir), model, processor)
    ctx = run_eval(config(d, tmp_path / "ctx", tiny_model_dir, view="context"), model, processor)
    b = ctx["benchmarks"]["egosynth"]
    assert b["skipped"] == {"no_interaction": 3}  # s3 (no interaction) and the two bad ones
    assert b["n_scored"] == 5
    for p in (d / "videos").iterdir():
        p.unlink()
    blind = run_eval(config(d, tmp_path / "blind", tiny_model_dir, view="blind"), model, processor)
    b = blind["benchmarks"]["egosynth"]
    assert b["n_scored"] == 8 and b["skipped"] == {}  # no file opened
    f = {r["id"]: r for r in read_log(tmp_path / "full" / "egosynth" / "predictions.rank0.jsonl")}
    for r in read_log(tmp_path / "blind" / "egosynth" / "predictions.rank0.jsonl"):
        if r["id"] in f and "prompt_tokens" in f[r["id"]]:
            assert r["prompt_tokens"] < f[r["id"]]["prompt_tokens"]  # no visual tokens
    assert full["benchmarks"]["egosynth"]["skipped"] == {"missing_video": 1, "unreadable_video": 1}


def test_shard_is_strided_and_complete():
    items = list(range(11))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts[0] == [0, 3, 6, 9] and sorted(sum(parts, [])) == items


def _cli(args: list[str], *, torchrun: int = 0, timeout: int = 420) -> subprocess.CompletedProcess:
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
    if torchrun:
        cmd += ["torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}", "-m"]
    cmd += ["ego3s.cli", "eval", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_torchrun_two_processes_match_one(synth, tmp_path, tiny_model_dir):
    args = [
        "--data",
        "EgoSynth",
        "--path",
        f"EgoSynth={synth}",
        "--model",
        tiny_model_dir,
        "--batch-size",
        "2",
        "--min-pixels",
        str(PIXELS["min_pixels"]),
        "--max-pixels",
        str(PIXELS["max_pixels"]),
        "--quiet",
    ]
    one = _cli([*args, "--out", str(tmp_path / "one")])
    two = _cli([*args, "--out", str(tmp_path / "two")], torchrun=2)
    assert "egosynth" in one.stdout and "egosynth" in two.stdout
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r1["world_size"] == 1 and r2["world_size"] == 2
    b1, b2 = r1["benchmarks"]["egosynth"], r2["benchmarks"]["egosynth"]
    for k in ("metrics", "by", "skipped", "n_scored"):
        assert b1[k] == b2[k], k
    assert b2["rank_files"] == ["predictions.rank0.jsonl", "predictions.rank1.jsonl"]
    p1 = {k: v.get("output") for k, v in read_predictions(tmp_path / "one" / "egosynth").items()}
    p2 = {k: v.get("output") for k, v in read_predictions(tmp_path / "two" / "egosynth").items()}
    assert p1 == p2 and len(p1) == 10
    ids = [json.loads(ln)["id"] for ln in (synth / "test_id.jsonl").read_text().splitlines()]
    ids += [json.loads(ln)["id"] for ln in (synth / "test_atypical.jsonl").read_text().splitlines()]
    for r in range(2):  # each rank wrote its strided shard
        got = {x["id"] for x in read_log(tmp_path / "two" / "egosynth" / f"predictions.rank{r}.jsonl")}
        assert got == set(ids[r::2])


def test_blind_run_on_real_annotation_files_without_videos(tiny, tmp_path, tiny_model_dir):
    model, processor = tiny
    cfg = EvalConfig(
        data=["EgoThink", "EgoTextVQA"],
        root=str(SHARED),
        model=tiny_model_dir,
        view="blind",
        limit=4,
        out=str(tmp_path / "o"),
        progress=False,
    )
    res = run_eval(cfg, model, processor)
    for name in ("egothink", "egotextvqa"):
        b = res["benchmarks"][name]
        assert b["n_scored"] == 4 and b["skipped"] == {} and b["judge"] is None
        assert b["metrics"]["em"] is not None
    assert set(res["benchmarks"]["egothink"]["by"]) == {"dimension"}
    assert set(res["benchmarks"]["egotextvqa"]["by"]) == {"setting", "question_type"}
    # the same run with a judge (scripted OpenAI-compatible server): nothing regenerated, judged on
    # rank 0, cached for the next time
    from judge_server import JudgeServer

    with JudgeServer() as srv:
        jcfg = dict(judge_model="scripted", judge_base_url=srv.base_url, judge_api_key="test")
        res = run_eval(EvalConfig(**{**cfg.__dict__, **jcfg}), model, processor)
        asked = srv.count
        assert asked > 0
        again = run_eval(EvalConfig(**{**cfg.__dict__, **jcfg}), model, processor)
        assert srv.count == asked  # all from the cache
    for name, metric in (("egothink", "score"), ("egotextvqa", "accuracy")):
        b = res["benchmarks"][name]
        assert b["judge"]["model"] == "scripted" and b["judge"]["judge_failed"] == 0
        assert b["metrics"][metric] is not None
        assert again["benchmarks"][name]["metrics"] == b["metrics"]
    assert (tmp_path / "o" / "judge_cache.jsonl").is_file()
    assert "***" == json.loads((tmp_path / "o" / "results.json").read_text())["config"]["judge_api_key"]


# ----------------------------------------------------------------------------------------------
# ICU


def test_cell_coverage_maps_tokens_to_cells_and_boxes_in_time():
    # grid (T=1, 4x4 patches) -> 2x2 merged cells in token order (h, w); frames 56x56 px
    top_right = [TimedBox(0.0, "cup", [0.5, 0.0, 1.0, 0.5])]
    assert cell_coverage([1, 4, 4], [0.0, 0.5], top_right).tolist() == [0, 1, 0, 0]
    bottom_left = [TimedBox(0.0, "cup", [0.0, 0.5, 0.5, 1.0])]
    assert cell_coverage([1, 4, 4], [0.0, 0.5], bottom_left).tolist() == [0, 0, 1, 0]
    half = [TimedBox(0.0, "cup", [0.0, 0.0, 0.25, 0.5])]  # 14 of 28 columns of cell (0, 0)
    assert cell_coverage([1, 4, 4], [0.0, 0.5], half).tolist() == [0.5, 0, 0, 0]
    # time: a box annotated at 2 s only (held +-1 s): temporal cell 0 = frames at 0 s and 2 s (union),
    # cell 1 = frames at 4 s and 6 s (no box)
    once = [TimedBox(2.0, "cup", [0.0, 0.0, 1.0, 1.0])]
    cov = cell_coverage([2, 4, 4], [0.0, 2.0, 4.0, 6.0], once)
    assert cov.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    # interpolation between annotations (boxes_at): at 1 s the box is halfway
    moving = [TimedBox(0.0, "cup", [0.0, 0.0, 0.5, 0.5]), TimedBox(2.0, "cup", [0.5, 0.5, 1.0, 1.0])]
    cov = cell_coverage([1, 4, 4], [1.0, 1.0], moving)
    assert cov.tolist() == [0.25, 0.25, 0.25, 0.25]  # [0.25, 0.25, 0.75, 0.75] covers a quarter of each cell


def test_attention_in_box_hand_made_maps():
    cov = cell_coverage(
        [2, 4, 4],
        [0.0, 0.5, 1.0, 1.5],
        [TimedBox(0.0, "cup", [0.0, 0.0, 0.5, 0.5]), TimedBox(1.5, "cup", [0.0, 0.0, 0.5, 0.5])],
    )
    assert cov.tolist() == [1, 0, 0, 0, 1, 0, 0, 0]
    on_box = np.zeros((3, 8))
    on_box[:, [0, 4]] = 0.2
    r = attention_in_box(on_box, cov)
    assert r["in_box"] == pytest.approx(1.0) and r["area"] == pytest.approx(0.25) and r["cells"] == 8
    uniform = np.full((2, 8), 0.05)
    assert attention_in_box(uniform, cov)["in_box"] == pytest.approx(0.25)  # chance = area share
    off = np.zeros((1, 8))
    off[0, 3] = 0.5
    assert attention_in_box(off, cov)["in_box"] == 0.0
    with pytest.raises(ValueError, match="does not match"):
        attention_in_box(np.zeros((1, 7)), cov)
    s = summarize_attention([{"in_box": 0.5, "area": 0.25}, {"in_box": 0.3, "area": 0.25}, None])
    assert s == {"n": 2, "in_box": 40.0, "area": 25.0, "ratio": 1.6, "visual_mass": 0.0}


def test_textual_icu():
    inter = Interaction([InteractionObject("cup", ["mug"])], "pick up")
    s = Sample(id="a", question="q", answer="x", task="openqa", interaction=inter)
    plain = Sample(id="b", question="q", answer="x", task="openqa")
    assert named_interaction("I grab the mugs on the table", s) is True
    assert named_interaction("I see a cupboard", s) is False  # whole words only
    assert named_interaction("anything", plain) is None
    rows = [
        {"correct": True, "named": True},
        {"correct": True, "named": False},
        {"correct": False, "named": True},
        {"correct": True, "named": None},
    ]
    t = textual_icu(rows)
    assert t["share"] == 50.0 and t["n_correct"] == 2 and t["n_named"] == 1 and t["n_annotated"] == 3


def test_icu_end_to_end_on_tiny(synth, tmp_path, tiny_model_dir):
    cfg = config(synth, tmp_path / "icu", tiny_model_dir, icu=True, fmt="reasoning", max_new_tokens=8, limit=6)
    res = run_eval(cfg)  # loads the model itself, with eager attention
    icu = res["benchmarks"]["egosynth"]["icu"]
    att, txt = icu["attention"], icu["textual"]
    assert att["n"] == 5 and icu["attention_errors"] == 0  # s5 has no interaction
    assert 0 <= att["in_box"] <= 100 and 0 < att["area"] <= 100
    assert txt["n_annotated"] == 5 and txt["n_correct"] <= 5
    for r in read_log(tmp_path / "icu" / "egosynth" / "predictions.rank0.jsonl"):
        if "icu_attention" in r and r["icu_attention"]:
            a = r["icu_attention"]
            assert 0 <= a["in_box"] <= 1 and 0 < a["area"] <= 1 and 0 < a["visual_mass"] <= 1
            assert a["cells"] == 8 and a["rows"] == r["new_tokens"]
    assert "interaction cue utilization" in (tmp_path / "icu" / "results.md").read_text()
    # counterfactual reliance: the 5 annotated samples were also generated on the context view
    from ego3s.answers import exact_match, extract_answer, extract_letter
    from ego3s.data.io import read_jsonl

    ctx = {r["id"]: r for r in read_log(tmp_path / "icu" / "egosynth" / "context" / "predictions.rank0.jsonl")}
    assert set(ctx) == {"s0", "s1", "s2", "s3", "s4"}
    full = read_predictions(tmp_path / "icu" / "egosynth")
    gold = {s.id: s for s in read_jsonl(synth / "test_id.jsonl")}

    def right(sid, out):
        s = gold[sid]
        if s.task == "closeqa":
            return extract_letter(out, s.options) == s.answer
        return exact_match(extract_answer(out) or "", s.answer) == 1.0

    diffs = [right(i, full[i]["output"]) - right(i, ctx[i]["output"]) for i in ctx]
    cr = icu["counterfactual_reliance"]
    assert cr["n_paired"] == 5 and cr["excluded"] == {"no_interaction": 1}
    assert cr["splits"]["all"]["value"] == pytest.approx(100 * sum(diffs) / 5)
    assert res["benchmarks"]["egosynth"]["this_run"]["context_view"]["generated"] == 5


def test_frames_is_still_read_as_the_old_name_of_nframes(tmp_path):
    from ego3s.config import load_config
    from ego3s.eval.run import check_run

    assert EvalConfig(frames=6).nframes == 6 and EvalConfig(frames=6).frames is None
    assert EvalConfig(nframes=6, frames=6).nframes == 6
    with pytest.raises(ValueError, match="frames .* and nframes .* disagree"):
        EvalConfig(nframes=8, frames=6)
    (tmp_path / "old.yaml").write_text("frames: 4\n")
    assert load_config(EvalConfig, tmp_path / "old.yaml").clip_spec().nframes == 4
    # a folder whose run.json was written under the old name is still checked, under the new one
    (tmp_path / "run.json").write_text(json.dumps({"frames": 8, "view": "full"}))
    check_run(tmp_path, {"nframes": 8, "view": "full"})
    with pytest.raises(ValueError, match="nframes: 8 then, 16 now"):
        check_run(tmp_path, {"nframes": 16, "view": "full"})
