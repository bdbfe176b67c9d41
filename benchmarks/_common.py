"""Helpers every benchmark script shares: the run's provenance, timing, a table, the JSON file,
synthetic clips, and the model to time (a random 7B/3B reference build, a local folder, or the
tiny model for `--smoke` runs on the CPU)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {cpu} ({os.cpu_count()} cores)"


def environment() -> dict:
    """Where and with what the numbers were taken."""
    import transformers

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "device": device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "code_hash": code_hash(),
    }


def code_hash() -> str:
    """A hash of the package and benchmark sources as they are on disk. The device machine's copy
    of the repository keeps the session's first commit under a newer working tree, so
    `git_commit` alone can name code that did not run; equal hashes mean the same code."""
    import hashlib

    h = hashlib.sha1()
    for f in sorted([*(ROOT / "src" / "ego3s").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]):
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    """(seconds, result) of one call, with the GPU drained before and after."""
    sync()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    sync()
    return time.perf_counter() - t, out


def median(xs) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table (what docs/PERFORMANCE.md quotes)."""

    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_result(path: str | None, name: str, result: dict) -> dict:
    """Add provenance, print the JSON on one line, write it to `path` when given."""
    out = {"benchmark": name, **environment(), **result}
    print(json.dumps(out))
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(out, indent=2))
    return out


def model_folder(arch: str | None, model: str | None, smoke: bool) -> Path:
    """The model to time: `--model DIR`, else the tiny model (smoke), else a random-weight
    reference build of `arch` kept in /tmp across scripts (built on the GPU once, ~16 GB for 7B)."""
    if model:
        return Path(model)
    if smoke:
        from ego3s.models import build_tiny

        return build_tiny(Path(tempfile.mkdtemp(prefix="bench_tiny_")) / "model", seed=0)
    from ego3s.models.reference import build_reference

    path = Path(f"/tmp/ego3s_ref_{arch}")
    if not (path / "config.json").exists():
        build_reference(path, arch)
    return path


def load(path: Path, smoke: bool, attn: str | None = "sdpa"):
    """(model, processor): bf16 on the GPU, float32 on the CPU for smoke runs."""
    from ego3s.models.loading import load_model

    if smoke or not torch.cuda.is_available():
        return load_model(path, dtype="float32", device="cpu", attn_implementation=attn)
    return load_model(path, dtype="bfloat16", device="cuda", attn_implementation=attn)


def random_clip(frames: int, side: int, seed: int = 0):
    """A clip of random frames at the processor's grid size (what the model sees; no decoding)."""
    from ego3s.data.video import Clip

    rng = np.random.default_rng(seed)
    return Clip(
        frames=rng.integers(0, 255, (frames, side, side, 3), dtype=np.uint8),
        timestamps=np.arange(frames) / 2.0,
        fps=2.0,
        source="random",
    )


def write_clip(path: Path, frames: int, side: int, seed: int, fps: float = 2.0) -> None:
    """A synthetic mp4 (PyAV if installed, else OpenCV): noise frames with a moving bright box."""
    rng = np.random.default_rng(seed)
    imgs = []
    for i in range(frames):
        f = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        x = int(side * 0.1 + i * side * 0.02) % max(side - side // 6, 1)
        f[side // 3 : side // 2, x : x + side // 6] = 255
        imgs.append(f)
    try:
        import av

        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=int(fps))
            s.width = s.height = side
            s.pix_fmt = "yuv420p"
            for f in imgs:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    except ImportError:
        import cv2

        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (side, side))
        for f in imgs:
            w.write(f[:, :, ::-1])
        w.release()


def default_backend() -> str:
    """PyAV where installed, else OpenCV (the GPU image has no PyAV)."""
    try:
        import av  # noqa: F401 - only checks that it imports

        return "pyav"
    except ImportError:
        return "opencv"
