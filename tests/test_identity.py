"""Nothing computed from other inputs is reused silently; failures that may pass are tried again;
one writer per folder.

Three classes of faults, each shown on the real stage that meets it (the tiny model where a model
is needed), with data generated here (tests/fixtures/make_bad.py, `twin_pool`):
- identity: caches, prediction logs, checkpoint folders and pipeline stages keyed by what made them;
- failures are not final: a missing video or an unreachable judge is tried again by the next run;
- one writer per folder: a second process is refused; a dead one's lock is taken over.
The reuse property over two pools with the same ids is in tests/integration/test_reuse_property.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from make_bad import _video, twin_pool

from ego3s.data.io import read_jsonl
from ego3s.data.schema import Sample
from ego3s.files import LOCK_NAME, FolderLocked, folder_lock
from ego3s.identity import IdentityError, claim_folder, describe_diff, sample_fingerprint
from helpers import REPO

PIX = 56 * 56

RELAXED = {"lambda_c": -1.0, "lambda_f": -1.0e9, "lambda_o": -1.0}  # every valid score of a random tiny model passes
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}


def _sample(video=None, **kw) -> Sample:
    d = {
        "id": "x",
        "question": "What did I pick up?",
        "answer": "B",
        "task": "closeqa",
        "options": ["a knife", "a cup"],
        "video": video,
        "start": 0.0,
        "end": 1.5,
        "interaction": {
            "objects": [{"name": "cup"}],
            "action": "pick up",
            "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.1, 0.5, 0.5]}],
        },
    }
    d.update(kw)
    return Sample.from_dict(d)


# ============================================================================ identity


def test_sample_fingerprint_follows_content_and_video_file_not_meta(tmp_path):
    v = _video(tmp_path / "v.mp4", seed=1)
    base = sample_fingerprint(_sample(str(v)))
    assert sample_fingerprint(_sample(str(v))) == base  # stable
    assert sample_fingerprint(_sample(str(v), meta={"typical": True})) == base  # meta: reports only
    for change in (
        {"question": "Which cup?"},
        {"answer": "A"},
        {"options": ["a knife", "a mug"]},
        {"end": 1.0},
        {
            "interaction": {
                "objects": [{"name": "cup"}],
                "action": "pick up",
                "boxes": [{"t": 0.0, "label": "cup", "box": [0.2, 0.1, 0.5, 0.5]}],
            }
        },
    ):
        assert sample_fingerprint(_sample(str(v), **change)) != base, change
    # the same path, other bytes (size and mtime change): another sample
    st = v.stat()
    _video(v, seed=2)
    os.utime(v, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sample_fingerprint(_sample(str(v))) != base
    # content mode: a touch alone keeps the fingerprint, other bytes do not
    c1 = sample_fingerprint(_sample(str(v)), "content")
    os.utime(v, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
    assert sample_fingerprint(_sample(str(v)), "content") == c1
    assert sample_fingerprint(_sample(str(v)), "stat") != sample_fingerprint(_sample(str(v)), "content")
    # a missing file has an identity too: its return changes it (so what failed on it is redone)
    gone = sample_fingerprint(_sample(str(tmp_path / "later.mp4")))
    _video(tmp_path / "later.mp4", seed=3)
    assert sample_fingerprint(_sample(str(tmp_path / "later.mp4"))) != gone
    with pytest.raises(ValueError, match="video_identity must be one of"):
        sample_fingerprint(_sample(str(v)), "mtime")


def test_score_cache_serves_a_record_only_to_the_sample_it_was_computed_from(tmp_path):
    from ego3s.select.cache import ScoreCache

    v = _video(tmp_path / "v.mp4", seed=1)
    a, b = _sample(str(v)), _sample(str(v), question="Which cup did I take?")  # same id, other content
    cache = ScoreCache(tmp_path / "c", model="m")
    cache.put(a, "full", 0.75)
    assert cache.get(a, "full")["score"] == 0.75 and cache.done(a, "full")
    assert cache.get(b, "full") is None and not cache.done(b, "full")
    # a new process reads the log: the same answer
    again = ScoreCache(tmp_path / "c", model="m")
    assert again.get(_sample(str(v)), "full")["score"] == 0.75 and again.get(b, "full") is None
    # b is scored; the newest line wins for that id, and a (the old content) is not served any more
    again.put(b, "full", 0.25)
    third = ScoreCache(tmp_path / "c", model="m")
    assert third.get(b, "full")["score"] == 0.25 and third.get(a, "full") is None
    # lines of an older ego3s (no fingerprint) are never served: scored again
    legacy = tmp_path / "c" / f"scores-{third.key}.jsonl"
    legacy.write_text(json.dumps({"id": "x", "view": "full", "score": 0.5}) + "\n")
    assert ScoreCache(tmp_path / "c", model="m").get(a, "full") is None


def test_claim_folder_refuses_mixing_and_names_the_difference(tmp_path):
    out = tmp_path / "train"
    ident = {"model": "m1", "data": "d1", "config": {"learning_rate": 1e-6, "beta": 0.04}}
    claim_folder(out, ident, resume=False)  # empty: claimed
    assert json.loads((out / "identity.json").read_text()) == ident
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(IdentityError, match="pass --resume to continue it, --overwrite"):
        claim_folder(out, ident, resume=False)  # a fresh run would mix with checkpoint-2
    claim_folder(out, ident, resume=True)  # the same run: continued
    other = {**ident, "data": "d2", "config": {**ident["config"], "learning_rate": 1e-5}}
    with pytest.raises(IdentityError) as e:
        claim_folder(out, other, resume=True)
    msg = str(e.value)
    assert "data: 'd1' then, 'd2' now" in msg and "config.learning_rate: 1e-06 then, 1e-05 now" in msg
    assert "--overwrite" in msg and "another out" in msg and "beta" not in msg
    lines: list[str] = []
    claim_folder(out, other, resume=True, overwrite=True, echo=lines.append)  # deleted, claimed anew
    assert not (out / "checkpoint-2").exists() and "checkpoint-2" in lines[0]
    assert json.loads((out / "identity.json").read_text()) == other
    # checkpoints without an identity record (an older ego3s): cannot be checked, refused
    (out / "identity.json").unlink()
    (out / "checkpoint-1").mkdir()
    with pytest.raises(IdentityError, match="without a record of what produced them"):
        claim_folder(out, other, resume=True)


@pytest.mark.slow
def test_train_refuses_a_folder_of_another_run_before_loading_anything(tmp_path, tiny_model_dir):
    from ego3s.rl.run import TrainingConfig, run_training

    twin_pool(tmp_path / "data", "a")
    cfg = TrainingConfig(
        model=tiny_model_dir,
        data=str(tmp_path / "data" / "pool.jsonl"),
        out=str(tmp_path / "t"),
        max_steps=1,
        nframes=4,
    )
    from ego3s.identity import read_identity
    from ego3s.train.plumbing import start_model_fingerprint, training_identity

    ident = training_identity(cfg, read_jsonl(cfg.data), start_model_fingerprint(cfg.model))
    claim_folder(cfg.out, ident, resume=False)  # as a first run leaves it, with one checkpoint
    (Path(cfg.out) / "checkpoint-1").mkdir()
    assert read_identity(cfg.out) == ident
    # another learning rate, the same folder, --resume: refused, naming the key
    with pytest.raises(IdentityError, match=r"config\.learning_rate: 1e-06 then, 0\.001 now"):
        run_training(replace(cfg, learning_rate=1e-3), resume=True)
    # the data rewritten with the same ids, other content: refused, naming the data
    twin_pool(tmp_path / "data", "b")
    with pytest.raises(IdentityError, match="data: '[0-9a-f]+' then, '[0-9a-f]+' now"):
        run_training(cfg, resume=True)
    # without --resume into a folder with checkpoints: refused (a fresh run would mix with them)
    with pytest.raises(IdentityError, match="pass --resume"):
        run_training(cfg)
    # a longer run of the same training is the same run (max_steps, save_steps are not identity)
    now = read_jsonl(cfg.data)
    fp = start_model_fingerprint(cfg.model)
    assert training_identity(replace(cfg, max_steps=9, save_steps=3), now, fp) == training_identity(cfg, now, fp)


def test_pipeline_reruns_the_changed_stage_and_the_later_ones(tmp_path):
    from ego3s.pipeline import STAGES, Run, RunConfig, chain_fingerprints, stage_inputs

    cfg = RunConfig(out=str(tmp_path / "run"), model="tiny")
    run = Run(cfg)
    inputs = json.loads(json.dumps(stage_inputs(cfg), default=str))
    run.check_inputs(inputs, print)
    for stage in STAGES:  # as a finished run leaves it
        (run.dir / stage).mkdir()
        run.run_stage(stage, lambda: {"ok": True}, print, inputs)
    fps = chain_fingerprints(inputs)
    assert all(run.manifest["stages"][s]["input_fingerprint"] == fps[s] for s in STAGES)

    # the same config: nothing reruns
    lines: list[str] = []
    again = Run(cfg)
    again.check_inputs(inputs, lines.append)
    assert lines == [] and all(again.done(s) for s in STAGES)

    # another max_steps: train, eval and report rerun (their folders deleted), the rest is kept
    cfg2 = replace(cfg, training=replace(cfg.training, max_steps=7))
    inputs2 = json.loads(json.dumps(stage_inputs(cfg2), default=str))
    run2 = Run(cfg2)
    run2.check_inputs(inputs2, lines.append)
    assert len(lines) == 1 and lines[0].startswith("[train] reruns with eval, report")
    assert "training.max_steps: -1 then, 7 now" in lines[0]
    assert [s for s in STAGES if run2.done(s)] == ["data", "model", "warmup", "select"]
    assert not (run2.dir / "train").exists() and (run2.dir / "select").exists()

    # a manifest of an older ego3s (no fingerprints): everything reruns, saying why
    m = json.loads((run2.dir / "manifest.json").read_text())
    for e in m["stages"].values():
        e.pop("input_fingerprint", None)
    (run2.dir / "manifest.json").write_text(json.dumps(m))
    lines.clear()
    Run(cfg2).check_inputs(inputs2, lines.append)
    assert lines[0].startswith("[data] reruns") and "no input fingerprint recorded" in lines[0]


def test_pipeline_data_and_eval_benchmark_files_are_part_of_the_fingerprint(tmp_path):
    from ego3s.pipeline import RunConfig, chain_fingerprints, stage_inputs

    pool = twin_pool(tmp_path / "data", "a")
    cfg = RunConfig(out=str(tmp_path / "run"), model="tiny", data=str(pool))
    cfg.evaluation.paths = {"EgoSynth": str(pool)}
    a = chain_fingerprints(stage_inputs(cfg))
    twin_pool(tmp_path / "data", "b")  # the same files rewritten: same ids, other content
    b = chain_fingerprints(stage_inputs(cfg))
    assert all(a[s] != b[s] for s in a)  # the data stage changed: every stage reruns
    cfg.data = None  # the pool is generated; only the eval benchmark is read from outside
    c = chain_fingerprints(stage_inputs(cfg))
    twin_pool(tmp_path / "data", "a")
    d = chain_fingerprints(stage_inputs(cfg))
    assert [s for s in c if c[s] != d[s]] == ["eval", "report"]


def test_reproduction_driver_redoes_rows_made_from_other_inputs(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("egosynth_table_driver", REPO / "experiments" / "egosynth" / "run.py")
    driver = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(driver)

    cfg = driver.load_table_config(REPO / "experiments" / "egosynth" / "table.yaml", smoke=True, out=str(tmp_path))
    name = next(iter(cfg["rows"]))
    seed = driver.seeds_of(cfg, name)[0]
    d = driver.row_dir(tmp_path, name, seed)
    d.mkdir(parents=True)
    row = {"row": name, "inputs": json.loads(json.dumps(driver.row_inputs(cfg, name, seed), default=str))}
    (d / "row.json").write_text(json.dumps(row))
    assert driver.stale_row(cfg, tmp_path, name, seed) is None
    cfg["train"]["learning_rate"] = 0.5
    why = driver.stale_row(cfg, tmp_path, name, seed)
    assert why is not None and "train.learning_rate" in why and "0.5 now" in why
    cfg2 = json.loads(json.dumps(cfg))
    cfg2["warmup"]["steps"] = 12345  # a change of prep/ reaches every selection and row
    assert "select.prep" in driver.stale_row(cfg2, tmp_path, name, seed)
    (d / "row.json").write_text(json.dumps({"row": name}))  # an older driver's row
    assert "no inputs recorded" in driver.stale_row(cfg, tmp_path, name, seed)


def test_describe_diff_is_short_and_names_nested_keys():
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": "x" * 200}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2]}, "e": "y" * 200, "f": None}
    msg = describe_diff(old, new)
    assert msg.startswith("b.c: 2 then, 3 now") and "f: '<absent>' then, None now" in msg
    assert len(msg) < 300 and "a:" not in msg


# ============================================================================ failures are not final


def _selection(pool, out, tiny_model_dir):
    from ego3s.select.csm import CSMThresholds
    from ego3s.select.run import SelectionConfig
    from ego3s.select.scoring import ScoringConfig

    return SelectionConfig(
        method="csm",
        data=str(pool),
        model=tiny_model_dir,
        out=str(out),
        dtype="float32",
        device="cpu",
        csm=CSMThresholds(**RELAXED),
        relevance_file=str(out.parent / "relevance.json"),
        scoring=ScoringConfig(nframes=4, max_pixels=PIX, min_pixels=784, batch_size=4),
    )


@pytest.mark.slow
def test_selection_retries_a_video_that_was_missing_and_counts_it_each_time(tmp_path, tiny, tiny_model_dir):
    from ego3s.select.run import run_selection

    pool = twin_pool(tmp_path / "data", "a", n=3)
    (tmp_path / "relevance.json").write_text(json.dumps({f"t{i}": 0.5 for i in range(3)}))
    hidden = tmp_path / "data" / "videos" / "t1.mp4"
    hidden.rename(hidden.with_suffix(".away"))
    cfg = _selection(pool, tmp_path / "sel", tiny_model_dir)
    rep = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    assert rep["scoring"]["skipped_unreadable"] == 1 and rep["funnel"]["invalid"] == 1
    # still missing: tried again and counted again (never "unreadable: 0" while it is missing)
    rep = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    assert rep["scoring"]["skipped_unreadable"] == 1 and rep["scoring"]["cached"] == 2
    assert "unreadable (skipped, counted): 1" in (tmp_path / "sel" / "report.md").read_text()
    # the file is back: scored now, the others served from the cache
    hidden.with_suffix(".away").rename(hidden)
    rep = run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])
    assert rep["scoring"] == {**rep["scoring"], "skipped_unreadable": 0, "cached": 2, "scored": 1}
    assert rep["funnel"]["invalid"] == 0
    assert "unreadable (skipped, counted): 0" in (tmp_path / "sel" / "report.md").read_text()


@pytest.mark.slow
def test_evaluation_retries_missing_videos_but_not_deterministic_skips(tmp_path, tiny, tiny_model_dir, generate_calls):
    from ego3s.eval.run import EvalConfig, is_done, run_eval

    assert not is_done({"skipped": "missing_video"}) and not is_done({"skipped": "unreadable_image"})
    assert is_done({"skipped": "no_interaction"}) and not is_done({"skipped": "no_interaction"}, retry_skipped=True)
    assert is_done({"output": "B"})
    pool = twin_pool(tmp_path / "data", "a", n=3)
    hidden = tmp_path / "data" / "videos" / "t2.mp4"
    hidden.rename(hidden.with_suffix(".away"))
    cfg = EvalConfig(
        data=["EgoSynth"],
        paths={"EgoSynth": str(pool)},
        model=tiny_model_dir,
        out=str(tmp_path / "ev"),
        nframes=4,
        max_pixels=PIX,
        min_pixels=784,
        max_new_tokens=4,
        progress=False,
    )
    calls, (model, processor) = generate_calls, tiny
    b = run_eval(cfg, model, processor)["benchmarks"]["egosynth"]
    assert b["skipped"] == {"missing_video": 1} and b["n_scored"] == 2 and sum(calls) == 2
    b = run_eval(cfg, model, processor)["benchmarks"]["egosynth"]  # still missing: still counted
    assert b["skipped"] == {"missing_video": 1} and sum(calls) == 2
    hidden.with_suffix(".away").rename(hidden)
    b = run_eval(cfg, model, processor)["benchmarks"]["egosynth"]
    assert b["skipped"] == {} and b["n_scored"] == 3 and sum(calls) == 3  # only the restored one


@pytest.mark.slow
def test_a_judge_that_was_unreachable_is_asked_again(tmp_path):
    from judge_server import JudgeServer

    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.judge import Judge

    samples = [
        Sample(
            id="q0", question="What am I holding?", answer="a red cup", task="openqa", meta={"dimension": "Activity"}
        )
    ]
    preds = {"q0": "a red cup"}
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    cache = tmp_path / "judge_cache.jsonl"
    bench = get_benchmark("EgoThink")
    down = Judge("scripted", base_url=dead, api_key="t", cache=cache, timeout=0.5, max_retries=0)
    res = bench.score(samples, preds, judge=down)
    assert res["judge"]["judge_failed"] == 1 and res["per_sample"][0]["score"] is None
    with JudgeServer() as srv:  # the endpoint is up again: a new run asks, the failure was not cached
        up = Judge("scripted", base_url=srv.base_url, api_key="t", cache=cache, timeout=5)
        res = bench.score(samples, preds, judge=up)
        assert res["judge"]["judge_failed"] == 0 and res["per_sample"][0]["score"] is not None
        assert srv.count >= 1


# ============================================================================ one writer per folder

HOLD = """
import sys, time
from ego3s.files import folder_lock
with folder_lock(sys.argv[1], "holder"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    p = _holder(tmp_path / "out", 30)
    try:
        with pytest.raises(FolderLocked) as e:
            with folder_lock(tmp_path / "out", "ego3s select"):
                pass
        msg = str(e.value)
        assert f"pid {p.pid} on {socket.gethostname()}" in msg and "holder" in msg and "another out" in msg
    finally:
        p.kill()
        p.wait()
    # the holder was killed: the kernel dropped its lock; the file still names it, a stale lock
    lines: list[str] = []
    with folder_lock(tmp_path / "out", "ego3s select", echo=lines.append):
        info = json.loads((tmp_path / "out" / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["started"]
    assert len(lines) == 1 and f"stale lock (pid {p.pid}" in lines[0] and "no longer running" in lines[0]
    assert (tmp_path / "out" / LOCK_NAME).read_text() == ""  # released: empty


def test_a_lock_file_of_a_dead_process_is_taken_over_and_one_of_another_host_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    lines: list[str] = []
    with folder_lock(folder, "x", echo=lines.append):
        pass
    assert "taking over a stale lock" in lines[0]
    (folder / LOCK_NAME).write_text(
        json.dumps(
            {"pid": 1, "host": "elsewhere.example", "started": "then", "what": "ego3s train", "command": "ego3s train"}
        )
    )
    with pytest.raises(FolderLocked, match=f"pid 1 on elsewhere.example.*delete {folder / LOCK_NAME}"):
        with folder_lock(folder, "x"):
            pass
    # a live pid of this host whose start time is not the recorded one: a reused pid, stale
    (folder / LOCK_NAME).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "proc_start": "1", "started": "then"})
    )
    with folder_lock(folder, "x", echo=lines.append):
        pass
    assert "stale lock" in lines[-1]


