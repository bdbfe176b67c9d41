"""The EgoSynth study: every selection method and RL strategy from one base model (docs/egosynth_study.md).

    python experiments/egosynth/run.py [--config experiments/egosynth/table.yaml] [--rows full,ego3s]
        [--smoke] [--out DIR] [--time-limit S] [--pack FILE.tgz] [--restore FILE.tgz] [--estimate]
        [--publish [PATH]]

Layout of the run folder (`out` in the YAML):

    prep/            EgoSynth pool and warm-up pool, the second test set (test2/) and the held-out
                     curve set (curve_data/), each from its own data seed, the base model (smol +
                     supervised warm-up), the base model's evaluations (base_eval/, base_eval2/,
                     base_curve/)
    select/<method>  one selection per method (per seed for the seeded ones), shared by the rows
    rows/<row>_s<seed>/  train/ (checkpoints every `eval_every` steps, wall.jsonl), eval/, eval2/,
                     curve/, row.json (written last: a row with row.json is finished and skipped on rerun)
    table.md, table.json, egosynth.json, commands.jsonl, accuracy_vs_time.png, reward_variance.png,
    reward_curves.png

The stages are the pipeline's own functions (ego3s.pipeline: make_data, make_model, warm_up,
select_samples, train_policy, evaluate_models), composed here for one base model and many rows;
what only the table needs stays here: the curve set and the accuracy at every checkpoint, the
wall clock per step, the intervals and paired comparisons (ego3s.eval.paired, ego3s.summary), the
table, plots and pack.

Every stage resumes (the pipeline's manifest per folder; training from its checkpoints, evaluation
from its predictions), so a killed run or a new session continues where it stopped. A new session
rebuilds prep/ (the base model is too large to carry) and restores finished rows from a pack; each
row records the base model's fingerprint so rows made from different base models can be told apart.
Nothing is reused from other inputs: prep/'s stages, each selection (`done.json`) and each row
(`row.json`, its stages) record the config they were made from (`inputs`, fingerprints chained
from prep/'s config); an edited config redoes what it changes and everything after it, saying why.

Time to target: each row's accuracy curve (the held-out curve set, at every checkpoint) against GPU
seconds (selection + training). The time ratio is like for like: Ego3S's time to reach a target
over the full-data run's time to reach the same target, reported at the chosen target (the
full-data run's final accuracy) and at 75% and 50% of the full-data run's gain over its step-0
accuracy (`targets`, `time_ratio`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
    ["ego3s:0", "csm_grpo", "full:0"]) runs those rows, or one seed of a row, in the order given, so the
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
            "second_test": second_test_config(cfg),
            "curve": curve_config(cfg),
            "curve_questions": cfg["curve_questions"],
            "relevance_file": file_identity(rel, "content") if rel else None,
        },
        "model": {"model": cfg["model"], "seed": cfg["data_seed"]},
        "warmup": {"warmup": cfg["warmup"], "deterministic": bool(cfg.get("deterministic"))},
        "base_eval": {"evaluation": cfg["evaluation"]},
    }


def second_test_config(cfg: dict) -> dict:
    """The second test set: the RL pool's world drawn with another data seed (`second_test_seed`),
    `second_test` questions per split, no pool of its own."""
    return {**cfg["data"], "seed": cfg["second_test_seed"], "train": 0, "probe": 0, "test": cfg["second_test"]}


CURVE_MARGIN = 4  # clips generated per closed curve question wanted (about half the questions are closed)


def curve_config(cfg: dict) -> dict:
    """The curve set's generation: its own data seed (`curve_seed`), so that it shares no question
    with either test set; its closed questions are kept (`curve_questions` per split)."""
    return {
        **cfg["data"],
        "seed": cfg["curve_seed"],
        "train": 0,
        "probe": 0,
        "test": CURVE_MARGIN * cfg["curve_questions"],
    }


def check_config(cfg: dict) -> None:
    """Refuse a table whose test, curve and training data could share questions (one data seed
    each), or whose ECR rows cannot refresh early enough to train on the refreshed samples."""
    seeds = {
        "data.seed": cfg["data"]["seed"],
        "warmup_data.seed": cfg["warmup_data"]["seed"],
        "second_test_seed": cfg["second_test_seed"],
        "curve_seed": cfg["curve_seed"],
    }
    if cfg.get("vision_data"):
        seeds["vision_data.seed"] = cfg["vision_data"]["seed"]
    if len(set(seeds.values())) < len(seeds):
        raise SystemExit(f"the table's data sets must each have their own seed (held out): {seeds}")
    for name, sched in ecr_schedules(cfg).items():
        if not sched["refreshes_possible"] or sched["first_possible_refresh_step"] > sched["planned_steps"] // 2:
            raise SystemExit(
                f"row {name}: ECR cannot refresh in the first half of its run ({sched['message']}); "
                "lower train.ecr.monitoring_interval"
            )


def ecr_schedules(cfg: dict) -> dict:
    """Per ECR row, the curriculum's own schedule check (ego3s.curriculum.monitor.plan): the steps
    where a refresh can happen, and how many refreshes training can use."""
    from ego3s.curriculum.monitor import ECRConfig, plan, plan_message

    out = {}
    for name, spec in cfg["rows"].items():
        if not spec["ecr"]:
            continue
        tr = merge(cfg["train"], spec.get("train") or {})
        ecr = from_dict(ECRConfig, {k: v for k, v in tr["ecr"].items() if k != "ecr"}, "train.ecr.")
        p = plan(ecr, tr["max_steps"], 1.0, tr["batch_size"] // tr["num_generations"])
        out[name] = {**p, "message": plan_message(p)}
    return out


def prep_identity(cfg: dict) -> str:
    """The fingerprint of prep/'s config (not of its contents: a new session's rebuilt base model
    has the same one), which every selection and row chains onto."""
    from ego3s.pipeline import chain_fingerprints

    return chain_fingerprints(prep_inputs(cfg))["base_eval"]


def select_inputs(cfg: dict, method: str, seed: int) -> dict:
    seed = seed if method in SEEDED else 0
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
        second = make_data(from_dict(EgoSynthConfig, second_test_config(cfg), "second_test."), d / "test2", audit=False)
        curve = d / "curve_data"  # the held-out set of the accuracy-over-time curves
        pool = make_data(from_dict(EgoSynthConfig, curve_config(cfg), "curve."), d / "curve_pool", audit=False)
        write_curve_set(Path(pool["egosynth"]), curve, cfg["curve_questions"])
        rel = cfg["selection"].get("relevance_file")
        if rel:  # a copy the rows add to (ECR probes), next to the data it belongs to
            shutil.copy(rel, d / "relevance.json")
        return {
            **made,
            "test2": second["egosynth"],
            "curve": str(curve),
            "warmup_pool": warm_pool,
            "relevance": str(d / "relevance.json"),
        }

    paths = run.run_stage("data", data, echo, inputs)
    built = run.run_stage("model", lambda: make_model(cfg["model"], d / "model", cfg["data_seed"]), echo, inputs)

    def warm() -> dict:
        with deterministic(cfg.get("deterministic", False), cfg["data_seed"]):
            final = warm_up(warm_cfg, built["base"], paths["warmup_pool"], d / "warmup")["model"]
        _drop_checkpoints(d / "warmup")
        return {"model": final, "fingerprint": model_fingerprint(final)}

    base = run.run_stage("warmup", warm, echo, inputs)

    def base_eval() -> dict:
        full = evaluate(cfg, base["model"], paths["egosynth"], d / "base_eval", icu=cfg["evaluation"].get("icu", False))
        second = evaluate(cfg, base["model"], paths["test2"], d / "base_eval2", icu=False)
        sub = evaluate(cfg, base["model"], paths["curve"], d / "base_curve", icu=False)
        return {"eval": full, "eval2": second, "curve_accuracy": sub["accuracy"]}

    if not run.done("base_eval"):
        reuse_base_eval(run, root, base["fingerprint"], echo)
    ev = run.run_stage("base_eval", base_eval, echo, inputs)
    return {
        **paths,
        "base": base["model"],
        "fingerprint": base["fingerprint"],
        "base_eval": ev,
        "identity": run.fingerprints["base_eval"],
    }


RESTORED = "restored"  # the run folder's copy of a restored pack's prep/ evaluation files


def reuse_base_eval(run, root: Path, fingerprint: str, echo=print) -> bool:
    """Take the base model's evaluation from a restored pack (`restore`) instead of redoing it
    (about 2 GPU-minutes per machine), when it is an evaluation of this very model: the pack's
    base has this session's weights fingerprint and its evaluation had this config's inputs."""
    old = root / RESTORED / "prep"
    path = old / "manifest.json"
    if not path.exists():
        return False
    stages = json.loads(path.read_text()).get("stages", {})
    warm, ev = stages.get("warmup", {}), stages.get("base_eval", {})
    if ev.get("status") != "done" or ev.get("input_fingerprint") != run.fingerprints["base_eval"]:
        echo("[base_eval] the restored pack's base evaluation had other inputs: evaluating anew")
        return False
    if (warm.get("outputs") or {}).get("fingerprint") != fingerprint:
        echo(
            f"[base_eval] the restored pack's base model {(warm.get('outputs') or {}).get('fingerprint')} is not "
            f"this one ({fingerprint}): evaluating anew"
        )
        return False
    for src in sorted(old.glob("base_eval*")) + sorted(old.glob("base_curve")):
        shutil.copytree(src, root / "prep" / src.name, dirs_exist_ok=True)
    run.manifest["stages"]["base_eval"] = {**ev, "reused": f"restored pack, base model {fingerprint}"}
    run.save()
    echo(f"[base_eval] reused from the restored pack: same base model {fingerprint}, same inputs")
    return True


def write_curve_set(src: Path, dest: Path, n: int) -> None:
    """The first `n` closed questions of each test split of `src` (a generation of its own seed)
    into `dest`: the curve reads closed accuracy only, so every question it pays for counts."""
    from ego3s.data.io import read_jsonl, write_jsonl

    for split in ("test_id", "test_atypical"):
        closed = [s for s in read_jsonl(src / f"{split}.jsonl") if s.task == "closeqa"][:n]
        if len(closed) < n:
            raise SystemExit(f"curve set: {src / split}.jsonl has {len(closed)} closed questions, {n} wanted")
        write_jsonl(dest / f"{split}.jsonl", closed)


class deterministic:
    """Deterministic kernels while building the base model (`deterministic: true`): seeded, cuDNN
    autotuning off, `torch.use_deterministic_algorithms(True, warn_only=True)` (an op without a
    deterministic kernel warns instead of failing). CUBLAS_WORKSPACE_CONFIG must be set before CUDA
    starts: `main` sets it. The previous settings come back afterwards, so rows run at full speed."""

    def __init__(self, on: bool, seed: int):
        self.on, self.seed = on, seed

    def __enter__(self):
        if not self.on:
            return self
        import torch
        from transformers import set_seed

        self.prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        set_seed(self.seed)
        return self

    def __exit__(self, *exc):
        if self.on:
            import torch

            torch.use_deterministic_algorithms(self.prev[0])
            torch.backends.cudnn.benchmark = self.prev[1]
        return False


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

    seed = seed if method in SEEDED else 0  # one selection for every seed of an unseeded method
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
    from ego3s.pipeline import Run, RunConfig, train_policy, versions
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
    stages = {"train": inputs, "eval": {}, "eval2": {}, "curve": {}}
    run.check_inputs(stages, echo)  # an edited row redoes every stage

    def train() -> dict:
        clock = wall_clock(d / "train" / "wall.jsonl")
        steps = train_policy(tc, prep["base"], selected, prep["pool"], d / "train", callbacks=[clock])["steps"]
        _free()
        return {"steps": steps}

    steps = run.run_stage("train", train, echo, stages)["steps"]
    final = str(d / "train" / "final")
    evaluated = spec.get("eval", True)  # false: a prerequisite run (LIMR's log), trained only
    ev = ev2 = None
    if evaluated:
        ev = run.run_stage(
            "eval",
            lambda: evaluate(cfg, final, prep["egosynth"], d / "eval", icu=cfg["evaluation"].get("icu", False)),
            echo,
            stages,
        )
        ev2 = run.run_stage("eval2", lambda: evaluate(cfg, final, prep["test2"], d / "eval2", icu=False), echo, stages)

    def curve() -> dict:
        walls = {r["step"]: r["wall_s"] for r in read_log(d / "train" / "wall.jsonl")}
        # `dir`: the evaluation (relative to the run folder) whose per-question answers give the interval
        points = [
            {"step": 0, "train_s": 0.0, "accuracy": prep["base_eval"]["curve_accuracy"], "dir": "prep/base_curve"}
        ]
        ckpts = sorted((int(p.name.split("-")[1]), p) for p in (d / "train").glob("checkpoint-*"))
        for step, p in ckpts:
            m = evaluate(cfg, str(p), prep["curve"], d / "curve" / f"step-{step}", icu=False)
            where = str((d / "curve" / f"step-{step}").relative_to(root))
            points.append({"step": step, "train_s": walls.get(step), "accuracy": m["accuracy"], "dir": where})
        if not ckpts or ckpts[-1][0] != steps:
            m = evaluate(cfg, final, prep["curve"], d / "curve" / "final", icu=False)
            where = str((d / "curve" / "final").relative_to(root))
            points.append({"step": steps, "train_s": walls.get(steps), "accuracy": m["accuracy"], "dir": where})
        return {"points": points}

    points = run.run_stage("curve", curve, echo, stages)["points"] if evaluated else []
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
        **ecr_usage(d / "train", len(events)),
        "eval": ev,
        "eval2": ev2,
        "curve": [{**p, "gpu_s": round(offset + (p["train_s"] or 0.0), 3)} for p in points],
        "base_fingerprint": prep["fingerprint"],
        "device": device_name(),
        "versions": versions(),  # the packages that computed it (rouge-score and nltk among them)
        "inputs": inputs,
        "command": (read_log(root / "commands.jsonl") or [None])[-1],  # the driver call that ran it
    }
    row["gpu_s"] = round(offset + row["train_s"], 3)
    write_json(d / "row.json", row)
    return row


def ecr_usage(train: Path, events: int) -> dict:
    """The curriculum's own count (`ecr_state.json`): refreshes, those training used afterwards,
    the samples they added and how many of those were drawn into a training batch."""
    path = train / "ecr_state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    totals = state.get("usage_totals") or {}
    return {
        "ecr_refreshes": state.get("refreshes", events),
        "ecr_refreshes_used": state.get("refreshes_used"),
        "ecr_added": totals.get("added"),
        "ecr_added_drawn": totals.get("added_drawn"),
        "ecr_schedule": {k: v for k, v in (state.get("schedule") or {}).items() if k != "message"} or None,
    }


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------ table


def collect(cfg: dict, root: Path) -> dict:
    """Every finished row made from the reference base model (the others are listed in `excluded`):
    mean and spread over seeds, accuracies with 95% intervals, paired differences against the
    full-data row and the base model, time to the full-data accuracy, the ratio."""
    rows, runs_all = {}, []
    for name in cfg["rows"]:
        runs = [json.loads(p.read_text()) for p in sorted((root / "rows").glob(f"{name}_s*/row.json"))]
        runs_all += [r for r in runs if r["row"] == name]
    reference, source = reference_base(root, runs_all)
    excluded = [
        {"row": r["row"], "seed": r["seed"], "base_fingerprint": r["base_fingerprint"]}
        for r in runs_all
        if r["base_fingerprint"] != reference
    ]
    for name in cfg["rows"]:
        runs = [r for r in runs_all if r["row"] == name and r["base_fingerprint"] == reference]
        if runs:
            rows[name] = {"runs": runs}
    full = [r for r in rows.get("full", {}).get("runs", []) if r["curve"]]
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
    gain = curve_gain(root, full)
    manifest = prep_dir(root) / "manifest.json"
    stages = json.loads(manifest.read_text())["stages"] if manifest.exists() else {}
    base = stages.get("base_eval", {}).get("outputs")
    prep_fp = (stages.get("warmup", {}).get("outputs") or {}).get("fingerprint")
    stats = question_stats(root, rows, base_here=prep_fp is not None and prep_fp == reference)
    return {
        "rows": rows,
        "stats": stats,
        "base": base,
        "target_accuracy": target,
        "target_gain": gain,
        "ratio": ratio,
        "ratios": ratios,
        "paper_ratio": round(PAPER["ego3s_h"] / PAPER["full_h"], 3),
        "base_fingerprint": reference,
        "base_fingerprint_source": source,
        "base_models": sorted({r["base_fingerprint"] for r in runs_all}),
        "excluded": excluded,
        "devices": sorted({r["device"] for e in rows.values() for r in e["runs"]}),
        "sections": {
            s: [(n, spec["labels"][s]) for n, spec in cfg["rows"].items() if s in spec.get("labels", {})]
            for s in SECTIONS
        },
    }


def reference_base(root: Path, runs: list[dict]) -> tuple[str | None, str]:
    """The base model the table is about: this run folder's own (prep/, the base whose evaluation
    the paired comparisons use; a restored pack's when the table is rebuilt from the pack alone),
    else the one most finished rows were made from."""
    from collections import Counter

    manifest = prep_dir(root) / "manifest.json"
    if manifest.exists():
        fp = (json.loads(manifest.read_text())["stages"].get("warmup", {}).get("outputs") or {}).get("fingerprint")
        if fp:
            return fp, "/".join(manifest.parent.relative_to(root).parts)
    counts = Counter(r["base_fingerprint"] for r in runs)
    return (counts.most_common(1)[0][0], "most rows") if counts else (None, "none")


def check_base(prep_fp: str, root: Path, echo=print) -> list[str]:
    """Say whether this session's base model (rebuilt) is the one the finished (restored) rows were
    made from; returns the rows that were not (the table leaves them out)."""
    others = []
    for p in sorted((root / "rows").glob("*/row.json")):
        fp = json.loads(p.read_text())["base_fingerprint"]
        if fp != prep_fp:
            others.append(f"{p.parent.name} ({fp})")
    n = len(list((root / "rows").glob("*/row.json")))
    if not n:
        echo(f"base model {prep_fp}: no finished rows yet")
    elif not others:
        echo(f"base model {prep_fp}: MATCHES all {n} finished rows")
    else:
        echo(
            f"base model {prep_fp}: DOES NOT MATCH {len(others)} of {n} finished rows, left out of the table: "
            + ", ".join(others)
        )
    return others


SPLITS = ("test_id", "test_atypical")
SETS = {"eval": SPLITS, "eval2": ("second_test_id", "second_test_atypical")}  # folder -> its splits' names
METRICS = {"closeqa": "accuracy", "openqa": "em"}  # closed questions: accuracy; open: exact match


def question_scores(folder: Path, names: tuple[str, ...] = SPLITS) -> dict[str, dict[str, dict[str, float]]]:
    """`{split: {metric: {question id: 0/1}}}` from an evaluation's per-question answers
    (`egosynth/per_sample.jsonl`, scored by `ego3s.eval.paired.correctness`); {} when absent."""
    from ego3s.eval.paired import correctness

    path = folder / "egosynth" / "per_sample.jsonl"
    if not path.exists():
        return {}
    out: dict = {n: {m: {} for m in METRICS.values()} for n in names}
    for r in read_log(path):
        metric, split = METRICS.get(r.get("task")), r.get("split")
        c = correctness(r) if metric and split in SPLITS else None
        if c is not None:
            out[names[SPLITS.index(split)]][metric][str(r["id"])] = c
    return out


def eval_scores(folder: Path) -> dict:
    """Both test sets of a row (`eval/`, `eval2/`) or of the base model (`base_eval`, `base_eval2`)."""
    out = {}
    for sub, names in SETS.items():
        out.update(question_scores(folder.parent / (folder.name + sub[4:]), names))
    return out


def pool_seeds(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Per question, the mean score over seeds (on the questions every seed answered): the row's
    pooled answer to each question, paired question by question with another row's."""
    if not per_seed:
        return {}
    ids = set.intersection(*(set(x) for x in per_seed))
    return {i: statistics.fmean(x[i] for x in per_seed) for i in sorted(ids)}


