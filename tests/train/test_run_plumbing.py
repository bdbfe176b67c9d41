"""The run plumbing every training loop shares (ego3s.train.plumbing), checked on each loop that
uses it: GRPO and SFT stop on the first non-finite logged loss as the warm-up does; the warm-up
saves `final` atomically and never trains past its steps on a resume, as GRPO and SFT do."""

import copy
import json
import math
import shutil

import pytest

from helpers import tiny_grpo_config

PIX = 56 * 56


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from ego3s.data.egosynth import EgoSynthConfig, generate

    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=4, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


def _raises_on_nan(trainer):
    """The trainer's own callback list stops at a NaN loss (as the Trainer would log it)."""
    state = copy.copy(trainer.state)
    state.global_step = 7
    with pytest.raises(FloatingPointError, match="diverged at step 7"):
        trainer.callback_handler.on_log(trainer.args, state, trainer.control, logs={"loss": math.nan})


def test_grpo_stops_on_a_nan_loss(tiny_model_dir, synth, tmp_path):
    from ego3s.rl.run import run_training

    cfg = tiny_grpo_config(tiny_model_dir, synth / "train.jsonl", tmp_path / "grpo", max_pixels=PIX)
    _raises_on_nan(run_training(cfg))


def test_sft_stops_on_a_nan_loss(tiny_model_dir, synth, tmp_path):
    from ego3s.train.sft import SFTRunConfig, run_sft

    cfg = SFTRunConfig(
        model=tiny_model_dir,
        data=str(synth / "train.jsonl"),
        out=str(tmp_path / "sft"),
        fmt="direct",
        per_device_train_batch_size=2,
        max_steps=1,
        save_steps=1,
        nframes=4,
        max_pixels=PIX,
        min_pixels=28 * 28,
        dtype="float32",
    )
    _raises_on_nan(run_sft(cfg))


def _warmup_cfg():
    from ego3s.train.warmup import WarmupConfig

    return WarmupConfig(steps=3, batch_size=2, save_steps=3, logging_steps=1, nframes=4, max_pixels=PIX, min_pixels=PIX)


def test_warmup_saves_final_atomically(tiny_model_dir, synth, tmp_path, monkeypatch):
    """Killed while saving (here: the processor's save fails after the weights were written): no
    `final` that looks complete, only `final.partial`, which a resume redoes."""
    from transformers import ProcessorMixin

    from ego3s.train.warmup import warmup

    def fail(self, *a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(ProcessorMixin, "save_pretrained", fail)
    out = tmp_path / "w"
    with pytest.raises(OSError, match="disk full"):
        warmup(tiny_model_dir, str(synth / "train.jsonl"), str(out), _warmup_cfg())
    assert not (out / "final").exists()
    assert (out / "final.partial" / "model.safetensors").exists()


def test_warmup_resume_after_its_last_checkpoint_trains_no_further_step(tiny_model_dir, synth, tmp_path):
    """A warm-up killed after its last checkpoint (while saving `final`) and resumed takes the
    checkpoint as it is: from a checkpoint inside an epoch (4 samples, 2 a step: step 3 of 2-step
    epochs), transformers' loop trains one step past `steps` before it checks them."""
    import torch
    from safetensors.torch import load_file

    from ego3s.train.warmup import warmup

    out = tmp_path / "w"
    warmup(tiny_model_dir, str(synth / "train.jsonl"), str(out), _warmup_cfg())
    first = json.loads((out / "log_history.json").read_text())
    shutil.rmtree(out / "final")
    final = warmup(tiny_model_dir, str(synth / "train.jsonl"), str(out), _warmup_cfg(), resume=True)
    again = json.loads((out / "log_history.json").read_text())
    assert (final / "model.safetensors").exists()
    assert [h["step"] for h in again if "loss" in h] == [1, 2, 3]
    ckpt = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["log_history"]
    assert [h for h in again if "loss" in h] == [h for h in ckpt if "loss" in h] == [h for h in first if "loss" in h]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3"]
    saved, now = load_file(out / "checkpoint-3" / "model.safetensors"), load_file(final / "model.safetensors")
    assert saved.keys() == now.keys() and all(torch.equal(saved[k], now[k]) for k in saved)


def test_resume_hides_only_the_trainers_key_warnings():
    """The Trainer's own key check after `load_resume_weights` lists every Qwen2.5-VL weight as
    missing; inside the resume it is dropped, outside it (and every other warning) still shows."""
    import logging
    from types import SimpleNamespace

    from transformers import Trainer

    from ego3s.train.plumbing import _quiet_key_warnings

    class Keep(logging.Handler):  # transformers' loggers do not propagate to pytest's caplog
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    fake = SimpleNamespace(model=SimpleNamespace(_keys_to_ignore_on_save=None))
    result = SimpleNamespace(missing_keys=["model.visual.w"], unexpected_keys=["visual.w"])
    log = logging.getLogger("transformers.trainer")
    keep = Keep()
    log.addHandler(keep)
    try:
        with _quiet_key_warnings("ckpt"):
            Trainer._issue_warnings_after_load(fake, result)  # the real messages
            log.warning("another warning")
        assert keep.messages == ["another warning"]
        Trainer._issue_warnings_after_load(fake, result)
    finally:
        log.removeHandler(keep)
    assert [m.split(":")[0] for m in keep.messages[1:]] == [
        "There were missing keys in the checkpoint model loaded",
        "There were unexpected keys in the checkpoint model loaded",
    ]


@pytest.mark.parametrize("on", [False, True])
def test_trainer_args_set_checkpointing_without_a_deprecation_warning(on, tmp_path):
    """transformers 5.2x warns on `gradient_checkpointing=` even when False; the args use the name
    the installed version knows, and the value still reaches the trainer."""
    import warnings

    from ego3s.rl.run import TrainingConfig, grpo_args
    from ego3s.train.sft import SFTRunConfig, sft_args

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = grpo_args(TrainingConfig(out=str(tmp_path / "g"), gradient_checkpointing=on, report_to=[]))
        s = sft_args(SFTRunConfig(out=str(tmp_path / "s"), gradient_checkpointing=on, report_to=[]), bf16=False)
    assert not [w for w in caught if "checkpointing" in str(w.message)]
    assert g.gradient_checkpointing is on and s.gradient_checkpointing is on


def test_decoding_workers_are_capped_at_the_cores_this_process_may_use(
    tiny_model_dir, synth, tmp_path, monkeypatch, caplog
):
    """A config sized for a 16-core GPU host (`workers: 12`) run where one core is free starts one
    decoding process and says so, instead of oversubscribing the machine (torch only warns)."""
    import dataclasses
    import logging
    import os
    import warnings

    from ego3s.train.plumbing import decode_workers
    from ego3s.train.warmup import warmup

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun's two processes on this machine share its 4 cores
    assert decode_workers(8, "k") == 2 and decode_workers(1, "k") == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert decode_workers(0, "k") == 0 and decode_workers(1, "k") == 1
    cfg = dataclasses.replace(_warmup_cfg(), steps=1, workers=12)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        warmup(tiny_model_dir, str(synth / "train.jsonl"), str(tmp_path / "w"), cfg)
    assert not [w for w in caught if "worker processes in total" in str(w.message)]
    assert "warmup.workers=12, but this process may use 1 core(s): 1 worker(s)" in caplog.text
