"""Run plumbing every training loop shares (GRPO in ego3s.rl.run, SFT, the warm-up).

Each loop differs in what it trains; how a run is set up, guarded, resumed and saved is the same,
and lives here once so that a fix reaches all three:

- what trains: `VISION_PREFIXES`, `freeze_vision`, `vision_optimizer`, `lora_config`;
- where it runs: `use_cpu` (transformers' `use_cpu`, so torchrun on CPUs sets up gloo) and
  `decode_workers` (a config's decoding processes, at most this process's share of the cores);
- across transformers versions: `checkpointing_kwargs` (the option's old or new name);
- resume: `last_checkpoint` (the newest complete checkpoint), the resume guard
  (`training_identity`, written to `identity.json` by `ego3s.identity.claim_folder`), and
  `train_or_restore`, which never trains past `max_steps` when the newest checkpoint already got there;
- failure: `stop_on_nan` (stop at the first non-finite logged loss or gradient norm) and
  `check_finite_weights` (no NaN model reaches the next stage);
- the end: `save_final`, an atomic save of `final/` (a kill mid-save leaves `final.partial`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path

VISION_PREFIXES = ("model.visual.", "visual.")

# keys that change no trained value: where the run goes, how long it runs (`--resume` may extend a
# run), how often it saves and logs, how fast clips decode and how files are recognised
NOT_IDENTITY = (
    "model",
    "data",
    "candidates",
    "out",
    "max_steps",
    "num_train_epochs",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "report_to",
    "decode_threads",
    "video_identity",
    "gradient_checkpointing",
)


def checkpointing_kwargs(args_class, on: bool) -> dict:
    """Activation checkpointing under the name `args_class` (a TrainingArguments dataclass) knows:
    transformers 5.2x renamed `gradient_checkpointing` to `activation_checkpointing` and warns on
    the old name even when it is False; older ones (5.17 on our GPU image) know only the old."""
    names = {f.name for f in dataclasses.fields(args_class)}
    return {"activation_checkpointing": on} if "activation_checkpointing" in names else {"gradient_checkpointing": on}


def use_cpu() -> bool:
    """Train on the CPU when no GPU is visible. transformers must be told: without a GPU,
    accelerate sets up gloo only when told it runs on CPU; otherwise torchrun's N processes
    silently train N independent copies."""
    import torch

    return not torch.cuda.is_available()


def decode_workers(asked: int, key: str) -> int:
    """The decoding processes to start: `asked`, at most this process's share of the cores
    (`ego3s.data.video.cpu_share`). A config sized for a 16-core GPU host then runs on a laptop
    without oversubscribing it (torch only warns); the number of workers changes no trained value,
    so nothing else needs to know."""
    from ego3s.data.video import cpu_share

    cores = max(1, int(cpu_share()))
    if asked > cores:
        logging.getLogger(__name__).warning(
            "%s=%d, but this process may use %d core(s): %d worker(s)", key, asked, cores, cores
        )
        return cores
    return asked


def freeze_vision(model) -> None:
    """Keep the vision tower and merger as they are (full fine-tuning of the language model)."""
    for name, p in model.named_parameters():
        if name.startswith(VISION_PREFIXES):
            p.requires_grad_(False)


def vision_optimizer(model, learning_rate: float, vision_learning_rate: float | None):
    """AdamW with its own learning rate for the vision tower and merger (a random tower needs more
    than a pretrained language model), or None (the Trainer's default optimizer) without one."""
    import torch

    if vision_learning_rate is None:
        return None
    vis = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(VISION_PREFIXES)]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(VISION_PREFIXES)]
    groups = [{"params": vis, "lr": vision_learning_rate}] + ([{"params": rest, "lr": learning_rate}] if rest else [])
    return torch.optim.AdamW(groups, weight_decay=0.0)  # the scheduler scales each group


def lora_config(r: int, alpha: int, dropout: float = 0.05):
    """LoRA on the language model's attention and MLP projections (the vision tower stays as it is)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        task_type="CAUSAL_LM",
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )


def last_checkpoint(out: str | Path, required: tuple[str, ...] = ("trainer_state.json",)) -> str | None:
    """The newest *complete* `checkpoint-N` in `out`: one killed while being written lacks the
    files saved last (`trainer_state.json`; `ecr_state.json` when the curriculum is on)."""
    out = Path(out)
    if not out.is_dir():
        return None
    steps = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    for _, p in reversed(steps):
        if all((p / f).exists() for f in required):
            return str(p)
    return None


def checkpoint_step(ckpt: str) -> int:
    """The optimizer step a checkpoint was saved at."""
    state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
    return int(state["global_step"])


def finished(ckpt: str, max_steps: int) -> bool:
    """Whether a checkpoint already reached this run's `max_steps` (unknown, so False, when the
    run is sized in epochs)."""
    return 0 < max_steps <= checkpoint_step(ckpt)


def training_identity(
    cfg, samples, model_fp: str, extra: dict | None = None, leave_out: tuple[str, ...] = NOT_IDENTITY
) -> dict:
    """What a training run's checkpoints depend on: the starting model's fingerprint, the training
    samples' fingerprints (content and video files) and the settings that change values. Written
    to the run folder's `identity.json`; a resume into a folder of another run is refused."""
    from ego3s.identity import config_identity, data_fingerprint

    return {
        "model": model_fp,
        "data": data_fingerprint(samples, cfg.video_identity),
        **(extra or {}),
        "config": config_identity(cfg, leave_out),
    }


