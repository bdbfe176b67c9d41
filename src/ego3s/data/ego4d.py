"""Ego4D builder: the OpenQA + CloseQA training subset, from Ego4D's published annotation files.

Inputs (the `annotations/` folder the `ego4d` CLI downloads; see docs/ego4d.md):
- `nlq_<split>.json`  Natural Language Queries: the questions and their answer windows;
- `fho_main.json`     Forecasting Hands & Objects (v2): hand / object boxes on the critical frames
                      of narrated actions (v1 `fho_scod_<split>.json` is read when it is absent);
- `narration.json`    optional: the narration nearest the answer window, and a verb fallback;
- `ego4d.json`        optional (in the folder or beside it): scenarios, durations, frame rates.

How a sample is made from one NLQ language query (the rules are the constants below):
1. The template decides where the answer comes from. NLQ gives a question and a time window,
   never the answer itself, so only templates whose answer is an *object the hands handle*
   are usable:
   - `interaction` templates ("What did I put in X?", "What X did I Y?"): the question is the
     query text; the answer is the object of change of the FHO action nearest the window whose
     verb matches the query's verb (X itself, the container or category, is excluded);
   - `slot` templates ("Where did I put X?", "Where is object X?", ...): X names the object but
     the query asks for a place, so the query is re-asked as "Which object did I <verb>?" and X
     is the answer; an FHO action near the window must involve X (name, synonym or head noun).
   The other templates (counts, states, attributes, people) have no annotated answer: dropped.
2. The interaction (objects, action, boxes, contact span) is that FHO action's: pixel boxes are
   normalised by the video's width/height and clipped to [0, 1]; frames become seconds with
   the video's fps.
3. The clip window is the answer window united with the action's span, padded by
   `context_sec` and clamped to the video (or to the NLQ clip with the `clips` layout).
4. Closed questions get `num_options - 1` distractors: other objects of the same video, then of
   videos of the same scenario, then of the whole vocabulary; never a name equal to the answer
   (or its synonyms, or the question's own object) after normalising case, articles and plurals.

Malformed files raise `Ego4DFormatError` naming the file, the record path
(`videos[3].clips[0].annotations[1].language_queries[2]`) and the field. Records that are
legitimately unusable are dropped and counted by reason in the report.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ego3s.data.io import write_jsonl
from ego3s.data.schema import LETTERS, Interaction, InteractionObject, Sample, TimedBox
from ego3s.files import write_json

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
    "clip": {"clip_uid", "video_start_sec", "video_end_sec", "video_start_frame", "video_end_frame",
             "clip_start_sec", "clip_end_sec", "clip_start_frame", "clip_end_frame", "source_clip_uid",
             "annotations"},
    "annotation": {"language_queries", "annotation_uid"},
    "language_query": {"clip_start_sec", "clip_end_sec", "video_start_sec", "video_end_sec",
                       "video_start_frame", "video_end_frame", "template", "query", "slot_x", "verb_x",
                       "slot_y", "verb_y", "raw_tags"},
}
_FHO_KEYS = {
    "root": {"version", "date", "description", "metadata", "manifest", "videos"},
    "video": {"annotated_intervals", "video_metadata", "video_uid"},
    "video_metadata": {"video_start_pts", "video_base_numerator", "video_base_denominator", "duration_sec",
                       "num_frames", "fps", "width", "height", "rotation"},
    "interval": {"clip_id", "clip_uid", "start_sec", "end_sec", "clip_parent_start_sec", "clip_parent_end_sec",
                 "narrated_actions", "start_frame", "end_frame", "clip_parent_start_frame",
                 "clip_parent_end_frame", "redacted"},
    "action": {"warnings", "uid", "start_sec", "end_sec", "start_frame", "end_frame", "is_valid_action",
               "is_partial", "clip_start_sec", "clip_end_sec", "clip_start_frame", "clip_end_frame",
               "narration_timestamp_sec", "clip_narration_timestamp_sec", "narration_text",
               "narration_annotation_uid", "structured_verb", "freeform_verb", "state_transition",
               "critical_frames", "clip_critical_frames", "frames", "is_rejected", "is_invalid_annotation",
               "reject_reason", "stage"},
    "frame": {"frame_type", "frame_number", "clip_frame_number", "boxes", "width", "height"},
    "box": {"object_type", "structured_noun", "instance_number", "bbox"},
    "bbox": {"x", "y", "width", "height"},
}
_SCOD_KEYS = {
    "root": {"version", "date", "description", "split", "clips"},
    "clip": {"video_uid", "clip_id", "clip_uid", "clip_parent_start_sec", "clip_parent_end_sec",
             "clip_parent_start_frame", "clip_parent_end_frame", "pre_frame", "pnr_frame", "post_frame"},
    "frame": {"frame_number", "clip_frame_number", "width", "height", "bbox"},
}


# --------------------------------------------------------------------------------------------
# Options and errors

@dataclass
class Ego4DConfig:
    size: int = field(default=12000, metadata={"help": "number of samples to build (fewer if fewer are usable)"})
    closed_fraction: float = field(default=0.5, metadata={"help": "share of closed (4-option) questions"})
    seed: int = field(default=0, metadata={"help": "seed of the subset draw, distractors and letter positions"})
    splits: tuple[str, ...] = field(default=("train",), metadata={
        "help": "NLQ splits to read (nlq_<split>.json). val is left out by default: QAEgo4D's val/test "
                "questions come from NLQ val, so training on it leaks into that benchmark"})
    layout: Layout = field(default="full_scale", metadata={
        "help": "full_scale: <video_root>/<video_uid>.mp4, times in video seconds; "
                "clips: <video_root>/<clip_uid>.mp4, times in seconds of the NLQ clip"})
    context_sec: float = field(default=2.0, metadata={"help": "padding on each side of the clip window"})
    max_gap_sec: float = field(default=2.0, metadata={
        "help": "largest gap between the answer window and an FHO action's span for the action to count as nearby"})
    min_window_sec: float = field(default=0.5, metadata={"help": "shortest usable answer window"})
    num_options: int = field(default=4, metadata={"help": "options of a closed question (answer included)"})
    strict: bool = field(default=False, metadata={"help": "raise on keys outside the published schemas"})
    exclude_video_uids: frozenset[str] = field(default=frozenset(), metadata={
        "help": "videos to leave out (e.g. those of an evaluation benchmark)"})

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


# --------------------------------------------------------------------------------------------
# Names: cleaning the FHO taxonomy's "noun_(synonym,_synonym)" and comparing object names

_ARTICLES = {"a", "an", "the", "my", "some", "this", "that"}


def clean_name(raw: str) -> tuple[str, list[str]]:
    """`"container_(box,_crate)"` -> `("container", ["box", "crate"])`; plain names pass through."""
    s = raw.strip()
    synonyms: list[str] = []
    m = re.match(r"^(.*?)_?\((.*)\)\s*$", s)
    if m:
        s = m.group(1)
        synonyms = [x.strip(" _").replace("_", " ").strip().lower() for x in m.group(2).split(",")]
    name = re.sub(r"\s+", " ", s.replace("_", " ")).strip().lower()
    syn = []
    for x in synonyms:
        if x and x != name and x not in syn:
            syn.append(x)
    return name, syn


def _tokens(name: str) -> list[str]:
    words = re.sub(r"[^a-z0-9 ]+", " ", name.lower().replace("_", " ").replace("-", " ")).split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    return words


def _singulars(tok: str) -> set[str]:
    out = {tok}
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith("ss"):
        out.add(tok[:-1])
    if len(tok) > 4 and tok.endswith("es"):
        out.add(tok[:-2])
    if len(tok) > 4 and tok.endswith("ies"):
        out.add(tok[:-3] + "y")
    if len(tok) > 4 and tok.endswith("ves"):
        out.update({tok[:-3] + "f", tok[:-3] + "fe"})
    return out


def same_name(a: str, b: str) -> bool:
    """Equal after lower-casing, dropping leading articles and punctuation, and singularising."""
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return False
    if len(ta) == len(tb) and all(_singulars(x) & _singulars(y) for x, y in zip(ta, tb)):
        return True
    return bool(_singulars("".join(ta)) & _singulars("".join(tb)))  # "egg shell" == "eggshell"


def _names_match(slot: str, obj: InteractionObject) -> bool:
    """The query's object (free text) names the FHO object: same name, a synonym, or its head noun."""
    head = _tokens(slot)[-1:] or [""]
    for n in obj.names():
        if same_name(slot, n) or same_name(head[0], n):
            return True
    return False


