"""`ego3s train`: GRPO (or RLOO, DAPO, Dr. GRPO) on video with the interaction-centric reward.

Reads a JSONL of samples (a selected subset or any pool), builds the TRL dataset, and runs
`VideoGRPOTrainer`. Writes checkpoints (with the curriculum state when ECR is on), TRL's logs,
and `rewards.jsonl`: one line per (step, sample) with the group's reward components, which the
LIMR baseline and the curriculum read.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
from ego3s.curriculum.monitor import ECRConfig
from ego3s.data.video import VIEWS, ClipSpec, View
from ego3s.rewards import RewardConfig
from ego3s.rl.strategies import STRATEGIES
from ego3s.select.csm import CSMThresholds
from ego3s.train.plumbing import (
    checkpoint_step,
    last_checkpoint,
    lora_config,
    start_model_fingerprint,
    training_identity,
)


def _reward_key(name: str):
    """A TrainingConfig field that mirrors RewardConfig's field `name` (default and help)."""
    f = RewardConfig.__dataclass_fields__[name]
    return field(default=f.default, metadata=f.metadata)


@dataclass
class TrainingConfig(ClipSpec):
    model: str = field(default="", metadata={"help": "local model folder to start from"})
    data: str = field(default="", metadata={"help": "training samples (JSONL, ego3s schema)"})
    out: str = field(default="runs/train", metadata={"help": "output folder (checkpoints, logs, rewards.jsonl)"})
    strategy: str = field(default="grpo", metadata={"help": "grpo, rloo, dapo or dr_grpo"})
    dynamic_sampling_rounds: int = field(
        default=3,
        metadata={
            "help": "dapo: rounds of refilling groups whose answers are all right or all wrong with fresh prompts "
            "per generation batch (0: off)"
        },
    )
    num_iterations: int = field(
        default=1,
        metadata={
            "help": "optimizer passes over each generation batch (TRL's num_iterations, GRPO's mu). Above 1 the "
            "policy moves away from the one that sampled, so the importance ratio and its clip act"
        },
    )
    optimizer_steps_per_generation: int | None = field(
        default=None,
        metadata={
            "help": "optimizer steps (batches of batch_size completions) trained on one generation batch; TRL's "
            "steps_per_generation = this x gradient accumulation steps. None: 1 (on-policy); dapo: the "
            "DAPO paper's 16 (a rollout of 16 mini-batches), fewer when the data has fewer prompts"
        },
    )
    overlong_cache: int | None = field(
        default=None,
        metadata={
            "help": "dapo: soft overlong punishment cache L_cache in tokens (penalty 0 up to max_completion_length - "
            "L_cache, linear to -1 at max_completion_length). None: a fifth of max_completion_length, the "
            "paper's 4,096 of 20,480"
        },
    )
    mask_truncated_completions: bool = field(
        default=False,
        metadata={
            "help": "leave completions cut at max_completion_length out of the loss (TRL's option; DAPO's "
            "'overlong filtering', which the paper replaced by the soft overlong punishment)"
        },
    )
    # the interaction-centric reward (paper's names)
    alpha: float = field(default=0.5, metadata={"help": "penalty weight for object mentions above N"})
    N: int = field(default=5, metadata={"help": "allowed object mentions inside <think>"})
    H: float = field(
        default=1.1, metadata={"help": "r_int only when correct + r_fmt >= H (1 < H <= 2: correct and well formed)"}
    )
    interaction_reward: bool = field(default=True, metadata={"help": "add r_int (off: plain accuracy + format)"})
    open_metric: str = field(
        default="rouge_l",
        metadata={"help": "open-QA partial credit of a wrong answer: rouge_l or similarity (x open_partial_credit)"},
    )
    # when an open answer is correct: the same keys, defaults and help as the reward's own config
    open_correct: str = _reward_key("open_correct")
    open_correct_threshold: float = _reward_key("open_correct_threshold")
    open_partial_credit: float = _reward_key("open_partial_credit")
    judge: dict | None = _reward_key("judge")
    # optimisation (paper's names where it has them)
    learning_rate: float = field(default=1e-6, metadata={"help": "AdamW learning rate"})
    batch_size: int = field(
        default=512, metadata={"help": "completions per optimizer step, all devices (prompts x num_generations)"}
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "completions per device per micro-step"})
    num_generations: int = field(default=8, metadata={"help": "G: completions per prompt"})
    max_completion_length: int = field(default=256, metadata={"help": "tokens per completion"})
    temperature: float = field(default=1.0, metadata={"help": "rollout temperature"})
    layout_invariant_sampling: bool = field(
        default=False,
        metadata={
            "help": "draw each rollout from its own key (seed, step, sample, replica) so 1 and N GPUs give the same "
            "completions at the same global batch (temperature only; see ego3s.rl.sampling)"
        },
    )
    beta: float = field(default=0.04, metadata={"help": "KL coefficient (0: no reference model)"})
    max_steps: int = field(default=-1, metadata={"help": "optimizer steps (-1: use num_train_epochs)"})
    num_train_epochs: float = field(default=1.0, metadata={"help": "epochs over the data"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "linear warm-up share"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha"})
    freeze_vision: bool = field(default=True, metadata={"help": "keep the vision tower frozen (full fine-tuning)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "trade compute for memory"})
    vision_feature_cache: bool = field(
        default=True,
        metadata={
            "help": "with the vision tower frozen, encode each clip once per generation batch in the log-prob "
            "forwards instead of once per completion (ego3s.rl.vision_cache)"
        },
    )
    shared_prefix_rollouts: bool = field(
        default=True,
        metadata={
            "help": "without vLLM: encode the video and prefill each prompt once per group of G completions and "
            "decode them from copies of the KV cache (same outputs as TRL's path, less compute)"
        },
    )
    static_cache_rollouts: bool = field(
        default=False,
        metadata={
            "help": "with shared_prefix_rollouts: decode against a static KV cache in ego3s's decode loop, its "
            "step compiled and captured as one CUDA graph (on an H200, 7B, G=8, 256 tokens: 5.5 ms per step, "
            "1,330 completion tokens/s; the first rollout pays about 35 s of compilation; a prompt longer "
            "than any before grows the cache and recompiles, once)"
        },
    )
    dtype: Dtype = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32"})
    master_weights: MasterWeights = field(
        default="float32",
        metadata={
            "help": "float32: keep the trained weights in fp32 with bf16 compute (bf16 weights lose updates "
            "below lr ~|w|/256: ego3s.models.loading.upcast_trainable); bfloat16: pure bf16, half the "
            "memory of the trained weights and their optimizer states"
        },
    )
    # video
    view: View = field(default="full", metadata={"help": "view the policy trains on (full; others for ablations)"})
    # bookkeeping
    save_steps: int = field(default=100, metadata={"help": "checkpoint every N steps"})
    save_checkpoints: bool = field(
        default=True,
        metadata={
            "help": "false: no checkpoint-N at all (transformers also writes one at the last step); `final` is "
            "still saved. A full fine-tuning checkpoint of the 7B holds its optimizer states (about 100 GB)"
        },
    )
    save_total_limit: int | None = field(default=None, metadata={"help": "keep at most N checkpoints"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps"})
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "trackers, as transformers' report_to: none, tensorboard, wandb, trackio, or a list of them "
            "(ECR and reward metrics go to the same trackers)"
        },
    )
    log_completions: bool = field(
        default=False,
        metadata={
            "help": "TRL's log_completions: print and log (wandb/trackio table) a sample of prompts and completions "
            "at each logging step"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed"})
    ecr: ECRConfig = field(default_factory=ECRConfig)
    candidates: str | None = field(
        default=None,
        metadata={
            "help": "ECR candidate pool (JSONL): unselected samples probed at a refresh (None: only the training data)"
        },
    )
    csm: CSMThresholds = field(default_factory=CSMThresholds, metadata={"help": "ECR re-scoring thresholds"})
    embedder: str | None = field(default=None, metadata={"help": "sentence embedder for ECR relevance (None: MiniLM)"})
    relevance_file: str | None = field(default=None, metadata={"help": "JSON {id: relevance} computed earlier"})
    ecr_batch_size: int = field(default=8, metadata={"help": "samples per forward when ECR re-scores"})
    ecr_scoring: dict = field(
        default_factory=dict,
        metadata={
            "help": "how ECR re-scores with the current policy: ScoringConfig keys (estimator, num_samples, "
            "temperature, greedy, max_new_tokens). Default: the likelihood of the direct answer, as selection "
            "scores; {estimator: sampling} samples the policy in its own format instead, which RL moves"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(
            self,
            choices={"strategy": tuple(STRATEGIES), "dtype": DTYPES, "master_weights": MASTER_WEIGHTS, "view": VIEWS},
            ranges={
                "dynamic_sampling_rounds": "[0, inf)",
                "learning_rate": "(0, inf)",
                "batch_size": "[1, inf)",
                "per_device_train_batch_size": "[1, inf)",
                "num_generations": "[2, inf)",
                "max_completion_length": "[1, inf)",
                "temperature": "(0, inf)",
                "beta": "[0, inf)",
                "num_train_epochs": "(0, inf)",
                "warmup_ratio": "[0, 1)",
                "lora_r": "[1, inf)",
                "lora_alpha": "[1, inf)",
                "save_steps": "[1, inf)",
                "save_total_limit": "[1, inf)",
                "logging_steps": "[1, inf)",
                "ecr_batch_size": "[1, inf)",
                "num_iterations": "[1, inf)",
                "optimizer_steps_per_generation": "[1, inf)",
                "overlong_cache": "[1, inf)",
                "seed": "[0, inf)",
            },
        )
        check_steps("max_steps", self.max_steps)
        check_report_to("report_to", self.report_to)
        if self.overlong_cache is not None and self.overlong_cache > self.max_completion_length:
            raise ConfigError(
                f"overlong_cache: {self.overlong_cache} exceeds max_completion_length ({self.max_completion_length})"
            )
        RewardConfig(
            alpha=self.alpha, N=self.N, H=self.H, **reward_rule(self)
        )  # the reward keys, checked where they live
        self.ecr_scoring_config()  # a typo or a bad value fails here, not at the first refresh

    def ecr_scoring_config(self):
        """ECR's re-scoring settings: the training clips (frames, pixels, backend: the policy sees
        what it trains on), `ecr_batch_size`, and the overrides of `ecr_scoring`."""
        from ego3s.config import from_dict
        from ego3s.select.scoring import ScoringConfig

        over = self.ecr_scoring or {}
        if not isinstance(over, dict):
            raise ConfigError(f"ecr_scoring: expected a mapping of scoring keys, got {type(over).__name__}")
        clip = sorted(set(over) & set(ClipSpec.__dataclass_fields__))
        if clip:
            raise ConfigError(f"ecr_scoring: {clip} are the training clips' settings; set them on training itself")
        base = {**asdict(self.clip_spec()), "batch_size": self.ecr_batch_size}
        return from_dict(ScoringConfig, {**base, **over}, "ecr_scoring.")


def training_dataset(samples, fmt: str = "reasoning"):
    """The TRL dataset: a conversational `prompt` (visual placeholder only; frames are loaded by
    the trainer), the whole sample as JSON, and the columns the rewards read."""
    import datasets

    from ego3s.models.prompts import build_messages

    rows = []
    for s in samples:
        visual = "video" if s.video is not None else "image" if s.image is not None else None
        rows.append(
            {
                "prompt": build_messages(s, fmt=fmt, visual=visual),
                "sample": json.dumps(s.to_dict()),
                "sample_id": s.id,
                "task": s.task,
                "answer": s.answer,
                "options": json.dumps(s.options),
                "interaction": json.dumps(s.to_dict()["interaction"]),
            }
        )
    return datasets.Dataset.from_list(rows)


def reward_rule(cfg: TrainingConfig) -> dict:
    """The open-QA keys every reward function gets (accuracy, gate and correctness agree)."""
    return dict(
        open_metric=cfg.open_metric,
        open_correct=cfg.open_correct,
        open_correct_threshold=cfg.open_correct_threshold,
        open_partial_credit=cfg.open_partial_credit,
        judge=cfg.judge,
    )


def reward_functions(cfg: TrainingConfig, vocabulary: list[str]) -> list:
    from ego3s import rewards as R

    rule = reward_rule(cfg)
    R.check_metric_packages(R.RewardConfig(**rule))
    funcs = [R.make_accuracy_reward(**rule), R.format_reward]
    if cfg.interaction_reward:
        funcs.append(R.make_interaction_reward(alpha=cfg.alpha, N=cfg.N, H=cfg.H, vocabulary=vocabulary, **rule))
    funcs.append(R.make_correct_reward(**rule))  # weight 0: logged, and read by DAPO's dynamic sampling
    from ego3s.rl.strategies import overlong_cache

    cache = overlong_cache(cfg.strategy, cfg.overlong_cache, cfg.max_completion_length)
    if cache is not None:  # TRL's implementation of DAPO's Eq. 13 (0, then linear to -1 at L_max)
        from trl.rewards import get_soft_overlong_punishment

        f = get_soft_overlong_punishment(cfg.max_completion_length, cache)
        f.__name__ = "overlong"
        funcs.append(f)
    return funcs


def grpo_args(
    cfg: TrainingConfig,
    world_size: int = 1,
    bf16: bool = False,
    suppress_tokens: list[int] | None = None,
    num_prompts: int | None = None,
):
    """TRL's GRPOConfig for `cfg` on `world_size` devices; `num_prompts` (the training set's size)
    caps dapo's default generation batch at what the data holds."""
    from trl import GRPOConfig

    from ego3s.rl.strategies import grpo_config_kwargs, optimizer_steps_per_generation
    from ego3s.tracking import trainer_report_to
    from ego3s.train.plumbing import checkpointing_kwargs, use_cpu

    per_step = cfg.per_device_train_batch_size * world_size
    if cfg.batch_size % per_step:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not a multiple of per_device_train_batch_size x devices = {per_step}"
        )
    if per_step % cfg.num_generations and cfg.batch_size % cfg.num_generations:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of num_generations {cfg.num_generations}")
    kw = {"beta": cfg.beta, **grpo_config_kwargs(cfg.strategy)}
    accumulation = cfg.batch_size // per_step
    per_generation = optimizer_steps_per_generation(
        cfg.strategy, cfg.optimizer_steps_per_generation, cfg.batch_size // cfg.num_generations, num_prompts
    )
    return GRPOConfig(
        num_iterations=cfg.num_iterations,
        steps_per_generation=per_generation * accumulation,
        mask_truncated_completions=cfg.mask_truncated_completions,
        output_dir=cfg.out,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=accumulation,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        warmup_steps=cfg.warmup_ratio,
        **checkpointing_kwargs(GRPOConfig, cfg.gradient_checkpointing),
        save_steps=cfg.save_steps,
        save_strategy="steps" if cfg.save_checkpoints else "no",
        save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps,
        report_to=trainer_report_to(cfg.report_to, "training.report_to"),
        seed=cfg.seed,
        bf16=bf16,
        remove_unused_columns=False,
        shuffle_dataset=True,
        log_completions=cfg.log_completions,
        use_cpu=use_cpu(),
        generation_kwargs={"suppress_tokens": list(suppress_tokens)} if suppress_tokens else None,
        **kw,
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop records (reward log, ECR events) written after the checkpoint we resume from: those
    steps are redone, and their records would otherwise be counted twice."""
    from ego3s.files import atomic_open, read_log

    if not path.exists():
        return
    keep = [r for r in read_log(path) if r["step"] < step]
    with atomic_open(path, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")


def make_ecr_scorer(cfg: TrainingConfig, processor, samples_by_id: dict, curriculum, out: Path):
    """CSM re-scoring with the current policy, as ECR calls it: `scorer(model, ids) -> rows`."""
    from ego3s.select.cache import ScoreCache
    from ego3s.select.csm import apply_filters
    from ego3s.select.run import relevance_scores
    from ego3s.select.scoring import score_all, score_table

    scoring = cfg.ecr_scoring_config()
    relevance: dict = {}

    def scorer(model, ids: list[str]) -> list[dict]:
        probe = [samples_by_id[i] for i in ids]
        missing = [s for s in probe if s.id not in relevance]
        if missing:
            relevance.update(relevance_scores(missing, cfg.embedder, cfg.relevance_file))
        # keyed by the policy's weights: a crash mid-refresh resumes, a new run never reuses old scores
        from ego3s.models.loading import model_fingerprint

        cache = ScoreCache(
            out / "ecr_cache", refresh=curriculum.refreshes, model=model_fingerprint(model), **asdict(scoring)
        )
        score_all(model, processor, probe, scoring, cache, progress=False)
        rows = score_table(probe, cache)
        for r in rows:
            r["relevance"] = relevance[r["id"]]
        return apply_filters(rows, cfg.csm)

    return scorer


RUN_OUTPUTS = (
    "checkpoint-*",
    "final",
    "final.partial",
    "rewards.jsonl",
    "ecr_events.jsonl",
    "ecr_cache",
    "log_history.json",
)


def run_training(
    cfg: TrainingConfig, resume: bool = False, model=None, processor=None, callbacks=None, overwrite: bool = False
):
    """Train; returns the trainer (its state holds the log history).

    One process (group) at a time writes `cfg.out` (`ego3s.files.folder_lock`). Into a folder
    holding checkpoints: `resume` continues them only when they were trained from the same model,
    data and settings (`identity.json`, `ego3s.identity.claim_folder`), `overwrite` deletes them,
    and otherwise the run is refused."""
    from ego3s.files import folder_lock
    from ego3s.identity import check_video_identity

    check_video_identity(cfg.video_identity)
    with folder_lock(cfg.out, "ego3s train"):
        return _run_training(cfg, resume, model, processor, callbacks, overwrite)


def _run_training(cfg: TrainingConfig, resume: bool, model, processor, callbacks, overwrite: bool):
    import torch

    from ego3s.data.io import read_jsonl
    from ego3s.files import write_json
    from ego3s.models.loading import load_model
    from ego3s.rewards import object_vocabulary
    from ego3s.rl.trainer import VideoGRPOTrainer
    from ego3s.tracking import trainer_report_to
    from ego3s.train.plumbing import (
        check_finite_weights,
        freeze_vision,
        load_resume_weights,
        save_final,
        stop_on_nan,
        train_or_restore,
    )

    trainer_report_to(cfg.report_to, "training.report_to")  # unknown tracker or missing package: now
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    errors: list = []
    samples = read_jsonl(cfg.data, skip_invalid=True, errors=errors)
    if not samples:
        raise skips.nothing_produced("train", f"{cfg.data}: no valid training sample", skips.from_errors(errors))
    if os.environ.get("RANK", "0") == "0":  # one rank checks and clears the shared folder
        from ego3s.identity import claim_folder, jsonl_fingerprint

        extra = {
            "candidates": jsonl_fingerprint(cfg.candidates, cfg.video_identity)
            if cfg.ecr.ecr and cfg.candidates
            else None
        }
        if model is None and not Path(cfg.model).is_dir():
            raise FileNotFoundError(f"model: {cfg.model!r} is not a model folder")
        ident = training_identity(cfg, samples, start_model_fingerprint(cfg.model, model), extra)
        claim_folder(out, ident, resume=resume, overwrite=overwrite, outputs=RUN_OUTPUTS, what="training run")
    if model is None:
        model, processor = load_model(cfg.model, dtype=cfg.dtype)
    if cfg.freeze_vision and not cfg.lora:
        freeze_vision(model)
    peft_config = lora_config(cfg.lora_r, cfg.lora_alpha) if cfg.lora else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    from ego3s.models.loading import downcast, upcast_trainable

    loaded_dtype = None if cfg.lora else upcast_trainable(model, cfg.master_weights)  # PEFT upcasts adapters
    from ego3s.models.inputs import vision_token_ids

    args = grpo_args(
        cfg, world, bf16=bf16, suppress_tokens=vision_token_ids(processor.tokenizer), num_prompts=len(samples)
    )
    sampling = asdict(cfg.clip_spec())
    pool = samples
    curriculum, scorer, callbacks = None, None, list(callbacks or [])
    if cfg.ecr.ecr:
        from ego3s.curriculum.ecr import Curriculum, ECRCallback

        extra = read_jsonl(cfg.candidates, skip_invalid=True, errors=errors) if cfg.candidates else []
        seen = {s.id for s in samples}
        pool = samples + [s for s in extra if s.id not in seen]
        curriculum = Curriculum(
            cfg.ecr,
            [s.id for s in pool],
            [s.id for s in samples],
            seed=cfg.seed,
            out=out,
            meta={s.id: s.meta for s in pool},
            writer=int(os.environ.get("RANK", "0")) == 0,
        )
        scorer = make_ecr_scorer(cfg, processor, {s.id: s for s in pool}, curriculum, out)
        callbacks.append(ECRCallback(curriculum))
    callbacks.append(stop_on_nan("training run"))
    trainer = VideoGRPOTrainer(
        model=model,
        processing_class=processor,
        args=args,
        reward_funcs=reward_functions(cfg, object_vocabulary(pool)),
        train_dataset=training_dataset(pool),
        peft_config=peft_config,
        callbacks=callbacks,
        sampling=sampling,
        view=cfg.view,
        reward_log=str(out / "rewards.jsonl"),
        strategy=cfg.strategy,
        curriculum=curriculum,
        ecr_scorer=scorer,
        dynamic_sampling_rounds=cfg.dynamic_sampling_rounds,
        layout_invariant_sampling=cfg.layout_invariant_sampling,
        shared_prefix_rollouts=cfg.shared_prefix_rollouts,
        static_cache_rollouts=cfg.static_cache_rollouts,
        vision_feature_cache=cfg.vision_feature_cache,
    )
    trainer.skips = skips.from_errors(errors)  # invalid records of the data and candidate pool
    write_json(
        out / "training_config.json", {**asdict(cfg), "invalid_records_skipped": len(errors), "skips": trainer.skips}
    )
    required = ("trainer_state.json",) + (("ecr_state.json",) if curriculum is not None else ())
    ckpt = last_checkpoint(out, required) if resume else None
    for log in ("rewards.jsonl", "ecr_events.jsonl"):  # from scratch (no checkpoint): step 0, an empty log
        _truncate_log(out / log, checkpoint_step(ckpt) if ckpt is not None else 0)
    load_resume_weights(trainer, ckpt, cfg.lora)
    if ckpt is not None and curriculum is not None:
        from ego3s.curriculum.ecr import restore

        restore(curriculum, ckpt)
    train_or_restore(trainer, ckpt, cfg.max_steps, cfg.lora, callbacks)
    check_finite_weights(trainer, "training run", out)
    downcast(model, loaded_dtype)
    save_final(trainer, processor, out / "final")
    if trainer.is_world_process_zero():
        write_json(out / "log_history.json", trainer.state.log_history)  # losses, rewards, step times
    return trainer