def start_model_fingerprint(path: str, model=None) -> str:
    """The fingerprint of the model a run starts from: its folder's, else the live model's."""
    from ego3s.models.loading import model_fingerprint

    return model_fingerprint(path if path and Path(path).is_dir() else model)


def load_resume_weights(trainer, ckpt: str | None, lora: bool) -> bool:
    """Load a checkpoint's weights before `trainer.train(resume_from_checkpoint=...)`: the
    Trainer's own resume loads nothing for Qwen2.5-VL (transformers#43701, see
    ego3s.models.loading.load_checkpoint_weights). LoRA adapters and DeepSpeed/FSDP states it does
    load (the latter only inside train()). Returns whether weights were loaded here."""
    if ckpt is None or lora or trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return False
    from ego3s.models.loading import load_checkpoint_weights

    load_checkpoint_weights(trainer.model, ckpt)
    return True


def train_or_restore(trainer, ckpt: str | None, max_steps: int, lora: bool, callbacks=()) -> bool:
    """`trainer.train(resume_from_checkpoint=ckpt)`, unless the newest checkpoint already reached
    `max_steps` (a run killed while saving `final`): transformers' loop takes a step before it
    checks max_steps, so a resume would train, log and observe one step too many. Then only the
    checkpoint's weights (LoRA adapters too) and state are taken, and `callbacks` get
    `on_train_end` (what they write at the end). Returns whether it trained. Call
    `load_resume_weights` first."""
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled  # their states load only in train()
    if ckpt is None or sharded or not finished(ckpt, max_steps):
        if ckpt is not None and not lora and not sharded:  # the weights came from load_resume_weights
            with _quiet_key_warnings(ckpt):
                trainer.train(resume_from_checkpoint=ckpt)
        else:
            trainer.train(resume_from_checkpoint=ckpt)
        return True
    from transformers import TrainerState

    if lora:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(trainer.model, load_peft_weights(ckpt, device="cpu"))
    trainer.state = TrainerState.load_from_json(str(Path(ckpt) / "trainer_state.json"))
    for cb in callbacks:
        cb.on_train_end(trainer.args, trainer.state, trainer.control)
    return False


class _KeyWarningFilter(logging.Filter):
    """Drops the Trainer's "missing/unexpected keys in the checkpoint" warnings: on a resume whose
    weights `load_resume_weights` already loaded, the Trainer's own load matches no key of
    Qwen2.5-VL (transformers#43701) and would list every weight as missing, although none is."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not msg.startswith(
            ("There were missing keys in the checkpoint", "There were unexpected keys in the checkpoint")
        )


@contextlib.contextmanager
def _quiet_key_warnings(ckpt: str):
    log = logging.getLogger("transformers.trainer")
    filt = _KeyWarningFilter()
    log.addFilter(filt)
    logging.getLogger(__name__).info(
        "resuming from %s: weights loaded by ego3s (the Trainer's key check is skipped)", ckpt
    )
    try:
        yield
    finally:
        log.removeFilter(filt)


def stop_on_nan(what: str = "training run", hint: str = "lower the learning rate"):
    """A Trainer callback that raises at the first logged non-finite loss or gradient norm. The
    Trainer logs a NaN loss as 0 and trains on (an H200 warm-up once ran 400 NaN steps before the
    final weight check); this stops it at the next logging step."""
    from transformers import TrainerCallback

    class StopOnNaN(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            bad = {k: v for k, v in (logs or {}).items() if k in ("loss", "grad_norm") and not _finite(v)}
            if bad:
                raise FloatingPointError(f"{what} diverged at step {state.global_step}: {bad}; {hint}")

    return StopOnNaN()


def _finite(value) -> bool:
    """Logged numbers arrive as floats (or, formatted for display, as strings)."""
    import math

    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: nothing to judge


def check_finite_weights(trainer, what: str, out: str | Path, hint: str = "lower the learning rate") -> None:
    """Raise when a trained weight is NaN/inf: a NaN model must not reach the next stage. Every
    rank holds the same weights under DDP, so all raise together; DeepSpeed and FSDP shards are
    not checked (a rank seeing NaN in its shard alone would raise while the others wait)."""
    import torch

    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return
    bad = [n for n, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise FloatingPointError(
            f"{what} {out}: {len(bad)} weights are NaN/inf after training (first: {bad[0]}); {hint}"
        )


def save_final(trainer, processor, path: Path) -> None:
    """Save the final model into `<path>.partial`, then rename it to `path`: a kill mid-save
    leaves a `.partial` folder (redone by a resume), never a `final` that looks complete."""
    import shutil

    tmp = path.with_name(path.name + ".partial")
    main = trainer.is_world_process_zero()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))  # every rank: sharded states are gathered here
    if main:
        processor.save_pretrained(str(tmp))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    trainer.accelerator.wait_for_everyone()
