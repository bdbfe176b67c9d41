"""Samples + clips -> model inputs. The one function every stage (scoring, RL, evaluation) uses.

Frames arrive already sampled (our Qwen-rule sampler) and already at the processor's grid size
(sides multiples of patch_size * merge_size = 28), so the processor must neither re-sample nor
resize them. transformers' Qwen2-VL video processor is told so with `do_sample_frames=False`
(its default, but a saved config can flip it) and `do_resize=False`; otherwise it would
`smart_resize` every frame into its [min_pixels, max_pixels] window, which for the
video-processor defaults (min 128 * 28 * 28 pixels) up-scales small clips. The clip's sampling
fps goes in as video metadata: the processor derives `second_per_grid_ts =
temporal_patch_size / sampled_fps` from it, and without metadata it silently assumes 24 fps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

# the processor outputs that carry a sample's pixels and their grids, in the order models consume them
VISUAL_KEYS = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts", "pixel_values", "image_grid_thw")

IGNORE_INDEX = -100
# per-token keys (padded with these values); everything else is a per-visual tensor
_TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "mm_token_type_ids": 0, "token_type_ids": 0}


def _is_clip(x: Any) -> bool:
    return hasattr(x, "frames") and hasattr(x, "fps")


def _visual_entries(messages: list[dict]) -> list[str]:
    """The visual entry types ("image" / "video") of a conversation, in order of appearance."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            for c in content:
                t = c.get("type") if isinstance(c, dict) else None
                if t in ("image", "video"):
                    out.append(t)
    return out


def _check_frames(frames: Any, factor: int, where: str) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"{where}: clip frames must be a (T, H, W, 3) uint8 array, got shape {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{where}: clip frames must be uint8, got {frames.dtype}")
    t, h, w, _ = frames.shape
    if t < 1:
        raise ValueError(f"{where}: clip has no frames")
    if h % factor or w % factor:
        raise ValueError(
            f"{where}: clip frames are {h}x{w}; sides must be multiples of {factor} "
            "(patch_size * merge_size): resize when sampling, the processor will not"
        )
    return frames


def _check_image(image: Any, where: str) -> Any:
    if _is_clip(image):
        return image.frames[0]
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{where}: an image must be an (H, W, 3) uint8 array, got {image.shape} {image.dtype}")
        return image
    if hasattr(image, "convert"):  # PIL image
        return image.convert("RGB")
    raise ValueError(f"{where}: expected an image (array, PIL image or 1-frame clip), got {type(image).__name__}")


def _metadata(clip: Any, frames: np.ndarray, fps: float) -> dict[str, Any]:
    """transformers `VideoMetadata` kwargs whose `sampled_fps` is the clip's fps. A Clip that knows
    its source (`Clip.metadata()`) describes the real frame indices; otherwise the frames are
    described as a whole video played at the sampling rate."""
    if callable(getattr(clip, "metadata", None)):
        meta = dict(clip.metadata())
    else:
        t, h, w, _ = frames.shape
        meta = {
            "total_num_frames": t,
            "fps": fps,
            "frames_indices": list(range(t)),
            "duration": t / fps,
            "height": h,
            "width": w,
        }
    n, total, src_fps = len(meta["frames_indices"]), meta["total_num_frames"], meta["fps"]
    if not np.isclose(n / total * src_fps, fps, rtol=1e-9, atol=0):
        raise ValueError(f"clip metadata gives {n / total * src_fps} fps, the clip says {fps}")
    return meta


def _split_visuals(messages_list, clips_list, factor: int):
    """Per batch row: match the message's visual entries with the given clips / images."""
    if len(clips_list) != len(messages_list):
        raise ValueError(f"encode: {len(messages_list)} conversations but {len(clips_list)} clip entries")
    videos, metadata, images = [], [], []
    for i, (messages, visuals) in enumerate(zip(messages_list, clips_list)):
        kinds = _visual_entries(messages)
        items = [] if visuals is None else list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
        if len(items) != len(kinds):
            raise ValueError(
                f"encode: batch row {i}: the messages have {len(kinds)} visual entries "
                f"({kinds}) but {len(items)} clips/images were given"
            )
        for j, (kind, item) in enumerate(zip(kinds, items)):
            where = f"encode: batch row {i}, visual {j}"
            if kind == "video":
                if not _is_clip(item):
                    raise ValueError(f"{where}: a {{'type': 'video'}} entry needs a Clip, got {type(item).__name__}")
                frames = _check_frames(item.frames, factor, where)
                fps = float(item.fps)
                if not fps > 0:
                    raise ValueError(f"{where}: clip fps must be > 0, got {item.fps}")
                videos.append(frames)
                metadata.append(_metadata(item, frames, fps))
            else:
                images.append(_check_image(item, where))
    return videos, metadata, images


