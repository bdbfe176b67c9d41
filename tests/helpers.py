"""Helpers shared by the tests (fixtures live in conftest.py): the repository's folders and small
generated inputs. Importable from every test folder (`pythonpath` in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # the checkout: configs/, experiments/, benchmarks/, data/
FIXTURES = REPO / "tests" / "fixtures"


def write_video(path, n=8, size=56, fps=4, seed=0):
    """A small H.264 mp4 of random frames (distinct content per frame)."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for _ in range(n):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)


def tiny_grpo_config(model, data, out, *, batch: int = 4, **overrides):
    """A `TrainingConfig` for a step or two of GRPO with the tiny model on the CPU: `batch` completions
    per step on one device, 2 per prompt of at most 4 tokens, 4 frames of at most 56 x 56 pixels,
    float32, no KL term, ECR off. `overrides` set any other key."""
    from ego3s.curriculum.monitor import ECRConfig
    from ego3s.rl.run import TrainingConfig

    keys = dict(
        model=str(model),
        data=str(data),
        out=str(out),
        batch_size=batch,
        per_device_train_batch_size=batch,
        num_generations=2,
        max_completion_length=4,
        max_steps=1,
        save_steps=1,
        learning_rate=1e-4,
        beta=0.0,
        nframes=4,
        max_pixels=56 * 56,
        min_pixels=28 * 28,
        dtype="float32",
        ecr=ECRConfig(ecr=False),
    )
    return TrainingConfig(**{**keys, **overrides})
