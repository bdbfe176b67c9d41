"""`ego3s sft`: supervised fine-tuning on video, for cold starts on reasoning traces and for
building the EgoSynth base model.

Runs TRL's SFTTrainer with ego3s's own batches: `ego3s.train.collator.ClipCollator` encodes each clip
with ego3s's frame sampler (the frames selection, RL and evaluation see) and puts labels on the
target tokens only. From TRL we keep what works with video rows: PEFT wiring, the chunked
("fused") LM head that never builds the (batch, length, vocabulary) logits, the token accuracy and
entropy metrics, and `loss_type` (nll or dft). TRL's own dataset preparation and collators are
bypassed: they do not know video (docs/training.md says what goes wrong).

The target is the answer alone (`fmt: direct`) or a reasoning trace then the answer
(`fmt: reasoning`: `<think>TRACE</think><answer>A</answer>`), the trace read from the sample's meta
(`rationale: meta.rationale`) or the warm-up's template rationales (`rationale: template`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ego3s import skips
from ego3s.config import (
    DTYPES,
    MASTER_WEIGHTS,
    ConfigError,
    Dtype,
    MasterWeights,
    check_fields,
    check_report_to,
    check_steps,
)
from ego3s.data.video import ClipSpec
from ego3s.models.prompts import FORMATS, PromptFormat


@dataclass
class SFTRunConfig(ClipSpec):
    model: str = field(default="", metadata={"help": "local model folder to start from"})
    data: str = field(default="", metadata={"help": "training samples (JSONL, ego3s schema)"})
    out: str = field(default="runs/sft", metadata={"help": "output folder (checkpoints, final/, log_history.json)"})
    fmt: PromptFormat = field(
        default="reasoning",
        metadata={
            "help": "direct (target: the answer alone) or reasoning (<think>trace</think><answer>..</answer>, the RL format)"
        },
    )
    rationale: str = field(
        default="meta.rationale",
        metadata={
            "help": "reasoning: where the trace comes from: meta.KEY (a field of the sample's meta; every sample must "
            "have it) or template (the warm-up's template rationales)"
        },
    )
    grounded_share: float = field(
        default=0.5, metadata={"help": "rationale=template: share of rationales that name the interaction"}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate"})
    vision_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "learning rate of the vision tower and merger (None: learning_rate); a random tower needs more"
        },
    )
    freeze_vision: bool = field(
        default=True,
        metadata={"help": "keep the vision tower and merger frozen (full fine-tuning; false to train a new tower)"},
    )
    per_device_train_batch_size: int = field(default=4, metadata={"help": "samples per device per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps (-1: use num_train_epochs)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over the data"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "linear warm-up share, then cosine decay"})
    loss_type: Literal["nll", "dft"] = field(
        default="nll", metadata={"help": "nll, or dft (TRL's dynamic fine-tuning loss)"}
    )
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    dtype: Dtype = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32"})
    master_weights: MasterWeights = field(
        default="float32",
        metadata={
            "help": "float32: trained weights in fp32 with bf16 compute; bfloat16: pure bf16 (loses small "
            "updates; see ego3s.models.loading.upcast_trainable)"
        },
    )
    save_steps: int = field(default=100, metadata={"help": "checkpoint every N steps"})
    save_total_limit: int | None = field(default=None, metadata={"help": "keep at most N checkpoints"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps"})
    report_to: str | list[str] = field(
        default="none",
        metadata={"help": "trackers, as transformers' report_to: none, tensorboard, wandb, trackio, or a list of them"},
    )
    seed: int = field(default=0, metadata={"help": "seed"})

    def __post_init__(self):
        super().__post_init__()
        check_fields(
            self,
            choices={"fmt": FORMATS, "loss_type": ("nll", "dft"), "dtype": DTYPES, "master_weights": MASTER_WEIGHTS},
            ranges={
                "grounded_share": "[0, 1]",
                "learning_rate": "(0, inf)",
                "vision_learning_rate": "(0, inf)",
                "per_device_train_batch_size": "[1, inf)",
                "gradient_accumulation_steps": "[1, inf)",
                "num_train_epochs": "(0, inf)",
                "warmup_ratio": "[0, 1)",
                "lora_r": "[1, inf)",
                "lora_alpha": "[1, inf)",
                "save_steps": "[1, inf)",
                "save_total_limit": "[1, inf)",
                "logging_steps": "[1, inf)",
                "seed": "[0, inf)",
            },
        )
        check_steps("max_steps", self.max_steps)
        check_report_to("report_to", self.report_to)
        if self.rationale != "template" and (not self.rationale.startswith("meta.") or self.rationale == "meta."):
            raise ConfigError(f"rationale: {self.rationale!r} is not one of template, meta.KEY")


def sft_dataset(cfg: SFTRunConfig, errors: list | None = None):
    """The rows the collator reads (each sample as JSON). Checks every sample's target first, so a
    missing trace fails here, naming the sample, instead of mid-run inside a batch."""
    import json

    import datasets

    from ego3s.data.io import read_jsonl
    from ego3s.train.collator import trace_text

    errors = [] if errors is None else errors
    samples = read_jsonl(cfg.data, skip_invalid=True, errors=errors)
    if not samples:
        raise skips.nothing_produced("sft", f"{cfg.data}: no valid training sample", skips.from_errors(errors))
    if cfg.fmt == "reasoning":
        for s in samples:
            try:
                trace_text(s, cfg.rationale, cfg.grounded_share)
            except ValueError as e:
                raise ValueError(f"{cfg.data}: {e}") from None
    return datasets.Dataset.from_list([{"sample": json.dumps(s.to_dict())} for s in samples])


def sft_args(cfg: SFTRunConfig, bf16: bool):
    from trl import SFTConfig

    from ego3s.tracking import trainer_report_to
    from ego3s.train.plumbing import checkpointing_kwargs, use_cpu

    return SFTConfig(
        output_dir=cfg.out,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        loss_type=cfg.loss_type,
        **checkpointing_kwargs(SFTConfig, cfg.gradient_checkpointing),
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=trainer_report_to(cfg.report_to, "sft.report_to"),
        seed=cfg.seed,
        bf16=bf16,
        # our collator builds every batch from the sample JSON: TRL must neither tokenize the rows
        # (it would see a text dataset) nor drop the `sample` column
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        max_length=None,
        packing=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=use_cpu(),
    )


def run_sft(cfg: SFTRunConfig, resume: bool = False, overwrite: bool = False):
    """Train; `out/final` holds the model (or the LoRA adapter, for `ego3s merge`) and the
    processor. Returns the trainer (its state holds the log history). One process at a time
    writes `out`; its checkpoints are resumed only for the same model, data and settings
    (`ego3s.identity.claim_folder`; `overwrite` deletes those of another run)."""
    from ego3s.files import folder_lock
    from ego3s.identity import check_video_identity

    check_video_identity(cfg.video_identity)
    with folder_lock(cfg.out, "ego3s sft"):
        return _run_sft(cfg, resume, overwrite)


def _run_sft(cfg: SFTRunConfig, resume: bool, overwrite: bool):
    import os

    import torch
    from trl import SFTTrainer

    from ego3s.files import write_json
    from ego3s.models.loading import downcast, load_model, upcast_trainable
    from ego3s.train.collator import ClipCollator
    from ego3s.train.plumbing import (
        NOT_IDENTITY,
        check_finite_weights,
        freeze_vision,
        last_checkpoint,
        load_resume_weights,
        lora_config,
        save_final,
        start_model_fingerprint,
        stop_on_nan,
        train_or_restore,
        training_identity,
        vision_optimizer,
    )

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    errors: list = []
    ds = sft_dataset(cfg, errors)
    if os.environ.get("RANK", "0") == "0":
        from ego3s.data.io import read_jsonl
        from ego3s.identity import claim_folder

        if not Path(cfg.model).is_dir():
            raise FileNotFoundError(f"model: {cfg.model!r} is not a model folder")
        ident = training_identity(
            cfg, read_jsonl(cfg.data, skip_invalid=True), start_model_fingerprint(cfg.model), leave_out=NOT_IDENTITY
        )
        claim_folder(
            out,
            ident,
            resume=resume,
            overwrite=overwrite,
            outputs=("checkpoint-*", "final", "final.partial", "log_history.json"),
            what="sft run",
        )
    model, processor = load_model(cfg.model, dtype=cfg.dtype)  # Qwen2.5-VL's rope index patched there
    model.train()
    if cfg.freeze_vision and not cfg.lora:
        freeze_vision(model)
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    loaded_dtype = None if cfg.lora else upcast_trainable(model, cfg.master_weights)
    optimizer = None if cfg.lora else vision_optimizer(model, cfg.learning_rate, cfg.vision_learning_rate)
    trainer = SFTTrainer(
        model=model,
        args=sft_args(cfg, bf16),
        train_dataset=ds,
        processing_class=processor,
        data_collator=ClipCollator(processor, cfg),
        optimizers=(optimizer, None),
        peft_config=lora_config(cfg.lora_r, cfg.lora_alpha) if cfg.lora else None,
        callbacks=[stop_on_nan("sft run")],
    )
    trainer.skips = skips.from_errors(errors)
    write_json(out / "sft_config.json", {**asdict(cfg), "invalid_records_skipped": len(errors), "skips": trainer.skips})
    ckpt = last_checkpoint(out) if resume else None
    load_resume_weights(trainer, ckpt, cfg.lora)
    train_or_restore(trainer, ckpt, cfg.max_steps, cfg.lora)
    check_finite_weights(trainer, "sft run", out)
    downcast(model, loaded_dtype)
    save_final(trainer, processor, out / "final")
    if trainer.is_world_process_zero():
        write_json(out / "log_history.json", trainer.state.log_history)
    return trainer
