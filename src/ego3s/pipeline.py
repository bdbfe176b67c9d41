"""`ego3s run` / `ego3s demo`: the whole method in one resumable job.

Stages, in order, each into its own folder of the run:

    data -> model -> warmup -> select -> train -> eval -> report

Each stage is a function of this module (`make_data`, `make_model`, `warm_up`, `select_samples`,
`train_policy`, `evaluate_models`, `write_report`): its config, folder and the earlier stages'
outputs in, its outputs out. `run_pipeline` composes them with the manifest below; the
reproduction driver (experiments/egosynth/run.py) composes the same functions for its table.

The report stage writes `summary.json` (ego3s.summary: the headline figures and whether each of
the method's four mechanisms showed) and the HTML report, whose top states the same in words.

`manifest.json` records the config, versions, git commit, seeds and, per stage, its status,
outputs, timing and input fingerprint: a hash of the config section the stage reads (and of its
external inputs: a given training pool's samples and videos, a given model folder) chained with
the previous stage's fingerprint. A rerun skips finished stages whose fingerprint is unchanged and
resumes the unfinished one from its own on-disk state (EgoSynth keeps written clips, scoring has
its cache, training its checkpoints, evaluation its prediction logs). The first stage whose
fingerprint changed (an edited config, other data, a retrained model folder) is rerun from
scratch with every later one, and the run says which and why. `--from STAGE` deletes that stage's
outputs and the later ones, and runs again from there. One process at a time runs a folder.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ego3s.config import ConfigError, check_range, check_report_to
from ego3s.data.egosynth import EgoSynthConfig
from ego3s.eval.run import EvalConfig
from ego3s.files import folder_lock, write_json
from ego3s.identity import describe_diff, stable_hash
from ego3s.rl.run import TrainingConfig
from ego3s.select.run import SelectionConfig
from ego3s.train.warmup import WarmupConfig

STAGES = ("data", "model", "warmup", "select", "train", "eval", "report")


@dataclass
class RunConfig:
    out: str = field(default="runs/ego3s", metadata={"help": "run folder"})
    seed: int = field(default=0, metadata={"help": "seed of every stage"})
    model: str = field(
        default="smol",
        metadata={
            "help": "a builder (mini: from scratch, the CPU demo; smol: SmolLM2-135M, GPU runs; tiny: tests), or a local model folder"
        },
    )
    data: str | None = field(
        default=None, metadata={"help": "training pool (JSONL); None generates EgoSynth with `egosynth`"}
    )
    eval_data: list[str] = field(
        default_factory=lambda: ["EgoSynth"], metadata={"help": "benchmarks to evaluate base and trained models on"}
    )
    egosynth: EgoSynthConfig = field(default_factory=EgoSynthConfig)
    warmup_enabled: bool = field(default=True, metadata={"help": "supervised warm-up before selection"})
    warmup_data: str | None = field(
        default=None,
        metadata={
            "help": "the warm-up's own pool (JSONL), e.g. a cold-start set; None: warmup_egosynth, else the training pool"
        },
    )
    warmup_egosynth: EgoSynthConfig | None = field(
        default=None,
        metadata={
            "help": "generate the warm-up's own EgoSynth pool with these settings (seed: the run's + 1, so it never "
            "repeats the training pool); only when warmup_data is None"
        },
    )
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    report_to: str | list[str] = field(
        default="none",
        metadata={
            "help": "trackers for every stage (warm-up, selection, training, evaluation) that leaves its own "
            "report_to at none: none, tensorboard, wandb, trackio, or a list (docs/training.md)"
        },
    )

    def __post_init__(self):
        from ego3s.eval.benchmarks import get_benchmark

        check_range("seed", self.seed, "[0, inf)")
        check_report_to("report_to", self.report_to)
        if not self.eval_data:
            raise ConfigError("eval_data: names no benchmark (e.g. [EgoSynth])")
        for name in self.eval_data:  # a typo here would surface only after training
            try:
                get_benchmark(name)
            except KeyError as e:
                raise ConfigError(f"eval_data: {e.args[0]}") from None


def _tracked(cfg: RunConfig, stage):
    """`stage` (a stage's config) with the run's `report_to` where its own is none."""
    from ego3s.tracking import report_to_list

    if report_to_list(stage.report_to) or not report_to_list(cfg.report_to, "report_to"):
        return stage
    return dataclasses.replace(stage, report_to=cfg.report_to)


def versions() -> dict:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for d in ("ego3s", "torch", "transformers", "trl", "accelerate", "datasets", "rouge-score", "nltk"):
        try:
            out[d] = md.version(d)
        except md.PackageNotFoundError:
            out[d] = None
    return out


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    """The run folder and its manifest."""

    def __init__(self, cfg: RunConfig):
        self.cfg, self.dir = cfg, Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "manifest.json"
        import json

        self.manifest = json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}}
        self.manifest.update(
            config=dataclasses.asdict(cfg), versions=versions(), git_commit=git_commit(), seeds={"run": cfg.seed}
        )
        self.save()

    def save(self) -> None:
        write_json(self.path, self.manifest)

    def done(self, stage: str) -> bool:
        return self.manifest["stages"].get(stage, {}).get("status") == "done"

    def outputs(self, stage: str) -> dict:
        return self.manifest["stages"].get(stage, {}).get("outputs", {})

    def reset_from(self, stage: str) -> None:
        stages = getattr(self, "stages", STAGES)
        for s in stages[stages.index(stage) :]:
            self.manifest["stages"].pop(s, None)
            shutil.rmtree(self.dir / s, ignore_errors=True)
        self.save()

    def check_inputs(self, inputs: dict[str, dict], echo: Callable[[str], None]) -> None:
        """Compare each stage's input fingerprint with the one recorded when it ran; from the first
        that differs, delete the stage's outputs and the later ones (they are rerun), saying why."""
        self.fingerprints = chain_fingerprints(inputs)
        self.stages = tuple(inputs)
        for stage in self.stages:
            entry = self.manifest["stages"].get(stage)
            if entry is None or entry.get("input_fingerprint") == self.fingerprints[stage]:
                continue
            if "input_fingerprint" not in entry:
                why = "no input fingerprint recorded (a manifest of an older ego3s)"
            else:
                diff = describe_diff(entry.get("inputs", {}), inputs[stage])
                why = f"its inputs changed ({diff})" if diff else "an earlier stage was rerun"
            later = self.stages[self.stages.index(stage) + 1 :]
            echo(
                f"[{stage}] reruns with {', '.join(later) or 'nothing after it'}: {why}; its earlier outputs "
                f"are deleted"
            )
            self.reset_from(stage)
            return

    def run_stage(
        self, stage: str, fn: Callable[[], dict], echo: Callable[[str], None], inputs: dict | None = None
    ) -> dict:
        if self.done(stage):
            echo(f"[{stage}] done already, skipping")
            return self.outputs(stage)
        echo(f"[{stage}] running")
        entry = self.manifest["stages"].setdefault(stage, {})
        entry.update(status="running", attempts=entry.get("attempts", 0) + 1)
        fingerprints = getattr(self, "fingerprints", None)
        if fingerprints is not None and inputs is not None:
            entry.update(input_fingerprint=fingerprints[stage], inputs=inputs[stage])
        self.save()
        t = time.perf_counter()
        outputs = fn()
        entry.update(status="done", seconds=round(time.perf_counter() - t, 1), outputs=outputs)
        self.save()
        echo(f"[{stage}] done in {entry['seconds']} s")
        return outputs


# keys that change how fast or how verbosely a stage runs, never what it writes
_NOT_INPUTS = (
    "progress",
    "verbose",
    "decode_threads",
    "video_identity",
    "dist_timeout_minutes",
    "report_to",
    "tracking_step",
)


def _strip(d):
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in _NOT_INPUTS}
    return d


