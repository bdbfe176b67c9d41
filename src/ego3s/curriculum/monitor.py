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

MONITORING_UNITS = ("steps", "prompts")


@dataclass
class ECRConfig:
    ecr: bool = field(default=True, metadata={"help": "evolving curriculum recuration on/off"})
    lambda_s: float = field(
        default=0.6,
        metadata={"help": "stagnation when a window's mean reward variance / the reference window's < lambda_s"},
    )
    monitoring_interval: int = field(
        default=800,
        metadata={
            "help": "length of a monitoring window, in `monitoring_unit`s; the first comparison (and so the first "
            "possible refresh) comes after two windows. 800 prompts: the paper's 100 per-device generation "
            "steps on 8 GPUs at one prompt (8 completions) per device and step, a quarter of an epoch of "
            "3,180 samples (docs/training.md)"
        },
    )
    monitoring_unit: str = field(
        default="prompts",
        metadata={
            "help": "what monitoring_interval counts: prompts (prompts drawn into training batches over all "
            "devices, so the same on 1 or N GPUs) or steps (optimizer steps)"
        },
    )
    probing_set_size: int = field(default=500, metadata={"help": "samples re-scored with CSM at a refresh"})
    mastered_window: int = field(
        default=2, metadata={"help": "a sample is mastered when its last `mastered_window` groups were all correct"}
    )
    min_pool_size: int = field(
        default=8,
        metadata={
            "help": "never shrink the active pool below this: when retiring mastered samples and adding the newly "
            "high-value ones leaves fewer, the probe's closest CSM misses fill the gap (as selection's min_kept "
            "does), and mastered samples come back only when the probe has no misses left"
        },
    )

    def __post_init__(self):
        check_fields(
            self,
            choices={"monitoring_unit": MONITORING_UNITS},
            ranges={
                "lambda_s": "(0, inf)",
                "monitoring_interval": "[1, inf)",
                "probing_set_size": "[0, inf)",
                "mastered_window": "[1, inf)",
                "min_pool_size": "[0, inf)",
            },
        )


def group_stats(rewards: list[float], group_size: int) -> tuple[float, float]:
    """(mean within-group variance, share of zero-variance groups) of one step's rewards, laid
    out group after group as GRPO produces them. Population variance: a group of identical
    rewards gives exactly 0."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    variances = []
    for i in range(0, len(rewards), group_size):
        g = rewards[i : i + group_size]
        mu = sum(g) / len(g)
        variances.append(sum((x - mu) * (x - mu) for x in g) / len(g))  # overflows to inf, never raises
    n = len(variances)
    return (sum(variances) / n, sum(v <= 1e-12 for v in variances) / n) if n else (0.0, 0.0)


def new_state() -> dict:
    return {
        "step_variance": [],
        "current": [],
        "current_units": 0.0,
        "window_means": [],
        "reference": None,
        "events": [],
    }


def _ratio(window: float, reference: float, eps: float = 1e-12) -> float:
    if reference > eps:
        return window / reference
    return 0.0 if window <= eps else math.inf


def observe(state: dict, step: int, variance: float, cfg: ECRConfig, units: float = 1.0) -> dict | None:
    """Record one generation batch's mean group variance; `units` is how much of a window it fills
    (optimizer steps or prompts, per `cfg.monitoring_unit`). When the window is full, return a
    decision `{"step", "window_mean", "reference", "ratio", "stagnant"}`; otherwise None. The first
    complete window after the start or after a refresh becomes the reference."""
    if not math.isfinite(variance):
        variance = 0.0  # a NaN reward must not poison the curriculum; rewards are checked upstream
    state["step_variance"].append([step, variance])
    state["current"].append(variance)
    # states saved before windows were counted in units counted one unit per observation
    state["current_units"] = state.get("current_units", len(state["current"]) - 1) + units
    if state["current_units"] < cfg.monitoring_interval - 1e-9:
        return None
    mean = sum(state["current"]) / len(state["current"])
    state["current"], state["current_units"] = [], 0.0
    state["window_means"].append([step, mean])
    if state["reference"] is None:
        state["reference"] = mean
        return {"step": step, "window_mean": mean, "reference": mean, "ratio": 1.0, "stagnant": False}
    ratio = _ratio(mean, state["reference"])
    return {
        "step": step,
        "window_mean": mean,
        "reference": state["reference"],
        "ratio": ratio,
        "stagnant": ratio < cfg.lambda_s,
    }


def mark_refresh(state: dict, step: int, event: dict) -> None:
    """After a refresh, forget the reference: the next full window sets it again."""
    state["reference"] = None
    state["current"], state["current_units"] = [], 0.0
    state["events"].append({"step": step, **event})


def plan(cfg: ECRConfig, planned_steps: int, steps_per_batch: float = 1.0, prompts_per_batch: int = 1) -> dict:
    """What the schedule allows before training starts: replays the monitor's window arithmetic
    over the planned generation batches, as if every comparison found stagnation (the most
    refreshes there can be). A refresh needs two full windows (reference, then comparison) and
    only helps when a generation batch is drawn after it, so one at the last batch is not counted
    in `refreshes_possible`. `steps_per_batch`: optimizer steps per generation batch (TRL's
    steps_per_generation x num_iterations / gradient accumulation; 1 by default)."""
    units = steps_per_batch if cfg.monitoring_unit == "steps" else float(prompts_per_batch)
    batches = math.ceil(planned_steps / steps_per_batch - 1e-9) if planned_steps > 0 else 0
    acc, windows, refresh_steps, possible = 0.0, 0, [], 0
    for i in range(batches):
        acc += units
        if acc < cfg.monitoring_interval - 1e-9:
            continue
        acc, windows = 0.0, windows + 1
        if windows % 2 == 0:  # the comparison window of a pair: where a refresh can happen
            step = int(math.floor(i * steps_per_batch + 1e-9))  # global_step when batch i is generated
            refresh_steps.append(step)
            possible += i < batches - 1
    return {
        "planned_steps": planned_steps,
        "monitoring_interval": cfg.monitoring_interval,
        "monitoring_unit": cfg.monitoring_unit,
        "units_per_batch": units,
        "steps_per_batch": steps_per_batch,
        "generation_batches": batches,
        "windows": windows,
        "first_possible_refresh_step": refresh_steps[0] if refresh_steps else None,
        "refresh_steps_possible": refresh_steps,
        "refreshes_possible": possible,
    }


def plan_message(p: dict) -> str:
    """One line for the training log (a warning when no refresh can take effect)."""
    where = (
        f"first possible refresh at step {p['first_possible_refresh_step']}"
        if p["first_possible_refresh_step"] is not None
        else "no refresh possible"
    )
    head = (
        f"ECR schedule: {p['planned_steps']} planned optimizer steps, windows of {p['monitoring_interval']} "
        f"{p['monitoring_unit']} ({p['units_per_batch']:g} per generation batch), {p['windows']} full window(s); "
        f"{where}; at most {p['refreshes_possible']} refresh(es) that training can use"
    )
    if p["refreshes_possible"]:
        return head
    return (
        head + ". ECR cannot change this run: the first comparison needs two full windows and a refresh "
        "needs a generation batch after it; lower ecr.monitoring_interval or train longer"
    )