def _display(name: str) -> str:
    return " ".join(_tokens(name)) or name.strip().lower()


def _verb_forms(raw: str | None) -> set[str]:
    """Verb tokens: `"take_(pick,_grab,_get)"` -> {take, pick, grab, get}; `"[VERB NOT APPLICABLE]"` -> {}."""
    if raw is None or raw.strip().lower() in _NO_VERB:
        return set()
    name, syn = clean_name(raw)
    out = set()
    for n in [name, *syn]:
        for t in n.split():
            out |= _singulars(t)
    return out


def _verb_head(raw: str | None) -> str:
    if raw is None or raw.strip().lower() in _NO_VERB:
        return ""
    name, _ = clean_name(raw)
    return name.split(" ")[0] if name else ""


def _narration_verb(text: str) -> str:
    """`"#C C picks up a cup"` -> `"pick"` (the camera wearer's verb, singularised)."""
    words = re.sub(r"^#\w+\s+", "", text.strip()).split()
    if len(words) >= 2 and words[0].lower() in ("c", "#c"):
        w = re.sub(r"[^a-z]", "", words[1].lower())
        if w.endswith(("ches", "shes", "sses", "xes")):
            return w[:-2]
        if w.endswith("ies") and len(w) > 4:
            return w[:-3] + "y"
        if w.endswith("s") and not w.endswith("ss"):
            return w[:-1]
        return w
    return ""


# --------------------------------------------------------------------------------------------
# Reading JSON with named errors

class _Reader:
    def __init__(self, file: Path, keys: dict[str, set[str]], strict: bool, unknown: Counter):
        self.file, self.keys, self.strict, self.unknown = file, keys, strict, unknown
        self.kind = file.name

    def err(self, message: str, path: str, fld: str | None = None) -> Ego4DFormatError:
        return Ego4DFormatError(message, file=self.file, path=path, field=fld)

    def record(self, v: Any, path: str, kind: str) -> dict:
        if not isinstance(v, dict):
            raise self.err(f"expected an object, got {type(v).__name__}", path)
        known = self.keys.get(kind)
        if known is not None:
            for k in v:
                if k not in known and not k.startswith("_"):  # "_noun" etc.: the annotators' originals
                    if self.strict:
                        raise self.err(f"unknown field in a {kind} record", path, k)
                    self.unknown[f"{self.kind}:{kind}.{k}"] += 1
        return v

    def get(self, d: dict, key: str, path: str, *, required: bool = True) -> Any:
        if key not in d:
            if required:
                raise self.err("missing field", path, key)
            return None
        return d[key]

    def list_(self, d: dict, key: str, path: str, *, required: bool = True, nullable: bool = False) -> list:
        v = self.get(d, key, path, required=required)
        if v is None and (nullable or not required):
            return []
        if not isinstance(v, list):
            raise self.err(f"expected a list, got {type(v).__name__}", path, key)
        return v

    def num(self, d: dict, key: str, path: str, *, required: bool = True, nullable: bool = False) -> float | None:
        v = self.get(d, key, path, required=required)
        if v is None and (nullable or not required):
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(f"expected a finite number, got {v!r:.40}", path, key)
        return float(v)

    def str_(self, d: dict, key: str, path: str, *, required: bool = True, nullable: bool = True) -> str | None:
        v = self.get(d, key, path, required=required)
        if v is None:
            if nullable or not required:
                return None
            raise self.err("must not be null", path, key)
        if not isinstance(v, str):
            raise self.err(f"expected a string, got {type(v).__name__}", path, key)
        return v

    def bool_(self, d: dict, key: str, path: str) -> bool:
        v = d.get(key)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise self.err(f"expected true/false, got {v!r:.40}", path, key)
        return v


