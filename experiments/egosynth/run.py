"""Issue #9's table on EgoSynth: every selection method, RL strategy and ablation from one base model.

    python experiments/egosynth/run.py [--config experiments/egosynth/table.yaml] [--rows full,ego3s]
        [--smoke] [--out DIR] [--time-limit S] [--pack FILE.tgz] [--restore FILE.tgz] [--estimate]

Layout of the run folder (`out` in the YAML):

    prep/            EgoSynth pool and warm-up pool, the base model (smol + supervised warm-up),
                     the base model's evaluation (full test splits and the curve subset)
    select/<method>  one selection per method (per seed for the seeded ones), shared by the rows
    rows/<row>_s<seed>/  train/ (checkpoints every `eval_every` steps, wall.jsonl), eval/, curve/,
                     row.json (written last: a row with row.json is finished and skipped on rerun)
    table.md, table.json, accuracy_vs_time.png, reward_variance.png, reward_curves.png

The stages are the pipeline's own functions (ego3s.pipeline: make_data, make_model, warm_up,
select_samples, train_policy, evaluate_models), composed here for one base model and many rows;
what only the table needs stays here: the curve subset and the accuracy at every checkpoint, the
wall clock per step, the table, plots and pack.

Every stage resumes (the pipeline's manifest per folder; training from its checkpoints, evaluation
from its predictions), so a killed run or a new session continues where it stopped. A new session
rebuilds prep/ (the base model is too large to carry) and restores finished rows from a pack; each
row records the base model's fingerprint so rows made from different base models can be told apart.
Nothing is reused from other inputs: prep/'s stages, each selection (`done.json`) and each row
(`row.json`, its stages) record the config they were made from (`inputs`, fingerprints chained
from prep/'s config); an edited config redoes what it changes and everything after it, saying why.

Time to target: each row's accuracy curve (the curve subset, at every checkpoint) against GPU
seconds (selection + training). The time ratio is like for like: Ego3S's time to reach a target
over the full-data run's time to reach the same target, reported at the chosen target (the
full-data run's final accuracy) and at 75% and 50% of the full-data run's gain over its step-0
accuracy (`targets`, `time_ratio`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path

import yaml

from ego3s.config import from_dict, merge
from ego3s.files import append_jsonl, read_log, write_json, write_text

HERE = Path(__file__).resolve().parent
PAPER = {"ego3s_h": 32.6, "full_h": 60.5}
SEEDED = ("random", "limo", "limr")  # selection methods whose result depends on the seed
SECTIONS = {
    "selection": "Data selection at matched budget (plain GRPO reward unless noted)",
    "rl": "RL strategy on CSM data",
    "ablation": "Ablation",
    "long": "Longer runs (more steps than the matched rows; not part of the comparison)",
}


# ---------------------------------------------------------------------------------------- config


def load_table_config(path: str | Path, smoke: bool = False, out: str | None = None) -> dict:
    """The YAML, with its `smoke` section merged in for `--smoke`."""
    cfg = yaml.safe_load(Path(path).read_text())
    overrides = cfg.pop("smoke", {}) or {}
    if smoke:
        cfg = merge(cfg, overrides)
    if out:
        cfg["out"] = out
    return cfg


def plan(cfg: dict, only: list[str] | None = None) -> list[tuple[str, int]]:
    """(row, seed) in run order. Default: YAML order, a row's seeds together. `only` (e.g.
    ["ego3s:0", "csm", "full:0"]) runs those rows, or one seed of a row, in the order given, so the
    evidence wanted first comes first. LIMR's full-data run (`limr_source`, first seed) goes before it in
    either case."""
    names = list(cfg["rows"])
    if not only:
        todo = [(n, s) for n in names for s in seeds_of(cfg, n)]
    else:
        todo = []
        for item in only:
            name, _, seed = item.partition(":")
            if name not in names:
                raise SystemExit(f"unknown row {name!r}; rows: {names}")
            seeds = seeds_of(cfg, name)
            if seed and int(seed) not in seeds:
                raise SystemExit(f"row {name!r} has seeds {seeds}, not {seed}")
            todo += [(name, s) for s in ([int(seed)] if seed else seeds) if (name, s) not in todo]
    first_limr = next((i for i, (n, _) in enumerate(todo) if n == "limr"), None)
    source = limr_source(cfg)
    full = (source, seeds_of(cfg, source)[0])  # LIMR reads this run's reward log
    if first_limr is not None and full not in todo[:first_limr]:
        if full in todo:
            todo.remove(full)
        todo.insert(next(i for i, (n, _) in enumerate(todo) if n == "limr"), full)
    return todo


def limr_source(cfg: dict) -> str:
    """The full-data row whose reward log LIMR reads (first seed): `limr_source` in the YAML."""
    return cfg.get("limr_source", "full")


def seeds_of(cfg: dict, name: str) -> list[int]:
    return cfg["headline_seeds"] if name in cfg["headline"] else cfg["seeds"]


def row_dir(root: Path, name: str, seed: int) -> Path:
    return root / "rows" / f"{name}_s{seed}"


# ------------------------------------------------------------------------------------ prepare


def prep_inputs(cfg: dict) -> dict:
    """What each stage of prep/ is made from (ego3s.pipeline.Run.check_inputs)."""
    from ego3s.identity import file_identity

    rel = cfg["selection"].get("relevance_file")
    return {
        "data": {
            "seed": cfg["data_seed"],
            "data": cfg["data"],
            "warmup_data": cfg["warmup_data"],
            "vision_data": cfg.get("vision_data"),
            "curve_questions": cfg["curve_questions"],
            "relevance_file": file_identity(rel, "content") if rel else None,
        },
        "model": {"model": cfg["model"], "seed": cfg["data_seed"]},
        "warmup": {"warmup": cfg["warmup"]},
        "base_eval": {"evaluation": cfg["evaluation"]},
    }


def prep_identity(cfg: dict) -> str:
    """The fingerprint of prep/'s config (not of its contents: a new session's rebuilt base model
    has the same one), which every selection and row chains onto."""
    from ego3s.pipeline import chain_fingerprints

    return chain_fingerprints(prep_inputs(cfg))["base_eval"]


def select_inputs(cfg: dict, method: str, seed: int) -> dict:
    return {
        "prep": prep_identity(cfg),
        "selection": cfg["selection"],
        "budget": cfg["budget"],
        "method": method,
        "seed": seed,
        **({"limr_source": limr_source(cfg)} if method == "limr" else {}),
    }


def row_inputs(cfg: dict, name: str, seed: int) -> dict:
    spec = cfg["rows"][name]
    return {
        "select": select_inputs(cfg, spec["select"], seed),
        "train": cfg["train"],
        "row": spec,
        "evaluation": cfg["evaluation"],
        "eval_every": cfg["eval_every"],
        "keep_checkpoints": cfg["keep_checkpoints"],
    }


def stale_row(cfg: dict, root: Path, name: str, seed: int) -> str | None:
    """Why a finished row (row.json) cannot be reused (made from other inputs), or None."""
    from ego3s.identity import describe_diff

    path = row_dir(root, name, seed) / "row.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text()).get("inputs")
    if old is None:
        return "no inputs recorded (a row of an older driver)"
    new = json.loads(json.dumps(row_inputs(cfg, name, seed), default=str))
    return None if old == new else f"made from other inputs ({describe_diff(old, new)})"


def prepare(cfg: dict, root: Path, echo=print) -> dict:
    """EgoSynth pools, the base model and its evaluation, once for every row (prep/manifest.json):
    the pipeline's data, model and warm-up stages, plus the curve subset and the base evaluation."""
    from ego3s.data.egosynth import EgoSynthConfig
    from ego3s.models.loading import model_fingerprint
    from ego3s.pipeline import Run, RunConfig, make_data, make_model, warm_up
    from ego3s.train.warmup import WarmupConfig

    d = root / "prep"
    data_cfg = from_dict(EgoSynthConfig, cfg["data"], "data.")
    warm_data_cfg = from_dict(EgoSynthConfig, cfg["warmup_data"], "warmup_data.")
    vision_data_cfg = from_dict(EgoSynthConfig, cfg["vision_data"], "vision_data.") if cfg.get("vision_data") else None
    warm_cfg = from_dict(WarmupConfig, {**cfg["warmup"], "seed": cfg["data_seed"]}, "warmup.")
    if vision_data_cfg is not None:  # vision pretraining's own pool (else the warm-up's), generated below
        warm_cfg.vision_pretrain.data = str(d / "vision_data" / "train.jsonl")
    run = Run(RunConfig(out=str(d), seed=cfg["data_seed"], model=cfg["model"], egosynth=data_cfg, warmup=warm_cfg))
    inputs = json.loads(json.dumps(prep_inputs(cfg), default=str))
    run.check_inputs(inputs, echo)

    def data() -> dict:
        made = make_data(data_cfg, d / "data")
        warm_pool = make_data(warm_data_cfg, d / "warmup_data", audit=False)["pool"]
        if vision_data_cfg is not None:
            make_data(vision_data_cfg, d / "vision_data", audit=False)
        curve = d / "curve_data"  # the fixed subset of the accuracy-over-time curves
        from ego3s.data.io import read_jsonl, write_jsonl

        for split in ("test_id", "test_atypical"):
            write_jsonl(curve / f"{split}.jsonl", read_jsonl(d / "data" / f"{split}.jsonl")[: cfg["curve_questions"]])
        rel = cfg["selection"].get("relevance_file")
        if rel:  # a copy the rows add to (ECR probes), next to the data it belongs to
            shutil.copy(rel, d / "relevance.json")
        return {**made, "curve": str(curve), "warmup_pool": warm_pool, "relevance": str(d / "relevance.json")}

    paths = run.run_stage("data", data, echo, inputs)
    built = run.run_stage("model", lambda: make_model(cfg["model"], d / "model", cfg["data_seed"]), echo, inputs)

    def warm() -> dict:
        final = warm_up(warm_cfg, built["base"], paths["warmup_pool"], d / "warmup")["model"]
        _drop_checkpoints(d / "warmup")
        return {"model": final, "fingerprint": model_fingerprint(final)}

    base = run.run_stage("warmup", warm, echo, inputs)

    def base_eval() -> dict:
        full = evaluate(cfg, base["model"], paths["egosynth"], d / "base_eval", icu=cfg["evaluation"].get("icu", False))
        sub = evaluate(cfg, base["model"], paths["curve"], d / "base_curve", icu=False)
        return {"eval": full, "curve_accuracy": sub["accuracy"]}

    ev = run.run_stage("base_eval", base_eval, echo, inputs)
    return {
        **paths,
        "base": base["model"],
        "fingerprint": base["fingerprint"],
        "base_eval": ev,
        "identity": run.fingerprints["base_eval"],
    }


