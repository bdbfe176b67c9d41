"""Experiment tracking: `report_to` as transformers and TRL read it, and one tracker for the stages
that have no Trainer (selection, evaluation).

    names = report_to_list(cfg.report_to)       # "tensorboard" / "tensorboard,wandb" / [...] -> list
    with open_tracker(names, out, run_name="select", config=cfg) as t:
        t.scalars({"select/funnel/kept": 120}, step=0)
        t.histogram("select/score/s_visual", values, step=0)

Training, SFT and the warm-up pass the list to transformers (`TrainingArguments.report_to`), whose
callbacks log TRL's metrics under `train/...`; ego3s's own training metrics (reward parts, ECR)
go through TRL's metric buffer and so reach the same trackers. Selection and evaluation open the
trackers here: TensorBoard through `torch.utils.tensorboard.SummaryWriter` in
`<out>/runs/<time>_<host>` (as transformers; `TENSORBOARD_LOGGING_DIR` overrides), W&B and trackio
only when installed (offline modes: `WANDB_MODE=offline`; trackio logs to a local database unless
given a Space). Tag names are stable; see docs/training.md and docs/evaluation.md.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

REPORTERS = ("tensorboard", "wandb", "trackio")
# the Python package each tracker needs (tensorboard: SummaryWriter's event-file writer)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def report_to_list(value: str | Sequence[str] | None, where: str = "report_to") -> list[str]:
    """`report_to` as a list of tracker names. Accepts a string (one name, or several separated by
    commas), a list, None; "none" (alone) means no tracker, as in transformers. Unknown names and
    "none" mixed with trackers are errors; duplicates are dropped."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v).strip() for v in value]
    items = [v.lower() for v in items if v]
    if items == ["none"] or not items:
        return []
    if "none" in items:
        raise ValueError(f"{where}: 'none' cannot be combined with trackers ({items})")
    unknown = [v for v in items if v not in REPORTERS]
    if unknown:
        raise ValueError(f"{where}: unknown tracker(s) {unknown}; one or more of {list(REPORTERS)}, or 'none'")
    return list(dict.fromkeys(items))


def check_installed(names: Iterable[str], where: str = "report_to") -> None:
    """Fail early, naming the missing package, when a requested tracker is not installed."""
    for n in names:
        pkg = PACKAGES[n]
        if importlib.util.find_spec(pkg) is None:
            hint = " (offline: WANDB_MODE=offline)" if n == "wandb" else ""
            raise ModuleNotFoundError(
                f"{where}: {n!r} needs the Python package {pkg!r}, which is not installed: pip install {pkg}{hint}"
            )


def trainer_report_to(value, where: str = "report_to") -> list[str]:
    """The list for `TrainingArguments.report_to`, checked (names and installed packages)."""
    names = report_to_list(value, where)
    check_installed(names, where)
    return names


def tensorboard_dir(out: str | os.PathLike) -> Path:
    """Where TensorBoard event files go: TENSORBOARD_LOGGING_DIR, else `<out>/runs/<time>_<host>`
    (transformers' default for the Trainer, so `tensorboard --logdir <out>/runs` shows every stage)."""
    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if env:
        return Path(env).expanduser()
    from transformers.integrations.integration_utils import default_logdir

    return Path(out) / default_logdir()