def _load_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise Ego4DFormatError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", file=path) from None
    except UnicodeDecodeError as e:
        raise Ego4DFormatError(f"not valid UTF-8 ({e.reason})", file=path) from None


# --------------------------------------------------------------------------------------------
# Parsed records

@dataclass
class _Query:
    split: str
    path: str
    video_uid: str
    clip_uid: str
    clip_start: float  # the NLQ clip in video seconds
    clip_end: float
    annotation_uid: str
    index: int
    template: str | None
    query: str | None
    slot_x: str | None
    verb_x: str | None
    slot_y: str | None
    verb_y: str | None
    start: float  # answer window in video seconds
    end: float


@dataclass
class _Box:
    t: float  # video seconds
    label: str
    box: list[float]


@dataclass
class _Action:
    uid: str
    video_uid: str
    span: tuple[float, float]  # video seconds covered by its critical frames (else start/end_sec)
    verb: str  # head verb, e.g. "put"
    verbs: set[str]  # all verb forms for matching
    objects: list[tuple[InteractionObject, str]]  # (object, object_type), most boxed first
    boxes: list[_Box]
    contact: tuple[float, float] | None
    narration: str


@dataclass
class _Video:
    uid: str
    fps: float
    width: float | None
    height: float | None
    duration: float | None
    actions: list[_Action] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# NLQ

def load_nlq(path: str | Path, split: str, *, strict: bool = False,
             unknown: Counter | None = None) -> list[_Query]:
    """Every language query of an nlq_<split>.json, with its record path."""
    path = Path(path)
    r = _Reader(path, _NLQ_KEYS, strict, unknown if unknown is not None else Counter())
    root = r.record(_load_json(path), "", "root")
    out: list[_Query] = []
    for vi, video in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        video = r.record(video, vp, "video")
        vuid = r.str_(video, "video_uid", vp, nullable=False)
        for ci, clip in enumerate(r.list_(video, "clips", vp)):
            cp = f"{vp}.clips[{ci}]"
            clip = r.record(clip, cp, "clip")
            cuid = r.str_(clip, "clip_uid", cp, nullable=False)
            c0 = r.num(clip, "video_start_sec", cp)
            c1 = r.num(clip, "video_end_sec", cp)
            for ai, ann in enumerate(r.list_(clip, "annotations", cp)):
                ap = f"{cp}.annotations[{ai}]"
                ann = r.record(ann, ap, "annotation")
                auid = r.str_(ann, "annotation_uid", ap, nullable=False)
                for qi, lq in enumerate(r.list_(ann, "language_queries", ap)):
                    qp = f"{ap}.language_queries[{qi}]"
                    lq = r.record(lq, qp, "language_query")
                    s, e = r.num(lq, "video_start_sec", qp), r.num(lq, "video_end_sec", qp)
                    for key in ("clip_start_sec", "clip_end_sec"):  # checked: the clips layout's times
                        r.num(lq, key, qp)
                    out.append(_Query(
                        split=split, path=qp, video_uid=vuid, clip_uid=cuid, clip_start=c0, clip_end=c1,
                        annotation_uid=auid, index=qi,
                        template=r.str_(lq, "template", qp, required=False),
                        query=r.str_(lq, "query", qp, required=False),
                        slot_x=r.str_(lq, "slot_x", qp, required=False),
                        verb_x=r.str_(lq, "verb_x", qp, required=False),
                        slot_y=r.str_(lq, "slot_y", qp, required=False),
                        verb_y=r.str_(lq, "verb_y", qp, required=False),
                        start=s, end=e))
    return out


# --------------------------------------------------------------------------------------------
# FHO

class _BoxStats:
    def __init__(self) -> None:
        self.videos_without_queries = 0
        self.kept = 0
        self.clipped = 0
        self.dropped: Counter = Counter()


def _norm_box(r: _Reader, b: dict, path: str, w: float, h: float, stats: _BoxStats) -> list[float] | None:
    bb = r.record(r.get(b, "bbox", path), f"{path}.bbox", "bbox")
    x, y = r.num(bb, "x", f"{path}.bbox"), r.num(bb, "y", f"{path}.bbox")
    bw, bh = r.num(bb, "width", f"{path}.bbox"), r.num(bb, "height", f"{path}.bbox")
    if bw <= 0 or bh <= 0:
        stats.dropped["degenerate"] += 1
        return None
    raw = [x / w, y / h, (x + bw) / w, (y + bh) / h]
    box = [min(1.0, max(0.0, v)) for v in raw]
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        stats.dropped["outside_frame"] += 1
        return None
    if box != raw:
        stats.clipped += 1
    stats.kept += 1
    return [round(v, 6) for v in box]