def _drop_checkpoints(folder: Path) -> None:
    for p in folder.glob("checkpoint-*"):
        shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------ selection


def select(cfg: dict, root: Path, prep: dict, method: str, seed: int, echo=print) -> dict:
    """Run (or reuse) one selection (the pipeline's select stage); returns its summary. Reused only
    if made from this base model."""
    from ego3s.identity import describe_diff
    from ego3s.pipeline import select_samples
    from ego3s.select.run import SelectionConfig

    key = f"{method}_s{seed}" if method in SEEDED else method
    d = root / "select" / key
    done = d / "done.json"
    inputs = json.loads(json.dumps(select_inputs(cfg, method, seed), default=str))
    if done.exists():
        summary = json.loads(done.read_text())
        if summary["base_fingerprint"] == prep["fingerprint"] and summary.get("inputs") == inputs:
            return summary
        why = (
            "another base model"
            if summary["base_fingerprint"] != prep["fingerprint"]
            else f"other inputs ({describe_diff(summary['inputs'], inputs)})"
            if "inputs" in summary
            else "inputs not recorded (an older driver)"
        )
        echo(f"[select {key}] made from {why}: redoing it")
        shutil.rmtree(d)
    extra, prereq = {}, 0.0
    if method in ("random", "s1", "limo", "limr"):
        extra["budget"] = budget(cfg, root, prep, echo)
    if method == "limr":
        full = row_dir(root, limr_source(cfg), seeds_of(cfg, limr_source(cfg))[0])
        full_row = json.loads((full / "row.json").read_text())
        extra["limr_log"] = str(full / "train" / "rewards.jsonl")
        prereq = full_row["train_s"]  # LIMR needs a full-data run first: its cost is LIMR's too
    sc = from_dict(
        SelectionConfig,
        {
            **cfg["selection"],
            "relevance_file": prep["relevance"],
            "method": method,
            "seed": seed,
            **extra,
        },
        "selection.",
    )
    echo(f"[select {key}] running")
    select_samples(sc, prep["pool"], prep["base"], d, progress=False)
    _free()
    rep = json.loads((d / "report.json").read_text())
    from ego3s.data.io import read_jsonl

    chosen = read_jsonl(d / "selected.jsonl")
    summary = {
        "method": method,
        "dir": str(d),
        "selected": len(chosen),
        "seconds": round(rep["seconds"], 1),
        "prereq_s": prereq,
        "atypical_share": atypical_share(chosen),
        "topped_up": rep.get("topped_up"),
        "funnel": rep.get("funnel"),
        "base_fingerprint": prep["fingerprint"],
        "inputs": inputs,
    }
    write_json(done, summary)
    return summary