def stage_inputs(cfg: RunConfig) -> dict[str, dict]:
    """Per stage, what it reads besides the earlier stages' outputs: its config section, and the
    identity of a given training pool (its samples' content and video files), warm-up pool or
    model folder."""
    from ego3s.identity import jsonl_fingerprint
    from ego3s.models import BUILDERS

    vi = cfg.selection.scoring.video_identity

    def pool(path):
        return {"path": str(Path(path).resolve()), "samples": jsonl_fingerprint(path, vi)} if path else None

    if cfg.model in BUILDERS:
        model = {"builder": cfg.model}
    else:
        from ego3s.models.loading import model_fingerprint

        model = {"path": str(Path(cfg.model).resolve()), "fingerprint": model_fingerprint(cfg.model)}
    a = dataclasses.asdict
    return _strip(
        {
            "data": {"seed": cfg.seed, "data": pool(cfg.data), "egosynth": None if cfg.data else a(cfg.egosynth)},
            "model": {"seed": cfg.seed, "model": model},
            "warmup": {
                "seed": cfg.seed,
                "enabled": cfg.warmup_enabled,
                **(
                    {
                        "warmup": a(cfg.warmup),
                        "warmup_data": pool(cfg.warmup_data),
                        "warmup_egosynth": a(cfg.warmup_egosynth)
                        if cfg.warmup_egosynth and not cfg.warmup_data
                        else None,
                    }
                    if cfg.warmup_enabled
                    else {}
                ),
            },
            "select": {"seed": cfg.seed, "selection": a(cfg.selection)},
            "train": {"seed": cfg.seed, "training": a(cfg.training)},
            "eval": {
                "eval_data": list(cfg.eval_data),
                "evaluation": a(cfg.evaluation),
                "benchmarks": benchmark_identities(cfg),
            },
            "report": {},
        }
    )