def _parse_boxes(r: _Reader, boxes: list, path: str, t: float, w: float | None, h: float | None,
                 stats: _BoxStats, counts: Counter, objects: dict[str, tuple[InteractionObject, str]],
                 out: list[_Box]) -> None:
    for bi, b in enumerate(boxes):
        bp = f"{path}[{bi}]"
        b = r.record(b, bp, "box")
        otype = r.str_(b, "object_type", bp, nullable=False)
        if otype not in OBJECT_TYPES:
            raise r.err(f"unknown object_type {otype!r} (expected one of {OBJECT_TYPES})", bp, "object_type")
        noun = r.str_(b, "structured_noun", bp, required=False)
        if w is None or h is None:
            raise r.err("boxes need the frame width and height", bp, "bbox")
        box = _norm_box(r, b, bp, w, h, stats)
        if box is None:
            continue
        label = otype
        if otype not in HAND_TYPES and noun and noun.strip():
            name, syn = clean_name(noun)
            if name:
                label = name
                if name not in objects:
                    objects[name] = (InteractionObject(name, syn), otype)
                counts[name] += 1
        out.append(_Box(t, label, box))


def _finish_action(uid: str, vuid: str, span: tuple[float, float], verb_raw: str | None, free_verb: str | None,
                   objects: dict, counts: Counter, boxes: list[_Box], contact, narration: str) -> _Action:
    order = sorted(objects, key=lambda n: (objects[n][1] != "object_of_change", -counts[n], list(objects).index(n)))
    verbs = _verb_forms(verb_raw) | _verb_forms(free_verb)
    verb = _verb_head(verb_raw) or _verb_head(free_verb)
    return _Action(uid=uid, video_uid=vuid, span=span, verb=verb, verbs=verbs,
                   objects=[objects[n] for n in order], boxes=boxes, contact=contact, narration=narration)


def load_fho_main(path: str | Path, *, strict: bool = False, unknown: Counter | None = None,
                  skipped: Counter | None = None, stats: _BoxStats | None = None,
                  only: set[str] | None = None) -> dict[str, _Video]:
    """fho_main.json (v2): videos -> annotated_intervals -> narrated_actions -> frames -> boxes.
    With `only`, the actions of other videos are neither parsed nor checked (most FHO videos have
    no NLQ query; parsing their ~2M boxes is most of the load time)."""
    path = Path(path)
    r = _Reader(path, _FHO_KEYS, strict, unknown if unknown is not None else Counter())
    skipped = skipped if skipped is not None else Counter()
    stats = stats or _BoxStats()
    root = r.record(_load_json(path), "", "root")
    videos: dict[str, _Video] = {}
    for vi, video in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        video = r.record(video, vp, "video")
        vuid = r.str_(video, "video_uid", vp, nullable=False)
        if only is not None and vuid not in only:
            stats.videos_without_queries += 1
            continue
        meta = r.record(r.get(video, "video_metadata", vp), f"{vp}.video_metadata", "video_metadata")
        mp = f"{vp}.video_metadata"
        fps = r.num(meta, "fps", mp)
        if fps <= 0:
            raise r.err(f"fps must be > 0, got {fps}", mp, "fps")
        w, h = r.num(meta, "width", mp, nullable=True), r.num(meta, "height", mp, nullable=True)
        dur = r.num(meta, "duration_sec", mp, required=False, nullable=True)
        v = videos.setdefault(vuid, _Video(vuid, fps, w, h, dur))
        for ii, interval in enumerate(r.list_(video, "annotated_intervals", vp)):
            ip = f"{vp}.annotated_intervals[{ii}]"
            interval = r.record(interval, ip, "interval")
            redacted = r.bool_(interval, "redacted", ip)
            for ai, act in enumerate(r.list_(interval, "narrated_actions", ip)):
                ap = f"{ip}.narrated_actions[{ai}]"
                act = r.record(act, ap, "action")
                s0, s1 = r.num(act, "start_sec", ap), r.num(act, "end_sec", ap)
                frames = r.list_(act, "frames", ap, nullable=True)
                crit = r.get(act, "critical_frames", ap)
                if redacted:
                    skipped["redacted"] += 1
                    continue
                if r.bool_(act, "is_rejected", ap):
                    skipped["rejected"] += 1
                    continue
                if r.bool_(act, "is_invalid_annotation", ap):
                    skipped["invalid_annotation"] += 1
                    continue
                if "is_valid_action" in act and act["is_valid_action"] is False:
                    skipped["invalid_action"] += 1
                    continue
                crit_t: dict[str, float] = {}
                if crit is not None:
                    cp = f"{ap}.critical_frames"
                    if not isinstance(crit, dict):
                        raise r.err(f"expected an object or null, got {type(crit).__name__}", ap, "critical_frames")
                    for k, fv in crit.items():
                        if k not in FRAME_TYPES:
                            raise r.err(f"unknown critical frame {k!r} (expected one of {FRAME_TYPES})", cp, k)
                        n = r.num(crit, k, cp, nullable=True)
                        if n is not None:
                            crit_t[k] = n / fps
                if not frames:
                    skipped["no_frames"] += 1
                    continue
                objects: dict[str, tuple[InteractionObject, str]] = {}
                counts: Counter = Counter()
                boxes: list[_Box] = []
                times = []
                for fi, fr in enumerate(frames):
                    fp = f"{ap}.frames[{fi}]"
                    fr = r.record(fr, fp, "frame")
                    ftype = r.str_(fr, "frame_type", fp, nullable=False)
                    if ftype not in FRAME_TYPES:
                        raise r.err(f"unknown frame_type {ftype!r} (expected one of {FRAME_TYPES})", fp, "frame_type")
                    t = r.num(fr, "frame_number", fp) / fps
                    times.append(t)
                    fw = r.num(fr, "width", fp, required=False) or w
                    fh = r.num(fr, "height", fp, required=False) or h
                    _parse_boxes(r, r.list_(fr, "boxes", fp), f"{fp}.boxes", t, fw, fh, stats, counts, objects, boxes)
                times += list(crit_t.values())
                span = (min(times), max(times)) if times else (s0, s1)
                c0 = crit_t.get("contact_frame", crit_t.get("pre_frame", crit_t.get("pnr_frame")))
                c1 = crit_t.get("post_frame", crit_t.get("pnr_frame"))
                contact = (c0, c1) if c0 is not None and c1 is not None and c1 >= c0 else None
                uid = r.str_(act, "uid", ap, required=False) or f"{vuid}:{ii}:{ai}"
                v.actions.append(_finish_action(
                    uid, vuid, span, r.str_(act, "structured_verb", ap, required=False),
                    r.str_(act, "freeform_verb", ap, required=False), objects, counts, boxes, contact,
                    r.str_(act, "narration_text", ap, required=False) or ""))
    return videos


