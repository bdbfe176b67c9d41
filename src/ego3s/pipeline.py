"""`ego3s run` / `ego3s demo`: the whole method in one resumable job.

Stages, in order, each into its own folder of the run:

    data -> model -> warmup -> select -> train -> eval -> report

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
from ego3s.eval.runner import EvalConfig
from ego3s.files import folder_lock, write_json
from ego3s.identity import describe_diff, stable_hash
from ego3s.rl.train import TrainingConfig
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
    for d in ("ego3s", "torch", "transformers", "trl", "accelerate", "datasets"):
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
    from ego3s.eval.runner import _load_benchmark
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
    than RL's, docs/RESULTS.md), or the training pool."""
    if cfg.warmup_data:
        path = Path(cfg.warmup_data)
        if not path.is_file():
            raise FileNotFoundError(f"warmup_data: {path} is not a file (a JSONL of samples)")
        return str(path.resolve())
    if cfg.warmup_egosynth is None:
        return pool
    from ego3s.data.egosynth import generate

    es = dataclasses.replace(cfg.warmup_egosynth, seed=cfg.seed + 1)
    generate(run_dir / "warmup_data", es, audit=False, preview=False, log=None)
    return str(run_dir / "warmup_data" / "train.jsonl")


def run_pipeline(cfg: RunConfig, from_stage: str | None = None, echo: Callable[[str], None] = print) -> Path:
    """Run (or resume) every stage; returns the report's path."""
    if from_stage is not None and from_stage not in STAGES:
        raise ValueError(f"unknown stage {from_stage!r}; stages: {STAGES}")
    with folder_lock(cfg.out, "ego3s run", echo=echo):
        return _run_pipeline(cfg, from_stage, echo)


def _run_pipeline(cfg: RunConfig, from_stage: str | None, echo: Callable[[str], None]) -> Path:
    from ego3s.models import BUILDERS

    inputs = stage_inputs(cfg)  # before anything is written: a bad model or data path fails here
    run = Run(cfg)
    if from_stage is not None:
        run.reset_from(from_stage)
    run.check_inputs(inputs, echo)
    d = run.dir

    def data() -> dict:
        if cfg.data:
            return {"pool": str(Path(cfg.data).resolve()), "egosynth": None}
        from ego3s.data.egosynth import generate

        es = dataclasses.replace(cfg.egosynth, seed=cfg.seed)
        generate(d / "data", es, audit=True, preview=False, log=None)
        return {"pool": str(d / "data" / "train.jsonl"), "egosynth": str(d / "data")}

    pool = run.run_stage("data", data, echo, inputs)["pool"]
    egosynth_dir = run.outputs("data").get("egosynth")

    def model() -> dict:
        if cfg.model in BUILDERS:
            return {"base": str(BUILDERS[cfg.model](d / "model" / cfg.model, seed=cfg.seed))}
        return {"base": str(Path(cfg.model).resolve())}

    base = run.run_stage("model", model, echo, inputs)["base"]

    def warm() -> dict:
        if not cfg.warmup_enabled:
            return {"model": base}
        from ego3s.train.warmup import warmup

        wc = _tracked(cfg, dataclasses.replace(cfg.warmup, seed=cfg.seed))
        wpool = warmup_pool(cfg, d, pool)
        return {"model": str(warmup(base, wpool, str(d / "warmup"), wc, resume=True)), "pool": wpool}

    start = run.run_stage("warmup", warm, echo, inputs)["model"]

    def select() -> dict:
        from ego3s.select.run import run_selection

        sc = _tracked(
            cfg, dataclasses.replace(cfg.selection, data=pool, model=start, out=str(d / "select"), seed=cfg.seed)
        )
        rep = run_selection(sc)
        return {
            "selected": str(d / "select" / "selected.jsonl"),
            "kept": rep["selected"],
            "candidates": rep["candidates"],
        }

    selected = run.run_stage("select", select, echo, inputs)["selected"]

    def train() -> dict:
        from ego3s.rl.train import run_training

        tc = _tracked(
            cfg,
            dataclasses.replace(
                cfg.training, model=start, data=selected, candidates=pool, out=str(d / "train"), seed=cfg.seed
            ),
        )
        trainer = run_training(tc, resume=True)
        return {"model": str(d / "train" / "final"), "steps": trainer.state.global_step}

    trained_stage = run.run_stage("train", train, echo, inputs)
    trained, trained_steps = trained_stage["model"], int(trained_stage.get("steps") or 0)

    def evaluate() -> dict:
        from ego3s.eval.runner import run_eval

        paths = dict(cfg.evaluation.paths)
        if egosynth_dir:
            paths.setdefault("EgoSynth", egosynth_dir)
        out = {}
        for tag, path in (("base", start), ("trained", trained)):
            ec = _tracked(
                cfg,
                dataclasses.replace(
                    cfg.evaluation,
                    data=list(cfg.eval_data),
                    model=path,
                    paths=paths,
                    out=str(d / "eval" / tag),
                    tracking_step=trained_steps if tag == "trained" else 0,
                ),
            )
            res = run_eval(ec, echo=echo)
            out[tag] = str(d / "eval" / tag / "results.json") if res is not None else None
        return out

    run.run_stage("eval", evaluate, echo, inputs)

    def report() -> dict:
        from ego3s.report import mechanism_lines, render_report
        from ego3s.summary import summarize_run

        summary = summarize_run(d)  # summary.json first: the report's top reads it
        for ok, line in mechanism_lines(summary):
            echo(f"  [{ {True: 'showed', False: 'did not show', None: 'not measured'}[ok] }] {line}")
        return {"html": str(render_report(d)), "summary": str(d / "summary.json")}

    return Path(run.run_stage("report", report, echo, inputs)["html"])
