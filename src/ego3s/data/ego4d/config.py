"""Ego4D's published vocabularies and schema keys, the builder's options (`Ego4DConfig`) and its format error."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from ego3s.data.schema import LETTERS

# --------------------------------------------------------------------------------------------
# Published vocabularies

#: NLQ template -> answer family ("interaction", "slot") or None (answer is not an object).
#: The strings are the `template` values of nlq_<split>.json (note the typographic apostrophe).
TEMPLATE_ANSWERS: dict[str, str | None] = {
    "Objects: What did I put in X?": "interaction",
    "Objects: What X did I Y?": "interaction",
    "Place: Where did I put X?": "slot",
    "Objects: Where is object X?": "slot",
    "Objects: Where is my object X?": "slot",
    "Objects: In what location did I see object X ?": "slot",
    "Objects: Where is object X before / after event Y?": "slot",
    "Objects: How many X’s? (quantity question)": None,
    "Objects: What X is Y?": None,
    "Objects: State of an object": None,
    "People: Who did I interact with when I did activity X?": None,
    "People: Who did I talk to in location X?": None,
    "People: When did I talk to or interact with person with role X?": None,
}

FRAME_TYPES = ("pre_45", "pre_30", "pre_15", "pre_frame", "contact_frame", "pnr_frame", "post_frame")
HAND_TYPES = ("left_hand", "right_hand")
OBJECT_TYPES = HAND_TYPES + ("object_of_change", "tool")
Layout = Literal["full_scale", "clips"]
LAYOUTS = get_args(Layout)
CANONICAL_FPS = 30.0  # Ego4D canonical videos; used only when no file gives the fps (v1 SCOD)
_NO_VERB = {"", "[verb not applicable]", "verb not applicable", "none", "null"}

#: Every reason a language query can be dropped for, with its meaning (the report uses the keys).
DROP_REASONS = {
    "excluded_video": "video listed in exclude_video_uids",
    "empty_query": "query text missing or blank",
    "no_template": "template missing or null",
    "unsupported_template": "template not among the 13 published NLQ templates",
    "answer_not_an_object": "template asks for a count, state, attribute or person",
    "no_answer_slot": "slot template without slot_x",
    "window_too_short": "answer window shorter than min_window_sec",
    "window_outside_video": "answer window outside the video (or the clip, with layout=clips)",
    "no_interaction_video": "no usable FHO action in this video",
    "no_interaction_nearby": "no FHO action within max_gap_sec of the answer window",
    "no_matching_interaction": "FHO actions nearby, none with the query's object / verb",
    "no_boxes_in_window": "the chosen action has no box inside the clip window",
    "duplicate_id": "same annotation_uid and query index seen before",
}

# Keys of the published schemas (docs/data/annotations-schemas.md in EGO4D/docs). Other keys are
# counted in the report (`unknown_keys`), or raise with strict=True.
_NLQ_KEYS = {
    "root": {"version", "date", "description", "manifest", "videos"},
    "video": {"video_uid", "clips", "split"},
    "clip": {
        "clip_uid",
        "video_start_sec",
        "video_end_sec",
        "video_start_frame",
        "video_end_frame",
        "clip_start_sec",
        "clip_end_sec",
        "clip_start_frame",
        "clip_end_frame",
        "source_clip_uid",
        "annotations",
    },
    "annotation": {"language_queries", "annotation_uid"},
    "language_query": {
        "clip_start_sec",
        "clip_end_sec",
        "video_start_sec",
        "video_end_sec",
        "video_start_frame",
        "video_end_frame",
        "template",
        "query",
        "slot_x",
        "verb_x",
        "slot_y",
        "verb_y",
        "raw_tags",
    },
}
_FHO_KEYS = {
    "root": {"version", "date", "description", "metadata", "manifest", "videos"},
    "video": {"annotated_intervals", "video_metadata", "video_uid"},
    "video_metadata": {
        "video_start_pts",
        "video_base_numerator",
        "video_base_denominator",
        "duration_sec",
        "num_frames",
        "fps",
        "width",
        "height",
        "rotation",
    },
    "interval": {
        "clip_id",
        "clip_uid",
        "start_sec",
        "end_sec",
        "clip_parent_start_sec",
        "clip_parent_end_sec",
        "narrated_actions",
        "start_frame",
        "end_frame",
        "clip_parent_start_frame",
        "clip_parent_end_frame",
        "redacted",
    },
    "action": {
        "warnings",
        "uid",
        "start_sec",
        "end_sec",
        "start_frame",
        "end_frame",
        "is_valid_action",
        "is_partial",
        "clip_start_sec",
        "clip_end_sec",
        "clip_start_frame",
        "clip_end_frame",
        "narration_timestamp_sec",
        "clip_narration_timestamp_sec",
        "narration_text",
        "narration_annotation_uid",
        "structured_verb",
        "freeform_verb",
        "state_transition",
        "critical_frames",
        "clip_critical_frames",
        "frames",
        "is_rejected",
        "is_invalid_annotation",
        "reject_reason",
        "stage",
    },
    "frame": {"frame_type", "frame_number", "clip_frame_number", "boxes", "width", "height"},
    "box": {"object_type", "structured_noun", "instance_number", "bbox"},
    "bbox": {"x", "y", "width", "height"},
}
_SCOD_KEYS = {
    "root": {"version", "date", "description", "split", "clips"},
    "clip": {
        "video_uid",
        "clip_id",
        "clip_uid",
        "clip_parent_start_sec",
        "clip_parent_end_sec",
        "clip_parent_start_frame",
        "clip_parent_end_frame",
        "pre_frame",
        "pnr_frame",
        "post_frame",
    },
    "frame": {"frame_number", "clip_frame_number", "width", "height", "bbox"},
}


# --------------------------------------------------------------------------------------------
# Options and errors


@dataclass
class Ego4DConfig:
    size: int = field(default=12000, metadata={"help": "number of samples to build (fewer if fewer are usable)"})
    closed_fraction: float = field(default=0.5, metadata={"help": "share of closed (4-option) questions"})
    seed: int = field(default=0, metadata={"help": "seed of the subset draw, distractors and letter positions"})
    splits: tuple[str, ...] = field(
        default=("train",),
        metadata={
            "help": "NLQ splits to read (nlq_<split>.json). val is left out by default: QAEgo4D's val/test "
            "questions come from NLQ val, so training on it leaks into that benchmark"
        },
    )
    layout: Layout = field(
        default="full_scale",
        metadata={
            "help": "full_scale: <video_root>/<video_uid>.mp4, times in video seconds; "
            "clips: <video_root>/<clip_uid>.mp4, times in seconds of the NLQ clip"
        },
    )
    context_sec: float = field(default=2.0, metadata={"help": "padding on each side of the clip window"})
    max_gap_sec: float = field(
        default=2.0,
        metadata={
            "help": "largest gap between the answer window and an FHO action's span for the action to count as nearby"
        },
    )
    min_window_sec: float = field(default=0.5, metadata={"help": "shortest usable answer window"})
    num_options: int = field(default=4, metadata={"help": "options of a closed question (answer included)"})
    strict: bool = field(default=False, metadata={"help": "raise on keys outside the published schemas"})
    exclude_video_uids: frozenset[str] = field(
        default=frozenset(), metadata={"help": "videos to leave out (e.g. those of an evaluation benchmark)"}
    )

    def __post_init__(self):
        self.splits = tuple(self.splits)
        self.exclude_video_uids = frozenset(self.exclude_video_uids)
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive integer, got {self.size!r}")
        if not 0.0 <= self.closed_fraction <= 1.0:
            raise ValueError(f"closed_fraction must be in [0, 1], got {self.closed_fraction!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not 2 <= self.num_options <= len(LETTERS):
            raise ValueError(f"num_options must be in [2, {len(LETTERS)}], got {self.num_options!r}")
        for name in ("context_sec", "max_gap_sec", "min_window_sec"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.splits:
            raise ValueError("splits must name at least one NLQ split")


class Ego4DFormatError(ValueError):
    """An annotation file that does not have the published layout: says file, record path and field."""

    def __init__(self, message: str, *, file: str | Path, path: str = "", field: str | None = None):
        self.message, self.file, self.path, self.field = message, str(file), path, field
        where = self.file + (f": {path}" if path else "") + (f": field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")