def load_fho_scod(path: str | Path, *, fps_of: dict[str, float], strict: bool = False,
                  unknown: Counter | None = None, skipped: Counter | None = None,
                  stats: _BoxStats | None = None) -> dict[str, _Video]:
    """v1 fho_scod_<split>.json: clips with pre_frame / pnr_frame / post_frame boxes (no verbs)."""
    path = Path(path)
    r = _Reader(path, _SCOD_KEYS | {"box": _FHO_KEYS["box"], "bbox": _FHO_KEYS["bbox"]}, strict,
                unknown if unknown is not None else Counter())
    skipped = skipped if skipped is not None else Counter()
    stats = stats or _BoxStats()
    root = r.record(_load_json(path), "", "root")
    videos: dict[str, _Video] = {}
    for ci, clip in enumerate(r.list_(root, "clips", "")):
        cp = f"clips[{ci}]"
        clip = r.record(clip, cp, "clip")
        vuid = r.str_(clip, "video_uid", cp, nullable=False)
        fps = fps_of.get(vuid, CANONICAL_FPS)
        v = videos.setdefault(vuid, _Video(vuid, fps, None, None, None))
        objects: dict[str, tuple[InteractionObject, str]] = {}
        counts: Counter = Counter()
        boxes: list[_Box] = []
        crit_t: dict[str, float] = {}
        for ftype in ("pre_frame", "pnr_frame", "post_frame"):
            fr = r.get(clip, ftype, cp, required=False)
            if fr is None:
                continue
            fp = f"{cp}.{ftype}"
            fr = r.record(fr, fp, "frame")
            t = r.num(fr, "frame_number", fp) / fps
            crit_t[ftype] = t
            _parse_boxes(r, r.list_(fr, "bbox", fp), f"{fp}.bbox", t, r.num(fr, "width", fp),
                         r.num(fr, "height", fp), stats, counts, objects, boxes)
        if not crit_t:
            skipped["no_frames"] += 1
            continue
        contact = (crit_t.get("pre_frame", crit_t.get("pnr_frame")), crit_t.get("post_frame", crit_t.get("pnr_frame")))
        contact = contact if None not in contact and contact[1] >= contact[0] else None
        uid = r.str_(clip, "clip_uid", cp, required=False) or str(clip.get("clip_id") or f"{vuid}:{ci}")
        v.actions.append(_finish_action(uid, vuid, (min(crit_t.values()), max(crit_t.values())), None, None,
                                        objects, counts, boxes, contact, ""))
    return videos


# --------------------------------------------------------------------------------------------
# Optional files: narrations and the ego4d.json metadata

def load_narrations(path: str | Path, only: set[str] | None = None) -> dict[str, list[tuple[float, str]]]:
    """narration.json: {video_uid: {narration_pass_1: {narrations: [{timestamp_sec, narration_text}]}}}."""
    path = Path(path)
    r = _Reader(path, {}, False, Counter())
    root = r.record(_load_json(path), "", "root")
    out: dict[str, list[tuple[float, str]]] = {}
    for vuid, entry in root.items():
        if only is not None and vuid not in only:
            continue
        vp = vuid
        entry = r.record(entry, vp, "video")
        items = []
        for pass_name in sorted(k for k in entry if k.startswith("narration_pass")):
            pp = f"{vp}.{pass_name}"
            pas = r.record(entry[pass_name], pp, "pass")
            for ni, n in enumerate(r.list_(pas, "narrations", pp, required=False)):
                np_ = f"{pp}.narrations[{ni}]"
                n = r.record(n, np_, "narration")
                text = r.str_(n, "narration_text", np_, nullable=True)
                ts = r.num(n, "timestamp_sec", np_)
                if text:
                    items.append((ts, text))
        out[vuid] = sorted(items)
    return out


def load_metadata(path: str | Path) -> dict[str, dict]:
    """ego4d.json: video_uid -> {scenarios, duration_sec, fps}."""
    path = Path(path)
    r = _Reader(path, {}, False, Counter())
    root = r.record(_load_json(path), "", "root")
    out = {}
    for vi, v in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        v = r.record(v, vp, "video")
        uid = r.str_(v, "video_uid", vp, nullable=False)
        scen = r.list_(v, "scenarios", vp, required=False, nullable=True)
        vm = v.get("video_metadata") or {}
        out[uid] = {"scenarios": [s for s in scen if isinstance(s, str)],
                    "duration_sec": r.num(v, "duration_sec", vp, required=False, nullable=True),
                    "fps": r.num(vm, "fps", f"{vp}.video_metadata", required=False, nullable=True)
                    if isinstance(vm, dict) else None}
    return out


# --------------------------------------------------------------------------------------------
# The build

@dataclass
class _Candidate:
    q: _Query
    question: str
    answer: InteractionObject
    action: _Action
    excluded: list[str]  # names that may not be options (the question's own object)
    video: str
    start: float
    end: float
    interaction: Interaction
    meta: dict
    sid: str = ""
    distractors: list[tuple[str, str]] | None = None  # (name, tier)


