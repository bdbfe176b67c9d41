"""Encode each clip once per batch when the vision tower is frozen.

GRPO's log-prob forwards see every prompt G times (once per completion), and each forward runs
the vision tower on every row's frames: G encodings of the same clip, in the old-policy, reference
and current forwards alike. With the vision tower frozen (ego3s's default for full fine-tuning,
and always under LoRA of the language model) the features of a clip cannot change, so the first
encoding can serve the others. At 16 frames of 448 px the 7B's vision tower costs about as much
as its language model's prefill, so this removes most of a (G - 1) / G share of the training
forwards' vision work.

Mechanism: the model's `get_video_features` is wrapped. Before a forward, the trainer names the
videos of the batch (`keys`, one per video, in order); the wrapper encodes only the clips it has
not seen since the last `clear()` and returns the stored features for the others. A forward
whose videos are not named (generation, evaluation) runs the tower as usual. Keys are consumed
by one call, so they never leak into another forward.
"""

from __future__ import annotations

import torch


def _inner(model):
    """The module that owns `get_video_features` and `visual` (under PEFT wrappers too)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", None)
    return inner if inner is not None and hasattr(inner, "get_video_features") else None


def vision_frozen(model) -> bool:
    inner = _inner(model)
    visual = getattr(inner, "visual", None)
    return visual is not None and not any(p.requires_grad for p in visual.parameters())


class VisionCache:
    """`max_items`: clips kept at most; the oldest go first. A generation batch that feeds several
    optimizer steps (dapo, `optimizer_steps_per_generation`) holds many clips, and the old-policy
    and reference passes walk it in order, each group's rows together, so a bounded store loses
    almost no reuse (64 clips of the 7B at 16 frames of 448 px: about 1 GB)."""

    def __init__(self, max_items: int = 64):
        self.max_items = max_items
        self.store: dict[str, torch.Tensor] = {}
        self.keys: list[str] | None = None
        self.encoded = self.reused = 0

    def install(self, model) -> bool:
        """Wrap `model`'s video encoder (several models may share one cache: the reference model
        is a frozen copy of the initial policy, so its vision tower is the same). False when the
        model has no such encoder or its vision tower trains."""
        inner = _inner(model)
        if inner is None or not vision_frozen(model):
            return False
        original = inner.get_video_features

        def get_video_features(pixel_values_videos, video_grid_thw=None, **kwargs):
            keys, self.keys = self.keys, None
            if keys is None or video_grid_thw is None or len(keys) != video_grid_thw.shape[0]:
                return original(pixel_values_videos, video_grid_thw, **kwargs)
            parts = pixel_values_videos.split(video_grid_thw.prod(-1).tolist())
            first: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k not in self.store:
                    first.setdefault(k, i)
            if first:
                idx = list(first.values())
                out = original(torch.cat([parts[i] for i in idx]), video_grid_thw[idx], **kwargs)
                for i, feats in zip(idx, out.pooler_output):
                    self.store[keys[i]] = feats.detach()
                self.encoded += len(idx)
            self.reused += len(keys) - len(first)
            feats = tuple(self.store[k] for k in keys)
            current = set(keys)
            extra = len(self.store) - max(self.max_items, len(current))
            for k in [k for k in self.store if k not in current][: max(0, extra)]:
                del self.store[k]  # oldest first (dicts keep insertion order), never this call's clips
            return _Features(feats)

        inner.get_video_features = get_video_features
        return True

    def clear(self) -> None:
        self.store.clear()


class _Features:
    """What Qwen-VL forwards read from the encoder's output: the per-video features."""

    def __init__(self, pooler_output):
        self.pooler_output = pooler_output
