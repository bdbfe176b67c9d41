"""Teacher-forced batches of clips for the supervised loops (warm-up and SFT).

`ClipCollator` turns rows (each a sample as JSON) into model inputs with labels on the target
tokens only, decoding every clip with ego3s's own sampler, the frames selection, RL and
evaluation see. Which view, format and rationale a sample gets is deterministic per sample id
(`sample_view_name`, `sample_format`, `trace_text`), so a resume or another worker count gives the
same batches.
"""

from __future__ import annotations

import zlib
from pathlib import Path


def rationale(sample, grounded_share: float = 0.5) -> str:
    """A template rationale for the reasoning cold start. Deterministic per sample id: a share of
    samples get one that names the interaction (objects and action, from the annotation), the others
    one that describes only the scene, which is what a prior-driven model would write."""
    it = sample.interaction
    grounded = it is not None and zlib.crc32(sample.id.encode()) % 1000 < grounded_share * 1000
    if grounded:
        hand = str(sample.meta.get("hand", "")).replace("_", " ")
        who = f"my {hand} hand" if hand in ("left", "right") else "my hand"
        return f"I watch {who}: it takes the {it.objects[0].name} ({it.action})."
    scene = sample.meta.get("scene")
    return (
        f"I am in the {scene} and think about what usually happens here."
        if scene
        else "I think about what usually happens in a scene like this."
    )


def trace_text(sample, source: str = "template", grounded_share: float = 0.5) -> str:
    """The reasoning that goes inside `<think>` for a supervised target: the template rationale
    above (`source="template"`), or a trace stored with the sample (`source="meta.KEY"`, e.g.
    `meta.rationale`, written by an annotator or a stronger model). A missing trace is an error,
    not a silent fallback: a cold start on half template, half real traces is a different run."""
    if source == "template":
        return rationale(sample, grounded_share)
    if not source.startswith("meta.") or source == "meta.":
        raise ValueError(f"rationale must be 'template' or 'meta.KEY', got {source!r}")
    key = source[len("meta.") :]
    value = sample.meta.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"sample {sample.id!r}: field meta.{key} (the reasoning trace) is missing or empty")
    return value.strip().removeprefix("<think>").removesuffix("</think>").strip()


def sample_view_name(sample, context_share: float = 0.0) -> str:
    """`context` for a deterministic `context_share` (by id) of the samples flagged `typical` in
    their metadata (the scene shows the answer), else `full`. Samples without the flag, or without
    an interaction to mask, always get the full view."""
    if (
        context_share > 0
        and sample.meta.get("typical") is True
        and sample.interaction is not None
        and zlib.crc32(f"context:{sample.id}".encode()) % 1000 < context_share * 1000
    ):
        return "context"
    return "full"


def sample_format(sample, fmt: str, direct_share: float = 0.0) -> str:
    """The format one sample is trained in: `fmt`, except that a reasoning warm-up trains a
    deterministic `direct_share` of samples (by id) in the direct format."""
    if fmt == "reasoning" and zlib.crc32(f"direct:{sample.id}".encode()) % 1000 < direct_share * 1000:
        return "direct"
    return fmt


class ClipCollator:
    """Rows (sample dicts) -> teacher-forced batches with labels on the answer tokens only.

    `cfg` is a WarmupConfig (ego3s.train.warmup) or an SFTRunConfig (ego3s.train.sft): its clip
    spec (frames and view settings), `fmt`, `grounded_share` and, optionally, `rationale` (where
    the reasoning trace comes from), `context_share`, `direct_share` and `closed_answer` (warm-up
    only)."""

    def __init__(self, processor, cfg, skip_log: str | Path | None = None):
        self.processor, self.cfg, self.skip_log = processor, cfg, skip_log
        self.skipped = 0

    def __call__(self, rows: list[dict]):
        import json

        from ego3s.data.schema import Sample
        from ego3s.data.video import VideoError
        from ego3s.data.views import sample_view
        from ego3s.models.inputs import encode
        from ego3s.models.prompts import build_messages, target_text

        msgs, visuals, answers = [], [], []
        eos = self.processor.tokenizer.eos_token or ""
        for row in rows:
            s = Sample.from_dict(json.loads(row["sample"]))
            try:
                view = sample_view_name(s, getattr(self.cfg, "context_share", 0.0))
                kind, vis = sample_view(s, view, self.cfg)
            except (VideoError, OSError, ValueError) as e:
                self.skipped += 1  # one unreadable clip never stops the warm-up
                if self.skip_log:  # one small write per line: appends from DataLoader workers do not interleave
                    line = json.dumps({"id": s.id, "video": s.video, "error": str(e)}) + "\n"
                    with open(self.skip_log, "a", encoding="utf-8") as f:
                        f.write(line)
                continue
            fmt = sample_format(s, self.cfg.fmt, getattr(self.cfg, "direct_share", 0.0))
            msgs.append(build_messages(s, fmt=fmt, visual=kind))
            visuals.append(vis)
            target = target_text(s, fmt=fmt, closed_answer=getattr(self.cfg, "closed_answer", "letter"))
            if fmt == "reasoning":
                source = getattr(self.cfg, "rationale", "template")
                grounded = self.cfg.grounded_share if view == "full" else 0.0  # the hand is hidden: scene rationale
                target = f"<think>{trace_text(s, source, grounded)}</think>{target}"
            answers.append(target + eos)
        if not msgs:
            raise RuntimeError("warm-up batch: every sample in the batch was unreadable")
        return dict(encode(self.processor, msgs, visuals, answers=answers))
