"""Selection baselines, adapted to video QA (see docs/selection.md for each adaptation).

Each function takes what its method needs (precomputed by the scorer or read from a training
log) and returns the selected ids in rank order. Budgets are respected exactly when enough
candidates exist; ties are broken by a seeded shuffle so results are deterministic by seed.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable


def _seeded_order(ids: list[str], seed: int) -> list[str]:
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    return ids


def select_random(ids: list[str], budget: int, seed: int = 0) -> list[str]:
    return _seeded_order(ids, seed)[: max(0, budget)]


def select_full(ids: list[str]) -> list[str]:
    return list(ids)


def s1_stats(
    samples: list, greedy: dict[str, str], correct: Callable[[list[str], dict], list[float]]
) -> tuple[dict[str, bool], dict[str, float]]:
    """s1's difficulty and length signals from one greedy rollout per sample (RL prompt, full view):
    solved = the greedy answer is correct (`correct(completions, columns) -> 0/1`, the training's
    correctness rule); length = words of its reasoning (the `<think>` part, else the whole text)."""
    from ego3s.answers import extract_think

    solved, length = {}, {}
    for s in samples:
        if s.id not in greedy:
            continue
        text = greedy[s.id]
        cols = {"task": [s.task], "answer": [s.answer], "options": [s.options]}
        solved[s.id] = bool(correct([text], cols)[0] >= 1.0)
        length[s.id] = float(len((extract_think(text) or text).split()))
    return solved, length


def select_s1(
    samples: list,
    solved: dict[str, bool],
    reasoning_len: dict[str, float],
    budget: int,
    seed: int = 0,
    min_question_words: int = 3,
    category_field: str = "template",
) -> list[str]:
    """s1's three stages (simplescaling/s1, data/filter.ipynb). Quality: drop samples with a too-short
    question, an empty answer or no greedy answer (unreadable video). Difficulty: drop what the base
    model answers correctly. Diversity, one pick at a time until the budget: a category drawn
    uniformly among those with samples left (`meta[category_field]`, else the question's first two
    words), then a sample of it drawn with weight 2^-rank, rank 0 being the longest reasoning (ties
    by id), as s1 does with its traces' lengths."""
    pool = [
        s for s in samples if len(s.question.split()) >= min_question_words and s.answer_text.strip() and s.id in solved
    ]
    pool = [s for s in pool if not solved[s.id]]
    by_cat: dict[str, list] = defaultdict(list)
    for s in pool:
        by_cat[str(s.meta.get(category_field) or " ".join(s.question.lower().split()[:2]))].append(s)
    queues = {c: sorted(v, key=lambda s: (-reasoning_len.get(s.id, 0.0), s.id)) for c, v in by_cat.items()}
    cats = sorted(queues)
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < budget and cats:
        c = cats[rng.randrange(len(cats))]
        q = queues[c]
        i = rng.choices(range(len(q)), weights=[2.0**-r for r in range(len(q))])[0]
        out.append(q.pop(i).id)
        if not q:
            cats.remove(c)
    return out


def select_limo(
    pass_counts: dict[str, int], quality: dict[str, float], budget: int, band: tuple[int, int] = (1, 3), seed: int = 0
) -> list[str]:
    """LIMO: keep samples the model solves in `band` (inclusive) of its K samples, i.e. hard but
    solvable, then rank by the quality of their correct reasoning (higher first)."""
    lo, hi = band
    pool = [i for i, c in pass_counts.items() if lo <= c <= hi]
    order = {sid: i for i, sid in enumerate(_seeded_order(pool, seed))}
    pool.sort(key=lambda i: (-quality.get(i, 0.0), order[i]))
    return pool[: max(0, budget)]


