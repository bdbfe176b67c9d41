"""The counterfactual views of a clip that Select (CSM) scores and evaluation reuses: `full`, `blind`
(no visual evidence) and `context` (the annotated interaction boxes masked in every frame), with
the box arithmetic they rest on. See docs/video.md.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ego3s.data.schema import BOX_TOLERANCE, Interaction, Sample, TimedBox
from ego3s.data.video import BLANK_VALUE, FILLS, VIEWS, Clip, ClipSpec, load_image, load_sample_clip


def sample_view(sample: Sample, view: str, spec: ClipSpec, clip: Clip | None = None):
    """(visual kind for the prompt, clip or image or None) of one sample under one view: what
    every stage (scoring, warm-up, training, evaluation) feeds the model. `spec` (any stage
    config) gives the frame sampling and the view settings; `clip` is the already decoded full
    clip when the caller has it (one decode for all views)."""
    fill, blind = spec.context_fill, spec.blind_mode
    if sample.video is not None:
        clip = clip if clip is not None else load_sample_clip(sample, **spec.sampling_kwargs())
        v = make_view(clip, view, sample.interaction, fill=fill, blind=blind)
        return ("video", v) if v is not None else (None, None)
    if sample.image is not None:
        img = load_image(sample.image)
        if view == "full":
            return "image", img
        one = Clip(frames=img[None], timestamps=np.zeros(1), fps=1.0, source=sample.image)
        v = make_view(one, view, sample.interaction, fill=fill, blind=blind)
        return ("image", v.frames[0]) if v is not None else (None, None)
    return None, None  # text-only sample: every view is the same


def make_view(
    clip: Clip,
    view: str,
    interaction: Interaction | None = None,
    *,
    fill: str = "mean",
    blind: str = "blank",
    tolerance: float = BOX_TOLERANCE,
) -> Clip | None:
    """A counterfactual view of `clip` (a new Clip; the input is never modified).

    - `full`: the same frames;
    - `blind`: every pixel BLANK_VALUE gray, same shape and metadata, so the prompt keeps its
      length (`blind="blank"`), or None: no video at all (`blind="none"`);
    - `context`: every interaction box (interpolated to each frame's time, see `boxes_at`) filled
      with the frame's mean colour (`fill="mean"`) or a heavy blur (`fill="blur"`); pixels outside
      the boxes are untouched."""
    if view == "full":
        return dataclasses.replace(clip, frames=clip.frames.copy(), timestamps=clip.timestamps.copy())
    if view == "blind":
        if blind == "none":
            return None
        if blind != "blank":
            raise ValueError(f"blind must be 'blank' or 'none', got {blind!r}")
        return dataclasses.replace(
            clip, frames=np.full_like(clip.frames, BLANK_VALUE), timestamps=clip.timestamps.copy()
        )
    if view != "context":
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if fill not in FILLS:
        raise ValueError(f"fill must be 'mean' or 'blur', got {fill!r}")
    if interaction is None or not interaction.boxes:
        raise ValueError(f"the context view needs interaction boxes ({clip.source or 'clip'} has none)")
    h, w = clip.frames.shape[1:3]
    frames = clip.frames.copy()
    for k, t in enumerate(clip.timestamps):
        rects = [box_to_pixels(box, h, w) for _, box in boxes_at(interaction.boxes, float(t), tolerance=tolerance)]
        frames[k] = mask_frame(clip.frames[k], rects, fill=fill)
    return dataclasses.replace(clip, frames=frames, timestamps=clip.timestamps.copy())


def boxes_at(boxes: Sequence[TimedBox], t: float, *, tolerance: float = BOX_TOLERANCE) -> list[tuple[str, list[float]]]:
    """The (label, box) pairs visible at time `t`: one track per label.

    Inside a track's annotated span the box is interpolated linearly between the annotations on
    either side (the object is assumed to stay between annotations, however far apart: leaving it
    unmasked would leak the very cue the context view removes). Outside the span the first/last
    box is held for up to `tolerance` seconds, then the track has no box. At an annotated instant
    every box of that label at that instant is returned."""
    tracks: dict[str, list[TimedBox]] = {}
    for b in boxes:
        tracks.setdefault(b.label, []).append(b)
    out = []
    for label, track in tracks.items():
        track = sorted(track, key=lambda b: b.t)
        times = [b.t for b in track]
        if t <= times[0] or t >= times[-1]:
            edge = times[0] if t <= times[0] else times[-1]
            if abs(t - edge) <= tolerance:
                out += [(label, list(b.box)) for b in track if b.t == edge]
            continue
        j = bisect.bisect_left(times, t)  # times[j-1] < t <= times[j]
        if times[j] == t:
            out += [(label, list(b.box)) for b in track if b.t == t]
            continue
        a, b = track[j - 1], track[j]
        u = (t - a.t) / (b.t - a.t)
        out.append((label, [(1 - u) * p + u * q for p, q in zip(a.box, b.box)]))
    return out


def box_to_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Normalised [x1, y1, x2, y2] -> pixel rows/cols (y0, y1, x0, x1), end-exclusive, rounded
    outwards (floor/ceil) so every pixel the box touches is covered."""
    x1, y1, x2, y2 = box
    return (
        min(max(math.floor(y1 * height), 0), height),
        min(max(math.ceil(y2 * height), 0), height),
        min(max(math.floor(x1 * width), 0), width),
        min(max(math.ceil(x2 * width), 0), width),
    )


def mask_frame(frame: np.ndarray, rects: Sequence[tuple[int, int, int, int]], *, fill: str = "mean") -> np.ndarray:
    """A copy of `frame` (H, W, 3) with each (y0, y1, x0, x1) rectangle filled with the frame's
    mean colour or replaced by a heavy blur of itself (longer side shrunk to 4 px, then bilinear
    back up: shape and colour survive, object identity does not)."""
    out = frame.copy()
    mean = None
    for y0, y1, x0, x1 in rects:
        if y1 <= y0 or x1 <= x0:
            continue
        if fill == "mean":
            if mean is None:
                mean = np.round(frame.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
            out[y0:y1, x0:x1] = mean
        else:
            region = frame[y0:y1, x0:x1]
            rh, rw = region.shape[:2]
            s = 4 / max(rh, rw)
            small = Image.fromarray(region).resize((max(1, round(rw * s)), max(1, round(rh * s))), Image.BOX)
            out[y0:y1, x0:x1] = np.asarray(small.resize((rw, rh), Image.BILINEAR))
    return out
