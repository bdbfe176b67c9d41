"""Supervised warm-up: teach a backbone with a random vision tower to read EgoSynth clips.

The smol backbone's language model is SmolLM2 (pretrained) but its vision tower starts random, so
it has nothing to select or reason with. A short supervised run on QA pairs (direct answers)
trains the vision tower and the merger (and optionally the language model) through HF Trainer,
with a collator that encodes clips with ego3s's own sampler, so checkpoints, resume, progress
bars and multi-GPU come from transformers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ego3s import skips
from ego3s.config import MASTER_WEIGHTS, MasterWeights, check_fields, check_report_to
from ego3s.data.video import ClipSpec
from ego3s.models.prompts import CLOSED_ANSWERS, FORMATS, ClosedAnswer, PromptFormat
from ego3s.train.vision_pretrain_config import VisionPretrainConfig


@dataclass
class WarmupConfig(ClipSpec):
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "samples per step (per device)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    train_language_model: bool = field(
        default=False, metadata={"help": "also train the language model (else only the vision tower and merger)"}
    )
    fmt: PromptFormat = field(
        default="direct",
        metadata={
            "help": "direct (answer only) or reasoning (a cold start in the RL format: template rationale "
            "inside <think>, then the answer)"
        },
    )
    grounded_share: float = field(
        default=0.5,
        metadata={
            "help": "reasoning warm-up: share of rationales that name the interaction (the rest describe only "
            "the scene), so RL has room to raise grounding"
        },
    )
    direct_share: float = field(
        default=0.0,
        metadata={
            "help": "reasoning warm-up: share of samples trained in the direct format (answer only) instead, so "
            "that the base model answers both ways, as real LVLMs do: CSM's likelihood estimator scores "
            "the direct answer, and a model that only ever saw <think> gives it noise"
        },
    )
    context_share: float = field(
        default=0.0,
        metadata={
            "help": "share of the samples whose scene alone gives the answer (meta `typical`, EgoSynth's flag) "
            "shown in the context view, interaction masked, with the same answer: the base learns to fall "
            "back on the scene when the hand is hidden, as web-pretrained LVLMs do, which is the behaviour "
            "CSM's fine filter measures"
        },
    )
    closed_answer: ClosedAnswer = field(
        default="letter",
        metadata={
            "help": "a closed question's target answer: the option's letter, its text, or both "
            '(letter_text: "B. mug"); each parses as the option (why text: docs/models.md)'
        },
    )
    train_vision_tower: bool = field(
        default=True,
        metadata={
            "help": "train the vision tower in the QA warm-up (false: only the merger and, with "
            "train_language_model, the language model learn to read a tower kept as vision pretraining left it)"
        },
    )
    vision_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "learning rate of the vision tower and merger (None: learning_rate); a random tower "
            "needs more than a pretrained language model"
        },
    )
    master_weights: MasterWeights = field(
        default="float32",
        metadata={
            "help": "float32: trained weights in fp32 with bf16 compute on a GPU; bfloat16: pure bf16 (loses "
            "small updates; see ego3s.models.loading.upcast_trainable)"
        },
    )
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    seed: int = field(default=0, metadata={"help": "seed"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    logging_steps: int = field(default=10, metadata={"help": "log every N steps"})
    report_to: str | list[str] = field(
        default="none",
        metadata={"help": "trackers, as transformers' report_to: none, tensorboard, wandb, trackio, or a list of them"},
    )
    workers: int = field(
        default=0,
        metadata={
            "help": "DataLoader processes that decode the clips (0: in the training process); unreadable clips "
            "are listed in skipped.jsonl either way"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(
            self,
            choices={"fmt": FORMATS, "master_weights": MASTER_WEIGHTS, "closed_answer": CLOSED_ANSWERS},
            ranges={
                "steps": "[0, inf)",
                "batch_size": "[1, inf)",
                "learning_rate": "(0, inf)",
                "grounded_share": "[0, 1]",
                "direct_share": "[0, 1]",
                "context_share": "[0, 1]",
                "vision_learning_rate": "(0, inf)",
                "save_steps": "[1, inf)",
                "workers": "[0, inf)",
                "logging_steps": "[1, inf)",
                "seed": "[0, inf)",
            },
        )
        check_report_to("report_to", self.report_to)


# warm-up settings that change no trained value (see ego3s.train.plumbing.NOT_IDENTITY); `steps` is
# not among them: the warm-up's cosine schedule spans its steps
WARMUP_NOT_IDENTITY = ("save_steps", "workers", "decode_threads", "video_identity")


def warmup(
    model_dir: str, data: str, out: str, cfg: WarmupConfig, resume: bool = False, overwrite: bool = False
) -> Path:
    """Train and save the warmed-up model (with its processor) to `out/final`. One process at a
    time writes `out`; its checkpoints are resumed only for the same model, data and settings
    (`ego3s.identity.claim_folder`; `overwrite` deletes those of another run)."""
    from ego3s.files import folder_lock
    from ego3s.identity import check_video_identity

    check_video_identity(cfg.video_identity)
    with folder_lock(out, "ego3s warm-up"):
        return _warmup(model_dir, data, out, cfg, resume, overwrite)


def _warmup(model_dir: str, data: str, out: str, cfg: WarmupConfig, resume: bool, overwrite: bool) -> Path:
    import json
    import os

    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from ego3s.data.io import read_jsonl
    from ego3s.files import write_json
    from ego3s.identity import config_identity
    from ego3s.models.loading import downcast, load_model, patch_qwen25_rope_index, upcast_trainable
    from ego3s.train.collator import ClipCollator
    from ego3s.train.plumbing import (
        VISION_PREFIXES,
        check_finite_weights,
        decode_workers,
        last_checkpoint,
        load_resume_weights,
        save_final,
        stop_on_nan,
        train_or_restore,
        use_cpu,
        vision_optimizer,
    )

    errors: list = []
    samples = read_jsonl(data, skip_invalid=True, errors=errors)  # before minutes of model loading
    invalid = skips.from_errors(errors)
    if not samples:
        raise skips.nothing_produced("warmup", f"{data}: no valid sample", invalid)
    for line in skips.lines(invalid, "warmup"):
        print(line, file=sys.stderr)
    if os.environ.get("RANK", "0") == "0":
        from ego3s.identity import claim_folder, data_fingerprint, jsonl_fingerprint
        from ego3s.models.loading import model_fingerprint

        vdata = cfg.vision_pretrain.data
        ident = {
            "model": model_fingerprint(model_dir),
            "data": data_fingerprint(samples, cfg.video_identity),
            "vision_data": jsonl_fingerprint(vdata, cfg.video_identity) if vdata else None,
            "config": config_identity(cfg, WARMUP_NOT_IDENTITY),
        }
        claim_folder(
            out,
            ident,
            resume=resume,
            overwrite=overwrite,
            what="warm-up",
            outputs=("checkpoint-*", "final", "final.partial", "log_history.json", "vision_pretrain.json"),
            logs=("skipped.jsonl",),
        )
    model, processor = load_model(model_dir, dtype="float32" if use_cpu() else "bfloat16")
    patch_qwen25_rope_index(model)
    for name, p in model.named_parameters():
        p.requires_grad_(cfg.train_language_model or name.startswith(VISION_PREFIXES))
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    loaded_dtype = upcast_trainable(model, cfg.master_weights)
    ds = datasets.Dataset.from_list([{"sample": json.dumps(s.to_dict())} for s in samples])
    from ego3s.tracking import trainer_report_to

    args = TrainingArguments(
        output_dir=out,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        seed=cfg.seed,
        report_to=trainer_report_to(cfg.report_to, "warmup.report_to"),
        remove_unused_columns=False,
        bf16=bf16,
        dataloader_num_workers=decode_workers(cfg.workers, "warmup.workers"),
        disable_tqdm=False,
        use_cpu=use_cpu(),
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    collator = ClipCollator(processor, cfg, skip_log=Path(out) / "skipped.jsonl")
    ckpt = last_checkpoint(out) if resume else None
    if cfg.vision_pretrain.steps > 0 and ckpt is None:  # a checkpoint already holds the pretrained tower
        from ego3s.train.vision_pretrain import pretrain_vision

        vdata = cfg.vision_pretrain.data
        clips = read_jsonl(vdata, skip_invalid=True) if vdata else samples
        stats = pretrain_vision(model, processor, clips, cfg.vision_pretrain, cfg.clip_spec(), seed=cfg.seed)
        stats["data"] = vdata or data
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "vision_pretrain.json", stats)
    if not cfg.train_vision_tower:  # after pretraining, and on resume too: the optimizer's groups must match
        for name, p in model.named_parameters():
            if name.startswith(VISION_PREFIXES) and ".merger." not in name:
                p.requires_grad_(False)
    optimizers = (vision_optimizer(model, cfg.learning_rate, cfg.vision_learning_rate), None)
    hint = "lower learning_rate / vision_learning_rate"
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=ds,
        data_collator=collator,
        optimizers=optimizers,
        callbacks=[stop_on_nan("warm-up", hint)],
    )
    load_resume_weights(trainer, ckpt, lora=False)
    train_or_restore(trainer, ckpt, cfg.steps, lora=False)
    # the Trainer logs NaN losses as 0 and carries on; a NaN base model must not reach selection
    check_finite_weights(trainer, "warm-up", out, hint)
    skipped = Path(out) / "skipped.jsonl"
    if skipped.exists():
        print(
            f"warm-up: {len(skipped.read_text().splitlines())} unreadable clips skipped, listed in {skipped}",
            file=sys.stderr,
        )
    downcast(model, loaded_dtype)
    if cfg.closed_answer != "letter":  # CSM and ECR's likelihood scorer reads it (closed_answer_of)
        model.config.ego3s_closed_answer = cfg.closed_answer
    final = Path(out) / "final"
    save_final(trainer, processor, final)
    if trainer.is_world_process_zero():
        write_json(Path(out) / "log_history.json", trainer.state.log_history)
    return final
