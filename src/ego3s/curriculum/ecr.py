"""Evolving curriculum recuration (ECR): keep the training pool in step with the policy.

- `Curriculum` holds the active pool, the variance monitor's state, recent group outcomes and
  the event log. It is plain JSON, saved in every checkpoint and restored on resume.
- `PoolSampler` replaces TRL's RepeatSampler: same repeat structure (G copies of each prompt,
  the chunk repeated for gradient accumulation), but prompts are drawn from the *current* active
  pool each time a new chunk starts, so a refresh takes effect from the next generation batch
  although TRL builds its dataloader once.
- On stagnation, `refresh` re-scores a probe set with CSM using the current policy weights (in
  process, no reload), retires mastered samples and adds the newly high-value ones. Under several
  processes each rank scores a shard, the scores are gathered, and every rank applies the same
  deterministic decision; rank 0's pool is then broadcast so all ranks train on one pool.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback

from ego3s.curriculum.monitor import ECRConfig, group_stats, mark_refresh, new_state, observe
from ego3s.files import append_jsonl, write_json

log = logging.getLogger(__name__)
STATE_FILE = "ecr_state.json"


class Curriculum:
    def __init__(self, cfg: ECRConfig, all_ids: list[str], active: list[str], seed: int = 0,
                 out: str | Path | None = None, meta: dict[str, dict] | None = None, writer: bool = True):
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

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"active": self.active, "monitor": self.monitor, "outcomes": self.outcomes,
                "refreshes": self.refreshes, "config": asdict(self.cfg), "seed": self.seed,
                "epoch_size": self.epoch_size}

    def load_state_dict(self, d: dict) -> None:
        self.active, self.monitor = list(d["active"]), d["monitor"]
        self.outcomes, self.refreshes = {k: list(v) for k, v in d["outcomes"].items()}, int(d["refreshes"])
        self.epoch_size = int(d.get("epoch_size", self.epoch_size))

    # ---------------------------------------------------------------- per step
    def observe_step(self, step: int, records: list[dict]) -> dict | None:
        """Feed one generation step's per-sample reward records; returns the monitor's window
        decision when a window closed (`decision["stagnant"]` asks for a refresh)."""
        if not records:
            return None
        rewards, g, unscorable = [], len(records[0]["rewards"]["total"]), 0
        for r in records:
            tot = r["rewards"]["total"]
            if len(tot) != g:
                continue
            acc = r["rewards"].get("accuracy") or []
            hist = self.outcomes.setdefault(r["sample_id"], [])
            hist.append(bool(acc) and all(a is not None and a >= 1.0 for a in acc))
            del hist[:-self.cfg.mastered_window]
            if all(isinstance(x, (int, float)) and math.isfinite(x) for x in tot):
                rewards += tot
            else:  # an unscorable completion (null or NaN total): reading it as 0 would fake variance
                unscorable += 1
        if unscorable:
            self.monitor["non_finite_groups"] = self.monitor.get("non_finite_groups", 0) + unscorable
        if not rewards:
            return None  # nothing scorable this step: no variance to observe
        variance, zero_share = group_stats(rewards, g)
        decision = observe(self.monitor, step, variance, self.cfg)
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

    def apply_refresh(self, step: int, decision: dict, high_value: list[str]) -> dict:
        """Retire mastered samples, add the newly high-value ones, log the event."""
        before = list(self.active)
        retired = set(self.mastered())
        keep = [i for i in self.active if i not in retired]
        current = set(self.active)  # "newly" high-value: neither kept nor just retired as mastered
        added = [h for h in dict.fromkeys(high_value) if h not in current]
        for i in self.active:  # never shrink below the floor: put retirees back in pool order
            if len(keep) + len(added) >= self.cfg.min_pool_size:
                break
            if i in retired and i not in added:
                keep.append(i)
        self.active = keep + added
        for i in added:
            self.outcomes.pop(i, None)
        self.refreshes += 1
        event = {"ratio": decision["ratio"], "window_mean": decision["window_mean"],
                 "reference": decision["reference"], "pool_before": len(before), "pool_after": len(self.active),
                 "removed": sorted(set(before) - set(self.active)), "added": added,
                 "probed": decision.get("probed"), "high_value": len(high_value),
                 "atypical_share_before": self.atypical_share(before),
                 "atypical_share_after": self.atypical_share(self.active)}
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

    def __init__(self, curriculum: Curriculum, mini_repeat_count: int, batch_size: int, repeat_count: int,
                 seed: int = 0):
        self.cur, self.g, self.batch_size, self.repeat = curriculum, mini_repeat_count, batch_size, repeat_count
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        """One epoch = `len(self)` indices. Each chunk is drawn from the pool as it is when the
        chunk starts; a pool smaller than a chunk is cycled (reshuffled) to fill it.

        The epoch keeps the length of the first pool whatever the pool becomes: the Trainer
        computes its number of epochs once, from this length, so an epoch that shrank with the
        pool ended the run early and silently (H200, session 5: 68 of 200 steps after a refresh
        took the pool from 204 to 24 samples)."""
        order: list[int] = []
        for _ in range(self._chunks()):
            live = [self.cur.index[i] for i in self.cur.active]
            if not live:
                return
            order = [o for o in order if o in set(live)]  # the pool may have changed: drop stale entries
            while len(order) < self.batch_size:
                order += [live[p] for p in torch.randperm(len(live), generator=self.generator).tolist()]
            chunk, order = order[:self.batch_size], order[self.batch_size:]
            for _ in range(self.repeat):
                for idx in chunk:
                    yield from [idx] * self.g

    def _chunks(self) -> int:
        return max(1, self.cur.epoch_size // self.batch_size)

    def __len__(self) -> int:
        return self._chunks() * self.batch_size * self.g * self.repeat


def refresh_with_csm(curriculum: Curriculum, step: int, decision: dict, score_fn: Callable[[list[str]], list[dict]],
                     dist=None) -> dict:
    """Probe, score with the current policy (`score_fn(ids) -> CSM rows with 'kept'`), refresh.

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
        rows = {r["id"]: r for part in gather(score_fn(shard)) for r in part}
        rows = [rows[i] for i in probe if i in rows]
    high = [r["id"] for r in rows if r.get("kept")]
    event = curriculum.apply_refresh(
        step, {**decision, "probed": len(probe), "atypical_share_probed": curriculum.atypical_share(probe)}, high)
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

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            write_json(ckpt / STATE_FILE, self.cur.state_dict())

    def on_train_end(self, args, state, control, **kwargs):
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
        ax.annotate(f"refresh\n{e['pool_before']}→{e['pool_after']}", (e["step"], ax.get_ylim()[1]),
                    fontsize=7, color="r", va="top", ha="left")
    ax.set_xlabel("step")
    ax.set_ylabel("reward variance")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