def benchmark_identities(cfg: RunConfig) -> dict:
    """The samples (content and files) of each evaluation benchmark read from outside the run (a
    path in `evaluation.paths` or under `evaluation.root`): a benchmark rewritten in place makes
    the eval stage run again. The run's own EgoSynth test splits are covered by the data stage."""
    from ego3s.eval.benchmarks import get_benchmark
    from ego3s.eval.run import _load_benchmark
    from ego3s.identity import data_fingerprint

    out = {}
    for name in cfg.eval_data:
        try:
            bench = get_benchmark(name).name
        except (KeyError, ValueError):
            continue  # an unknown name: the eval stage says so
        external = cfg.evaluation.root is not None or any(get_benchmark(k).name == bench for k in cfg.evaluation.paths)
        if not external:
            continue
        ec = dataclasses.replace(cfg.evaluation, data=[name])
        try:
            _, path, samples = _load_benchmark(name, ec)
        except (OSError, ValueError, KeyError) as e:  # the eval stage reports it when it runs
            out[name] = {"unreadable": str(e)[:200]}
            continue
        out[name] = {"path": str(path), "samples": data_fingerprint(samples, cfg.evaluation.video_identity)}
    return out


def chain_fingerprints(inputs: dict[str, dict]) -> dict[str, str]:
    """Each stage's fingerprint (stages in the order of `inputs`): its inputs and the previous
    stage's fingerprint, so that a change reaches every later stage."""
    out, prev = {}, None
    for stage in inputs:
        prev = out[stage] = stable_hash({"inputs": inputs[stage], "upstream": prev})
    return out


def warmup_pool(cfg: RunConfig, run_dir: Path, pool: str) -> str:
    """The JSONL the warm-up trains on: `warmup_data`, or an EgoSynth pool of its own generated
    under `run_dir/warmup_data` (why its own: the reproduction's warm-up needs a less biased pool
    than RL's, docs/notes/gpu_studies_2026-11.md), or the training pool."""
    if cfg.warmup_data:
        path = Path(cfg.warmup_data)
        if not path.is_file():
            raise FileNotFoundError(f"warmup_data: {path} is not a file (a JSONL of samples)")
        return str(path.resolve())
    if cfg.warmup_egosynth is None:
        return pool
    es = dataclasses.replace(cfg.warmup_egosynth, seed=cfg.seed + 1)
    return make_data(es, run_dir / "warmup_data", audit=False)["pool"]


# ------------------------------------------------------------------------------ the stages
# One function per stage: its config (seed included), its folder and the earlier stages' outputs
# in, the outputs the manifest records out. `_run_pipeline` and the reproduction driver
# (experiments/egosynth/run.py) compose the same functions; the resuming, fingerprints and
# manifest stay with the caller.


def make_data(es: EgoSynthConfig, folder: Path, data: str | None = None, audit: bool = True) -> dict:
    """The training pool: `data` (a JSONL) as given, or an EgoSynth folder generated into `folder`
    with `es` (resumable: written clips are kept). `audit` writes its audit (oracles, checker)."""
    if data:
        return {"pool": str(Path(data).resolve()), "egosynth": None}
    from ego3s.data.egosynth import generate

    generate(folder, es, audit=audit, preview=False, log=None)
    return {"pool": str(folder / "train.jsonl"), "egosynth": str(folder)}


def make_model(model: str, folder: Path, seed: int) -> dict:
    """The base model: built by the builder `model` names into `folder/model`, or the local model
    folder `model` as given."""
    from ego3s.models import BUILDERS

    if model in BUILDERS:
        return {"base": str(BUILDERS[model](folder / model, seed=seed))}
    return {"base": str(Path(model).resolve())}


def warm_up(wc: WarmupConfig, base: str, pool: str, folder: Path) -> dict:
    """Supervised warm-up of `base` on `pool` into `folder`, resuming its checkpoints."""
    from ego3s.train.warmup import warmup

    return {"model": str(warmup(base, pool, str(folder), wc, resume=True)), "pool": pool}


def select_samples(sc: SelectionConfig, pool: str, model: str, folder: Path, progress: bool = True) -> dict:
    """Selection (`sc.method`) of `pool` scored by `model`, into `folder` (`selected.jsonl`, and
    `report.json` with its timing, funnel and top-up); scoring resumes from its cache."""
    from ego3s.select.run import run_selection

    rep = run_selection(dataclasses.replace(sc, data=pool, model=model, out=str(folder)), progress=progress)
    return {"selected": str(folder / "selected.jsonl"), "kept": rep["selected"], "candidates": rep["candidates"]}