def mean_interval(scores: dict[str, float]) -> dict:
    """Mean (%) with its 95% interval: Wilson for 0/1 scores (one seed), else the bootstrap over
    questions of `ego3s.eval.paired` (the difference to a zero score is the mean itself)."""
    from ego3s.eval.paired import paired_difference
    from ego3s.summary import wilson

    vals = list(scores.values())
    if not vals:
        return {"mean": None, "ci95": [None, None], "n": 0, "interval": None}
    if all(v in (0.0, 1.0) for v in vals):
        return {
            "mean": round(100 * statistics.fmean(vals), 2),
            "ci95": wilson(int(sum(vals)), len(vals)),
            "n": len(vals),
            "interval": "wilson",
        }
    r = paired_difference(vals, [0.0] * len(vals))
    return {
        "mean": round(r["value"], 2),
        "ci95": [round(x, 2) for x in r["ci95"]],
        "n": len(vals),
        "interval": "bootstrap over questions (per-question mean over seeds)",
    }


def paired(a: dict[str, float], b: dict[str, float]) -> dict | None:
    """a - b in points, paired per question (`ego3s.eval.paired.compare_predictions`)."""
    from ego3s.eval.paired import compare_predictions

    if not a or not b:
        return None
    r = compare_predictions(a, b)
    keep = ("value", "ci95", "n", "a", "b", "mcnemar_p", "n_a_only", "n_b_only", "only_a", "only_b")
    return {k: r[k] for k in keep if k in r}


