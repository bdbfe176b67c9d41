"""`ego3s eval`: one runner for every benchmark, data-parallel under `torchrun`, resumable.

    cfg = EvalConfig(data=["EgoSynth", "EgoThink"], model="/models/Qwen2.5-VL-7B-Instruct",
                     root="data/benchmarks", view="full", out="runs/eval")
    results = run_eval(cfg)          # rank 0: the results dict; other ranks: {}

Per benchmark (`ego3s.eval.benchmarks`): load the samples (the first `limit`), take this rank's
shard (`samples[rank::world]`), drop those already predicted (every `predictions.rank*.jsonl` of
the benchmark's folder, a torn last line ignored), sort the rest by an estimate of the prompt length
(answer budget, visual kind, frames, text tokens; longest first), generate greedily in batches,
and append one line per sample to this rank's `predictions.rank{r}.jsonl` as soon as its batch is
done. A sample that cannot be prepared (missing or unreadable video/image, no interaction boxes
for the `context` view, inputs the processor rejects) gets a `skipped` line with the reason; it is
counted, never fatal. Then all ranks meet at a barrier and rank 0 reads every rank file (whatever
the number of ranks of earlier runs), scores with the benchmark's `score` (the judge, if any, on
rank 0 only), and writes `results.json`, `results.md`, `results.csv` and per benchmark
`per_sample.jsonl` (scoring and tables: `ego3s.eval.results`). With `icu` on the full view, the annotated samples are also generated on the
context view (`<benchmark>/context/`) for the counterfactual reliance. See docs/evaluation.md,
"Running evaluations".
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ego3s import skips
from ego3s.config import DEVICES, DTYPES, Device, Dtype, check_fields, check_report_to
from ego3s.data.schema import Sample
from ego3s.data.video import VIEWS, BlindMode, ClipSpec, View
from ego3s.eval.benchmarks import FORMATS
from ego3s.eval.results import (
    examples_text,
    results_csv,
    results_markdown,
    results_table,
    score_benchmark,
    track_results,
)
from ego3s.files import append_jsonl, read_log, write_json, write_text
from ego3s.models.prompts import PromptFormat

PRED_GLOB = "predictions.rank*.jsonl"
# skip reasons that a rerun may cure (the file restored or fixed): tried again on every run
RETRY_REASONS = ("missing_video", "unreadable_video", "missing_image", "unreadable_image")
CONTEXT_DIR = "context"  # <out>/<benchmark>/context/: the context-view predictions of an --icu run
# config keys that change what a prediction is: a resumed run must agree on them
RUN_KEYS = (
    "view",
    "blind_mode",
    "context_fill",
    "fmt",
    "nframes",
    "fps",
    "max_frames",
    "max_pixels",
    "min_pixels",
    "backend",
    "max_new_tokens",
    "reasoning_max_new_tokens",
    "system",
    "dtype",
)


@dataclass
class EvalConfig(ClipSpec):
    """What `ego3s eval` runs: benchmarks, model, the clip spec (frames and view settings,
    inherited), prompt format, budgets, judge, outputs."""

    data: list[str] = field(
        default_factory=list,
        metadata={
            "help": "benchmarks, e.g. QAEgo4D,EgoTextVQA,egoschema_subset,EgoPlan2,EgoThink,EgoSynth (registry names or "
            "aliases; a comma-separated string is split)"
        },
    )
    model: str = field(default="", metadata={"help": "local model folder (Hugging Face layout)"})
    root: str | None = field(
        default=None,
        metadata={
            "help": "benchmarks root: each benchmark is read from <root>/<subdir> (e.g. data/benchmarks in the repository)"
        },
    )
    paths: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "per-benchmark folder or file overriding root: {name: path} (CLI: --path EgoSynth=/data/egosynth)"
        },
    )
    options: dict[str, dict] = field(
        default_factory=dict,
        metadata={
            "help": "per-benchmark load options: {name: {key: value}} (CLI: --opt EgoTextVQA.video_root=/videos)"
        },
    )
    view: View = field(default="full", metadata={"help": "full, blind (no visual evidence) or context (boxes masked)"})
    blind_mode: BlindMode = field(
        default="none",
        metadata={
            "help": "blind view: none (no visual entry at all, needs no video file) or blank (gray clip, same shape)"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "only the first N samples of each benchmark"})
    frames: int | None = field(
        default=None,
        metadata={"help": "the old name of nframes, still read (the other stages' configs always said nframes)"},
    )
    batch_size: int = field(default=8, metadata={"help": "samples per generate call (per rank)"})
    static_cache: bool = field(
        default=False,
        metadata={
            "help": "decode against a static KV cache that transformers compiles with CUDA graphs (patched "
            "Qwen2.5-VL; ego3s.models.generation): faster decode steps, one compilation per batch size (the cache "
            "grows to the longest prompt, recompiling once each time, and is reused)"
        },
    )
    fmt: Literal[PromptFormat, "official"] = field(
        default="direct", metadata={"help": "prompt format: direct, reasoning or official"}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "answer budget for every sample (None: the benchmark's for direct/official, "
            "reasoning_max_new_tokens for reasoning)"
        },
    )
    reasoning_max_new_tokens: int = field(default=512, metadata={"help": "answer budget of the reasoning format"})
    system: str | None = field(default=None, metadata={"help": "system prompt (None: the chat template's)"})
    judge_model: str | None = field(default=None, metadata={"help": "LLM judge model name (None: no judge)"})
    judge_base_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible endpoint of the judge (default $OPENAI_BASE_URL)"}
    )
    judge_api_key: str | None = field(default=None, metadata={"help": "judge API key (default $OPENAI_API_KEY)"})
    judge_concurrency: int = field(default=8, metadata={"help": "judge requests in flight"})
    out: str = field(default="runs/eval", metadata={"help": "output folder (predictions, results, judge cache)"})
    verbose: bool = field(default=False, metadata={"help": "print a few samples per benchmark"})
    icu: bool = field(
        default=False,
        metadata={
            "help": "interaction cue utilization, textual and attention (eager attention), where annotations allow"
        },
    )
    icu_layers: Literal["mean", "last"] = field(
        default="mean", metadata={"help": "attention ICU: mean over all layers, or last"}
    )
    retry_skipped: bool = field(
        default=False,
        metadata={
            "help": "on resume, retry every sample skipped before (those skipped for a missing or unreadable file are "
            "always retried)"
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "out holds predictions of other settings or another model: delete them (the judge cache stays) "
            "instead of refusing"
        },
    )
    dtype: Dtype = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), bfloat16, float32"})
    device: Device = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "trackers for every metric, per benchmark and split (eval/<benchmark>/<split>/<metric>): none, "
            "tensorboard, wandb, trackio, or a list"
        },
    )
    tracking_step: int = field(
        default=0,
        metadata={
            "help": "the step the metrics are logged at in the trackers (e.g. the evaluated checkpoint's training step)"
        },
    )
    dist_timeout_minutes: float = field(
        default=360.0,
        metadata={"help": "torch.distributed timeout: the longest a rank waits at the barrier for the others"},
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.data, str):
            self.data = [d.strip() for d in self.data.split(",") if d.strip()]
        check_fields(
            self,
            choices={"view": VIEWS, "fmt": FORMATS, "icu_layers": ("mean", "last"), "dtype": DTYPES, "device": DEVICES},
            ranges={
                "batch_size": "[1, inf)",
                "limit": "[0, inf)",
                "frames": "[1, inf)",
                "max_new_tokens": "[1, inf)",
                "reasoning_max_new_tokens": "[1, inf)",
                "judge_concurrency": "[1, inf)",
                "dist_timeout_minutes": "(0, inf)",
                "tracking_step": "[0, inf)",
            },
        )
        check_report_to("report_to", self.report_to)
        if self.frames is not None:
            if self.nframes is not None and self.nframes != self.frames:
                raise ValueError(
                    f"frames ({self.frames}) and nframes ({self.nframes}) disagree: frames is the old "
                    f"name of nframes; give nframes only"
                )
            self.nframes, self.frames = self.frames, None

    def public(self) -> dict:
        """The config as written to disk (no API key)."""
        d = dataclasses.asdict(self)
        if d.get("judge_api_key"):
            d["judge_api_key"] = "***"
        return d


# ----------------------------------------------------------------------------------------------
# Distributed


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def init_distributed(timeout_minutes: float) -> bool:
    """Initialise the default process group when WORLD_SIZE > 1 (nccl on GPU, gloo on CPU).
    True when this call initialised it (and so should destroy it)."""
    import datetime

    import torch
    import torch.distributed as dist

    _, world, local = dist_info()
    if world <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


def barrier() -> None:
    import torch
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def shard(samples: list, rank: int, world: int) -> list:
    """This rank's deterministic share: every `world`-th sample from `rank`."""
    return samples[rank::world]