def _plain(config: Any) -> dict:
    if config is None:
        return {}
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    return {k: v for k, v in dict(config).items()}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Tracker:
    """The open trackers of one stage. Non-numeric and non-finite values are skipped (trackers
    reject them or plot them as gaps)."""

    def __init__(self, names: Sequence[str], out: str | os.PathLike, run_name: str | None = None, config: Any = None):
        self.names = list(names)
        self.tb = self.wandb = self.trackio = None
        self.logdir: Path | None = None
        check_installed(self.names)
        cfg = _plain(config)
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self.logdir = tensorboard_dir(out)
            self.tb = SummaryWriter(log_dir=str(self.logdir))
        if "wandb" in self.names:
            import wandb

            # a run already open in this process (e.g. the Trainer's) is reused; WANDB_MODE=offline works
            self.wandb = wandb.run or wandb.init(
                project=os.environ.get("WANDB_PROJECT", "huggingface"), name=run_name, dir=str(out), config=cfg
            )
        if "trackio" in self.names:
            import trackio

            trackio.init(project=os.environ.get("TRACKIO_PROJECT_NAME", "huggingface"), name=run_name, config=cfg)
            self.trackio = trackio

    def scalars(self, values: Mapping[str, Any], step: int = 0) -> None:
        vals = {k: float(v) for k, v in values.items() if _finite(v)}
        if not vals:
            return
        if self.tb is not None:
            for k, v in vals.items():
                self.tb.add_scalar(k, v, global_step=step)
        if self.wandb is not None:
            self.wandb.log(vals, step=step)
        if self.trackio is not None:
            self.trackio.log(vals, step=step)

    def histogram(self, tag: str, values: Iterable[Any], step: int = 0) -> None:
        vals = [float(v) for v in values if _finite(v)]
        if not vals:
            return
        if self.tb is not None:
            import numpy as np

            self.tb.add_histogram(tag, np.asarray(vals), global_step=step)
        if self.wandb is not None:
            import wandb

            self.wandb.log({tag: wandb.Histogram(vals)}, step=step)
        if self.trackio is not None:  # summary statistics: portable across trackio versions
            s = sorted(vals)
            q = lambda p: s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]  # noqa: E731 - a one-line quantile
            self.trackio.log(
                {f"{tag}/mean": sum(s) / len(s), f"{tag}/p10": q(0.1), f"{tag}/p50": q(0.5), f"{tag}/p90": q(0.9)},
                step=step,
            )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        # a W&B / trackio run is finished by whoever started the process's run: a pipeline keeps
        # one run across stages; `finish()` at exit is automatic for both

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_tracker(
    report_to, out: str | os.PathLike, run_name: str | None = None, config: Any = None, where: str = "report_to"
) -> Tracker:
    """A `Tracker` for `report_to` (empty: logs nowhere, costs nothing)."""
    return Tracker(report_to_list(report_to, where), out, run_name, config)


# ------------------------------------------------------------------------- ECR in training
def ecr_metrics(curriculum, decision: dict | None) -> dict[str, float]:
    """What one ECR observation adds to the training log (TRL's metric buffer; tags
    `train/ecr/...` in the trackers): the step's mean within-group reward variance and
    zero-variance share, the pool size, and at the end of a window its mean, the reference and
    the variance ratio (window mean / reference; < lambda_s triggers a refresh)."""
    mon = curriculum.monitor
    out: dict[str, float] = {
        "ecr/pool_size": float(len(curriculum.active)),
        "ecr/refreshes": float(curriculum.refreshes),
    }
    if mon.get("step_variance"):
        out["ecr/step_variance"] = float(mon["step_variance"][-1][1])
    if mon.get("zero_share"):
        out["ecr/zero_variance_share"] = float(mon["zero_share"][-1][1])
    if decision:
        out["ecr/window_mean"] = float(decision["window_mean"])
        out["ecr/reference"] = float(decision["reference"])
        out["ecr/variance_ratio"] = float(decision["ratio"])
        out["ecr/stagnant"] = float(bool(decision["stagnant"]))
    return out


# ------------------------------------------------------------------------- selection
def selection_metrics(funnel: Mapping[str, Any]) -> dict[str, float]:
    """`select/funnel/<stage>` for every count of the selection funnel (nested keys joined by /)."""
    out: dict[str, float] = {}

    def walk(prefix: str, node):
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(f"{prefix}/{k}", v)
        elif _finite(node):
            out[prefix] = float(node)

    walk("select/funnel", funnel)
    return out


# ------------------------------------------------------------------------- evaluation
def eval_metrics(
    benchmark: str,
    split: str,
    metrics: Mapping[str, Any],
    breakdowns: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> dict[str, float]:
    """`eval/<benchmark>/<split>/<metric>` for every numeric metric, and
    `eval/<benchmark>/<split>/<by>/<group>/<metric>` for the breakdowns (per dimension, domain, ...)."""
    base = f"eval/{benchmark}/{split}"
    out = {f"{base}/{k}": float(v) for k, v in metrics.items() if _finite(v)}
    for by, groups in (breakdowns or {}).items():
        if not isinstance(groups, Mapping):
            continue
        for g, row in groups.items():
            if isinstance(row, Mapping):
                for k, v in row.items():
                    if _finite(v):
                        out[f"{base}/{by}/{str(g).replace(' ', '_')}/{k}"] = float(v)
    return out
