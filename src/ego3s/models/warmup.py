"""Supervised warm-up: teach a backbone with a random vision tower to read EgoSynth clips.

The smol backbone's language model is SmolLM2 (pretrained) but its vision tower starts random, so
it has nothing to select or reason with. A short supervised run on QA pairs (direct answers)
trains the vision tower and the merger (and optionally the language model) through HF Trainer,
with a collator that encodes clips with ego3s's own sampler, so checkpoints, resume, progress
bars and multi-GPU come from transformers.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ego3s import skips
from ego3s.config import MASTER_WEIGHTS, MasterWeights, check_fields, check_report_to
from ego3s.data.video import FrameSampling

FORMATS = ("direct", "reasoning")


@dataclass
class VisionPretrainConfig:
    """The vision tower alone on the interaction annotations before the QA warm-up
    (ego3s.models.vision_pretrain); frames as the warm-up samples them."""

    steps: int = field(default=0, metadata={"help": "optimizer steps (0: no vision pretraining)"})
    batch_size: int = field(default=16, metadata={"help": "clips per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (tower and heads)"})
    box_weight: float = field(default=1.0, metadata={"help": "weight of the dense box loss against the object loss"})
    held_out: int = field(default=200, metadata={
        "help": "clips kept out of training to measure object accuracy under the full and context views"})
    workers: int = field(default=4, metadata={"help": "processes that decode the clips (0: in the main process)"})
    data: str | None = field(default=None, metadata={
        "help": "JSONL of the clips to pretrain on (default: the warm-up's own data); a pool with more atypical "
                "clips teaches the tower the hand while the QA warm-up keeps its data's priors"})
    lm_align: float = field(default=0.0, metadata={
        "help": "weight of the name alignment: merged tokens on the object's box trained towards the object "
                "name's input embedding in the language model (0: off)"})
    context_share: float = field(default=0.0, metadata={
        "help": "share of the typical clips (meta `typical`: the scene shows the object) trained in the context "
                "view, interaction masked, on the object loss alone: the tower learns to find the object in the "
                "scene too, which CSM's fine filter needs the base to do (docs/RESULTS.md, the 2026-11-26 scene-fallback study)"})
    scene_align: float = field(default=0.0, metadata={
        "help": "weight of the name alignment of the objects lying in the scene: merged tokens on their boxes "
                "(meta gt.scene_objects, EgoSynth) trained towards their names' input embeddings, as lm_align "
                "does for the grasped object (0: off)"})

    def __post_init__(self):
        check_fields(self, ranges={"steps": "[0, inf)", "batch_size": "[1, inf)", "learning_rate": "(0, inf)",
                                   "box_weight": "[0, inf)", "held_out": "[0, inf)", "workers": "[0, inf)",
                                   "lm_align": "[0, inf)", "context_share": "[0, 1]", "scene_align": "[0, inf)"})


@dataclass
class WarmupConfig(FrameSampling):
    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "samples per step (per device)"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    train_language_model: bool = field(default=False, metadata={
        "help": "also train the language model (else only the vision tower and merger)"})
    fmt: str = field(default="direct", metadata={
        "help": "direct (answer only) or reasoning (a cold start in the RL format: template rationale "
                "inside <think>, then the answer)"})
    grounded_share: float = field(default=0.5, metadata={
        "help": "reasoning warm-up: share of rationales that name the interaction (the rest describe only "
                "the scene), so RL has room to raise grounding"})
    direct_share: float = field(default=0.0, metadata={
        "help": "reasoning warm-up: share of samples trained in the direct format (answer only) instead, so "
                "that the base model answers both ways, as real LVLMs do: CSM's likelihood estimator scores "
                "the direct answer, and a model that only ever saw <think> gives it noise"})
    context_share: float = field(default=0.0, metadata={
        "help": "share of the samples whose scene alone gives the answer (meta `typical`, EgoSynth's flag) "
                "shown in the context view, interaction masked, with the same answer: the base learns to fall "
                "back on the scene when the hand is hidden, as web-pretrained LVLMs do, which is the behaviour "
                "CSM's fine filter measures"})
    train_vision_tower: bool = field(default=True, metadata={
        "help": "train the vision tower in the QA warm-up (false: only the merger and, with "
                "train_language_model, the language model learn to read a tower kept as vision pretraining left it)"})
    vision_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the vision tower and merger (None: learning_rate); a random tower "
                "needs more than a pretrained language model"})
    master_weights: MasterWeights = field(default="float32", metadata={
        "help": "float32: trained weights in fp32 with bf16 compute on a GPU; bfloat16: pure bf16 (loses "
                "small updates; see ego3s.models.loading.upcast_trainable)"})
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    seed: int = field(default=0, metadata={"help": "seed"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every N steps"})
    logging_steps: int = field(default=10, metadata={"help": "log every N steps"})
    report_to: str | list[str] = field(default="none", metadata={
        "help": "trackers, as transformers' report_to: none, tensorboard, wandb, trackio, or a list of them"})
    workers: int = field(default=0, metadata={
        "help": "DataLoader processes that decode the clips (0: in the training process); unreadable clips "
                "are listed in skipped.jsonl either way"})

    def __post_init__(self):
        super().__post_init__()
        check_fields(self, choices={"fmt": FORMATS, "master_weights": MASTER_WEIGHTS},
                     ranges={"steps": "[0, inf)", "batch_size": "[1, inf)", "learning_rate": "(0, inf)",
                             "grounded_share": "[0, 1]", "direct_share": "[0, 1]", "context_share": "[0, 1]",
                             "vision_learning_rate": "(0, inf)", "save_steps": "[1, inf)", "workers": "[0, inf)",
                             "logging_steps": "[1, inf)", "seed": "[0, inf)"})
        check_report_to("report_to", self.report_to)


def rationale(sample, grounded_share: float = 0.5) -> str:
    """A template rationale for the reasoning cold start. Deterministic per sample id: a share of
    samples get one that names the interaction (objects and action, from the annotation), the others
    one that describes only the scene, which is what a prior-driven model would write."""
    it = sample.interaction
    grounded = it is not None and zlib.crc32(sample.id.encode()) % 1000 < grounded_share * 1000
    if grounded:
        hand = str(sample.meta.get("hand", "")).replace("_", " ")
        who = f"my {hand} hand" if hand in ("left", "right") else "my hand"
        return f"I watch {who}: it takes the {it.objects[0].name} ({it.action})."
    scene = sample.meta.get("scene")
    return f"I am in the {scene} and think about what usually happens here." if scene else \
        "I think about what usually happens in a scene like this."


def trace_text(sample, source: str = "template", grounded_share: float = 0.5) -> str:
    """The reasoning that goes inside `<think>` for a supervised target: the template rationale
    above (`source="template"`), or a trace stored with the sample (`source="meta.KEY"`, e.g.
    `meta.rationale`, written by an annotator or a stronger model). A missing trace is an error,
    not a silent fallback: a cold start on half template, half real traces is a different run."""
    if source == "template":
        return rationale(sample, grounded_share)
    if not source.startswith("meta.") or source == "meta.":
        raise ValueError(f"rationale must be 'template' or 'meta.KEY', got {source!r}")
    key = source[len("meta."):]
    value = sample.meta.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"sample {sample.id!r}: field meta.{key} (the reasoning trace) is missing or empty")
    return value.strip().removeprefix("<think>").removesuffix("</think>").strip()


def sample_view_name(sample, context_share: float = 0.0) -> str:
    """`context` for a deterministic `context_share` (by id) of the samples flagged `typical` in
    their metadata (the scene shows the answer), else `full`. Samples without the flag, or without
    an interaction to mask, always get the full view."""
    if (context_share > 0 and sample.meta.get("typical") is True and sample.interaction is not None
            and zlib.crc32(f"context:{sample.id}".encode()) % 1000 < context_share * 1000):
        return "context"
    return "full"


def sample_format(sample, fmt: str, direct_share: float = 0.0) -> str:
    """The format one sample is trained in: `fmt`, except that a reasoning warm-up trains a
    deterministic `direct_share` of samples (by id) in the direct format."""
    if fmt == "reasoning" and zlib.crc32(f"direct:{sample.id}".encode()) % 1000 < direct_share * 1000:
        return "direct"
    return fmt


class ClipCollator:
    """Rows (sample dicts) -> teacher-forced batches with labels on the answer tokens only.

    `cfg` is a WarmupConfig or an SFT config (ego3s.models.sft): frame settings, `fmt`,
    `grounded_share` and, optionally, `rationale` (where the reasoning trace comes from)."""

    def __init__(self, processor, cfg: WarmupConfig, skip_log: str | Path | None = None):
        from ego3s.select.scoring import ScoringConfig

        self.processor, self.cfg, self.skip_log = processor, cfg, skip_log
        self.scoring = ScoringConfig(**vars(cfg.frame_sampling()))
        self.skipped = 0

    def __call__(self, rows: list[dict]):
        import json

        from ego3s.data.schema import Sample
        from ego3s.data.video import VideoError
        from ego3s.models.inputs import encode
        from ego3s.models.prompts import build_messages, target_text
        from ego3s.data.video import sample_view

        msgs, visuals, answers = [], [], []
        eos = self.processor.tokenizer.eos_token or ""
        for row in rows:
            s = Sample.from_dict(json.loads(row["sample"]))
            try:
                view = sample_view_name(s, getattr(self.cfg, "context_share", 0.0))
                kind, vis = sample_view(s, view, self.scoring)
            except (VideoError, OSError, ValueError) as e:
                self.skipped += 1  # one unreadable clip never stops the warm-up
                if self.skip_log:  # one small write per line: appends from DataLoader workers do not interleave
                    line = json.dumps({"id": s.id, "video": s.video, "error": str(e)}) + "\n"
                    with open(self.skip_log, "a", encoding="utf-8") as f:
                        f.write(line)
                continue
            fmt = sample_format(s, self.cfg.fmt, getattr(self.cfg, "direct_share", 0.0))
            msgs.append(build_messages(s, fmt=fmt, visual=kind))
            visuals.append(vis)
            target = target_text(s, fmt=fmt)
            if fmt == "reasoning":
                source = getattr(self.cfg, "rationale", "template")
                grounded = self.cfg.grounded_share if view == "full" else 0.0  # the hand is hidden: scene rationale
                target = f"<think>{trace_text(s, source, grounded)}</think>{target}"
            answers.append(target + eos)
        if not msgs:
            raise RuntimeError("warm-up batch: every sample in the batch was unreadable")
        return dict(encode(self.processor, msgs, visuals, answers=answers))


def vision_optimizer(model, learning_rate: float, vision_learning_rate: float | None):
    """AdamW with its own learning rate for the vision tower and merger (a random tower needs more
    than a pretrained language model), or None (the Trainer's default optimizer) without one."""
    import torch

    from ego3s.rl.train import VISION_PREFIXES

    if vision_learning_rate is None:
        return None
    vis = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith(VISION_PREFIXES)]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(VISION_PREFIXES)]
    groups = [{"params": vis, "lr": vision_learning_rate}] + ([{"params": rest, "lr": learning_rate}] if rest else [])
    return torch.optim.AdamW(groups, weight_decay=0.0)  # the scheduler scales each group