# Pairs of rows that differ in one part of the method: row minus reference is what that part adds,
# on the same questions (the ablation the paper's table implies; docs/egosynth_study.md).
ABLATIONS = (
    ("ego3s", "csm_irl", "ECR"),
    ("csm_irl", "csm_grpo", "IRL"),
    ("csm_grpo", "full", "CSM's selection"),
    ("csm_grpo", "random", "CSM against random at the same budget"),
)


def question_stats(root: Path, rows: dict, base_here: bool) -> dict:
    """Per row and the base model: each split's closed accuracy and open EM with 95% intervals
    (seeds pooled per question, and per seed), the paired difference against the full-data row and
    against the base model, and the curve's accuracy with intervals at every step. `base_here`:
    `prep_dir` holds the evaluation of the base model the rows were made from."""
    base = eval_scores(prep_dir(root) / "base_eval") if base_here else {}
    out: dict = {"base": {k: {m: mean_interval(v) for m, v in ms.items()} for k, ms in base.items()}, "rows": {}}
    pooled = {}
    rows = {n: e for n, e in rows.items() if e["runs"][0].get("eval") is not None}  # not trained-only runs
    for name, e in rows.items():
        per_seed = [eval_scores(row_dir(root, name, r["seed"]) / "eval") for r in e["runs"]]
        pooled[name] = {
            k: {m: pool_seeds([s.get(k, {}).get(m, {}) for s in per_seed]) for m in METRICS.values()}
            for k in (*SPLITS, *SETS["eval2"])
        }
        entry = {
            k: {
                m: {
                    **mean_interval(pooled[name][k][m]),
                    "per_seed": [
                        {"seed": r["seed"], **mean_interval(s.get(k, {}).get(m, {}))}
                        for r, s in zip(e["runs"], per_seed)
                    ],
                }
                for m in METRICS.values()
            }
            for k in (*SPLITS, *SETS["eval2"])
        }
        entry["curve"] = curve_with_intervals(root, e["runs"])
        out["rows"][name] = entry
    for name in rows:
        for ref, ref_scores in (("full", pooled.get("full")), ("base", base)):
            out["rows"][name][f"paired_vs_{ref}"] = (
                {
                    k: {m: paired(pooled[name][k][m], (ref_scores.get(k) or {}).get(m, {})) for m in METRICS.values()}
                    for k in pooled[name]
                }
                if ref_scores and name != ref
                else None
            )
    out["ablations"] = [
        {
            "row": row,
            "reference": ref,
            "adds": adds,
            "paired": {
                k: {m: paired(pooled[row][k][m], pooled[ref][k][m]) for m in METRICS.values()} for k in pooled[row]
            },
        }
        for row, ref, adds in ABLATIONS
        if row in pooled and ref in pooled
    ]
    return out