@pytest.mark.slow
def test_the_lock_is_reentrant_in_a_process_and_every_stage_takes_it(tmp_path, tiny_model_dir):
    with folder_lock(tmp_path / "o"):
        with folder_lock(tmp_path / "o"):  # a stage calling another stage's function on its folder
            pass
        assert json.loads((tmp_path / "o" / LOCK_NAME).read_text())["pid"] == os.getpid()
    pool = twin_pool(tmp_path / "data", "a", n=2)
    p = _holder(tmp_path / "busy", 60)
    try:
        from ego3s.eval.run import EvalConfig, run_eval
        from ego3s.pipeline import RunConfig, run_pipeline
        from ego3s.rl.run import TrainingConfig, run_training
        from ego3s.select.run import SelectionConfig, run_selection

        busy = str(tmp_path / "busy")
        for call in (
            lambda: run_selection(SelectionConfig(method="full", data=str(pool), out=busy)),
            lambda: run_eval(
                EvalConfig(data=["EgoSynth"], paths={"EgoSynth": str(pool)}, out=busy, model=tiny_model_dir)
            ),
            lambda: run_training(TrainingConfig(model=tiny_model_dir, data=str(pool), out=busy)),
            lambda: run_pipeline(RunConfig(out=busy, model="tiny"), echo=lambda m: None),
        ):
            with pytest.raises(FolderLocked, match=f"pid {p.pid}"):
                call()
        # the CLI: one line on stderr, exit status 1
        r = subprocess.run(
            [sys.executable, "-m", "ego3s.cli", "select", "method=full", f"data={pool}", f"out={busy}"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
        )
        assert r.returncode == 1 and "another process writes this folder" in r.stderr and "Traceback" not in r.stderr
    finally:
        p.kill()
        p.wait()
    assert not (tmp_path / "busy" / "selected.jsonl").exists()