def stop_on_nan():
    """A Trainer callback that raises at the first logged non-finite loss or gradient norm. The
    Trainer logs a NaN loss as 0 and trains on (the H200 warm-up of the 2026-11-26 complete-table study ran 400 NaN steps
    before the final weight check); this stops it at the next logging step."""
    from transformers import TrainerCallback

    class StopOnNaN(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            bad = {k: v for k, v in (logs or {}).items() if k in ("loss", "grad_norm") and not _finite(v)}
            if bad:
                raise FloatingPointError(f"warm-up diverged at step {state.global_step}: {bad}; "
                                         "lower learning_rate / vision_learning_rate")

    return StopOnNaN()


def _finite(value) -> bool:
    """Logged numbers arrive as floats (or, formatted for display, as strings)."""
    import math

    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: nothing to judge


# warm-up settings that change no trained value (see ego3s.rl.train.NOT_IDENTITY); `steps` is
# not among them: the warm-up's cosine schedule spans its steps
WARMUP_NOT_IDENTITY = ("save_steps", "workers", "decode_threads", "video_identity")


def warmup(model_dir: str, data: str, out: str, cfg: WarmupConfig, resume: bool = False,
           overwrite: bool = False) -> Path:
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
    from ego3s.identity import config_identity
    from ego3s.models.loading import downcast, load_model, patch_qwen25_rope_index, upcast_trainable
    from ego3s.models.loading import load_checkpoint_weights
    from ego3s.rl.train import VISION_PREFIXES, last_checkpoint

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
        ident = {"model": model_fingerprint(model_dir), "data": data_fingerprint(samples, cfg.video_identity),
                 "vision_data": jsonl_fingerprint(vdata, cfg.video_identity) if vdata else None,
                 "config": config_identity(cfg, WARMUP_NOT_IDENTITY)}
        claim_folder(out, ident, resume=resume, overwrite=overwrite, what="warm-up",
                     outputs=("checkpoint-*", "final", "log_history.json", "vision_pretrain.json"),
                     logs=("skipped.jsonl",))
    model, processor = load_model(model_dir, dtype="float32" if not torch.cuda.is_available() else "bfloat16")
    patch_qwen25_rope_index(model)
    for name, p in model.named_parameters():
        p.requires_grad_(cfg.train_language_model or name.startswith(VISION_PREFIXES))
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    loaded_dtype = upcast_trainable(model, cfg.master_weights)
    ds = datasets.Dataset.from_list([{"sample": json.dumps(s.to_dict())} for s in samples])
    from ego3s.tracking import trainer_report_to

    args = TrainingArguments(
        output_dir=out, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
        logging_steps=cfg.logging_steps, save_steps=cfg.save_steps, seed=cfg.seed,
        report_to=trainer_report_to(cfg.report_to, "warmup.report_to"), remove_unused_columns=False,
        bf16=bf16, dataloader_num_workers=cfg.workers,
        disable_tqdm=False, use_cpu=not torch.cuda.is_available())  # see ego3s.rl.train.grpo_args
    Path(out).mkdir(parents=True, exist_ok=True)
    collator = ClipCollator(processor, cfg, skip_log=Path(out) / "skipped.jsonl")
    ckpt = last_checkpoint(out) if resume else None
    if cfg.vision_pretrain.steps > 0 and ckpt is None:  # a checkpoint already holds the pretrained tower
        from ego3s.files import write_json
        from ego3s.models.vision_pretrain import pretrain_vision

        vdata = cfg.vision_pretrain.data
        clips = read_jsonl(vdata, skip_invalid=True) if vdata else samples
        stats = pretrain_vision(model, processor, clips, cfg.vision_pretrain, cfg.frame_sampling(), seed=cfg.seed)
        stats["data"] = vdata or data
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "vision_pretrain.json", stats)
    if not cfg.train_vision_tower:  # after pretraining, and on resume too: the optimizer's groups must match
        for name, p in model.named_parameters():
            if name.startswith(VISION_PREFIXES) and ".merger." not in name:
                p.requires_grad_(False)
    optimizers = (vision_optimizer(model, cfg.learning_rate, cfg.vision_learning_rate), None)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, optimizers=optimizers,
                      callbacks=[stop_on_nan()])
    if ckpt is not None:
        load_checkpoint_weights(model, ckpt)  # the Trainer's own resume misses them (see there)
    trainer.train(resume_from_checkpoint=ckpt)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # the Trainer logs NaN losses as 0 and carries on; a NaN base model must not reach selection
        raise FloatingPointError(f"warm-up {out}: {len(bad)} weights are NaN/inf after training (first: {bad[0]}); "
                                 "lower learning_rate / vision_learning_rate")
    skipped = Path(out) / "skipped.jsonl"
    if skipped.exists():
        print(f"warm-up: {len(skipped.read_text().splitlines())} unreadable clips skipped, listed in {skipped}",
              file=sys.stderr)
    downcast(model, loaded_dtype)
    final = Path(out) / "final"
    trainer.save_model(str(final))
    processor.save_pretrained(str(final))
    from ego3s.files import write_json

    write_json(Path(out) / "log_history.json", trainer.state.log_history)
    return final