def no_cap_kwargs(video_processor) -> dict[str, Any]:
    """`cap_pixels_per_frame=False` where the video processor knows the option (transformers
    5.17-5.2x warn on every call without it). Our frames arrive sized and are never resized
    (`do_resize=False`), so the cap changes nothing; passing it only silences the warning."""
    valid = getattr(getattr(video_processor, "valid_kwargs", None), "__annotations__", {})
    return {"cap_pixels_per_frame": False} if "cap_pixels_per_frame" in valid else {}


def _video_kwargs(processor, metadata) -> dict[str, Any]:
    return {
        "do_sample_frames": False,
        "do_resize": False,
        "video_metadata": metadata,
        "return_metadata": True,
        **no_cap_kwargs(getattr(processor, "video_processor", None)),
    }


def _left_pad(rows: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    n = max(len(r["input_ids"]) for r in rows)
    out = {}
    for key in rows[0]:
        fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else _TOKEN_KEYS.get(key, 0)
        out[key] = torch.tensor([[fill] * (n - len(r[key])) + r[key] for r in rows], dtype=torch.long)
    return out


def encode(
    processor,
    messages_list: Sequence[list[dict]],
    clips_list: Sequence[Any],
    *,
    add_generation_prompt: bool = True,
    answers: Sequence[str] | None = None,
) -> BatchFeature:
    """Turn a batch of conversations and their clips into model inputs.

    `messages_list[i]` is a chat (see `prompts.build_messages`); `clips_list[i]` is what its visual
    entries show, in order: a `Clip` for each `{"type": "video"}`, an image (`(H, W, 3)` uint8
    array, PIL image, or 1-frame Clip) for each `{"type": "image"}`, None when it has none; a list
    when it has several. Returns a `BatchFeature` of torch tensors, left-padded for generation:
    `input_ids`, `attention_mask`, `mm_token_type_ids` (what Qwen2.5-VL needs for its 3-D
    positions), and for videos `pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`,
    for images `pixel_values`, `image_grid_thw`.

    With `answers` (one string per row), each answer's tokens are appended after the prompt for
    teacher forcing, and `labels` holds their ids with -100 everywhere else (`labels != -100` is
    the answer mask; logits at position t predict labels at t + 1). The answer is tokenized on
    its own, so the prompt tokens are exactly those `generate` would see; include the
    end-of-turn token (e.g. `<|im_end|>`) in the answer text if you want it scored.
    """
    messages_list, clips_list = list(messages_list), list(clips_list)
    if not messages_list:
        raise ValueError("encode: empty batch")
    if answers is not None and len(answers) != len(messages_list):
        raise ValueError(f"encode: {len(messages_list)} conversations but {len(answers)} answers")
    vp = getattr(processor, "video_processor", None) or getattr(processor, "image_processor", None)
    factor = int(getattr(vp, "patch_size", 14) or 14) * int(getattr(vp, "merge_size", 2) or 2)
    videos, metadata, images = _split_visuals(messages_list, clips_list, factor)
    texts = [
        processor.apply_chat_template(m, tokenize=False, add_generation_prompt=add_generation_prompt)
        for m in messages_list
    ]

    kwargs: dict[str, Any] = {"text": texts, "padding": False, "return_tensors": None}
    if videos:
        kwargs["videos"] = videos
        kwargs["videos_kwargs"] = _video_kwargs(processor, metadata)
    if images:
        kwargs["images"] = images
    feats = processor(**kwargs)

    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    token_keys = [k for k in _TOKEN_KEYS if k in feats]
    rows = [{k: list(map(int, feats[k][i])) for k in token_keys} for i in range(len(texts))]
    if "attention_mask" not in feats:
        for r in rows:
            r["attention_mask"] = [1] * len(r["input_ids"])
    if answers is not None:
        answer_ids = tokenizer(list(answers), add_special_tokens=False)["input_ids"]
        for i, (r, ids) in enumerate(zip(rows, answer_ids)):
            if not ids:
                raise ValueError(f"encode: batch row {i}: the answer tokenizes to nothing")
            prompt_len = len(r["input_ids"])
            for k in list(r):
                r[k] = r[k] + (
                    list(ids) if k == "input_ids" else [1] * len(ids) if k == "attention_mask" else [0] * len(ids)
                )
            r["labels"] = [IGNORE_INDEX] * prompt_len + list(ids)
    data: dict[str, Any] = _left_pad(rows, pad_id)
    for k, v in feats.items():
        if k in _TOKEN_KEYS or k == "video_metadata":
            continue
        data[k] = v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
    if "second_per_grid_ts" in data:
        data["second_per_grid_ts"] = data["second_per_grid_ts"].to(torch.float32)
    return BatchFeature(data)


VISION_SPECIAL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens. Generation must never emit them: a sampled
    `<|video_pad|>` in a completion makes the next teacher-forced forward count one placeholder
    more than there are visual features, and the step crashes (seen with untrained policies)."""
    vocab = tokenizer.get_vocab()
    return sorted({vocab[t] for t in VISION_SPECIAL_TOKENS if t in vocab})