def prep_dir(root: Path) -> Path:
    """The base model's folder: this machine's prep/, or, in a table rebuilt from a pack alone
    (`--table-only --restore`), the pack's copy under restored/prep/."""
    own = root / "prep"
    if (own / "manifest.json").exists() or not (root / RESTORED / "prep" / "manifest.json").exists():
        return own
    return root / RESTORED / "prep"


def point_dir(root: Path, d: str) -> Path:
    """A curve point's evaluation folder; the step-0 point is the base model's (prep/...)."""
    parts = Path(d).parts
    return prep_dir(root).joinpath(*parts[1:]) if parts[:1] == ("prep",) else root / d


def point_scores(root: Path, point: dict) -> dict[str, float]:
    """A curve point's closed-question answers, `{question id: 0/1}` over both splits ({} when the
    point has no evaluation folder or its answers are absent)."""
    q = question_scores(point_dir(root, point["dir"])) if point.get("dir") else {}
    return {i: v for k in SPLITS for i, v in (q.get(k) or {}).get("accuracy", {}).items()}


def curve_with_intervals(root: Path, runs: list[dict]) -> list[dict]:
    """The row's curve, seeds pooled: per step the mean GPU seconds and the closed accuracy of the
    curve set with its 95% interval (per-question answers of each point's evaluation)."""
    steps = sorted({p["step"] for r in runs for p in r["curve"]})
    out = []
    for step in steps:
        pts = [p for r in runs for p in r["curve"] if p["step"] == step]
        per_seed = [point_scores(root, p) for p in pts]
        scores = pool_seeds([x for x in per_seed if x]) if all(per_seed) else {}
        acc = mean_interval(scores) if scores else {"mean": _mean([p["accuracy"] for p in pts]), "ci95": [None, None]}
        out.append(
            {
                "step": step,
                "gpu_s": _mean([p["gpu_s"] for p in pts]),
                "accuracy": acc["mean"],
                "ci95": acc["ci95"],
                "seeds": len(pts),
            }
        )
    return out


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