def budget(cfg: dict, root: Path, prep: dict, echo=print) -> int:
    """The baselines' budget: as many samples as CSM kept (`csm`), a count, or a fraction of the pool."""
    b = cfg["budget"]
    if b == "csm":
        return select(cfg, root, prep, "csm", seeds_of(cfg, "csm")[0], echo)["selected"]
    if isinstance(b, float) and b < 1:
        from ego3s.data.io import read_jsonl

        return int(round(b * len(read_jsonl(prep["pool"]))))
    return int(b)


def atypical_share(samples) -> float | None:
    """Share (%) of samples whose EgoSynth interaction breaks the priors (`meta.typical` false)."""
    flags = [s.meta["typical"] for s in samples if "typical" in s.meta]
    return round(100.0 * sum(not f for f in flags) / len(flags), 2) if flags else None


# ------------------------------------------------------------------------------------ evaluation


def evaluate(cfg: dict, model: str, egosynth: str, out: Path, icu: bool) -> dict:
    """Evaluate `model` on EgoSynth's two test splits in `egosynth` into `out` (the pipeline's eval
    stage); the metrics the table reads."""
    from ego3s.eval.run import EvalConfig
    from ego3s.pipeline import evaluate_models

    ec = from_dict(EvalConfig, {**cfg["evaluation"], "icu": icu, "paths": {}}, "evaluation.")  # EgoSynth: `egosynth`
    results = evaluate_models(ec, {out.name: model}, out.parent, ["EgoSynth"], egosynth)[out.name]
    _free()
    return metrics(json.loads(Path(results).read_text())["benchmarks"]["egosynth"])


def metrics(b: dict) -> dict:
    """Closed accuracy and open EM / ROUGE-L (%) per split, overall closed accuracy, and ICU."""
    out = {"accuracy": b["metrics"].get("accuracy")}
    for split, m in (b.get("by") or {}).get("split", {}).items():
        out[split] = {k: m.get(k) for k in ("accuracy", "em", "rouge_l", "n")}
    icu = b.get("icu")
    if icu:
        out["icu_textual"] = icu["textual"]["share"]
        out["icu_attention"] = icu["attention"]["in_box"]
        out["icu_area"] = icu["attention"]["area"]
    return out


def _free() -> None:
    """Give the GPU memory of a finished stage back before the next model loads."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ------------------------------------------------------------------------------------ one row


def wall_clock(path: Path):
    """A callback logging cumulative wall seconds per optimizer step, continued across resumes.
    TRL's `step_time` leaves out data loading, ECR refreshes and checkpoint saves; this does not."""
    from transformers import TrainerCallback

    class WallClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            kept = [r for r in read_log(path) if r["step"] <= state.global_step] if path.exists() else []
            write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
            self.offset, self.t0 = (kept[-1]["wall_s"] if kept else 0.0), time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            append_jsonl(
                path, {"step": state.global_step, "wall_s": round(self.offset + time.perf_counter() - self.t0, 3)}
            )

    return WallClock()


