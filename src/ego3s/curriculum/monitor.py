"""Reward-variance monitor of evolving curriculum recuration (ECR).

GRPO learns only from groups whose rewards differ. When the mean within-group reward variance
falls well below what it was right after the last refresh, the active pool is mastered (or
hopeless) and should be refreshed. Plain functions over a JSON-serialisable state, so the state
goes into every checkpoint and a resumed run continues the same curriculum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ego3s.config import check_fields


@dataclass
class ECRConfig:
    ecr: bool = field(default=True, metadata={"help": "evolving curriculum recuration on/off"})
    lambda_s: float = field(default=0.6, metadata={
        "help": "stagnation when a window's mean reward variance / the reference window's < lambda_s"})
    monitoring_interval: int = field(default=100, metadata={"help": "steps per monitoring window"})
    probing_set_size: int = field(default=500, metadata={"help": "samples re-scored with CSM at a refresh"})
    mastered_window: int = field(default=2, metadata={
        "help": "a sample is mastered when its last `mastered_window` groups were all correct"})
    min_pool_size: int = field(default=8, metadata={"help": "never shrink the active pool below this"})

    def __post_init__(self):
        check_fields(self, ranges={"lambda_s": "(0, inf)", "monitoring_interval": "[1, inf)",
                                   "probing_set_size": "[0, inf)", "mastered_window": "[1, inf)",
                                   "min_pool_size": "[0, inf)"})


def group_stats(rewards: list[float], group_size: int) -> tuple[float, float]:
    """(mean within-group variance, share of zero-variance groups) of one step's rewards, laid
    out group after group as GRPO produces them. Population variance: a group of identical
    rewards gives exactly 0."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    variances = []
    for i in range(0, len(rewards), group_size):
        g = rewards[i:i + group_size]
        mu = sum(g) / len(g)
        variances.append(sum((x - mu) * (x - mu) for x in g) / len(g))  # overflows to inf, never raises
    n = len(variances)
    return (sum(variances) / n, sum(v <= 1e-12 for v in variances) / n) if n else (0.0, 0.0)


def new_state() -> dict:
    return {"step_variance": [], "current": [], "window_means": [], "reference": None, "events": []}


def _ratio(window: float, reference: float, eps: float = 1e-12) -> float:
    if reference > eps:
        return window / reference
    return 0.0 if window <= eps else math.inf


def observe(state: dict, step: int, variance: float, cfg: ECRConfig) -> dict | None:
    """Record one step's mean group variance. At the end of each window, return a decision
    `{"step", "window_mean", "reference", "ratio", "stagnant"}`; otherwise None. The first
    complete window after the start or after a refresh becomes the reference."""
    if not math.isfinite(variance):
        variance = 0.0  # a NaN reward must not poison the curriculum; rewards are checked upstream
    state["step_variance"].append([step, variance])
    state["current"].append(variance)
    if len(state["current"]) < cfg.monitoring_interval:
        return None
    mean = sum(state["current"]) / len(state["current"])
    state["current"] = []
    state["window_means"].append([step, mean])
    if state["reference"] is None:
        state["reference"] = mean
        return {"step": step, "window_mean": mean, "reference": mean, "ratio": 1.0, "stagnant": False}
    ratio = _ratio(mean, state["reference"])
    return {"step": step, "window_mean": mean, "reference": state["reference"], "ratio": ratio,
            "stagnant": ratio < cfg.lambda_s}


def mark_refresh(state: dict, step: int, event: dict) -> None:
    """After a refresh, forget the reference: the next full window sets it again."""
    state["reference"] = None
    state["current"] = []
    state["events"].append({"step": step, **event})
