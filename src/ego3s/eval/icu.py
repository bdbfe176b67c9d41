"""Interaction cue utilization (ICU): does the model use the hand-object interaction? Two forms.

Textual ICU (`textual_icu`): among the correct answers of samples that carry interaction
annotations, the share whose `<think>` names at least one annotated interaction object (name or
synonym, plural allowed; `ego3s.rewards.count_mentions`, the matcher of the interaction reward).
Only meaningful with the reasoning format: a direct answer has no `<think>`.

Attention ICU (`attention_icu`): one teacher-forced forward pass over prompt + generated answer
with eager attention and `output_attentions=True`. The attention rows used are those of the
positions at which the answer tokens were generated (the last prompt token and every answer token
but the last), averaged over heads and over all decoder layers (`layers="mean"`, the default) or
taken from the last layer (`layers="last"`), restricted to the columns of the video tokens. Each
video token is one merged 28x28 patch cell `(t, h, w)`: tokens run t-major, then rows, then
columns, over `video_grid_thw // (1, merge, merge)`. A temporal cell covers `temporal_patch_size`
(2) consecutive frames; its box mask is the union of the interaction boxes (all labels, hands
included, as the `context` view masks them) interpolated at each of those frames' timestamps
(`ego3s.data.views.boxes_at`), rasterised at pixel level (`box_to_pixels`). A cell's coverage
is the fraction of its pixels inside that mask. Then

    in_box = sum_rows sum_cells attn * coverage / sum_rows sum_cells attn     (attention form)
    area   = mean_cells coverage                                             (chance level)

A model that spreads its visual attention uniformly gets `in_box == area`; `in_box > area` means
it looks at the interaction more than its size warrants.

Counterfactual reliance (`counterfactual_reliance`): accuracy on the `full` view minus accuracy
on the `context` view (every interaction box masked) of the same annotated questions, paired per
question (`ego3s.eval.paired`). The reward never sees the context view, so unlike textual ICU a
model cannot score high on it by naming objects: it measures how much the answers depend on the
interaction pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ego3s.data.views import box_to_pixels, boxes_at

__all__ = [
    "cell_coverage",
    "attention_in_box",
    "attention_icu",
    "textual_icu",
    "named_interaction",
    "summarize_attention",
    "counterfactual_reliance",
    "reliance_scores",
]

LAYERS = ("mean", "last")


# ----------------------------------------------------------------------------------------------
# Textual form


def named_interaction(think: str, sample) -> bool | None:
    """Whether `think` names one of the sample's annotated interaction objects; None when the
    sample has no interaction objects."""
    from ego3s.rewards import count_mentions

    inter = getattr(sample, "interaction", None)
    if inter is None or not inter.objects:
        return None
    objects = [o.names() for o in inter.objects]
    m, _ = count_mentions(think or "", objects)
    return m > 0


def textual_icu(rows: Sequence[dict]) -> dict:
    """`rows`: one per sample with `correct` (bool) and `named` (bool, or None when the sample has
    no interaction annotation). Returns the share (%) of correct annotated answers that name an
    interaction object, with the counts."""
    annotated = [r for r in rows if r.get("named") is not None]
    correct = [r for r in annotated if r.get("correct")]
    named = sum(1 for r in correct if r["named"])
    return {
        "share": round(100.0 * named / len(correct), 2) if correct else None,
        "n_correct": len(correct),
        "n_named": named,
        "n_annotated": len(annotated),
        "named_all": round(100.0 * sum(bool(r["named"]) for r in annotated) / len(annotated), 2) if annotated else None,
    }


# ----------------------------------------------------------------------------------------------
# Attention form: geometry


def cell_coverage(
    grid_thw: Sequence[int],
    timestamps: Sequence[float],
    boxes,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> np.ndarray:
    """Fraction of each merged video cell inside the interaction boxes, flattened in token order
    (t, h, w): shape `(T * H/merge * W/merge,)`.

    `grid_thw`: the video's `(T, H, W)` in patches (as `video_grid_thw`); `timestamps`: the clip's
    frame times (seconds of the source video; frames beyond the last repeat it, as the processor
    pads); `boxes`: `TimedBox`es (normalised [x1, y1, x2, y2])."""
    t_cells, hp, wp = (int(x) for x in grid_thw)
    if hp % merge_size or wp % merge_size:
        raise ValueError(f"grid {list(grid_thw)} is not divisible by merge size {merge_size}")
    gh, gw = hp // merge_size, wp // merge_size
    cell = patch_size * merge_size
    height, width = hp * patch_size, wp * patch_size
    ts = [float(t) for t in timestamps]
    if not ts:
        raise ValueError("cell_coverage: no frame timestamps")
    out = np.zeros((t_cells, gh, gw), dtype=np.float64)
    for t in range(t_cells):
        mask = np.zeros((height, width), dtype=bool)
        for k in range(t * temporal_patch_size, (t + 1) * temporal_patch_size):
            stamp = ts[min(k, len(ts) - 1)]
            for _, box in boxes_at(boxes, stamp):
                y0, y1, x0, x1 = box_to_pixels(box, height, width)
                mask[y0:y1, x0:x1] = True
        out[t] = mask.reshape(gh, cell, gw, cell).mean(axis=(1, 3))
    return out.reshape(-1)


def attention_in_box(attn: np.ndarray, coverage: np.ndarray) -> dict:
    """`attn`: (rows, video tokens) attention of the answer rows to the video tokens (already
    averaged over heads/layers); `coverage`: (video tokens,) from `cell_coverage`. Returns the
    in-box share of the visual attention mass and the chance level (area share)."""
    attn = np.asarray(attn, dtype=np.float64)
    coverage = np.asarray(coverage, dtype=np.float64)
    if attn.ndim != 2 or attn.shape[1] != coverage.shape[0]:
        raise ValueError(f"attention {attn.shape} does not match {coverage.shape[0]} video cells")
    total = float(attn.sum())
    in_box = float((attn * coverage[None]).sum()) / total if total > 0 else None
    return {
        "in_box": in_box,
        "area": float(coverage.mean()) if coverage.size else None,
        "cells": int(coverage.size),
        "rows": int(attn.shape[0]),
    }


# ----------------------------------------------------------------------------------------------
# Attention form: the forward pass


def attention_icu(
    model, processor, messages: list[dict], clip, answer_ids: Sequence[int], boxes, *, layers: str = "mean"
) -> dict | None:
    """Attention ICU of one sample: `messages` and `clip` as generated from, `answer_ids` the
    generated answer tokens (without the end-of-turn token), `boxes` the interaction's
    `TimedBox`es. The model must use eager attention. None when there is no answer or no video."""
    import torch

    from ego3s.models.inputs import encode

    if layers not in LAYERS:
        raise ValueError(f"layers must be one of {LAYERS}, got {layers!r}")
    answer_ids = [int(i) for i in answer_ids]
    if not answer_ids or clip is None or not boxes:
        return None
    enc = encode(processor, [messages], [clip])
    if "video_grid_thw" not in enc:
        return None
    prompt_len = enc["input_ids"].shape[1]
    extra = torch.tensor([answer_ids], dtype=torch.long)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in enc:
            fill = (
                extra
                if key == "input_ids"
                else torch.ones_like(extra)
                if key == "attention_mask"
                else torch.zeros_like(extra)
            )
            enc[key] = torch.cat([enc[key], fill], dim=1)
    video_pos = (enc["input_ids"][0] == model.config.video_token_id).nonzero().flatten()
    vp = getattr(processor, "video_processor", None)
    merge = int(getattr(vp, "merge_size", 2) or 2)
    patch = int(getattr(vp, "patch_size", 14) or 14)
    tps = int(getattr(vp, "temporal_patch_size", 2) or 2)
    grid = enc["video_grid_thw"][0].tolist()
    coverage = cell_coverage(grid, clip.timestamps, boxes, patch_size=patch, merge_size=merge, temporal_patch_size=tps)
    if len(video_pos) != len(coverage):
        raise ValueError(f"{len(video_pos)} video tokens but {len(coverage)} cells for grid {grid}")
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in (None, "eager"):
        raise ValueError(
            f"attention ICU needs eager attention (the model uses {impl!r}); load it with attn_implementation='eager'"
        )
    rows = torch.arange(prompt_len - 1, prompt_len - 1 + len(answer_ids))
    with torch.inference_mode():
        out = model(**enc.to(model.device), output_attentions=True, use_cache=False)
    atts = out.attentions
    if not atts or atts[0] is None:
        raise ValueError("the model returned no attention weights (eager attention needed)")
    picked = atts if layers == "mean" else atts[-1:]
    acc = None
    full = None
    vid = video_pos.to(picked[0].device)
    r = rows.to(picked[0].device)
    for a in picked:  # (1, heads, L, L)
        sub = a[0][:, r].float().mean(0)  # (rows, L)
        acc = sub[:, vid] if acc is None else acc + sub[:, vid]
        full = sub.sum(-1) if full is None else full + sub.sum(-1)
    acc = (acc / len(picked)).cpu().numpy()
    res = attention_in_box(acc, coverage)
    res["visual_mass"] = float(acc.sum() / (full / len(picked)).sum().item())  # share of all attention on video
    res["layers"] = layers
    return res


def summarize_attention(values: Sequence[dict | None]) -> dict:
    """Means (%) over samples of the per-sample `in_box` and `area`, and their ratio."""
    vals = [v for v in values if v and v.get("in_box") is not None]
    if not vals:
        return {"n": 0, "in_box": None, "area": None, "ratio": None}
    in_box = float(np.mean([v["in_box"] for v in vals]))
    area = float(np.mean([v["area"] for v in vals]))
    return {
        "n": len(vals),
        "in_box": round(100 * in_box, 2),
        "area": round(100 * area, 2),
        "ratio": round(in_box / area, 3) if area > 0 else None,
        "visual_mass": round(100 * float(np.mean([v.get("visual_mass", 0.0) for v in vals])), 2),
    }


# ----------------------------------------------------------------------------------------------
# Counterfactual reliance


def reliance_scores(sample, extracted) -> dict:
    """The per-question scores that reliance pairs: `correct` (0/1: closed, extracted letter =
    gold; open, normalised exact match) and, for open questions, the graded `rouge_l` (stemmed
    ROUGE-L F, `ego3s.answers`)."""
    from ego3s.answers import exact_match, rouge_l_f

    if sample.task == "closeqa":
        return {"correct": float(extracted == sample.answer)}
    p = extracted or ""
    return {"correct": float(exact_match(p, sample.answer) >= 1.0), "rouge_l": float(rouge_l_f(p, sample.answer))}


def counterfactual_reliance(samples, full: dict, context: dict) -> dict:
    """Full-view minus context-view accuracy of the same questions, per split.

    `samples`: the benchmark's samples; `full` / `context`: `{id: reliance_scores(...)}` of each
    view's scored predictions. A question counts when it has interaction boxes and a score in both
    views; the others are excluded and counted by reason (`no_interaction`, `hidden_answer`,
    `no_full`: no full-view prediction (skipped or missing), `no_context`: the context view was
    skipped or not yet predicted). Splits: `all`, then each `meta.split` value. Each split holds
    `value` (percentage points), `ci95`, `n`, `full`, `context` (accuracies, %), `n_full_only`,
    `n_context_only` and `mcnemar_p` (exact), and `by_task` (the same per closeqa/openqa; open
    also `rouge_l`, the paired difference of ROUGE-L F)."""
    from collections import Counter

    from ego3s.eval.paired import INTERVAL, paired_difference

    excluded: Counter = Counter()
    kept = []
    for s in samples:
        if s.interaction is None or not s.interaction.boxes:
            excluded["no_interaction"] += 1
        elif s.meta.get("answer_hidden"):
            excluded["hidden_answer"] += 1
        elif s.id not in full:
            excluded["no_full"] += 1
        elif s.id not in context:
            excluded["no_context"] += 1
        else:
            kept.append(s)

    def diff(group, key="correct") -> dict:
        r = paired_difference([full[s.id][key] for s in group], [context[s.id][key] for s in group])
        out = {"value": r["value"], "ci95": r["ci95"], "n": r["n"], "full": r["a"], "context": r["b"]}
        if "mcnemar_p" in r:
            out.update(n_full_only=r["n_a_only"], n_context_only=r["n_b_only"], mcnemar_p=r["mcnemar_p"])
        return out

    def split_entry(group) -> dict:
        e = diff(group)
        by_task = {}
        for task in ("closeqa", "openqa"):
            sub = [s for s in group if s.task == task]
            if sub:
                by_task[task] = diff(sub)
                if task == "openqa":
                    by_task[task]["rouge_l"] = diff(sub, "rouge_l")
        e["by_task"] = by_task
        return e

    splits = {"all": split_entry(kept)}
    names = sorted({str(s.meta["split"]) for s in kept if s.meta.get("split") is not None})
    for name in names:
        splits[name] = split_entry([s for s in kept if str(s.meta.get("split")) == name])
    return {
        "metric": "accuracy (%): closed, extracted letter = gold; open, normalised exact match",
        "difference": "full view minus context view (interaction boxes masked), percentage points",
        "interval": INTERVAL,
        "splits": splits,
        "n_paired": len(kept),
        "excluded": dict(sorted(excluded.items())),
        "n_excluded": sum(excluded.values()),
    }