# ----------------------------------------------------------------------------------------------
# Prediction files


def read_predictions(folder: Path, fps: dict[str, str] | None = None) -> dict[str, dict]:
    """Every record of every `predictions.rank*.jsonl` in `folder`, by sample id. With `fps`
    (sample id -> `ego3s.identity.sample_fingerprint`), only records of those very samples count:
    a line of another sample with the same id (other data, an edited question, a replaced video)
    or of a sample no longer asked for is left out, and that sample is predicted again. A
    prediction wins over a `skipped` record of the same id; otherwise the first one read is kept."""
    out: dict[str, dict] = {}
    for path in sorted(folder.glob(PRED_GLOB)):
        for rec in read_log(path):
            sid = rec.get("id") if isinstance(rec, dict) else None
            if sid is None or (fps is not None and rec.get("fp") != fps.get(sid)):
                continue
            old = out.get(sid)
            if old is None or ("skipped" in old and "skipped" not in rec):
                out[sid] = rec
    return out


def is_done(rec: dict, retry_skipped: bool = False) -> bool:
    """Whether a prediction record needs no new attempt: a prediction, or a skip for a reason that
    cannot change by itself (a skip for a missing or unreadable file is tried again)."""
    if "skipped" not in rec:
        return True
    return not retry_skipped and rec["skipped"] not in RETRY_REASONS