def train_policy(
    tc: TrainingConfig, model: str, data: str, candidates: str, folder: Path, callbacks: list | None = None
) -> dict:
    """RL of `model` on the selected `data` (ECR re-curates from `candidates`) into `folder`,
    resuming its checkpoints; `callbacks` go to the trainer."""
    from ego3s.rl.run import run_training

    tc = dataclasses.replace(tc, model=model, data=data, candidates=candidates, out=str(folder))
    trainer = run_training(tc, resume=True, callbacks=callbacks)
    return {"model": str(folder / "final"), "steps": trainer.state.global_step}


def evaluate_models(
    ec: EvalConfig,
    models: dict[str, str],
    folder: Path,
    data: list[str],
    egosynth: str | None = None,
    steps: dict[str, int] | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, str | None]:
    """Evaluate each model (tag -> model folder) on the benchmarks `data` into `folder/tag`,
    resuming from its predictions; EgoSynth is read from `egosynth` (a run's own data) unless
    `ec.paths` names it. `steps` (tag -> training step) is each evaluation's step in the trackers.
    Returns tag -> its results.json."""
    from ego3s.eval.run import run_eval

    paths = dict(ec.paths)
    if egosynth:
        paths.setdefault("EgoSynth", egosynth)
    out: dict[str, str | None] = {}
    for tag, model in models.items():
        step = (steps or {}).get(tag, ec.tracking_step)
        run = dataclasses.replace(
            ec, data=list(data), model=model, paths=paths, out=str(folder / tag), tracking_step=step
        )
        res = run_eval(run, echo=echo)
        out[tag] = str(folder / tag / "results.json") if res is not None else None
    return out


def write_report(folder: Path, echo: Callable[[str], None]) -> dict:
    """`summary.json` and the HTML report of the run in `folder`; echoes whether each mechanism
    showed."""
    from ego3s.report import mechanism_lines, render_report
    from ego3s.summary import summarize_run

    summary = summarize_run(folder)  # summary.json first: the report's top reads it
    for ok, line in mechanism_lines(summary):
        echo(f"  [{ {True: 'showed', False: 'did not show', None: 'not measured'}[ok] }] {line}")
    return {"html": str(render_report(folder)), "summary": str(folder / "summary.json")}


def run_pipeline(cfg: RunConfig, from_stage: str | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run (or resume) every stage; returns the report's path."""
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages: {STAGES}")
    with folder_lock(cfg.out, "ego3s run", echo=echo):
        return _run_pipeline(cfg, from_stage, echo)


def _run_pipeline(cfg: RunConfig, from_stage: str | None, echo: Callable[[str], None]) -> Path:
    inputs = stage_inputs(cfg)  # before anything is written: a bad model or data path fails here
    run = Run(cfg)
    if from_stage is not None:
        run.reset_from(from_stage)
    run.check_inputs(inputs, echo)
    d, seed, replace = run.dir, cfg.seed, dataclasses.replace

    def stage(name: str, fn: Callable[[], dict]) -> dict:
        return run.run_stage(name, fn, echo, inputs)

    pool = stage("data", lambda: make_data(replace(cfg.egosynth, seed=seed), d / "data", cfg.data))["pool"]
    egosynth_dir = run.outputs("data").get("egosynth")
    base = stage("model", lambda: make_model(cfg.model, d / "model", seed))["base"]

    def warm() -> dict:
        if not cfg.warmup_enabled:
            return {"model": base}
        wc = _tracked(cfg, replace(cfg.warmup, seed=seed))
        return warm_up(wc, base, warmup_pool(cfg, d, pool), d / "warmup")

    start = stage("warmup", warm)["model"]
    sc = _tracked(cfg, replace(cfg.selection, seed=seed))
    selected = stage("select", lambda: select_samples(sc, pool, start, d / "select"))["selected"]
    tc = _tracked(cfg, replace(cfg.training, seed=seed))
    trained_stage = stage("train", lambda: train_policy(tc, start, selected, pool, d / "train"))
    trained, trained_steps = trained_stage["model"], int(trained_stage.get("steps") or 0)
    ec = _tracked(cfg, cfg.evaluation)
    models, steps = {"base": start, "trained": trained}, {"base": 0, "trained": trained_steps}
    stage("eval", lambda: evaluate_models(ec, models, d / "eval", cfg.eval_data, egosynth_dir, steps, echo))
    return Path(stage("report", lambda: write_report(d, echo))["html"])