def _gap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, max(a[0], b[0]) - min(a[1], b[1]))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _question_text(q: str) -> str:
    q = re.sub(r"\s+", " ", q).strip()
    q = q[0].upper() + q[1:]
    return q if q.endswith("?") else q.rstrip(".!") + "?"


def _pick(q: _Query, family: str, actions: list[_Action], cfg: Ego4DConfig):
    """The FHO action (and the answer object) for a query, or the drop reason."""
    window = (q.start, q.end)
    near = [a for a in actions if _gap(a.span, window) <= cfg.max_gap_sec]
    if not near:
        return "no_interaction_nearby"
    ranked = sorted(near, key=lambda a: (_gap(a.span, window), -_overlap(a.span, window),
                                         abs((a.span[0] + a.span[1]) - (q.start + q.end)), a.uid))
    if family == "interaction":
        verbs = _verb_forms(q.verb_x) | _verb_forms(q.verb_y)
        excluded = [s for s in (q.slot_x, q.slot_y) if s and s.strip()]
        for a in ranked:
            if verbs and a.verbs and not (verbs & a.verbs):  # an action without a verb (v1 SCOD) may match
                continue
            for obj, otype in a.objects:
                if otype == "object_of_change" and not any(_names_match(s, obj) for s in excluded):
                    return a, obj, excluded
        return "no_matching_interaction"
    slot = q.slot_x or ""
    for a in ranked:
        for obj, _ in a.objects:
            if _names_match(slot, obj):
                name = _display(slot)
                answer = InteractionObject(name, [n for n in obj.names() if n != name])
                return a, answer, []
    return "no_matching_interaction"


def _nearest_narration(items: list[tuple[float, str]], start: float, end: float, gap: float) -> str:
    """The first narration inside [start, end], else the one nearest to it within `gap` seconds."""
    i = bisect.bisect_left(items, (start - gap,))
    best, best_d = "", math.inf
    while i < len(items) and items[i][0] <= end + gap:
        ts, text = items[i]
        d = max(0.0, start - ts, ts - end)
        if d < best_d:
            best, best_d = text, d
            if d == 0:
                break
        i += 1
    return best


def _make_candidate(q: _Query, family: str, v: _Video, picked, cfg: Ego4DConfig, video_root: Path,
                    narrations: dict, scenarios: list[str], box_stats: Counter):
    action, answer, excluded = picked
    # time base: video seconds (full_scale) or seconds of the NLQ clip (clips)
    if cfg.layout == "clips":
        off, lo, hi = q.clip_start, 0.0, q.clip_end - q.clip_start
        video = video_root / f"{q.clip_uid}.mp4"
    else:
        off, lo = 0.0, 0.0
        hi = v.duration if v.duration is not None else q.clip_end
        video = video_root / f"{q.video_uid}.mp4"
    a0, a1 = q.start - off, q.end - off
    if a1 <= lo or a0 >= hi:
        return "window_outside_video"
    start = max(lo, min(a0, action.span[0] - off) - cfg.context_sec)
    end = min(hi, max(a1, action.span[1] - off) + cfg.context_sec)
    boxes = []
    for b in action.boxes:
        t = b.t - off
        if start <= t <= end:
            boxes.append(TimedBox(round(t, 4), b.label, list(b.box)))
        else:
            box_stats["outside_window"] += 1
    if not boxes:
        return "no_boxes_in_window"
    objects = [answer] + [o for o, _ in action.objects
                          if not any(same_name(n, m) for n in o.names() for m in answer.names())]
    verb = action.verb
    narr = _nearest_narration(narrations.get(q.video_uid, []), q.start, q.end, cfg.max_gap_sec)
    if not verb:
        verb = _narration_verb(action.narration or narr) or _verb_head(q.verb_x)
    contact = None
    if action.contact is not None:
        c0, c1 = (min(end, max(start, c - off)) for c in action.contact)
        contact = [round(c0, 4), round(c1, 4)]
    if family == "interaction":
        question = _question_text(q.query or "")
    else:
        qverb = _verb_head(q.verb_x) or verb or "interact with"
        question = f"Which object did I {qverb}?"
    inter = Interaction(objects=objects, action=verb, boxes=boxes, contact=contact)
    meta = {"source": "ego4d", "split": q.split, "video_uid": q.video_uid, "clip_uid": q.clip_uid,
            "annotation_uid": q.annotation_uid, "query_index": q.index, "record": q.path,
            "template": q.template, "nlq_query": q.query, "slot_x": q.slot_x, "verb_x": q.verb_x,
            "answer_source": "fho_object" if family == "interaction" else "nlq_slot",
            "answer_window": [round(a0, 4), round(a1, 4)], "fho_action": action.uid,
            "fho_narration": action.narration, "gap_sec": round(_gap(action.span, (q.start, q.end)), 4),
            "layout": cfg.layout, "scenarios": scenarios}
    if narr:
        meta["narration"] = narr
    return _Candidate(q=q, question=question, answer=answer, action=action, excluded=excluded, video=str(video),
                      start=round(start, 4), end=round(end, 4), interaction=inter, meta=meta)


def _head(name: str) -> str:
    t = _tokens(name)
    return t[-1] if t else ""