def check_run(out: Path, key: dict, overwrite: bool = False) -> None:
    """Refuse to mix predictions of different settings or models in one folder; with `overwrite`
    delete them (and the results made from them; the judge cache, keyed by its own prompts, stays)."""
    path = out / "run.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        old = {}
    if "frames" in old and "nframes" not in old:  # written before EvalConfig.frames became nframes
        old["nframes"] = old.pop("frames")
    diff = [k for k in key if old.get(k, "<absent>") != key[k]]
    if not diff:
        return
    what = ", ".join(f"{k}: {old.get(k, '<absent>')!r} then, {key[k]!r} now" for k in diff)
    if not overwrite:
        raise ValueError(
            f"{out}: holds predictions made with other settings ({what}); choose another --out, or "
            f"pass --overwrite to delete them"
        )
    import shutil

    print(f"{out}: --overwrite: deleting predictions made with other settings ({what})", flush=True)
    for p in out.iterdir():
        if p.name in ("judge_cache.jsonl",) or p.name.startswith(".ego3s.lock"):
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ----------------------------------------------------------------------------------------------
# Samples -> inputs


class Skip(Exception):
    """A sample that cannot be evaluated; `reason` is the counter's key."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _skip_reason(sample: Sample, e: Exception) -> str:
    from ego3s.data.video import VideoError

    msg = str(e)
    kind = "video" if sample.video is not None else "image"
    if isinstance(e, VideoError):
        return f"missing_{kind}" if ("no such file" in msg or "not a regular file" in msg) else f"unreadable_{kind}"
    return "bad_sample"


def prepare(sample: Sample, bench, cfg: EvalConfig, scfg) -> tuple[list[dict], Any, Any]:
    """(messages, visual for `encode`, clip or None) of one sample under the configured view;
    raises `Skip`. The blind view with blind_mode='none' opens no file."""
    from ego3s.data.video import VideoError
    from ego3s.data.views import sample_view

    if cfg.view == "context" and (sample.interaction is None or not sample.interaction.boxes):
        raise Skip("no_interaction", f"sample {sample.id!r}: the context view needs interaction boxes")
    if cfg.view == "blind" and cfg.blind_mode == "none":
        kind, vis, clip = None, None, None
    else:
        try:
            if sample.video is not None:
                from ego3s.data.video import load_sample_clip

                clip = load_sample_clip(sample, **scfg.sampling_kwargs())
                kind, vis = sample_view(sample, cfg.view, scfg, clip)
                clip = vis if kind == "video" else None  # the clip the model sees (its frames, timestamps)
            else:
                kind, vis = sample_view(sample, cfg.view, scfg)
                clip = None
        except (VideoError, OSError, ValueError) as e:
            raise Skip(_skip_reason(sample, e), str(e)[:500]) from None
    msgs = bench.build_messages(sample, fmt=cfg.fmt, visual=kind, system=cfg.system)
    return msgs, vis, clip


def _annotated(sample: Sample) -> bool:
    return sample.interaction is not None and bool(sample.interaction.boxes) and not sample.meta.get("answer_hidden")


def answer_budget(sample: Sample, bench, cfg: EvalConfig) -> int:
    if cfg.max_new_tokens is not None:
        return int(cfg.max_new_tokens)
    if cfg.fmt == "reasoning":
        return int(cfg.reasoning_max_new_tokens)
    return int(bench.max_new_tokens(sample, cfg.fmt))


def length_key(sample: Sample, text_tokens: int, cfg: EvalConfig) -> tuple:
    """An estimate of the prompt length for bucketing (frames dominate, then text), without
    opening any file: the number of frames Qwen's sampler would take from the sample's window."""
    if cfg.view == "blind" and cfg.blind_mode == "none":
        return (0, 0, text_tokens)
    if sample.video is not None:
        if cfg.nframes is not None:
            frames = cfg.nframes
        else:
            lo = sample.start or 0.0
            hi = sample.end if sample.end is not None else sample.cutoff
            frames = cfg.max_frames if hi is None else min(cfg.max_frames, max(4, (hi - lo) * cfg.fps))
        return (2, frames, text_tokens)
    return (1 if sample.image is not None else 0, 0, text_tokens)


# ----------------------------------------------------------------------------------------------
# Generation


def _bench_folder(out: Path, bench) -> Path:
    return out / bench.name


def _load_benchmark(name: str, cfg: EvalConfig):
    from ego3s.eval.benchmarks import get_benchmark

    bench = get_benchmark(name)
    path = None
    for k, v in cfg.paths.items():
        if get_benchmark(k).name == bench.name:
            path = Path(v)
    if path is None:
        if cfg.root is None:
            raise ValueError(f"benchmark {name!r}: no path; give --root or --path {name}=PATH")
        path = bench.locate(cfg.root)
    opts = {}
    for k, v in cfg.options.items():
        if get_benchmark(k).name == bench.name:
            opts.update(v)
    samples = bench.load(path, **opts)
    if cfg.limit is not None:
        samples = samples[: cfg.limit]
    return bench, path, samples


def generate_shard(
    model,
    processor,
    bench,
    samples: list[Sample],
    cfg: EvalConfig,
    pred_path: Path,
    *,
    done: set[str],
    rank: int,
    on_batch: Callable[[int], None] | None = None,
    fps: dict[str, str] | None = None,
) -> dict:
    """Generate this rank's remaining samples of one benchmark; append each result to `pred_path`,
    with the sample's fingerprint (`fps`, computed here when not given) so that a later run
    serves it only for the same sample."""
    from tqdm.auto import tqdm

    from ego3s.eval.icu import attention_icu
    from ego3s.identity import sample_fingerprint
    from ego3s.models.generation import generate_batch
    from ego3s.models.inputs import encode

    scfg = cfg.clip_spec()
    todo = [s for s in samples if s.id not in done]
    fps = dict(fps or {})
    for s in todo:
        if s.id not in fps:
            fps[s.id] = sample_fingerprint(s, cfg.video_identity)
    tok = processor.tokenizer
    texts = [bench.question_text(s, cfg.fmt) for s in todo]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if todo else []
    order = sorted(
        range(len(todo)),
        key=lambda i: (answer_budget(todo[i], bench, cfg), length_key(todo[i], lengths[i], cfg), todo[i].id),
        reverse=True,
    )
    todo = [todo[i] for i in order]
    stats = Counter()
    bar = tqdm(
        total=len(todo),
        desc=f"[rank {rank}] {bench.name}",
        unit="sample",
        position=rank,
        leave=rank == 0,
        disable=not cfg.progress,
    )
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        ready = []
        for s in batch:
            t0 = time.perf_counter()
            try:
                msgs, vis, clip = prepare(s, bench, cfg, scfg)
            except Skip as e:
                append_jsonl(
                    pred_path, {"id": s.id, "fp": fps[s.id], "rank": rank, "skipped": e.reason, "error": str(e)}
                )
                stats[f"skipped_{e.reason}"] += 1
                continue
            ready.append((s, msgs, vis, clip, time.perf_counter() - t0))
        groups = [ready]
        while groups:
            group = groups.pop(0)
            if not group:
                continue
            try:
                enc = encode(processor, [m for _, m, _, _, _ in group], [v for _, _, v, _, _ in group])
            except ValueError as e:  # inputs the processor rejects: isolate the bad sample
                if len(group) > 1:
                    groups += [[g] for g in group]
                    continue
                s = group[0][0]
                append_jsonl(
                    pred_path,
                    {"id": s.id, "fp": fps[s.id], "rank": rank, "skipped": "bad_input", "error": str(e)[:500]},
                )
                stats["skipped_bad_input"] += 1
                continue
            answers, info = generate_batch(
                model, processor, enc, [answer_budget(s, bench, cfg) for s, *_ in group], static_cache=cfg.static_cache
            )
            for (s, msgs, _vis, clip, t_load), ids, n_prompt in zip(group, answers, info["prompt_tokens"]):
                output = tok.decode(ids, skip_special_tokens=True)
                rec = {
                    "id": s.id,
                    "fp": fps[s.id],
                    "rank": rank,
                    "output": output,
                    "extracted": bench.extract(s, output),
                    "prompt_tokens": int(n_prompt),
                    "new_tokens": len(ids),
                    "t_load": round(t_load, 4),
                    "t_generate": round(info["seconds"], 4),
                    "batch_size": info["batch_size"],
                }
                if cfg.icu and clip is not None and s.interaction is not None and s.interaction.boxes:
                    t1 = time.perf_counter()
                    try:
                        rec["icu_attention"] = attention_icu(
                            model, processor, msgs, clip, ids, s.interaction.boxes, layers=cfg.icu_layers
                        )
                    except (ValueError, RuntimeError) as e:
                        rec["icu_error"] = str(e)[:300]
                    rec["t_icu"] = round(time.perf_counter() - t1, 4)
                append_jsonl(pred_path, rec)
                stats["generated"] += 1
        stats["batches"] += 1
        bar.update(len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    bar.close()
    return dict(stats)


# ----------------------------------------------------------------------------------------------
# The runner


def run_eval(cfg: EvalConfig, model=None, processor=None, echo: Callable[[str], None] | None = None) -> dict:
    """Evaluate `cfg.model` on `cfg.data`; see the module docstring. Returns the results dict on
    rank 0 (also written to `cfg.out`), `{}` on the other ranks. `model`/`processor` may be given
    (already loaded; with `icu` a given model is switched to eager attention); `echo` prints the
    table and, with `verbose`, a few samples."""
    from ego3s.files import folder_lock
    from ego3s.identity import check_video_identity

    if not cfg.data:
        raise ValueError("no benchmarks given (data)")
    from ego3s.tracking import trainer_report_to

    trainer_report_to(cfg.report_to, "eval.report_to")  # an unknown tracker fails before generation
    check_video_identity(cfg.video_identity)
    with folder_lock(cfg.out, "ego3s eval"):  # rank 0 holds it; the ranks share the folder
        return _run_eval(cfg, model, processor, echo)


def _run_eval(cfg: EvalConfig, model, processor, echo) -> dict:
    from ego3s.identity import sample_fingerprint
    from ego3s.models.loading import load_model, model_fingerprint

    out = Path(cfg.out)
    rank, world, _ = dist_info()
    owned = init_distributed(cfg.dist_timeout_minutes)
    try:
        t_start = time.perf_counter()
        # all ranks load the annotations (cheap) and agree on the sample lists
        loaded, seen = [], set()
        for name in cfg.data:
            bench, path, samples = _load_benchmark(name, cfg)
            if bench.name not in seen:  # the same benchmark named twice runs once
                seen.add(bench.name)
                loaded.append((bench, path, samples))
        if model is None:
            if not cfg.model:
                raise ValueError("no model given (model: a local model folder)")
            model, processor = load_model(
                cfg.model, dtype=cfg.dtype, device=cfg.device, attn_implementation="eager" if cfg.icu else None
            )
        elif cfg.icu and getattr(model.config, "_attn_implementation", "eager") != "eager":
            model.set_attn_implementation("eager")
        fingerprint = model_fingerprint(cfg.model if cfg.model and Path(cfg.model).is_dir() else model)
        key = {"model_fingerprint": fingerprint, **{k: getattr(cfg, k) for k in RUN_KEYS}}
        if rank == 0:
            check_run(out, key, overwrite=cfg.overwrite)
        barrier()  # rank 0 may have cleared the folder
        check_run(out, key)  # every rank: refuses, as rank 0 did, where rank 0 refused
        out.mkdir(parents=True, exist_ok=True)
        if rank == 0 and not (out / "run.json").exists():
            write_json(out / "run.json", key)

        # generate this rank's shards
        gen_stats = {}
        reliance = cfg.icu and cfg.view == "full"
        ccfg = dataclasses.replace(cfg, view="context", icu=False)
        plans = []
        fps = {}  # benchmark -> {sample id: fingerprint}: a prediction counts only for its very sample
        for bench, path, samples in loaded:
            folder = _bench_folder(out, bench)
            folder.mkdir(parents=True, exist_ok=True)
            pred_path = folder / f"predictions.rank{rank}.jsonl"
            fps[bench.name] = {s.id: sample_fingerprint(s, cfg.video_identity) for s in samples}
            records = read_predictions(folder, fps[bench.name])
            done = {i for i, r in records.items() if is_done(r, cfg.retry_skipped)}
            plans.append((bench, path, samples, pred_path, done, cfg))
            if reliance:  # the context view of the annotated samples, for the counterfactual reliance
                cfolder = folder / CONTEXT_DIR
                cfolder.mkdir(parents=True, exist_ok=True)
                crecords = read_predictions(cfolder, fps[bench.name])
                cdone = {i for i, r in crecords.items() if is_done(r, cfg.retry_skipped)}
                plans.append(
                    (
                        bench,
                        path,
                        [s for s in samples if _annotated(s)],
                        cfolder / f"predictions.rank{rank}.jsonl",
                        cdone,
                        ccfg,
                    )
                )
        barrier()  # every rank has read the files before anyone appends to them
        for bench, _path, samples, pred_path, done, pcfg in plans:
            stats = generate_shard(
                model,
                processor,
                bench,
                shard(samples, rank, world),
                pcfg,
                pred_path,
                done=done,
                rank=rank,
                fps=fps[bench.name],
            )
            if pcfg is cfg:
                gen_stats[bench.name] = stats
            else:
                gen_stats[bench.name]["context_view"] = stats
        barrier()
        if rank != 0:
            return {}

        # rank 0: gather, score, report
        judge = None
        if cfg.judge_model and any(b.needs_judge for b, _, _ in loaded):
            from ego3s.judge import Judge

            judge = Judge(
                cfg.judge_model,
                base_url=cfg.judge_base_url,
                api_key=cfg.judge_api_key,
                cache=out / "judge_cache.jsonl",
                concurrency=cfg.judge_concurrency,
            )
        results = {
            "model": cfg.model,
            "model_fingerprint": fingerprint,
            "world_size": world,
            "config": cfg.public(),
            "benchmarks": {},
        }
        for bench, path, samples in loaded:
            folder = _bench_folder(out, bench)
            records = read_predictions(folder, fps[bench.name])
            crecords = read_predictions(folder / CONTEXT_DIR, fps[bench.name]) if reliance else None
            summary, rows = score_benchmark(bench, path, samples, records, cfg, judge=judge, context_records=crecords)
            summary["this_run"] = gen_stats.get(bench.name, {})
            summary["rank_files"] = sorted(p.name for p in folder.glob(PRED_GLOB))
            if "submission" in summary:
                write_json(folder / "submission.json", summary.pop("submission"))
            write_text(
                folder / "per_sample.jsonl",
                "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows),
            )
            results["benchmarks"][bench.name] = summary
            if cfg.verbose and echo is not None:
                echo(examples_text(bench, samples, records))
        results["seconds"] = round(time.perf_counter() - t_start, 3)
        if judge is not None:
            results["judge"] = judge.info()
        results["skips"] = skips.from_eval(results)
        write_json(out / "results.json", results)
        write_text(out / "results.md", results_markdown(results))
        write_text(out / "results.csv", results_csv(results))
        track_results(cfg, results)
        if echo is not None:
            echo(results_table(results))
        empty = [name for name, b in results["benchmarks"].items() if not b["n_scored"]]
        if empty:
            raise skips.nothing_produced(
                "eval", f"evaluated 0 samples of {', '.join(empty)} (results in {out / 'results.md'})", results["skips"]
            )
        return results
    finally:
        if owned:
            import torch.distributed as dist

            dist.destroy_process_group()
