"""Per-view scores `s_v`: the model's expected correctness under the full, blind and context views.

Two estimators (see docs/selection.md):
- `likelihood`: one teacher-forced forward pass per (sample, view). Closed QA: p(gold letter)
  renormalised over the option letters, or, for a model taught to answer with the option's text
  (`closed_answer_of`), p(gold text) renormalised over the options' texts (a pass per option);
  open QA: geometric-mean token probability of the answer.
- `sampling`: K rollouts with the RL prompt, mean accuracy reward.

Scores go to a `ScoreCache` as they are computed, so a killed run resumes where it stopped. A
sample whose video cannot be read gets `score: None` with the error, is counted, and is never
fatal; the next run tries it again (the file may be back).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ego3s.config import ConfigError, check_fields
from ego3s.data.schema import LETTERS, Sample
from ego3s.data.video import VIEWS, ClipSpec, VideoError, load_sample_clip
from ego3s.data.views import sample_view
from ego3s.models.prompts import build_messages, target_text
from ego3s.select.cache import ScoreCache

ESTIMATORS = ("likelihood", "sampling")


@dataclass
class ScoringConfig(ClipSpec):
    estimator: str = field(
        default="likelihood", metadata={"help": "likelihood (teacher-forced) or sampling (K rollouts)"}
    )
    views: list[str] = field(default_factory=lambda: list(VIEWS), metadata={"help": "views to score"})
    batch_size: int = field(default=8, metadata={"help": "samples per forward pass (likelihood)"})
    num_samples: int = field(default=8, metadata={"help": "K rollouts per view (sampling)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (sampling)"})
    greedy: bool = field(
        default=False,
        metadata={"help": "sampling: decode greedily instead (one rollout per view; s1's base-model answer)"},
    )
    max_new_tokens: int = field(default=256, metadata={"help": "completion length cap (sampling)"})
    static_cache: bool = field(
        default=False,
        metadata={
            "help": "sampling: decode the K rollouts against a compiled static KV cache (ego3s.models.generation; on a "
            "GPU the first batch pays the compilation)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_fields(
            self,
            choices={"estimator": ESTIMATORS, "views": VIEWS},
            ranges={
                "batch_size": "[1, inf)",
                "num_samples": "[1, inf)",
                "temperature": "(0, inf)",
                "max_new_tokens": "[1, inf)",
            },
        )
        if not self.views or len(set(self.views)) != len(self.views):
            raise ConfigError(f"views: {self.views!r} must name at least one view, each once (of {', '.join(VIEWS)})")


def letter_token_ids(tokenizer, n: int) -> list[int]:
    ids = []
    for letter in LETTERS[:n]:
        tok = tokenizer.encode(letter, add_special_tokens=False)
        if len(tok) != 1:
            raise ValueError(f"option letter {letter!r} is not a single token for this tokenizer ({tok})")
        ids.append(tok[0])
    return ids


# no_grad, not inference_mode: ECR scores with the live policy, and under DeepSpeed ZeRO-3 the
# parameters gathered here would become inference tensors that the next backward cannot use
def _no_grad(fn):
    """`torch.no_grad()` entered at call time: importing this module (configs, `--help`) stays free of torch."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return run


def closed_answer_of(model) -> str:
    """How `model` answers closed questions: `letter` (every pretrained LVLM), or what its warm-up
    taught it (`WarmupConfig.closed_answer`, recorded in its config as `ego3s_closed_answer`)."""
    return str(getattr(getattr(model, "config", None), "ego3s_closed_answer", None) or "letter")


@_no_grad
def likelihood_batch(model, processor, items: list[tuple[Sample, list, object]]) -> list[float]:
    """Scores of one batch of (sample, messages, visual) under the likelihood estimator.

    Closed QA, a model that answers with letters: p(gold letter) at the first answer token,
    renormalised over the option letters. A model taught to answer with the option's text: the
    probability of the gold option's whole text, renormalised over the options' texts (one
    teacher-forced row per option), the same "which option does it commit to" read off what it
    says. Open QA: the geometric-mean token probability of the reference."""
    import torch

    from ego3s.models.inputs import encode

    texts = closed_answer_of(model) == "text"
    rows: list[tuple[int, list, object, str]] = []  # (item index, messages, visual, teacher-forced answer)
    for k, (s, m, v) in enumerate(items):
        if texts and s.task == "closeqa":
            rows += [(k, m, v, o.strip()) for o in s.options or []]
        else:
            rows.append((k, m, v, target_text(s, fmt="direct")))
    enc = encode(processor, [r[1] for r in rows], [r[2] for r in rows], answers=[r[3] for r in rows])
    labels = enc.pop("labels")
    keep = int((labels != -100).sum(1).max()) + 1
    enc = enc.to(model.device)
    out = model(**enc, logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, -keep:].float()  # position j predicts token j+1
    labels = labels[:, -keep:].to(logits.device)
    first: list[torch.Tensor] = []  # per row: the first answer token's logits
    logps: list[torch.Tensor] = []  # per row: the answer tokens' log-probabilities
    for i in range(len(rows)):
        pos = (labels[i] != -100).nonzero().flatten()
        first.append(logits[i, pos[0] - 1])
        logps.append(torch.log_softmax(logits[i, pos - 1], -1).gather(1, labels[i, pos][:, None]).squeeze(1))
    scores = []
    for k, (s, _, _) in enumerate(items):
        mine = [i for i, r in enumerate(rows) if r[0] == k]
        if s.task != "closeqa":
            scores.append(float(logps[mine[0]].mean().exp()))
        elif texts:
            seq = torch.stack([logps[i].sum() for i in mine])  # log p(option text), per option
            scores.append(float(torch.softmax(seq, -1)[s.answer_index]))
        else:
            ids = letter_token_ids(processor.tokenizer, len(s.options))
            scores.append(float(torch.softmax(first[mine[0]][ids], -1)[s.answer_index]))
    return scores