def run_row(cfg: dict, root: Path, prep: dict, name: str, seed: int, echo=print) -> dict:
    """Select, train, evaluate and trace accuracy over time for one row and seed; writes row.json.
    Selection, training and evaluation are the pipeline's stage functions; the curve and the
    timing are the driver's."""
    from ego3s.pipeline import Run, RunConfig, train_policy
    from ego3s.rl.run import TrainingConfig

    spec = cfg["rows"][name]
    d = row_dir(root, name, seed)
    sel = select(cfg, root, prep, spec["select"], seed, echo)
    selected = str(Path(sel["dir"]) / "selected.jsonl")
    tc = from_dict(
        TrainingConfig,
        merge(
            merge(cfg["train"], spec.get("train") or {}),
            {
                "strategy": spec["strategy"],
                "interaction_reward": spec["irl"],
                "ecr": {"ecr": spec["ecr"]},
                # train_policy fills these in too; here so that the row's manifest records them
                "model": prep["base"],
                "data": selected,
                "candidates": prep["pool"],
                "out": str(d / "train"),
                "seed": seed,
                "save_steps": spec.get("eval_every", cfg["eval_every"]),
                "relevance_file": prep["relevance"],
            },
        ),
        "train.",
    )
    run = Run(RunConfig(out=str(d), seed=seed, model=prep["base"], data=selected, warmup_enabled=False, training=tc))
    inputs = json.loads(json.dumps(row_inputs(cfg, name, seed), default=str))
    stages = {"train": inputs, "eval": {}, "curve": {}}
    run.check_inputs(stages, echo)  # an edited row redoes all three

    def train() -> dict:
        clock = wall_clock(d / "train" / "wall.jsonl")
        steps = train_policy(tc, prep["base"], selected, prep["pool"], d / "train", callbacks=[clock])["steps"]
        _free()
        return {"steps": steps}

    steps = run.run_stage("train", train, echo, stages)["steps"]
    ev = run.run_stage(
        "eval",
        lambda: evaluate(
            cfg, str(d / "train" / "final"), prep["egosynth"], d / "eval", icu=cfg["evaluation"].get("icu", False)
        ),
        echo,
        stages,
    )

    def curve() -> dict:
        walls = {r["step"]: r["wall_s"] for r in read_log(d / "train" / "wall.jsonl")}
        points = [{"step": 0, "train_s": 0.0, "accuracy": prep["base_eval"]["curve_accuracy"]}]
        ckpts = sorted((int(p.name.split("-")[1]), p) for p in (d / "train").glob("checkpoint-*"))
        for step, p in ckpts:
            m = evaluate(cfg, str(p), prep["curve"], d / "curve" / f"step-{step}", icu=False)
            points.append({"step": step, "train_s": walls.get(step), "accuracy": m["accuracy"]})
        if not ckpts or ckpts[-1][0] != steps:
            m = evaluate(cfg, str(d / "train" / "final"), prep["curve"], d / "curve" / "final", icu=False)
            points.append({"step": steps, "train_s": walls.get(steps), "accuracy": m["accuracy"]})
        return {"points": points}

    points = run.run_stage("curve", curve, echo, stages)["points"]
    if not cfg["keep_checkpoints"]:
        _drop_checkpoints(d / "train")
    walls = read_log(d / "train" / "wall.jsonl")
    rewards = read_log(d / "train" / "rewards.jsonl")
    events = read_log(d / "train" / "ecr_events.jsonl") if (d / "train" / "ecr_events.jsonl").exists() else []
    offset = sel["seconds"] + sel["prereq_s"]
    row = {
        "row": name,
        "seed": seed,
        **{k: spec[k] for k in ("select", "strategy", "irl", "ecr")},
        "selected": sel["selected"],
        "trained_on": len({r["sample_id"] for r in rewards}),
        "atypical_share": sel["atypical_share"],
        "topped_up": sel["topped_up"],
        "selection_s": sel["seconds"],
        "prereq_s": sel["prereq_s"],
        "train_s": walls[-1]["wall_s"] if walls else 0.0,
        "steps": steps,
        "ecr_refreshes": len(events),
        "eval": ev,
        "curve": [{**p, "gpu_s": round(offset + (p["train_s"] or 0.0), 3)} for p in points],
        "base_fingerprint": prep["fingerprint"],
        "device": device_name(),
        "inputs": inputs,
    }
    row["gpu_s"] = round(offset + row["train_s"], 3)
    write_json(d / "row.json", row)
    return row


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------ table


