"""Models: load any Hugging Face image-text-to-text model, prompts, inputs, and the offline builders.

- `load_model(path)` -> (model, processor); `model_fingerprint(path_or_model)` -> cache key
- `build_messages(sample, fmt=..., visual=...)` -> chat messages
- `encode(processor, messages_list, clips_list, answers=None)` -> model inputs
- `generation`: shared-prefix group rollouts and static-cache decode (`graph_decode`), batched greedy answers
- `BUILDERS`: `tiny` (unit tests), `tiny-qwen2vl` (the same as a Qwen2-VL: cross-architecture tests)
  `smol` (SmolLM2-135M + random vision tower, the demo and GPU backbone) and `mini` (1.6 M parameters
  from scratch, for CPU experiments)
"""

from __future__ import annotations

from typing import Any

from ego3s.models.mini import build_mini
from ego3s.models.smol import build_smol
from ego3s.models.tiny import build_tiny, build_tiny_qwen2vl

BUILDERS = {"tiny": build_tiny, "smol": build_smol, "tiny-qwen2vl": build_tiny_qwen2vl, "mini": build_mini}

_LAZY = {
    "load_model": "ego3s.models.loading",
    "model_fingerprint": "ego3s.models.loading",
    "patch_qwen25_rope_index": "ego3s.models.loading",
    "encode": "ego3s.models.inputs",
    "build_messages": "ego3s.models.prompts",
}


def __getattr__(name: str) -> Any:  # torch / transformers are imported on first use only
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ego3s.models' has no attribute {name!r}")


__all__ = ["BUILDERS", "build_mini", "build_smol", "build_tiny", "build_tiny_qwen2vl", *_LAZY]
