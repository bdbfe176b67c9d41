"""Evolving curriculum recuration (ECR): keep the training pool in step with the policy.

- `Curriculum` holds the active pool, the variance monitor's state, recent group outcomes and
  the event log. It is plain JSON, saved in every checkpoint and restored on resume.
- `PoolSampler` replaces TRL's RepeatSampler: same repeat structure (G copies of each prompt,
  the chunk repeated for gradient accumulation), but prompts are drawn from the *current* active
  pool each time a new chunk starts, so a refresh takes effect from the next generation batch
  although TRL builds its dataloader once.
- On stagnation, `refresh` re-scores a probe set with CSM using the current policy weights (in
  process, no reload), retires mastered samples and adds the newly high-value ones (topped up with
  the probe's closest misses up to `min_pool_size`). Under several
  processes each rank scores a shard, the scores are gathered, and every rank applies the same
  deterministic decision; rank 0's pool is then broadcast so all ranks train on one pool.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from ego3s.curriculum.monitor import ECRConfig, group_stats, mark_refresh, new_state, observe, plan, plan_message
from ego3s.files import append_jsonl, write_json

log = logging.getLogger(__name__)
STATE_FILE = "ecr_state.json"


class Curriculum:
    def __init__(
        self,
        cfg: ECRConfig,
        all_ids: list[str],
        active: list[str],
        seed: int = 0,
        out: str | Path | None = None,
        meta: dict[str, dict] | None = None,
        writer: bool = True,
    ):
        """`writer`: whether this process appends to the event log (one per run, the main process)."""
        self.cfg, self.seed, self.writer = cfg, seed, writer
        self.all_ids = list(all_ids)
        self.index = {sid: i for i, sid in enumerate(self.all_ids)}
        unknown = [i for i in active if i not in self.index]
        if unknown:
            raise ValueError(f"active pool ids not in the training dataset: {unknown[:5]}")
        self.active = list(active)
        # the sampler's epoch length, fixed by the first pool: the Trainer plans its epochs from it
        self.epoch_size = max(1, len(self.active))
        self.monitor = new_state()
        self.outcomes: dict[str, list[bool]] = {}  # per sample: was each recent group all-correct?
        self.refreshes = 0
        self.out = Path(out) if out else None
        self.meta = meta or {}
        # what each refresh changed and what training drew afterwards (see `usage`)
        self.usage: list[dict] = []
        self.steps_per_batch = 1.0  # optimizer steps per generation batch, set by `set_schedule`
        self.schedule: dict | None = None
        self.trained_steps: int | None = None  # optimizer steps done so far (the trainer's global_step)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        summary = self.usage_summary()
        return {
            "active": self.active,
            "monitor": self.monitor,
            "outcomes": self.outcomes,
            "refreshes": self.refreshes,
            "refreshes_used": summary["refreshes_used"],
            "refresh_usage": summary["per_refresh"],
            "usage_totals": summary["totals"],
            "schedule": self.schedule,
            "usage": self.usage,
            "trained_steps": self.trained_steps,
            "config": asdict(self.cfg),
            "seed": self.seed,
            "epoch_size": self.epoch_size,
        }

    def load_state_dict(self, d: dict) -> None:
        self.active, self.monitor = list(d["active"]), d["monitor"]
        self.outcomes, self.refreshes = {k: list(v) for k, v in d["outcomes"].items()}, int(d["refreshes"])
        self.epoch_size = int(d.get("epoch_size", self.epoch_size))
        self.usage = [dict(u) for u in d.get("usage") or []]
        self.trained_steps = d.get("trained_steps", self.trained_steps)
        self.schedule = d.get("schedule", self.schedule)

    # ---------------------------------------------------------------- schedule and usage
    def set_schedule(self, planned_steps: int, steps_per_batch: float, prompts_per_batch: int) -> dict:
        """Check, before training, whether the planned run leaves room for a refresh (`plan`); logs
        a warning when it does not. Kept in the state so the report can show it."""
        self.steps_per_batch = steps_per_batch
        self.schedule = plan(self.cfg, planned_steps, steps_per_batch, prompts_per_batch)
        msg = plan_message(self.schedule)
        self.schedule["message"] = msg
        if self.writer:
            (log.info if self.schedule["refreshes_possible"] else log.warning)(msg)
        return self.schedule

    def _count_draws(self, step: int, records: list[dict]) -> None:
        """Every refresh so far precedes these records: count the refreshed samples among them."""
        for u in self.usage:
            if u["first_batch_step"] is None:
                u["first_batch_step"] = step
            added = set(u["added"])
            for r in records:
                if r["sample_id"] in added:
                    u["drawn"][r["sample_id"]] = u["drawn"].get(r["sample_id"], 0) + 1

    def usage_summary(self) -> dict:
        """Per refresh: optimizer steps trained on batches drawn after it (`steps_after`: from the
        first such batch to the last step done), how many of the added samples were drawn into a
        training batch afterwards (distinct, and groups), and whether it was used: some step trained
        after it and, when it added samples, at least one of them was drawn (a refresh that only
        retired samples is used when a step trained on the smaller pool)."""
        done = self.trained_steps
        rows = []
        for u in self.usage:
            t = u["first_batch_step"]
            # the batch generated at global_step t is trained from optimizer step t + 1 on
            after = max(0, done - t) if (t is not None and done is not None) else 0
            drawn = len(u["drawn"])
            used = after > 0 and (drawn > 0 if u["added"] else u["removed"] > 0)
            rows.append(
                {
                    "step": u["step"],
                    "added": len(u["added"]),
                    "removed": u["removed"],
                    "steps_after": after,
                    "added_drawn": drawn,
                    "added_draws": sum(u["drawn"].values()),
                    "used": used,
                }
            )
        totals = {
            "refreshes": len(rows),
            "refreshes_used": sum(r["used"] for r in rows),
            "steps_after": sum(r["steps_after"] for r in rows),
            "added": sum(r["added"] for r in rows),
            "added_drawn": sum(r["added_drawn"] for r in rows),
        }
        return {"per_refresh": rows, "totals": totals, "refreshes_used": totals["refreshes_used"]}

    # ---------------------------------------------------------------- per step
    def observe_step(self, step: int, records: list[dict]) -> dict | None:
        """Feed one generation step's per-sample reward records; returns the monitor's window
        decision when a window closed (`decision["stagnant"]` asks for a refresh)."""
        if not records:
            return None
        self._count_draws(step, records)
        last = self.monitor.get("last_step")
        self.monitor["last_step"] = step
        if self.cfg.monitoring_unit == "prompts":
            units = float(len(records))
        else:  # a second scoring at the same step (DAPO's refills) adds prompts, not steps
            units = 0.0 if last == step else self.steps_per_batch
        rewards, g, unscorable = [], len(records[0]["rewards"]["total"]), 0
        for r in records:
            tot = r["rewards"]["total"]
            if len(tot) != g:
                continue
            acc = r["rewards"].get("accuracy") or []
            hist = self.outcomes.setdefault(r["sample_id"], [])
            hist.append(bool(acc) and all(a is not None and a >= 1.0 for a in acc))
            del hist[: -self.cfg.mastered_window]
            if all(isinstance(x, (int, float)) and math.isfinite(x) for x in tot):
                rewards += tot
            else:  # an unscorable completion (null or NaN total): reading it as 0 would fake variance
                unscorable += 1
        if unscorable:
            self.monitor["non_finite_groups"] = self.monitor.get("non_finite_groups", 0) + unscorable
        if not rewards:
            return None  # nothing scorable this step: no variance to observe
        variance, zero_share = group_stats(rewards, g)
        decision = observe(self.monitor, step, variance, self.cfg, units)
        self.monitor.setdefault("zero_share", []).append([step, zero_share])
        return decision

    def mastered(self) -> list[str]:
        w = self.cfg.mastered_window
        return [i for i in self.active if len(h := self.outcomes.get(i, [])) >= w and all(h[-w:])]

    def probe_ids(self) -> list[str]:
        """The probe set: a seeded draw from every sample (unselected and already used)."""
        rng = random.Random(self.seed * 1000003 + self.refreshes)
        ids = sorted(self.all_ids)
        return rng.sample(ids, min(self.cfg.probing_set_size, len(ids)))

    def apply_refresh(self, step: int, decision: dict, high_value: list[str], fill: Sequence[str] = ()) -> dict:
        """Retire mastered samples, add the newly high-value ones, log the event.

        Below `min_pool_size`, the gap is filled from `fill` (the probe's closest CSM misses, best
        first) before any mastered sample comes back: a mastered sample's groups are all correct,
        so their advantages are 0 and GRPO learns nothing from them."""
        before = list(self.active)
        retired = set(self.mastered())
        keep = [i for i in self.active if i not in retired]
        current = set(self.active)  # "newly" high-value: neither kept nor just retired as mastered
        added = [h for h in dict.fromkeys(high_value) if h not in current]
        topped: list[str] = []
        for i in dict.fromkeys(fill):
            if len(keep) + len(added) + len(topped) >= self.cfg.min_pool_size:
                break
            if i not in current and i not in added:
                topped.append(i)
        added += topped
        for i in self.active:  # still short: put retirees back in pool order
            if len(keep) + len(added) >= self.cfg.min_pool_size:
                break
            if i in retired and i not in added:
                keep.append(i)
        self.active = keep + added
        for i in added:
            self.outcomes.pop(i, None)
        self.refreshes += 1
        self.usage.append(
            {
                "step": step,
                "added": list(added),
                "removed": len(set(before) - set(self.active)),
                "first_batch_step": None,
                "drawn": {},
            }
        )
        event = {
            "ratio": decision["ratio"],
            "window_mean": decision["window_mean"],
            "reference": decision["reference"],
            "pool_before": len(before),
            "pool_after": len(self.active),
            "removed": sorted(set(before) - set(self.active)),
            "added": added,
            "topped_up": len(topped),
            "probed": decision.get("probed"),
            "high_value": len(high_value),
            "atypical_share_before": self.atypical_share(before),
            "atypical_share_after": self.atypical_share(self.active),
        }
        if "atypical_share_probed" in decision:  # what CSM with the current policy keeps, against what it saw
            event["atypical_share_probed"] = decision["atypical_share_probed"]
            event["atypical_share_high_value"] = self.atypical_share(high_value)
        mark_refresh(self.monitor, step, event)
        if self.out is not None and self.writer:
            append_jsonl(self.out / "ecr_events.jsonl", {"step": step, **event})
        return {"step": step, **event}

    def atypical_share(self, ids) -> float | None:
        """Share of atypical samples among `ids` (EgoSynth carries `typical` in meta; None elsewhere)."""
        vals = [self.meta.get(i, {}).get("typical") for i in ids]
        vals = [v for v in vals if v is not None]
        return sum(not v for v in vals) / len(vals) if vals else None


class PoolSampler(Sampler):
    """TRL's repeat structure over the curriculum's current active pool (indices into the
    training dataset). Deterministic by seed; every rank draws the same sequence."""

    def __init__(
        self, curriculum: Curriculum, mini_repeat_count: int, batch_size: int, repeat_count: int, seed: int = 0
    ):
        self.cur, self.g, self.batch_size, self.repeat = curriculum, mini_repeat_count, batch_size, repeat_count
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        """One epoch = `len(self)` indices. Each chunk is drawn from the pool as it is when the
        chunk starts; a pool smaller than a chunk is cycled (reshuffled) to fill it.

        The epoch keeps the length of the first pool whatever the pool becomes: the Trainer
        computes its number of epochs once, from this length, so an epoch that shrank with the
        pool ended the run early and silently (H200, the 2026-11-26 hand-reading-base study: 68 of 200 steps after a refresh
        took the pool from 204 to 24 samples)."""
        order: list[int] = []
        for _ in range(self._chunks()):
            live = [self.cur.index[i] for i in self.cur.active]
            if not live:
                return
            order = [o for o in order if o in set(live)]  # the pool may have changed: drop stale entries
            while len(order) < self.batch_size:
                order += [live[p] for p in torch.randperm(len(live), generator=self.generator).tolist()]
            chunk, order = order[: self.batch_size], order[self.batch_size :]
            for _ in range(self.repeat):
                for idx in chunk:
                    yield from [idx] * self.g

    def _chunks(self) -> int:
        return max(1, self.cur.epoch_size // self.batch_size)

    def __len__(self) -> int:
        return self._chunks() * self.batch_size * self.g * self.repeat


def refresh_with_csm(
    curriculum: Curriculum,
    step: int,
    decision: dict,
    score_fn: Callable[[list[str]], list[dict]],
    dist=None,
    rank_misses: Callable[[list[dict]], list[dict]] | None = None,
) -> dict:
    """Probe, score with the current policy (`score_fn(ids) -> CSM rows with 'kept'`), refresh.

    `rank_misses(rows)`: the rows that failed CSM, best first (`ego3s.select.csm.closest_misses`,
    passed in by the trainer: curriculum/ builds on no other stage); they fill the pool floor.

    `dist`: (rank, world, gather_fn, broadcast_fn) under several processes; each rank scores a
    strided, equal-length shard (equal so sharded-parameter forwards stay in lockstep)."""
    probe = curriculum.probe_ids()
    if dist is None:
        rows = score_fn(probe)
    else:
        rank, world, gather, broadcast = dist
        per = math.ceil(len(probe) / world)
        shard = probe[rank::world]
        shard = shard + shard[:1] * (per - len(shard)) if shard else probe[:1] * per
        by_id = {r["id"]: r for part in gather(score_fn(shard)) for r in part}
        rows = [by_id[i] for i in probe if i in by_id]
    high = [r["id"] for r in rows if r.get("kept")]
    fill = [r["id"] for r in rank_misses(rows)] if rank_misses is not None else []
    event = curriculum.apply_refresh(
        step, {**decision, "probed": len(probe), "atypical_share_probed": curriculum.atypical_share(probe)}, high, fill
    )
    if dist is not None:
        curriculum.active = dist[3](curriculum.active)
        pools = {tuple(p) for p in dist[2](curriculum.active)}
        if len(pools) != 1:  # the samplers would serve different pools: stop rather than train on a mix
            raise RuntimeError(f"ECR refresh at step {step}: ranks hold {len(pools)} different pools")
    return event


class ECRCallback(TrainerCallback):
    """Saves the curriculum with every checkpoint and restores it on resume."""

    def __init__(self, curriculum: Curriculum):
        self.cur = curriculum

    def on_train_begin(self, args, state, control, **kwargs):
        gen = getattr(args, "generation_batch_size", None)
        g = getattr(args, "num_generations", None)
        spg = getattr(args, "steps_per_generation", None)
        if gen and g and spg:  # TRL's GRPOConfig: one generation batch per steps_per_generation x num_iterations
            per_batch = spg * getattr(args, "num_iterations", 1) / max(1, args.gradient_accumulation_steps)
            self.cur.set_schedule(int(state.max_steps), per_batch, gen // g)

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.cur.trained_steps = int(state.global_step)
        if state.is_world_process_zero and ckpt.is_dir():
            write_json(ckpt / STATE_FILE, self.cur.state_dict())

    def on_train_end(self, args, state, control, **kwargs):
        self.cur.trained_steps = int(state.global_step)
        if state.is_world_process_zero:
            t = self.cur.usage_summary()["totals"]
            log.info(
                "ECR: %d refresh(es), %d used; %d added sample(s), %d of them drawn after their refresh",
                t["refreshes"],
                t["refreshes_used"],
                t["added"],
                t["added_drawn"],
            )
        if state.is_world_process_zero and self.cur.out is not None:
            write_json(self.cur.out / STATE_FILE, self.cur.state_dict())
            plot_timeline(self.cur, self.cur.out / "ecr_timeline.png")


def restore(curriculum: Curriculum, checkpoint: str | Path) -> bool:
    p = Path(checkpoint) / STATE_FILE
    if not p.exists():
        return False
    curriculum.load_state_dict(json.loads(p.read_text()))
    return True


def plot_timeline(cur: Curriculum, path: Path) -> None:
    """Reward variance per step, window means, and refresh points (with pool sizes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ego3s.files import atomic_open

    steps = [s for s, _ in cur.monitor["step_variance"]]
    var = [v for _, v in cur.monitor["step_variance"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, var, lw=0.8, alpha=0.6, label="mean within-group reward variance")
    if cur.monitor["window_means"]:
        ws, wm = zip(*cur.monitor["window_means"])
        ax.plot(ws, wm, "o-", lw=1.5, label=f"window mean ({cur.cfg.monitoring_interval} steps)")
    for e in cur.monitor["events"]:
        ax.axvline(e["step"], color="r", ls="--", lw=1)
        ax.annotate(
            f"refresh\n{e['pool_before']}→{e['pool_after']}",
            (e["step"], ax.get_ylim()[1]),
            fontsize=7,
            color="r",
            va="top",
            ha="left",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("reward variance")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