def collect(cfg: dict, root: Path) -> dict:
    """Every finished row, mean and spread over seeds, time to the full-data accuracy, the ratio."""
    rows = {}
    for name in cfg["rows"]:
        runs = [json.loads(p.read_text()) for p in sorted((root / "rows").glob(f"{name}_s*/row.json"))]
        runs = [r for r in runs if r["row"] == name]
        if runs:
            rows[name] = {"runs": runs}
    full = rows.get("full", {}).get("runs", [])
    goals = targets(full)
    target = goals[0]["accuracy"] if goals else None
    for entry in rows.values():
        for r in entry["runs"]:
            r["reach_s"] = time_to(r["curve"], target)
        entry["seeds"] = [r["seed"] for r in entry["runs"]]
        entry["values"] = {k: _spread([v(r) for r in entry["runs"]]) for k, v in COLUMNS.items()}
        entry["reached"] = sum(r["reach_s"] is not None for r in entry["runs"])
    ratios = [time_ratio(rows["ego3s"]["runs"], full, g) for g in goals] if "ego3s" in rows and full else []
    ratio = ratios[0]["ratio"] if ratios else None
    fps = sorted({r["base_fingerprint"] for e in rows.values() for r in e["runs"]})
    manifest = root / "prep" / "manifest.json"
    base = json.loads(manifest.read_text())["stages"].get("base_eval", {}).get("outputs") if manifest.exists() else None
    return {
        "rows": rows,
        "base": base,
        "target_accuracy": target,
        "ratio": ratio,
        "ratios": ratios,
        "paper_ratio": round(PAPER["ego3s_h"] / PAPER["full_h"], 3),
        "base_models": fps,
        "devices": sorted({r["device"] for e in rows.values() for r in e["runs"]}),
        "sections": {
            s: [(n, spec["labels"][s]) for n, spec in cfg["rows"].items() if s in spec.get("labels", {})]
            for s in SECTIONS
        },
    }


def time_to(curve: list[dict], target: float | None) -> float | None:
    """GPU seconds (selection + training) at the first curve point reaching `target` accuracy
    (None when no point does: the curve is evaluated at checkpoints, so this is the first
    checkpoint at or above the target, not an interpolation)."""
    if target is None:
        return None
    return next((p["gpu_s"] for p in curve if p["accuracy"] is not None and p["accuracy"] >= target), None)


# targets as shares of the full-data run's gain over its step-0 (base) accuracy: the first, its
# final accuracy, is the chosen one; the other two show whether the ratio depends on that choice
TARGET_SHARES = (1.0, 0.75, 0.5)


def targets(full: list[dict]) -> list[dict]:
    """The accuracy targets from the full-data runs (mean over seeds of the last and first curve
    points): `base + share x (final - base)` for each of TARGET_SHARES."""
    final = _mean([r["curve"][-1]["accuracy"] for r in full])
    base = _mean([r["curve"][0]["accuracy"] for r in full])
    if final is None:
        return []
    base = final if base is None else base
    return [{"share": f, "accuracy": base + f * (final - base)} for f in TARGET_SHARES]


def time_ratio(ego: list[dict], full: list[dict], goal: dict) -> dict:
    """Like for like: Ego3S's time to the target over the full-data run's time to the *same*
    target (means over the seeds that reached it), never over the full run's total time."""
    t_ego = [time_to(r["curve"], goal["accuracy"]) for r in ego]
    t_full = [time_to(r["curve"], goal["accuracy"]) for r in full]
    a, b = _mean(t_ego), _mean(t_full)
    return {
        **goal,
        "ego3s_s": a,
        "full_s": b,
        "ratio": round(a / b, 3) if a is not None and b else None,
        "ego3s_reached": sum(t is not None for t in t_ego),
        "full_reached": sum(t is not None for t in t_full),
        "seeds": [len(ego), len(full)],
    }


def _split(split: str, metric: str):
    return lambda r: (r["eval"].get(split) or {}).get(metric)


COLUMNS = {  # key -> how a row.json gives it; the table prints them in this order
    "id_acc": _split("test_id", "accuracy"),
    "id_em": _split("test_id", "em"),
    "id_rouge": _split("test_id", "rouge_l"),
    "aty_acc": _split("test_atypical", "accuracy"),
    "aty_em": _split("test_atypical", "em"),
    "aty_rouge": _split("test_atypical", "rouge_l"),
    "icu_text": lambda r: r["eval"].get("icu_textual"),
    "icu_att": lambda r: r["eval"].get("icu_attention"),
    "selected": lambda r: r["selected"],
    "trained_on": lambda r: r["trained_on"],
    "atypical": lambda r: r["atypical_share"],
    "gpu_s": lambda r: r["gpu_s"],
    "reach_s": lambda r: r["reach_s"],
}
HEADER = [
    "method",
    "seeds",
    "test_id acc",
    "test_id EM",
    "test_id R-L",
    "atypical acc",
    "atypical EM",
    "atypical R-L",
    "ICU text",
    "ICU attn",
    "samples",
    "trained on",
    "atypical %",
    "GPU s",
    "GPU s to full-data acc",
]


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _spread(xs) -> dict:
    vals = [x for x in xs if x is not None]
    return {"mean": _mean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None, "n": len(vals)}


def _cell(v: dict, digits: int = 1) -> str:
    if v["mean"] is None:
        return "-"
    s = f"{v['mean']:.{digits}f}"
    return s + (f" ± {v['std']:.1f}" if v["std"] else "")