def learning_impact(trajectories: dict[str, dict[int, float]]) -> dict[str, float | None]:
    """LIMR's learning-impact score per sample:
    ``1 - sum_k (r_ik - rbar_k)^2 / sum_k (1 - rbar_k)^2``, where `r_ik` is sample i's mean
    reward (scaled to [0, 1]) in epoch k and `rbar_k` the mean over samples in epoch k. Epochs in
    which a sample was not drawn are left out of both sums; a sample never drawn scores None."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for traj in trajectories.values():
        for k, r in traj.items():
            per_epoch[k].append(r)
    rbar = {k: sum(v) / len(v) for k, v in per_epoch.items()}
    out: dict[str, float | None] = {}
    for sid, traj in trajectories.items():
        if not traj:
            out[sid] = None
            continue
        num = sum((r - rbar[k]) ** 2 for k, r in traj.items())
        den = sum((1 - rbar[k]) ** 2 for k in traj)
        out[sid] = 1.0 - num / den if den > 0 else (1.0 if num == 0 else -math.inf)
    return out


def trajectories_from_log(
    records: list[dict], steps_per_epoch: int | None = None, reward_key: str = "accuracy", reward_max: float = 1.0
) -> dict[str, dict[int, float]]:
    """Per-sample, per-epoch mean reward from the training reward log (see docs/training.md):
    lines ``{"step", "epoch", "sample_id", "rewards": {component: [group values]}}``."""
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        epoch = int(rec["epoch"]) if steps_per_epoch is None else int(rec["step"]) // steps_per_epoch
        vals = rec["rewards"][reward_key] if isinstance(rec["rewards"], dict) else rec["rewards"]
        vals = [v for v in vals if v is not None and math.isfinite(v)]
        if vals:
            sums[rec["sample_id"]][epoch].append(sum(vals) / len(vals) / reward_max)
    return {sid: {k: sum(v) / len(v) for k, v in ep.items()} for sid, ep in sums.items()}


def limr_coverage(trajectories: dict[str, dict[int, float]], ids: list[str], min_epochs: int) -> dict:
    """What a reward log gives LIMR over the candidates `ids`: the epochs it spans, how many
    candidates it saw at all, and how many it saw in at least `min_epochs` epochs (a trajectory)."""
    epochs = sorted({k for t in trajectories.values() for k in t})
    seen = [i for i in ids if trajectories.get(i)]
    covered = [i for i in ids if len(trajectories.get(i) or {}) >= min_epochs]
    return {
        "epochs": len(epochs),
        "candidates": len(ids),
        "seen": len(seen),
        "covered": len(covered),
        "coverage": len(covered) / len(ids) if ids else 0.0,
        "min_epochs": min_epochs,
    }


def check_limr_log(cov: dict, log: str, min_coverage: float) -> None:
    """Refuse a log that cannot give LIMR trajectories: too few epochs, or too few candidates
    drawn in enough epochs (LIMR would rank noise and ties)."""
    if cov["epochs"] >= cov["min_epochs"] and cov["coverage"] >= min_coverage:
        return
    raise ValueError(
        f"{log}: too little training for LIMR, which scores each sample's reward trajectory over epochs. "
        f"The log spans {cov['epochs']} epoch(s) and saw {cov['seen']} of the {cov['candidates']} candidates; "
        f"{cov['covered']} ({cov['coverage']:.1%}) were drawn in at least {cov['min_epochs']} epochs, and LIMR "
        f"needs {min_coverage:.0%} (selection keys limr_min_epochs={cov['min_epochs']}, "
        f"limr_min_coverage={min_coverage}). Train the full-data run for at least {cov['min_epochs']} epochs "
        f"over the whole pool."
    )


def tie_groups(scores: dict[str, float | None], digits: int = 12) -> list[list[str]]:
    """Groups of samples sharing a finite score (rounded to `digits`). LIMR breaks ties by a seeded
    shuffle, so many ties mean a selection made by the seed rather than by the score."""
    by: dict[float, list[str]] = defaultdict(list)
    for i, v in scores.items():
        if v is not None and math.isfinite(v):
            by[round(v, digits)].append(i)
    return [g for g in by.values() if len(g) > 1]


def select_limr(impact: dict[str, float | None], budget: int, seed: int = 0) -> list[str]:
    pool = [i for i, v in impact.items() if v is not None and math.isfinite(v)]
    order = {sid: i for i, sid in enumerate(_seeded_order(pool, seed))}
    pool.sort(key=lambda i: (-impact[i], order[i]))
    return pool[: max(0, budget)]
