"""GRPO training step: step time and tokens/s with the real VideoGRPOTrainer, for LoRA and full
fine-tuning, gradient checkpointing off and on. Each configuration loads the model afresh, runs
`--warmup` steps, then `--steps` timed steps; the median is reported.

    python benchmarks/bench_train_step.py --out train.json    # GPU: LoRA on 7B, full on 3B
    python benchmarks/bench_train_step.py --smoke             # CPU, tiny model
"""

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import torch
from transformers import TrainerCallback

from ego3s.data import Sample
from ego3s.models.inputs import vision_token_ids
from ego3s.rl.run import TrainingConfig, grpo_args, reward_functions, training_dataset
from ego3s.rl.trainer import VideoGRPOTrainer
from ego3s.train.plumbing import VISION_PREFIXES

LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


class StepTimer(TrainerCallback):
    """Wall time and tokens (prompt + completion, TRL's count) of every optimizer step."""

    def __init__(self):
        self.times, self.tokens = [], []

    def on_step_begin(self, args, state, control, **kw):
        C.sync()
        self._t, self._seen = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kw):
        C.sync()
        self.times.append(time.perf_counter() - self._t)
        self.tokens.append(state.num_input_tokens_seen - self._seen)


def samples(folder: Path, n: int, frames: int, side: int) -> list[Sample]:
    out = []
    for i in range(n):
        p = folder / f"c{i}.mp4"
        C.write_clip(p, frames, side, i)
        out.append(
            Sample(
                id=f"s{i}",
                question="What did I pick up from the counter?",
                answer="B",
                task="closeqa",
                options=["a knife", "a red cup", "a sponge", "a plate"],
                video=str(p),
                interaction={"objects": [{"name": "cup"}], "action": "pick up"},
            )
        )
    return out


def run_config(path, smoke, data, *, lora, checkpointing, static, a) -> dict:
    """One configuration: fresh model and trainer, warm-up steps, timed steps."""
    model, processor = C.load(path, smoke)
    G = a.group
    cfg = TrainingConfig(
        model=str(path),
        out=tempfile.mkdtemp(prefix="bench_train_"),
        batch_size=G * a.prompts,
        per_device_train_batch_size=a.micro_batch,
        num_generations=G,
        max_completion_length=a.new_tokens,
        max_steps=a.warmup + a.steps,
        learning_rate=1e-6,
        lora=lora,
        gradient_checkpointing=checkpointing,
        save_steps=10**6,
        beta=a.beta,
    )
    if not lora:
        for name, p in model.named_parameters():
            if name.startswith(VISION_PREFIXES):
                p.requires_grad_(False)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.05,
            task_type="CAUSAL_LM",
            target_modules=LORA_TARGETS,
        )
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    if not lora:  # as `ego3s train` does: fp32 master weights unless --master-weights bfloat16
        from ego3s.models.loading import upcast_trainable

        upcast_trainable(model, a.master_weights)
    args = grpo_args(cfg, bf16=bf16, suppress_tokens=vision_token_ids(processor.tokenizer))
    args.save_strategy = "no"
    args.disable_tqdm = True
    pix = a.side * a.side
    timer = StepTimer()
    trainer = VideoGRPOTrainer(
        model=model,
        processing_class=processor,
        args=args,
        reward_funcs=reward_functions(cfg, ["cup", "knife"]),
        train_dataset=training_dataset(data),
        peft_config=peft_config,
        callbacks=[timer],
        sampling={"nframes": a.frames, "max_pixels": pix, "min_pixels": pix, "backend": a.backend},
        static_cache_rollouts=static,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    error = None
    try:
        trainer.train()
    except torch.cuda.OutOfMemoryError as e:  # full fine-tuning without checkpointing may not fit
        error = f"out of memory: {str(e)[:200]}"
    times, tokens = timer.times[a.warmup :], timer.tokens[a.warmup :]
    step = C.median(times)
    res = {
        "mode": "lora" if lora else "full",
        "gradient_checkpointing": checkpointing,
        "static_cache": static,
        "error": error,
        "master_weights": None if lora else a.master_weights,
        "trainable_params_m": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad) / 1e6,
        "step_s_median": step,
        "step_s_all": timer.times,
        "tokens_per_step": C.median(tokens),
        "tokens_per_s": C.median(tokens) / step if times else float("nan"),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lora-arch", default="7b", help="architecture for the LoRA runs")
    ap.add_argument("--full-arch", default="3b", help="architecture for full fine-tuning")
    ap.add_argument("--model", default=None, help="one local model folder for every run instead")
    ap.add_argument("--modes", default="lora,full")
    ap.add_argument("--master-weights", default="float32", help="full fine-tuning: float32 or bfloat16")
    ap.add_argument("--checkpointing", default="off,on")
    ap.add_argument("--static-cache", default="off", help="rollouts against a static KV cache: off, on or off,on")
    ap.add_argument("--prompts", type=int, default=1, help="prompts per optimizer step")
    ap.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--micro-batch", type=int, default=2, help="completions per forward/backward")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (0: no reference forward)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--backend", default=C.default_backend())
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, small sizes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.group, a.micro_batch, a.new_tokens, a.frames, a.side, a.warmup, a.steps = 2, 2, 4, 4, 56, 1, 1
    data = samples(Path(tempfile.mkdtemp(prefix="bench_train_clips_")), max(a.prompts, 1) * 4, a.frames, a.side)
    results = []
    tiny = C.model_folder(None, a.model, True) if (a.smoke and not a.model) else None
    setup = {
        "prompts": a.prompts,
        "group": a.group,
        "micro_batch": a.micro_batch,
        "new_tokens": a.new_tokens,
        "frames": a.frames,
        "side": a.side,
        "beta": a.beta,
        "warmup": a.warmup,
        "steps": a.steps,
    }
    for mode in a.modes.split(","):
        path = tiny or C.model_folder(a.lora_arch if mode == "lora" else a.full_arch, a.model, a.smoke)
        for ckpt in a.checkpointing.split(","):
            for static in a.static_cache.split(","):
                r = run_config(
                    path, a.smoke, data, lora=mode == "lora", checkpointing=ckpt == "on", static=static == "on", a=a
                )
                r["arch"] = "tiny" if tiny else (a.model or (a.lora_arch if mode == "lora" else a.full_arch))
                results.append(r)
                C.write_result(a.out, "train_step", {**setup, "results": results})  # kept if a later run overruns
    print(
        f"device: {C.device_name()}; {a.prompts} prompt(s) x G={a.group}, {a.new_tokens} new tokens, "
        f"{a.frames} frames x {a.side} px, micro-batch {a.micro_batch}, beta {a.beta}; "
        f"median of {a.steps} steps after {a.warmup} warm-up"
    )
    print(
        C.table(
            ["arch", "mode", "grad ckpt", "static", "step s", "tokens/step", "tokens/s", "peak GiB", "error"],
            [
                [
                    r["arch"],
                    r["mode"],
                    r["gradient_checkpointing"],
                    r["static_cache"],
                    r["step_s_median"],
                    r["tokens_per_step"],
                    r["tokens_per_s"],
                    r["peak_mem_gib"] or "-",
                    r["error"] or "",
                ]
                for r in results
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