def _distractors(c: _Candidate, k: int, tiers: list[tuple[str, list[str]]], rng: random.Random):
    """k names, tier by tier, none naming the answer (or its synonyms, or the question's object):
    not the same name, nor the same head noun ("coffee cup" is no distractor for "cup")."""
    banned = list(c.answer.names()) + c.excluded
    banned_heads = [_head(b) for b in banned]
    chosen: list[tuple[str, str]] = []

    def ok(n: str) -> bool:
        if any(same_name(n, b) for b in banned) or any(same_name(_head(n), h) for h in banned_heads if h):
            return False
        return not any(same_name(n, x) for x, _ in chosen)

    for tier, pool in tiers:  # pools are sorted lists; draw a few at random first, the rest if needed
        head = rng.sample(pool, min(len(pool), 4 * k + 8))
        for n in head:
            if ok(n):
                chosen.append((n, tier))
                if len(chosen) == k:
                    return chosen
        if len(head) < len(pool):
            picked = set(head)
            rest = [n for n in pool if n not in picked]
            rng.shuffle(rest)
            for n in rest:
                if ok(n):
                    chosen.append((n, tier))
                    if len(chosen) == k:
                        return chosen
    return None


def build_ego4d(annotations: str | Path, video_root: str | Path, out: str | Path | None = None,
                config: Ego4DConfig | None = None, **options) -> tuple[list[Sample], dict]:
    """Build the Ego4D OpenQA + CloseQA subset. Returns (samples, report); with `out`, also writes
    `<out>/train.jsonl` and `<out>/report.json` atomically. `options` override `config` fields."""
    cfg = dataclasses.replace(config or Ego4DConfig(), **options)  # checked again by __post_init__
    ann = Path(annotations)
    video_root = Path(video_root).expanduser().absolute()  # JSONL paths are relative to the file's folder
    if not ann.is_dir():
        raise FileNotFoundError(f"{ann}: annotations folder not found (expected <ego4d_data>/v2/annotations)")
    unknown: Counter = Counter()
    files: dict[str, Any] = {}

    # optional metadata
    meta_path = next((p for p in (ann / "ego4d.json", ann.parent / "ego4d.json") if p.exists()), None)
    metadata = load_metadata(meta_path) if meta_path else {}
    files["metadata"] = str(meta_path) if meta_path else None

    # NLQ
    queries: list[_Query] = []
    files["nlq"] = []
    for split in cfg.splits:
        p = ann / f"nlq_{split}.json"
        if not p.exists():
            raise FileNotFoundError(f"{p}: NLQ file for split {split!r} not found")
        files["nlq"].append(str(p))
        queries += load_nlq(p, split, strict=cfg.strict, unknown=unknown)

    # FHO
    fho_skipped: Counter = Counter()
    stats = _BoxStats()
    if (ann / "fho_main.json").exists():
        files["fho"] = [str(ann / "fho_main.json")]
        fho = load_fho_main(ann / "fho_main.json", strict=cfg.strict, unknown=unknown, skipped=fho_skipped,
                            stats=stats, only={q.video_uid for q in queries})
    else:
        scod = sorted(ann.glob("fho_scod_*.json"))
        if not scod:
            raise FileNotFoundError(f"{ann}: no hand-object annotations: expected fho_main.json (v2) or "
                                    f"fho_scod_<split>.json (v1)")
        files["fho"] = [str(p) for p in scod]
        fps_of = {u: m["fps"] for u, m in metadata.items() if m.get("fps")}
        fho = {}
        for p in scod:
            for uid, v in load_fho_scod(p, fps_of=fps_of, strict=cfg.strict, unknown=unknown,
                                        skipped=fho_skipped, stats=stats).items():
                if uid in fho:
                    fho[uid].actions.extend(v.actions)
                else:
                    fho[uid] = v
    for uid, v in fho.items():
        m = metadata.get(uid) or {}
        if v.duration is None and m.get("duration_sec"):
            v.duration = m["duration_sec"]

    # narrations (optional)
    narr_path = next((p for p in (ann / "narration.json", ann / "narrations.json") if p.exists()), None)
    narrations = load_narrations(narr_path, only={q.video_uid for q in queries}) if narr_path else {}
    files["narration"] = str(narr_path) if narr_path else None

    # object vocabularies for distractors
    by_video: dict[str, set[str]] = defaultdict(set)
    for uid, v in fho.items():
        for a in v.actions:
            for o, _ in a.objects:
                by_video[uid].add(o.name)
    for q in queries:
        if q.template in TEMPLATE_ANSWERS and q.template and TEMPLATE_ANSWERS[q.template]:
            for s in (q.slot_x, q.slot_y):
                if s and s.strip() and _tokens(s):
                    by_video[q.video_uid].add(_display(s))
    by_scenario: dict[str, set[str]] = defaultdict(set)
    for uid, names in by_video.items():
        for s in (metadata.get(uid) or {}).get("scenarios", []):
            by_scenario[s] |= names
    video_pools = {uid: sorted(names) for uid, names in by_video.items()}
    scenario_pools: dict[tuple[str, ...], list[str]] = {}
    global_pool = sorted(set().union(*by_video.values())) if by_video else []

    # per-query decisions
    dropped: Counter = Counter()
    per_template: dict[str, dict] = {}
    box_stats: Counter = Counter()
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for q in queries:
        tkey = q.template if q.template is not None else "(none)"
        pt = per_template.setdefault(tkey, {"read": 0, "built": 0, "closeqa": 0, "openqa": 0,
                                            "dropped": Counter()})
        pt["read"] += 1

        def drop(reason: str) -> None:
            dropped[reason] += 1
            pt["dropped"][reason] += 1

        sid = f"ego4d-{q.annotation_uid}-{q.index}"
        if q.video_uid in cfg.exclude_video_uids:
            drop("excluded_video")
            continue
        if not q.query or not q.query.strip():
            drop("empty_query")
            continue
        if q.template is None or not q.template.strip():
            drop("no_template")
            continue
        if q.template not in TEMPLATE_ANSWERS:
            drop("unsupported_template")
            continue
        family = TEMPLATE_ANSWERS[q.template]
        if family is None:
            drop("answer_not_an_object")
            continue
        if family == "slot" and (not q.slot_x or not _tokens(q.slot_x)):
            drop("no_answer_slot")
            continue
        if q.end - q.start < max(cfg.min_window_sec, 1e-9):
            drop("window_too_short")
            continue
        v = fho.get(q.video_uid)
        if v is None or not v.actions:
            drop("no_interaction_video")
            continue
        picked = _pick(q, family, v.actions, cfg)
        if isinstance(picked, str):
            drop(picked)
            continue
        scen = (metadata.get(q.video_uid) or {}).get("scenarios", [])
        c = _make_candidate(q, family, v, picked, cfg, video_root, narrations, scen, box_stats)
        if isinstance(c, str):
            drop(c)
            continue
        if sid in seen:
            drop("duplicate_id")
            continue
        seen.add(sid)
        c.sid = sid
        k = cfg.num_options - 1
        key = tuple(sorted(scen))
        if key not in scenario_pools:
            scenario_pools[key] = sorted(set().union(*(by_scenario[s] for s in key))) if key else []
        tiers = [("video", video_pools.get(q.video_uid, [])), ("scenario", scenario_pools[key]),
                 ("global", global_pool)]
        c.distractors = _distractors(c, k, tiers, random.Random(f"{cfg.seed}/{sid}/options"))
        candidates.append(c)

    # the draw: a seeded shuffle, closed questions first from those with enough distractors
    rng = random.Random(cfg.seed)
    order = sorted(candidates, key=lambda c: c.sid)
    rng.shuffle(order)
    total = min(cfg.size, len(order))
    closable = [c for c in order if c.distractors is not None]
    n_closed = min(round(total * cfg.closed_fraction), len(closable))
    closed_ids = {c.sid for c in closable[:n_closed]}
    opened = [c for c in order if c.sid not in closed_ids][: total - n_closed]
    chosen = {c.sid: "closeqa" for c in closable[:n_closed]} | {c.sid: "openqa" for c in opened}

    samples: list[Sample] = []
    tier_counts: Counter = Counter()
    for c in order:
        task = chosen.get(c.sid)
        if task is None:
            continue
        meta = dict(c.meta)
        if task == "closeqa":
            r = random.Random(f"{cfg.seed}/{c.sid}/letter")
            opts = [n for n, _ in c.distractors]
            pos = r.randrange(cfg.num_options)
            opts.insert(pos, c.answer.name)
            answer = LETTERS[pos]
            meta["distractor_tiers"] = [t for _, t in c.distractors]
            tier_counts.update(meta["distractor_tiers"])
        else:
            opts, answer = None, c.answer.name
        s = Sample(id=c.sid, question=c.question, answer=answer, task=task, options=opts, video=c.video,
                   start=c.start, end=c.end, interaction=c.interaction, meta=meta)
        s.validate()
        samples.append(s)
        pt = per_template[c.q.template]
        pt["built"] += 1
        pt[task] += 1

    n_close = sum(s.task == "closeqa" for s in samples)
    report = {
        "source": "ego4d",
        "annotations": str(ann),
        "video_root": str(video_root),
        "options": {k: (sorted(v) if isinstance(v, (set, frozenset)) else list(v) if isinstance(v, tuple) else v)
                    for k, v in dataclasses.asdict(cfg).items()},
        "files": files,
        "read": len(queries),
        "built": len(samples),
        "closeqa": n_close,
        "openqa": len(samples) - n_close,
        "usable": len(candidates),
        "usable_open_only": sum(c.distractors is None for c in candidates),
        "not_selected": len(candidates) - len(samples),
        "shortfall": max(0, cfg.size - len(samples)),
        "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
        "per_template": {t: {**d, "dropped": dict(sorted(d["dropped"].items()))}
                         for t, d in sorted(per_template.items())},
        "distractor_tiers": dict(sorted(tier_counts.items())),
        "fho": {"videos": len(fho), "videos_without_queries": stats.videos_without_queries,
                "actions": sum(len(v.actions) for v in fho.values()),
                "actions_skipped": dict(sorted(fho_skipped.items())),
                "boxes_kept": stats.kept, "boxes_clipped_to_frame": stats.clipped,
                "boxes_dropped": dict(sorted(stats.dropped.items())),
                "boxes_outside_clip_window": box_stats["outside_window"]},
        "unknown_keys": dict(sorted(unknown.items())),
        "drop_reasons": DROP_REASONS,
    }
    assert report["read"] == report["usable"] + report["dropped_total"]
    if out is not None:
        out = Path(out)
        write_jsonl(out / "train.jsonl", samples)
        write_json(out / "report.json", report)
    return samples, report


def summary(report: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"read {report['read']} NLQ queries, built {report['built']} samples "
             f"({report['closeqa']} closeqa, {report['openqa']} openqa); usable {report['usable']}, "
             f"not selected {report['not_selected']}, shortfall {report['shortfall']}"]
    if report["dropped"]:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in report["dropped"].items()))
    f = report["fho"]
    lines.append(f"fho: {f['videos']} videos, {f['actions']} actions, skipped {f['actions_skipped'] or 0}; "
                 f"boxes kept {f['boxes_kept']}, clipped {f['boxes_clipped_to_frame']}, "
                 f"dropped {f['boxes_dropped'] or 0}")
    if report["unknown_keys"]:
        lines.append(f"unknown keys (ignored): {report['unknown_keys']}")
    return "\n".join(lines)


__all__ = ["DROP_REASONS", "Ego4DConfig", "Ego4DFormatError", "TEMPLATE_ANSWERS", "build_ego4d", "clean_name",
           "load_fho_main", "load_fho_scod", "load_metadata", "load_narrations", "load_nlq", "same_name",
           "summary"]