def table_markdown(t: dict, cfg: dict) -> str:
    lines = [
        "# EgoSynth reproduction table",
        "",
        f"Device(s): {', '.join(t['devices']) or '-'}. Base model(s): {', '.join(t['base_models']) or '-'}"
        + (" (**more than one: rows were made from different warm-ups**)" if len(t["base_models"]) > 1 else "")
        + ".",
        "",
        "Accuracy: closed questions (%); EM and ROUGE-L: open questions (%); ICU text: share (%) of correct "
        "answers naming an interaction object; ICU attn: answer attention (%) inside the interaction boxes "
        f"(boxes cover {_box_area(t)}% of the frame). Mean ± sample std over seeds. GPU s: selection (LIMR: "
        "plus its full-data run) + training wall time. Full-data final accuracy on the curve subset: "
        f"{_fmt(t['target_accuracy'])}%.",
        "",
    ]
    b = (t.get("base") or {}).get("eval")
    if b:
        lines += [
            f"Base model (warm-up only, no RL): test_id accuracy {_fmt(b['test_id']['accuracy'])}, EM "
            f"{_fmt(b['test_id']['em'])}; test_atypical accuracy {_fmt(b['test_atypical']['accuracy'])}, EM "
            f"{_fmt(b['test_atypical']['em'])}; ICU text {_fmt(b.get('icu_textual'))}, attn "
            f"{_fmt(b.get('icu_attention'))}.",
            "",
        ]
    for sec, title in SECTIONS.items():
        lines += [f"## {title}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for name, label in t["sections"][sec]:
            e = t["rows"].get(name)
            if e is None:
                lines.append(f"| {label} | not run |" + " |" * (len(HEADER) - 2))
                continue
            reach = _cell(e["values"]["reach_s"]) + f" ({e['reached']}/{len(e['runs'])} reached)"
            cells = [
                _cell(e["values"][k], 0 if k in ("selected", "trained_on") else 1) for k in COLUMNS if k != "reach_s"
            ]
            lines.append(f"| {label} | {len(e['runs'])} | " + " | ".join(cells) + f" | {reach} |")
        lines.append("")
    lines += [
        "GPU-time(Ego3S to reach the target) / GPU-time(full data to reach the same target), targets "
        "from the full-data run's step-0 accuracy to its final accuracy (100% of its gain: the chosen "
        f"target; paper: total training times {PAPER['ego3s_h']} h / {PAPER['full_h']} h = {t['paper_ratio']}):",
        "",
        "| target (share of full-data gain) | accuracy | Ego3S GPU s (reached) | full GPU s (reached) | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in t.get("ratios") or []:
        n_ego, n_full = r["seeds"]
        lines.append(
            f"| {r['share']:.0%} | {_fmt(r['accuracy'])} | {_fmt(r['ego3s_s'])} ({r['ego3s_reached']}/{n_ego}) "
            f"| {_fmt(r['full_s'])} ({r['full_reached']}/{n_full}) | "
            + (f"**{_fmt(r['ratio'], 3)}**" if r["share"] == TARGET_SHARES[0] else _fmt(r["ratio"], 3))
            + " |"
        )
    lines.append("")
    return "\n".join(lines)


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _box_area(t: dict) -> str:
    return _fmt(_mean([r["eval"].get("icu_area") for e in t["rows"].values() for r in e["runs"]]))


# ------------------------------------------------------------------------------------ plots


def plot_accuracy_vs_time(t: dict, path: Path) -> None:
    """Curve-subset accuracy against GPU seconds (selection + training), one line per row and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, e) in enumerate(t["rows"].items()):
        for j, r in enumerate(e["runs"]):
            pts = [(p["gpu_s"], p["accuracy"]) for p in r["curve"] if p["accuracy"] is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(
                    xs,
                    ys,
                    "o-",
                    ms=3,
                    lw=2 if name in ("full", "ego3s") else 1,
                    color=f"C{i % 10}",
                    alpha=0.9 if j == 0 else 0.45,
                    label=name if j == 0 else None,
                )
    if t["target_accuracy"] is not None:
        ax.axhline(t["target_accuracy"], color="k", ls="--", lw=1, label="full-data final accuracy")
    ax.set_xlabel("GPU seconds (selection + training)")
    ax.set_ylabel("closed accuracy on the curve subset (%)")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, path)


def plot_variance(root: Path, t: dict, path: Path, names=("ego3s_long", "ego3s", "csm_irl", "csm")) -> None:
    """Mean within-group reward variance per step, with the ECR refreshes as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ego3s.report import variance_from_rewards

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, name in enumerate(n for n in names if n in t["rows"]):
        for j, r in enumerate(t["rows"][name]["runs"]):
            train = row_dir(root, name, r["seed"]) / "train"
            if not (train / "rewards.jsonl").exists():
                continue
            var, _ = variance_from_rewards(read_log(train / "rewards.jsonl"))
            if var:
                xs, ys = zip(*var)
                ax.plot(xs, ys, lw=1.2, color=f"C{i}", alpha=0.9 if j == 0 else 0.45, label=f"{name} s{r['seed']}")
            events = read_log(train / "ecr_events.jsonl") if (train / "ecr_events.jsonl").exists() else []
            for e in events:
                ax.axvline(e["step"], color=f"C{i}", ls="--", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("mean within-group reward variance")
    ax.set_title("dashed: ECR refreshes", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)


CURVES = (
    ("reward", "total reward"),
    ("rewards/accuracy_reward/mean", "accuracy reward"),
    ("rewards/interaction_reward/mean", "interaction reward"),
    ("interaction/mentions", "object mentions in <think>"),
    ("frac_reward_zero_std", "zero-variance groups"),
)


def _rolling(ys, k: int) -> list[float]:
    return [statistics.fmean(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))]


def plot_rewards(root: Path, t: dict, path: Path, names=("ego3s", "csm_irl", "csm", "full"), smooth: int = 1) -> None:
    """Training curves per step: total, accuracy and interaction reward, interaction-object
    mentions (the last two logged by the rows with the interaction reward) and the share of
    zero-variance groups. `smooth` > 1 draws each step faintly under its trailing mean over
    `smooth` steps and marks ECR refreshes (dashed), for long runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(15, 3.4))
    for i, name in enumerate(n for n in names if n in t["rows"]):
        for j, r in enumerate(t["rows"][name]["runs"]):
            train = row_dir(root, name, r["seed"]) / "train"
            if not (train / "log_history.json").exists():
                continue
            steps = [h for h in json.loads((train / "log_history.json").read_text()) if "reward" in h]
            events = train / "ecr_events.jsonl"
            refreshes = [e["step"] for e in read_log(events)] if smooth > 1 and events.exists() else []
            for ax, (key, _) in zip(axes, CURVES):
                pts = [(h["step"], h[key]) for h in steps if h.get(key) is not None]
                if pts:
                    xs, ys = zip(*pts)
                    label = f"{name} s{r['seed']}"
                    if smooth > 1:
                        ax.plot(xs, ys, lw=0.6, color=f"C{i}", alpha=0.3)
                        ys, label = _rolling(list(ys), smooth), f"{label} ({smooth}-step mean)"
                    ax.plot(xs, ys, lw=1.2, color=f"C{i}", alpha=0.9 if j == 0 else 0.45, label=label)
                for x in refreshes:
                    ax.axvline(x, color=f"C{i}", ls="--", lw=0.8)
    for ax, (_, title) in zip(axes, CURVES):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ego3s.files import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_table(cfg: dict, root: Path) -> dict:
    t = collect(cfg, root)
    write_json(root / "table.json", t)
    write_text(root / "table.md", table_markdown(t, cfg))
    plot_accuracy_vs_time(t, root / "accuracy_vs_time.png")
    plot_variance(root, t, root / "reward_variance.png")
    plot_rewards(root, t, root / "reward_curves.png")
    if "ego3s_long" in t["rows"]:
        plot_rewards(root, t, root / "reward_curves_long.png", names=("ego3s_long",), smooth=10)
    return t


# ------------------------------------------------------------------------------------ pack

PACKED = (
    "table.md",
    "table.json",
    "*.png",
    "run.log",
    "prep/manifest.json",
    "prep/data/audit.json",
    "prep/warmup/log_history.json",
    "prep/warmup/vision_pretrain.json",
    "prep/base_eval/results.*",
    "prep/base_eval/*/predictions.rank*.jsonl",
    "prep/base_curve/results.json",
    "select/*/done.json",
    "select/*/report.*",
    "select/*/scores.csv",
    "select/*/hist_*.png",
    "rows/*/row.json",
    "rows/*/manifest.json",
    "rows/*/eval/results.*",
    "rows/*/eval/*/predictions.rank*.jsonl",  # per-question answers: which questions each row gets right
    "rows/*/curve/*/results.json",
    "rows/*/train/*.json",
    "rows/*/train/*.jsonl",
    "rows/*/train/*.png",
)


def pack(root: Path, dest: Path, max_file: int = 4 << 20) -> Path:
    """A tgz of the small result files (paths relative to the run folder), for return and restore."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for pattern in PACKED:
            for p in sorted(root.glob(pattern)):
                if p.is_file() and p.stat().st_size <= max_file:
                    tar.add(p, arcname=str(p.relative_to(root)))
    return dest


def restore(tgz: Path, root: Path) -> int:
    """Unpack the finished rows of an earlier session's pack; files present are kept. Its prep/ and
    select/ are left out: they describe a base model this session does not have (it warms up anew),
    and so are rows without row.json (their manifest would point at missing checkpoints)."""
    n = 0
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if parts[0] in ("prep", "select") or (parts[0] == "rows" and f"rows/{parts[1]}/row.json" not in names):
                continue
            if m.isfile() and not (root / m.name).exists():
                tar.extract(m, root, filter="data")
                n += 1
    return n


# ------------------------------------------------------------------------------------ sizing


def estimate(cfg: dict) -> dict:
    """GPU seconds of the table from the measured rates in `sizing` (docs/RESULTS.md)."""
    z, tr = cfg["sizing"], cfg["train"]
    pool = cfg["data"]["train"]
    questions = 2 * cfg["data"]["test"]
    curve_q = 2 * cfg["curve_questions"]
    step_scale = tr["batch_size"] / 64 * tr["max_completion_length"] / 96
    step_s = z["grpo_s_per_step"] * step_scale
    eval_s = z["load_s"] + questions * z["eval_s_per_question"]
    vision_steps = (cfg["warmup"].get("vision_pretrain") or {}).get("steps", 0)
    prep = (
        z["data_s"]
        + z["build_s"]
        + cfg["warmup"]["steps"] * cfg["warmup"]["batch_size"] * z["warmup_s_per_sample"]
        + vision_steps * z.get("vision_pretrain_s_per_step", 0.0)
        + eval_s
        + z["load_s"]
        + curve_q * z["eval_s_per_question"]
    )
    k = cfg["selection"].get("limo_k", 32)
    select_s = {
        "full": 0.0,
        "random": 0.0,
        "limr": 0.0,
        "csm": z["load_s"] + 3 * pool * z["score_s_per_sample_view"],
        "s1": z["load_s"] + pool * z["score_s_per_sample_view"],
        "limo": z["load_s"] + pool * k * z["rollout_s_per_completion"],
    }
    refresh = cfg["train"]["ecr"]["probing_set_size"] * 3 * z["score_s_per_sample_view"]
    rows = {}
    for name, seed in plan(cfg):
        spec = cfg["rows"][name]
        steps, every = (
            (spec.get("train") or {}).get("max_steps", tr["max_steps"]),
            spec.get("eval_every", cfg["eval_every"]),
        )
        train_s = z["load_s"] + steps * step_s * (z["dapo_factor"] if spec["strategy"] == "dapo" else 1)
        if spec["ecr"]:
            # worst case: a refresh every other window (after one, a new reference window is needed)
            ecr = cfg["train"]["ecr"]
            window = ecr["monitoring_interval"]  # in steps, or in prompts (tr["batch_size"] // G per step)
            if ecr.get("monitoring_unit", "prompts") == "prompts":
                window = math.ceil(window / (tr["batch_size"] // tr["num_generations"]))
            train_s += refresh * (steps // (2 * window))
        curve_s = (steps // every + (steps % every > 0)) * (z["load_s"] + curve_q * z["eval_s_per_question"])
        rows[f"{name}_s{seed}"] = round(train_s + eval_s + curve_s)
    selections = {m: round(s) for m, s in select_s.items() if any(cfg["rows"][n]["select"] == m for n in cfg["rows"])}
    total = prep + sum(rows.values()) + sum(selections.values())
    sessions = math.ceil((total - prep) / (z["session_s"] - z["session_overhead_s"] - prep))  # each redoes prep
    return {
        "prep_s": round(prep),
        "selection_s": selections,
        "rows_s": rows,
        "total_s": round(total),
        "total_min": round(total / 60, 1),
        "sessions": sessions,
        "with_session_overheads_min": round(
            (total + (sessions - 1) * prep + sessions * z["session_overhead_s"]) / 60, 1
        ),
    }


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(HERE / "table.yaml"))
    ap.add_argument("--smoke", action="store_true", help="the tiny model on the CPU, a few samples, 1-2 steps a row")
    ap.add_argument("--out", help="run folder (default: the config's out)")
    ap.add_argument(
        "--rows",
        help="comma-separated rows (or row:seed) to run, in this order (LIMR brings in the "
        "full-data run it reads); default all, in the config's order",
    )
    ap.add_argument(
        "--time-limit",
        type=float,
        help="seconds for this call: start no row whose estimate (--estimate, "
        "with its selection) would overrun it; then write the table and pack",
    )
    ap.add_argument("--pack", help="write a tgz of the small result files here")
    ap.add_argument("--restore", help="unpack an earlier session's pack into the run folder first")
    ap.add_argument("--estimate", action="store_true", help="print the GPU-time estimate of the config and exit")
    ap.add_argument("--table-only", action="store_true", help="rebuild table and plots from finished rows")
    ap.add_argument(
        "--select-only",
        help="comma-separated selection methods (csm, s1, ...): prepare the base "
        "model, run these selections, print what each kept (atypical share against the pool's) and "
        "stop before the rows; for iterating on the base model",
    )
    a = ap.parse_args(argv)
    cfg = load_table_config(a.config, a.smoke, a.out)
    if a.estimate:
        print(json.dumps(estimate(cfg), indent=2))
        return 0
    root = Path(cfg["out"])
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = root / "run.log"

    def echo(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - t0:.0f}s] {msg}"
        print(line, flush=True)
        with open(log, "a") as f:
            f.write(line + "\n")

    if a.restore:
        echo(f"restored {restore(Path(a.restore), root)} files from {a.restore}")
    try:
        if not a.table_only:
            todo = []
            for n, s in plan(cfg, a.rows.split(",") if a.rows else None):
                why = stale_row(cfg, root, n, s)
                if why is not None:
                    echo(f"[row {n}_s{s}] {why}: redoing it")
                    shutil.rmtree(row_dir(root, n, s))
                if not (row_dir(root, n, s) / "row.json").exists():
                    todo.append((n, s))
            echo(f"rows to run: {', '.join(f'{n}_s{s}' for n, s in todo) or 'none'}")
            if a.select_only:
                from ego3s.data.io import read_jsonl

                prep = prepare(cfg, root, echo)
                pool_share = atypical_share(read_jsonl(prep["pool"]))
                for method in a.select_only.split(","):
                    sel = select(cfg, root, prep, method, 0, echo)
                    echo(
                        f"[select {method}] kept {sel['selected']}, atypical {sel['atypical_share']}% "
                        f"(pool {pool_share}%), topped up {sel['topped_up']}, funnel {sel['funnel']}"
                    )
                todo = []
            if todo:
                prep = prepare(cfg, root, echo)
                est = estimate(cfg)
                for n, s in todo:
                    method = cfg["rows"][n]["select"]
                    key = f"{method}_s{s}" if method in SEEDED else method
                    selected = (root / "select" / key / "done.json").exists()  # one from another base is redone: rare
                    need = est["rows_s"][f"{n}_s{s}"] + (0 if selected else est["selection_s"].get(method, 0))
                    if a.time_limit and time.perf_counter() - t0 + need > a.time_limit:
                        echo(f"time limit: {n}_s{s} needs ~{need} s more than is left; stopping")
                        break
                    t = time.perf_counter()
                    run_row(cfg, root, prep, n, s, echo)
                    echo(f"[row {n}_s{s}] done in {time.perf_counter() - t:.0f} s")
        t = write_table(cfg, root)
        echo(f"table: {len(t['rows'])} rows, ratio {t['ratio']} (paper {t['paper_ratio']})")
    finally:
        if a.pack:
            echo(f"packed {pack(root, Path(a.pack))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
