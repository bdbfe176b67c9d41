"""The reuse property: for two generated pools that share their sample ids but differ in content
(tests/fixtures/make_bad.py `twin_pool`: each seed draws which field of which sample changes, among
question, answer, options, interaction, clip window and the video file rewritten in place), an
output folder of `select`, `eval`, `train` or `run` made from the first pool and reused for the
second gives the files that a fresh folder gives, or a clear refusal. Never a mix.

Where a stage can, it also recomputes only what changed: the one unchanged sample (`t0`) is
served from the score cache or the prediction log. The old behaviour (caches and logs keyed by
sample id, stages keyed by nothing) fails every test here: it served the first pool's scores and
predictions, resumed another run's checkpoints and skipped the changed pipeline's stages.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from make_bad import twin_changes, twin_pool

from ego3s.identity import IdentityError

PIX = 56 * 56

RELAXED = {"lambda_c": -1.0, "lambda_f": -1.0e9, "lambda_o": -1.0}  # every valid score of a random tiny model passes
N = 5


def _same_json(a: Path, b: Path, drop: tuple[str, ...]) -> None:
    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in drop}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    assert clean(json.loads(a.read_text())) == clean(json.loads(b.read_text())), (a, b)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


# ---------------------------------------------------------------------------------------- select
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_select_folder_reused_for_other_data_equals_a_fresh_one(seed, tmp_path, tiny, tiny_model_dir):
    from ego3s.select.csm import CSMThresholds
    from ego3s.select.run import SelectionConfig, run_selection
    from ego3s.select.scoring import ScoringConfig

    assert set(twin_changes(seed, N)) == set(range(1, N))
    pool = twin_pool(tmp_path / "data", "a", seed, N)

    def select(out: Path) -> dict:
        cfg = SelectionConfig(
            method="csm",
            data=str(pool),
            model=tiny_model_dir,
            out=str(out),
            dtype="float32",
            device="cpu",
            csm=CSMThresholds(**RELAXED),
            relevance_file=str(out / "relevance.json"),
            scoring=ScoringConfig(nframes=4, max_pixels=PIX, min_pixels=784, batch_size=1),
        )
        return run_selection(cfg, progress=False, model=tiny[0], processor=tiny[1])

    select(tmp_path / "reused")
    twin_pool(tmp_path / "data", "b", seed, N)  # the same files rewritten: same ids, other content
    reused, fresh = select(tmp_path / "reused"), select(tmp_path / "fresh")
    assert reused["scoring"]["cached"] == 1 and reused["scoring"]["scored"] == N - 1  # only t0 reused
    assert fresh["scoring"]["cached"] == 0
    for name in ("selected.jsonl", "scores.csv", "relevance.json"):
        assert (tmp_path / "reused" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    _same_json(
        tmp_path / "reused" / "report.json", tmp_path / "fresh" / "report.json", drop=("seconds", "config", "scoring")
    )


# ---------------------------------------------------------------------------------------- eval
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_eval_folder_reused_for_other_data_equals_a_fresh_one(seed, tmp_path, tiny, tiny_model_dir, generate_calls):
    from ego3s.eval.run import EvalConfig, run_eval

    pool = twin_pool(tmp_path / "data", "a", seed, N)
    calls, (model, processor) = generate_calls, tiny

    def evaluate(out: Path) -> dict:
        cfg = EvalConfig(
            data=["EgoSynth"],
            paths={"EgoSynth": str(pool)},
            model=tiny_model_dir,
            out=str(out),
            nframes=4,
            max_pixels=PIX,
            min_pixels=784,
            max_new_tokens=6,
            batch_size=1,
            progress=False,
        )
        return run_eval(cfg, model, processor)

    evaluate(tmp_path / "reused")
    twin_pool(tmp_path / "data", "b", seed, N)
    calls.clear()
    evaluate(tmp_path / "reused")
    assert sum(calls) == N - 1  # every changed sample generated again, t0 reused
    evaluate(tmp_path / "fresh")
    r, f = tmp_path / "reused" / "egosynth", tmp_path / "fresh" / "egosynth"
    assert (r / "per_sample.jsonl").read_bytes() == (f / "per_sample.jsonl").read_bytes()
    _same_json(
        tmp_path / "reused" / "results.json",
        tmp_path / "fresh" / "results.json",
        drop=("seconds", "timing", "this_run", "out", "config"),
    )
    # the model is part of the identity too: another model into the same folder is refused
    with pytest.raises(ValueError, match="model_fingerprint: .* then, .* now.*--overwrite"):
        run_eval(
            EvalConfig(
                data=["EgoSynth"],
                paths={"EgoSynth": str(pool)},
                out=str(tmp_path / "reused"),
                nframes=4,
                max_pixels=PIX,
                min_pixels=784,
                max_new_tokens=6,
                batch_size=1,
                progress=False,
                model="",
            ),
            model=_perturbed(model),
            processor=processor,
        )


def _perturbed(model):
    import copy

    import torch

    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    return other


# ---------------------------------------------------------------------------------------- train
@pytest.mark.slow
def test_train_folder_reused_for_other_data_is_refused_or_overwritten_to_a_fresh_run(tmp_path, tiny_model_dir):
    from ego3s.rl.run import TrainingConfig, run_training

    pool = twin_pool(tmp_path / "data", "a", 0, N)
    base = TrainingConfig(
        model=tiny_model_dir,
        data=str(pool),
        batch_size=4,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=6,
        max_steps=1,
        save_steps=1,
        beta=0.0,
        learning_rate=1e-3,
        nframes=4,
        max_pixels=PIX,
        min_pixels=784,
        dtype="float32",
    )
    base.ecr.ecr = False
    run_training(replace(base, out=str(tmp_path / "reused")))
    twin_pool(tmp_path / "data", "b", 0, N)
    for resume in (True, False):  # continuing it, or a fresh run over its checkpoints: refused
        with pytest.raises(IdentityError, match="--overwrite"):
            run_training(replace(base, out=str(tmp_path / "reused")), resume=resume)
    run_training(replace(base, out=str(tmp_path / "reused")), overwrite=True)
    run_training(replace(base, out=str(tmp_path / "fresh")))
    a, b = _weights(tmp_path / "reused" / "final"), _weights(tmp_path / "fresh" / "final")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert sorted(p.name for p in (tmp_path / "reused").glob("checkpoint-*")) == ["checkpoint-1"]
    ra = [(r["step"], r["sample_id"], r["rewards"]) for r in _log(tmp_path / "reused" / "rewards.jsonl")]
    rb = [(r["step"], r["sample_id"], r["rewards"]) for r in _log(tmp_path / "fresh" / "rewards.jsonl")]
    assert ra == rb


def _log(path: Path) -> list[dict]:
    from ego3s.files import read_log

    return read_log(path)


# ---------------------------------------------------------------------------------------- run
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_folder_reused_for_other_data_equals_a_fresh_one(tmp_path):
    from ego3s.config import from_dict
    from ego3s.pipeline import RunConfig, run_pipeline

    pool = twin_pool(tmp_path / "data", "a", 1, N)
    cfg = from_dict(
        RunConfig,
        {
            "model": "tiny",
            "data": str(pool),
            "warmup_enabled": False,
            "eval_data": ["EgoSynth"],
            "selection": {
                "method": "csm",
                "csm": {"lambda_c": -1.0, "lambda_f": -1.0e9, "lambda_o": -1.0},
                "dtype": "float32",
                "device": "cpu",
                "scoring": {"nframes": 4, "max_pixels": PIX, "min_pixels": 784, "batch_size": 1},
            },
            "training": {
                "max_steps": 1,
                "num_generations": 2,
                "batch_size": 4,
                "per_device_train_batch_size": 4,
                "max_completion_length": 6,
                "beta": 0.0,
                "save_steps": 1,
                "learning_rate": 1e-3,
                "nframes": 4,
                "max_pixels": PIX,
                "min_pixels": 784,
                "dtype": "float32",
                "ecr": {"ecr": False},
            },
            "evaluation": {
                "paths": {"EgoSynth": str(pool)},
                "max_new_tokens": 6,
                "nframes": 4,
                "max_pixels": PIX,
                "min_pixels": 784,
                "batch_size": 1,
                "progress": False,
                "dtype": "float32",
                "device": "cpu",
            },
        },
    )
    lines: list[str] = []
    run_pipeline(replace(cfg, out=str(tmp_path / "reused")), echo=lines.append)
    twin_pool(tmp_path / "data", "b", 1, N)
    lines.clear()
    run_pipeline(replace(cfg, out=str(tmp_path / "reused")), echo=lines.append)
    assert any(
        ln.startswith(
            "[data] reruns with model, warmup, select, train, eval, report: its inputs changed (data.samples:"
        )
        for ln in lines
    ), lines
    assert not any("done already" in ln for ln in lines)
    run_pipeline(replace(cfg, out=str(tmp_path / "fresh")), echo=lambda m: None)
    r, f = tmp_path / "reused", tmp_path / "fresh"
    for name in (
        "select/selected.jsonl",
        "select/scores.csv",
        "eval/base/egosynth/per_sample.jsonl",
        "eval/trained/egosynth/per_sample.jsonl",
    ):
        assert (r / name).read_bytes() == (f / name).read_bytes(), name
    a, b = _weights(r / "train" / "final"), _weights(f / "train" / "final")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # and once more, unchanged: nothing reruns
    lines.clear()
    run_pipeline(replace(cfg, out=str(tmp_path / "reused")), echo=lines.append)
    assert sum("done already" in ln for ln in lines) == 7 and not any("reruns" in ln for ln in lines)