def curve_gain(root: Path, full: list[dict]) -> dict | None:
    """Whether the target means anything: the full-data row's gain on the curve set from its
    step-0 point to its last, paired per question (seeds pooled). Unless its interval excludes 0 (and,
    for one seed, the exact McNemar test agrees: p < 0.05), every target between the two points is
    inside the curve set's noise, and so is any time to it."""
    if not full or any(len(r["curve"]) < 2 for r in full):
        return None
    ends = []
    for point in (0, -1):
        per_seed = [point_scores(root, r["curve"][point]) for r in full]
        if not all(per_seed):
            return None
        ends.append(pool_seeds(per_seed))
    gain = paired(ends[1], ends[0])
    if gain is None:
        return None
    # one seed (0/1 scores): both tests, since with few discordant questions, all one way, the
    # bootstrap's interval leaves out 0 while the exact McNemar test does not (4 gained, 0 lost:
    # p = 0.125); seeds pooled (graded scores, no McNemar): the bootstrap's interval
    lo, p = gain["ci95"][0], gain.get("mcnemar_p")
    above = lo is not None and lo > 0 and (p is None or p < 0.05)
    return {**gain, "target_in_noise": not above}


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
    return lambda r: ((r["eval"] or {}).get(split) or {}).get(metric)


COLUMNS = {  # key -> how a row.json gives it; the table prints them in this order
    "id_acc": _split("test_id", "accuracy"),
    "id_em": _split("test_id", "em"),
    "id_rouge": _split("test_id", "rouge_l"),
    "aty_acc": _split("test_atypical", "accuracy"),
    "aty_em": _split("test_atypical", "em"),
    "aty_rouge": _split("test_atypical", "rouge_l"),
    "icu_text": lambda r: (r["eval"] or {}).get("icu_textual"),
    "icu_att": lambda r: (r["eval"] or {}).get("icu_attention"),
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


def gain_sentence(g: dict) -> str:
    """The table's sentence on `curve_gain`: whether the time-to-target targets mean anything."""
    p = g.get("mcnemar_p")
    return (
        f"Full data's gain on the curve set, last point minus step 0, paired per question: "
        f"{g['value']:+.1f} [{g['ci95'][0]:+.1f}, {g['ci95'][1]:+.1f}] points (n {g['n']}"
        + (f", McNemar p {p:.2g}). " if p is not None else "). ")
        + (
            "**Not above the noise: every target lies inside the curve set's noise, and the times "
            "to it and their ratio are not evidence of a speed-up or a slow-down.**"
            if g["target_in_noise"]
            else "The targets lie above the curve set's noise at step 0."
        )
    )


def table_markdown(t: dict, cfg: dict) -> str:
    lines = [
        "# EgoSynth reproduction table",
        "",
        f"Device(s): {', '.join(t['devices']) or '-'}. Base model: {t['base_fingerprint'] or '-'} "
        f"({'this run folder' if t['base_fingerprint_source'] == 'prep' else t['base_fingerprint_source']}).",
        "",
    ]
    if t["excluded"]:
        lines += [
            "**Left out: rows made from another base model** (a warm-up that did not reproduce this one's "
            "fingerprint; their numbers are not comparable): "
            + ", ".join(f"{x['row']}_s{x['seed']} ({x['base_fingerprint']})" for x in t["excluded"])
            + ".",
            "",
        ]
    lines += [
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
        lines += section(title, HEADER)
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
    if t.get("target_gain"):
        lines += [gain_sentence(t["target_gain"]), ""]
    lines += intervals_markdown(t)
    return "\n".join(lines)


def _ci(e: dict | None, key: str = "mean") -> str:
    if not e or e.get(key) is None:
        return "-"
    lo, hi = e["ci95"]
    return f"{e[key]:.1f} [{_fmt(lo)}, {_fmt(hi)}]"


def section(title: str, head: list[str], *notes: str) -> list[str]:
    """A markdown section that opens with a table: its title, notes, and the table's header rows."""
    return [
        f"## {title}",
        "",
        *(n for note in notes for n in (note, "")),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]


def intervals_markdown(t: dict) -> list[str]:
    """Every accuracy with its 95% interval and every row against the full-data row and the base
    model, paired per question (seeds pooled per question)."""
    st = t["stats"]
    head = ["row", "seeds"] + [f"{k} {m}" for k in (*SPLITS, *SETS["eval2"]) for m in ("acc", "EM")]
    lines = section(
        "Accuracy with 95% intervals (%)",
        head,
        "Closed accuracy (acc) and open exact match (EM) per test set; `second_*`: the second test set "
        "(another data seed). One seed: Wilson interval; several: the seeds' answers are averaged per "
        "question and the interval is a bootstrap over questions (ego3s.eval.paired).",
    )
    if st["base"]:
        lines.append(
            "| base model | - | "
            + " | ".join(
                _ci((st["base"].get(k) or {}).get(m)) for k in (*SPLITS, *SETS["eval2"]) for m in ("accuracy", "em")
            )
            + " |"
        )
    for name, e in st["rows"].items():
        lines.append(
            f"| {name} | {len(t['rows'][name]['runs'])} | "
            + " | ".join(_ci(e[k][m]) for k in (*SPLITS, *SETS["eval2"]) for m in ("accuracy", "em"))
            + " |"
        )
    head = ["row", "vs"] + [f"{k} acc" for k in (*SPLITS, *SETS["eval2"])] + ["test_atypical EM"]
    lines += [""] + section(
        "Paired differences (points, row minus reference, 95% interval; McNemar p for one seed each)", head
    )
    for name, e in st["rows"].items():
        for ref in ("full", "base"):
            d = e.get(f"paired_vs_{ref}")
            if not d:
                continue
            cells = [d[k]["accuracy"] for k in (*SPLITS, *SETS["eval2"])] + [d["test_atypical"]["em"]]
            lines.append(
                f"| {name} | {ref} | "
                + " | ".join(
                    _ci(c, "value") + (f" p={c['mcnemar_p']:.3g}" if c and c.get("mcnemar_p") is not None else "")
                    for c in cells
                )
                + " |"
            )
    if st.get("ablations"):
        cols = [(k, m) for k in SPLITS for m in ("accuracy", "em")] + [(k, "accuracy") for k in SETS["eval2"]]
        head = ["what it adds", "row - reference"] + [f"{k} {'acc' if m == 'accuracy' else 'EM'}" for k, m in cols]
        lines += [""] + section(
            "What each part adds (row minus the row without it, paired per question, 95% interval)", head
        )
        for a in st["ablations"]:
            lines.append(
                f"| {a['adds']} | {a['row']} - {a['reference']} | "
                + " | ".join(_ci((a["paired"].get(k) or {}).get(m), "value") for k, m in cols)
                + " |"
            )
    lines += [
        "",
        "ECR per seed (refreshes / used / added samples drawn): "
        + "; ".join(
            f"{n}: "
            + ", ".join(
                f"{r.get('ecr_refreshes')}/{r.get('ecr_refreshes_used')}/{r.get('ecr_added_drawn')}" for r in e["runs"]
            )
            for n, e in t["rows"].items()
            if e["runs"][0].get("ecr")
        )
        or "-",
        "",
    ]
    return lines


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _box_area(t: dict) -> str:
    return _fmt(_mean([(r["eval"] or {}).get("icu_area") for e in t["rows"].values() for r in e["runs"]]))


# ------------------------------------------------------------------------------------ plots


def plot_accuracy_vs_time(t: dict, path: Path) -> None:
    """Curve-set accuracy against GPU seconds (selection + training): per row, the seeds pooled
    (mean GPU seconds per step) with the 95% interval of each point, the seeds faintly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (name, e) in enumerate(t["rows"].items()):
        color, wide = f"C{i % 10}", name in ("full", "ego3s")
        for r in e["runs"]:
            pts = [(p["gpu_s"], p["accuracy"]) for p in r["curve"] if p["accuracy"] is not None]
            if pts and len(e["runs"]) > 1:
                ax.plot(*zip(*pts), "-", lw=0.6, color=color, alpha=0.3)
        pooled = [p for p in (t["stats"]["rows"].get(name) or {}).get("curve", []) if p["accuracy"] is not None]
        if pooled:
            xs, ys = [p["gpu_s"] for p in pooled], [p["accuracy"] for p in pooled]
            lo = [y - (p["ci95"][0] if p["ci95"][0] is not None else y) for y, p in zip(ys, pooled)]
            hi = [(p["ci95"][1] if p["ci95"][1] is not None else y) - y for y, p in zip(ys, pooled)]
            ax.errorbar(
                xs,
                ys,
                yerr=[lo, hi],
                fmt="o-",
                ms=3,
                lw=2 if wide else 1,
                capsize=2,
                color=color,
                label=f"{name} ({len(e['runs'])} seed{'s' * (len(e['runs']) > 1)})",
            )
    if t["target_accuracy"] is not None:
        ax.axhline(t["target_accuracy"], color="k", ls="--", lw=1, label="target: full-data final accuracy")
    ax.set_xlabel("GPU seconds (selection + training)")
    ax.set_ylabel("closed accuracy on the held-out curve set (%)")
    ax.set_title("seeds pooled per question; bars: 95% intervals", fontsize=9)
    _legend(ax, fontsize=7, ncol=2)
    _save(fig, path)


def plot_variance(root: Path, t: dict, path: Path, names=("ego3s", "csm_irl", "csm_grpo")) -> None:
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
    _legend(ax, fontsize=7)
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


def plot_rewards(
    root: Path, t: dict, path: Path, names=("ego3s", "csm_irl", "csm_grpo", "full"), smooth: int = 1
) -> None:
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
    _legend(axes[0], fontsize=7)
    _save(fig, path)


def _legend(ax, **kw) -> None:
    """A legend only when something is labelled (a table with no rows yet plots empty axes)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kw)


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
    write_json(root / "egosynth.json", results(cfg, root, t))
    write_text(root / "table.md", table_markdown(t, cfg))
    plot_accuracy_vs_time(t, root / "accuracy_vs_time.png")
    plot_variance(root, t, root / "reward_variance.png")
    plot_rewards(root, t, root / "reward_curves.png")
    return t


def producing_commands(log: list[dict], runs: list[dict]) -> list[dict]:
    """The driver calls behind the table's row runs (`runs`, their row.json): `log` from the first
    call that ran one of them on. Calls whose rows were withdrawn or redone stay in commands.jsonl
    but are not published as the table's commands. Runs from before rows recorded their command
    keep the whole log."""
    if not runs or any(not r.get("command") for r in runs):
        return log
    first = min(r["command"]["time"] for r in runs)
    return [c for c in log if c["time"] >= first]


def results(cfg: dict, root: Path, t: dict) -> dict:
    """`egosynth.json`: the study's machine-readable results (docs/egosynth_study.md has the
    schema): device, config, the commands that made the run folder, test set sizes, per row its
    seeds, base model, selection, accuracies with 95% intervals, paired differences against the
    full-data row and the base model, ECR usage, GPU seconds and time to target, and the ratio."""
    st = t["stats"]
    sizes = {}
    for k in (*SPLITS, *SETS["eval2"]):
        ns = [st["rows"][n][k]["accuracy"]["n"] + st["rows"][n][k]["em"]["n"] for n in st["rows"]]
        base = st["base"].get(k)
        sizes[k] = max(ns + ([base["accuracy"]["n"] + base["em"]["n"]] if base else []), default=0)
    rows = {}
    for name, e in t["rows"].items():
        runs, s = e["runs"], st["rows"].get(name)
        if s is None:  # trained only (LIMR's log): its cost is in LIMR's GPU seconds
            continue
        rows[name] = {
            "seeds": e["seeds"],
            "base_fingerprint": runs[0]["base_fingerprint"],
            "selection": {
                "method": runs[0]["select"],
                "kept": _mean([r["selected"] for r in runs]),
                "share_atypical": _mean([r["atypical_share"] for r in runs]),
                "seconds": _mean([r["selection_s"] + r["prereq_s"] for r in runs]),
            },
            "strategy": runs[0]["strategy"],
            "irl": runs[0]["irl"],
            "ecr": runs[0]["ecr"],
            **{k: s[k] for k in (*SPLITS, *SETS["eval2"])},
            "paired_vs_full": s["paired_vs_full"],
            "paired_vs_base": s["paired_vs_base"],
            "ecr_refreshes": [r.get("ecr_refreshes") for r in runs],
            "ecr_refreshes_used": [r.get("ecr_refreshes_used") for r in runs],
            "ecr_added": [r.get("ecr_added") for r in runs],
            "ecr_added_drawn": [r.get("ecr_added_drawn") for r in runs],
            "gpu_s": {"mean": _mean([r["gpu_s"] for r in runs]), "per_seed": [r["gpu_s"] for r in runs]},
            "time_to_target_s": {
                "mean": _mean([r["reach_s"] for r in runs]),
                "per_seed": [r["reach_s"] for r in runs],
                "reached": e["reached"],
            },
            "curve": s["curve"],
        }
    ratios = t.get("ratios") or []

    def ratio_entry(r: dict) -> dict:
        return {
            "target": r["accuracy"],
            "share_of_full_gain": r["share"],
            "ego3s_to_target_s": r["ego3s_s"],
            "full_to_target_s": r["full_s"],
            "ratio": r["ratio"],
            "reached": {"ego3s": r["ego3s_reached"], "full": r["full_reached"]},
            "seeds": r["seeds"],
        }

    return {
        "device": ", ".join(t["devices"]) or None,
        "config": cfg,
        "commands": producing_commands(
            read_log(root / "commands.jsonl"), [r for e in t["rows"].values() for r in e["runs"]]
        ),
        "base": {"fingerprint": t["base_fingerprint"], "source": t["base_fingerprint_source"], **st["base"]},
        "excluded": t["excluded"],
        "test": sizes,
        "ablations": st.get("ablations", []),
        "rows": rows,
        "time_ratio": (
            {
                **ratio_entry(ratios[0]),
                "target_in_noise": (t.get("target_gain") or {}).get("target_in_noise"),
                "others": [ratio_entry(r) for r in ratios[1:]],
            }
            if ratios
            else None
        ),
        "target_gain": t.get("target_gain"),
        "paper_ratio": t["paper_ratio"],
        "pooling": "seeds pooled per question (mean over seeds), paired per question; one seed: Wilson interval",
    }


# ------------------------------------------------------------------------------------ pack

PACKED = (
    "table.md",
    "table.json",
    "egosynth.json",
    "commands.jsonl",
    "*.png",
    "run.log",
    "prep/manifest.json",
    "prep/data/audit.json",
    "prep/warmup/log_history.json",
    "prep/warmup/vision_pretrain.json",
    "prep/base_eval*/results.*",
    "prep/base_eval*/*/predictions.rank*.jsonl",
    "prep/base_eval*/*/per_sample.jsonl",
    "prep/base_curve/results.json",
    "prep/base_curve/*/per_sample.jsonl",
    "select/*/done.json",
    "select/*/report.*",
    "select/*/scores.csv",
    "select/*/hist_*.png",
    "rows/*/row.json",
    "rows/*/manifest.json",
    "rows/*/eval*/results.*",
    "rows/*/eval*/*/predictions.rank*.jsonl",
    "rows/*/eval*/*/per_sample.jsonl",  # per-question answers: the paired comparisons across sessions
    "rows/*/curve/*/results.json",
    "rows/*/curve/*/*/per_sample.jsonl",  # the curve's intervals
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
    select/ stay out of the run folder: they describe a base model this session may not have (it
    warms up anew), and so do rows without row.json (their manifest would point at missing
    checkpoints). The pack's base evaluation goes to `restored/prep/`, for `reuse_base_eval` to
    take once this session's base model is known to be the same."""
    n = 0
    shutil.rmtree(root / RESTORED, ignore_errors=True)
    with tarfile.open(tgz) as tar:
        names = set(tar.getnames())
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if parts[0] == "prep" and m.isfile():
                tar.extract(m, root / RESTORED, filter="data")
                continue
            if parts[0] in ("prep", "select") or (parts[0] == "rows" and f"rows/{parts[1]}/row.json" not in names):
                continue
            if m.isfile() and not (root / m.name).exists():
                tar.extract(m, root, filter="data")
                n += 1
    return n


# ------------------------------------------------------------------------------------ sizing


def estimate(cfg: dict, only: list[str] | None = None) -> dict:
    """GPU seconds of the table from the measured rates in `sizing` (docs/egosynth_study.md), and
    how it spreads over device calls and sessions: each session loses `session_overhead_s` to the
    machine's start and rebuilds the base model (it cannot be carried back; its evaluation is
    taken from the pack when the fingerprint matches), each call is time-boxed
    to `call_s`, and the rows (`only`: those of `--rows`) are packed into sessions in run order."""
    z, tr = cfg["sizing"], cfg["train"]
    pool = cfg["data"]["train"]
    plain = z.get("eval_s_per_question_plain", z["eval_s_per_question"])
    icu_rate = z["eval_s_per_question"] if cfg["evaluation"].get("icu") else plain
    eval_s = z["load_s"] + 2 * cfg["data"]["test"] * icu_rate  # the test set, with ICU when configured
    eval2_s = z["load_s"] + 2 * cfg["second_test"] * plain  # the second test set, no ICU
    curve_s = z["load_s"] + 2 * cfg["curve_questions"] * plain  # one point of the curve
    vision_steps = (cfg["warmup"].get("vision_pretrain") or {}).get("steps", 0)
    prep_parts = {
        "data": z["data_s"],
        "build": z["build_s"],
        "warmup": cfg["warmup"]["steps"] * cfg["warmup"]["batch_size"] * z["warmup_s_per_sample"],
        "vision_pretrain": vision_steps * z.get("vision_pretrain_s_per_step", 0.0),
        "base_eval": eval_s + eval2_s + curve_s,
    }
    prep = sum(prep_parts.values())
    k = cfg["selection"].get("limo_k", 32)
    select_s = {
        "full": 0.0,
        "random": 0.0,
        "limr": 0.0,
        "csm": z["load_s"] + 3 * pool * z["score_s_per_sample_view"],
        "s1": z["load_s"] + pool * z["score_s_per_sample_view"],
        "limo": z["load_s"] + pool * k * z["rollout_s_per_completion"],
    }
    refresh = tr["ecr"]["probing_set_size"] * z["ecr_refresh_s_per_probe"]  # re-scoring inside the trainer
    schedules = ecr_schedules(cfg)
    rows, parts = {}, {}
    todo = plan(cfg, only)
    for name, seed in todo:
        spec = cfg["rows"][name]
        rt = merge(tr, spec.get("train") or {})
        steps, every = rt["max_steps"], spec.get("eval_every", cfg["eval_every"])
        row_step = z["grpo_s_per_step"] * rt["batch_size"] / 64 * rt["max_completion_length"] / 96
        train_s = z["load_s"] + steps * row_step * (z["dapo_factor"] if spec["strategy"] == "dapo" else 1)
        if spec["ecr"]:  # worst case: every possible refresh happens
            train_s += refresh * len(schedules[name]["refresh_steps_possible"])
        evals = (eval_s + eval2_s + (steps // every + (steps % every > 0)) * curve_s) if spec.get("eval", True) else 0
        rows[f"{name}_s{seed}"] = round(train_s + evals)
        parts[name] = {"train": round(train_s), "evaluation": round(evals)}
    used = {cfg["rows"][n]["select"] for n, _ in todo}
    selections = {m: round(s) for m, s in select_s.items() if m in used}
    total = prep + sum(rows.values()) + sum(selections.values())
    # sessions and calls, rows in run order, each row's first use of a selection paying for it
    call = z.get("call_s", 570) - 30  # table_gpu.sh gives the driver its box minus 30 s
    # later machines rebuild the base but take its evaluation from the pack (reuse_base_eval)
    reprep = prep - prep_parts["base_eval"]
    sessions, calls, left, in_call, paid = (
        1,
        math.ceil(prep / call),
        z["session_s"] - z["session_overhead_s"] - prep,
        call,
        set(),
    )
    for name, seed in todo:
        m = cfg["rows"][name]["select"]
        need = rows[f"{name}_s{seed}"] + (selections.get(m, 0) if m not in paid else 0)
        paid.add(m)
        if need > left:
            sessions, calls, in_call = sessions + 1, calls + math.ceil(reprep / call), call
            left = z["session_s"] - z["session_overhead_s"] - reprep
        if need > in_call:
            calls, in_call = calls + 1, call
        left, in_call = left - need, in_call - need
    held = round((total + (sessions - 1) * reprep + sessions * z["session_overhead_s"]) / 60, 1)
    return {
        "prep_s": round(prep),
        "later_prep_s": round(reprep),
        "prep_parts_s": {k: round(v) for k, v in prep_parts.items()},
        "per_evaluation_s": {
            "test set": round(eval_s),
            "second test set": round(eval2_s),
            "curve point": round(curve_s),
        },
        "selection_s": selections,
        "row_parts_s": parts,
        "rows_s": rows,
        "total_s": round(total),
        "total_min": round(total / 60, 1),
        "sessions": sessions,  # machines held up to session_s each, every one redoing prep
        "calls": calls,
        "with_session_overheads_min": held,
        # device time charged: a one-chip machine has counted part of its held time (device_time_factor)
        "device_min": round(held * z.get("device_time_factor", 1.0), 1),
        "ecr_schedule": {
            n: {k: v[k] for k in ("first_possible_refresh_step", "refresh_steps_possible", "refreshes_possible")}
            for n, v in schedules.items()
        },
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
    ap.add_argument(
        "--publish",
        nargs="?",
        const=str(HERE.parent.parent / "docs" / "results" / "egosynth.json"),
        help="copy the run folder's egosynth.json here at the end (default docs/results/egosynth.json)",
    )
    ap.add_argument("--table-only", action="store_true", help="rebuild table and plots from finished rows")
    ap.add_argument(
        "--select-only",
        help="comma-separated selection methods (csm, s1, ...): prepare the base "
        "model, run these selections, print what each kept (atypical share against the pool's) and "
        "stop before the rows; for iterating on the base model",
    )
    a = ap.parse_args(argv)
    cfg = load_table_config(a.config, a.smoke, a.out)
    check_config(cfg)
    if a.estimate:
        print(json.dumps(estimate(cfg, a.rows.split(",") if a.rows else None), indent=2))
        return 0
    if cfg.get("deterministic"):  # cuBLAS reads it when CUDA starts: before any model is built
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
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
    append_jsonl(
        root / "commands.jsonl",
        {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": ["run.py", *(argv or sys.argv[1:])]},
    )
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
                check_base(prep["fingerprint"], root, echo)
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
                check_base(prep["fingerprint"], root, echo)
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
        echo(
            f"table: {len(t['rows'])} rows, ratio {t['ratio']} (paper {t['paper_ratio']}), base model "
            f"{t['base_fingerprint']}"
            + (f", {len(t['excluded'])} run(s) from another base left out" if t["excluded"] else "")
        )
        if a.publish:
            Path(a.publish).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "egosynth.json", a.publish)
            echo(f"published {a.publish}")
    finally:
        if a.pack:
            echo(f"packed {pack(root, Path(a.pack))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