@_no_grad  # see likelihood_batch
def sampling_batch(
    model, processor, items: list[tuple[Sample, list, object]], cfg: ScoringConfig, reward: Callable | None = None
) -> list[tuple[float, list[str]]]:
    """(mean accuracy reward over K rollouts, the rollouts) for each item."""
    from ego3s.models import generation
    from ego3s.models.inputs import encode, vision_token_ids
    from ego3s.rewards import accuracy_reward

    reward = reward or accuracy_reward
    enc = encode(processor, [m for _, m, _ in items], [v for _, _, v in items]).to(model.device)
    k = cfg.num_samples
    sample = (
        dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        if cfg.greedy
        else dict(do_sample=True, temperature=cfg.temperature, top_p=1.0, top_k=0)
    )
    kw = dict(
        **sample,
        max_new_tokens=cfg.max_new_tokens,
        pad_token_id=processor.tokenizer.pad_token_id,
        suppress_tokens=vision_token_ids(processor.tokenizer),
    )
    if k > 1 and generation.supported(model):  # one vision encoding and prefill per sample, not K
        out = generation.group_generate(model, dict(enc), k, static_cache=cfg.static_cache, **kw)
    else:
        out = model.generate(**enc, num_return_sequences=k, **kw)
    texts = processor.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    results = []
    for i, (s, _, _) in enumerate(items):
        comps = texts[i * k : (i + 1) * k]
        r = reward(comps, task=[s.task] * k, answer=[s.answer] * k, options=[s.options] * k)
        r = [x for x in r if x is not None and math.isfinite(x)]
        results.append((sum(r) / len(r) if r else 0.0, comps))
    return results


def score_all(
    model,
    processor,
    samples: list[Sample],
    cfg: ScoringConfig,
    cache: ScoreCache,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Fill `cache` with a score for every (sample, view); return counts for the report.

    Samples are processed in batches ordered by prompt length (padding-aware), all views of a
    sample from one decode. Finished (sample, view) pairs already in the cache are skipped."""
    from tqdm.auto import tqdm

    fmt = "direct" if cfg.estimator == "likelihood" else "reasoning"
    todo = [s for s in samples if not all(cache.done(s, v) for v in cfg.views)]
    # padding-aware batching: similar prompt lengths together (frames dominate the length)
    todo.sort(key=lambda s: ((s.end or 0) - (s.start or 0), len(s.question) + len(s.answer_text)))
    stats = {"scored": 0, "skipped_unreadable": 0, "cached": len(samples) - len(todo)}
    bar = tqdm(total=len(todo), desc=f"scoring ({cfg.estimator})", unit="sample", disable=not progress)
    t0 = time.perf_counter()
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        per_view: dict[str, list] = {v: [] for v in cfg.views}
        for s in batch:
            try:
                clip = load_sample_clip(s, **cfg.sampling_kwargs()) if s.video is not None else None
                ready = {}
                for v in cfg.views:
                    if not cache.done(s, v):
                        kind, vis = sample_view(s, v, cfg, clip)
                        ready[v] = (s, build_messages(s, fmt=fmt, visual=kind), vis)
            except (VideoError, OSError, ValueError) as e:
                stats["skipped_unreadable"] += 1
                for v in cfg.views:
                    cache.put(s, v, None, error=str(e)[:500])
                continue
            for v, item in ready.items():
                per_view[v].append(item)
        for v, items in per_view.items():
            if not items:
                continue
            if cfg.estimator == "likelihood":
                for (s, _, _), sc in zip(items, likelihood_batch(model, processor, items)):
                    cache.put(s, v, sc)
            elif cfg.estimator == "sampling":
                for (s, _, _), (sc, comps) in zip(items, sampling_batch(model, processor, items, cfg)):
                    cache.put(s, v, sc, completions=comps)
            else:
                raise ValueError(f"unknown estimator {cfg.estimator!r}; use likelihood or sampling")
        stats["scored"] += len(batch)
        bar.update(len(batch))
        bar.set_postfix(samples_per_s=f"{stats['scored'] / (time.perf_counter() - t0):.2f}")
        if on_batch is not None:
            on_batch(stats["scored"])
    bar.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats


def score_table(samples: Iterable[Sample], cache: ScoreCache, views: Iterable[str] = VIEWS) -> list[dict]:
    """One row per sample: `s_full`, `s_blind`, `s_context` (None where missing) and any error."""
    rows = []
    for s in samples:
        r = {"id": s.id}
        for v in views:
            rec = cache.get(s, v)
            r[f"s_{v}"] = rec["score"] if rec else None
            if rec and rec.get("error"):
                r["error"] = rec["error"]
        rows.append(r)
    return rows
