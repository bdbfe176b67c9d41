"""The one sample schema every source and benchmark is converted to.

A sample is plain data (dataclasses) so that it round-trips through JSONL and `datasets.Dataset`
unchanged. Validation lives here, next to the fields it checks, and every failure names the
field, so that readers can add the file, line and sample id.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("openqa", "closeqa")
LETTERS = "ABCDEFGHIJ"
BOX_TOLERANCE = 1.0  # seconds a track's first/last box is held beyond its annotated span (the context view)


class SampleError(ValueError):
    """A record that does not fit the schema; says where (file, line, sample id) and which field."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        sample_id: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ):
        self.message, self.field, self.sample_id, self.file, self.line = message, field, sample_id, file, line
        super().__init__(self._text())

    def _text(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}" + (f":{self.line}" if self.line is not None else ""))
        if self.sample_id is not None:
            where.append(f"sample {self.sample_id!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return (", ".join(where) + ": " if where else "") + self.message

    @property
    def reason(self) -> str:
        """What is wrong, without where: the key runs count invalid records by."""
        return f"invalid {self.field}" if self.field else "unreadable record"

    def located(self, *, file: str | None = None, line: int | None = None, sample_id: str | None = None) -> SampleError:
        return SampleError(
            self.message,
            field=self.field,
            sample_id=self.sample_id or sample_id,
            file=file or self.file,
            line=line if line is not None else self.line,
        )


@dataclass
class InteractionObject:
    name: str
    synonyms: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        """The name first, then its synonyms, without repeats."""
        out = []
        for n in [self.name, *self.synonyms]:
            if n and n not in out:
                out.append(n)
        return out


@dataclass
class TimedBox:
    """One box at one instant: `t` in seconds of the source video, `box` = x1, y1, x2, y2 in [0, 1]."""

    t: float
    label: str
    box: list[float]


@dataclass
class Interaction:
    """The hand-object interaction a question is about: what the counterfactual `context` view
    masks and what the interaction-centric reward looks for."""

    objects: list[InteractionObject]
    action: str = ""
    boxes: list[TimedBox] = field(default_factory=list)
    contact: list[float] | None = None  # [start, end] seconds of hand-object contact

    def description(self) -> str:
        """Text used for the interaction-relevance filter (objects and action)."""
        names = ", ".join(o.name for o in self.objects)
        return f"{self.action} {names}".strip()


@dataclass
class Sample:
    id: str
    question: str
    answer: str  # closeqa: the gold option letter ("A", "B", ...); openqa: the reference answer
    task: str  # "openqa" or "closeqa"
    options: list[str] | None = None  # option texts without their letters (closeqa only)
    video: str | None = None  # path; relative paths are relative to the JSONL file's folder
    image: str | None = None  # single-image questions (EgoThink)
    start: float | None = None  # clip window in seconds of the video
    end: float | None = None
    cutoff: float | None = None  # only frames strictly before this time may be shown (EgoTextVQA)
    interaction: Interaction | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.interaction, dict):  # Sample(..., interaction={...}) is allowed
            self.interaction = _interaction_from(self.interaction)

    @property
    def answer_index(self) -> int:
        return LETTERS.index(self.answer)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer_index] if self.task == "closeqa" else self.answer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Sample:
        """Build and validate; raises SampleError naming the field."""
        if not isinstance(d, dict):
            raise SampleError(f"expected a JSON object, got {type(d).__name__}")
        sid = d.get("id")
        try:
            unknown = set(d) - set(Sample.__dataclass_fields__)
            if unknown:
                raise SampleError(f"unknown field(s) {sorted(unknown)}", field=sorted(unknown)[0])
            for name in ("id", "question", "answer", "task"):
                if name not in d or d[name] is None:
                    raise SampleError("missing required field", field=name)
            inter = d.get("interaction")
            s = Sample(
                **{
                    **d,
                    "interaction": _interaction_from(inter) if inter is not None else None,
                    "meta": {} if d.get("meta") is None else d["meta"],
                }
            )
            s.validate()
            return s
        except SampleError as e:
            raise e.located(sample_id=str(sid) if sid is not None else None) from None

    def validate(self) -> None:
        _typed(self.id, str, "id")
        if not self.id:
            raise SampleError("must not be empty", field="id")
        _typed(self.question, str, "question")
        _typed(self.answer, str, "answer")
        if self.task not in TASKS:
            raise SampleError(f"must be one of {TASKS}, got {self.task!r}", field="task")
        if self.task == "closeqa":
            if not isinstance(self.options, list) or len(self.options) < 2:
                raise SampleError("closeqa needs a list of at least 2 options", field="options")
            if len(self.options) > len(LETTERS):
                raise SampleError(f"at most {len(LETTERS)} options", field="options")
            for o in self.options:
                _typed(o, str, "options")
            if len({o.strip().lower() for o in self.options}) != len(self.options):
                raise SampleError("options must be distinct", field="options")
            if self.answer not in LETTERS[: len(self.options)]:
                raise SampleError(
                    f"closeqa answer must be an option letter A..{LETTERS[len(self.options) - 1]}, got {self.answer!r}",
                    field="answer",
                )
        elif self.options is not None:
            raise SampleError("openqa samples have no options (use null)", field="options")
        for name in ("video", "image"):
            v = getattr(self, name)
            if v is not None:
                _typed(v, str, name)
                if not v.strip():
                    raise SampleError("empty path (use null for a sample without one)", field=name)
        if self.video is not None and self.image is not None:
            raise SampleError("a sample has a video or an image, not both", field="image")
        for name in ("start", "end", "cutoff"):
            v = getattr(self, name)
            if v is not None:
                _number(v, name)
                if v < 0:
                    raise SampleError(f"must be >= 0, got {v}", field=name)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise SampleError(f"end ({self.end}) must be after start ({self.start})", field="end")
        if not isinstance(self.meta, dict):
            raise SampleError("must be an object", field="meta")
        if self.interaction is not None:
            _validate_interaction(self.interaction)
            self._check_boxes_in_window()

    def _check_boxes_in_window(self) -> None:
        """A video's boxes must reach the frames shown ([start, end], before cutoff; each track held
        BOX_TOLERANCE s beyond its span, as the context view holds it): otherwise the context view
        masks nothing and equals the full view, and CSM would measure nothing."""
        boxes = self.interaction.boxes
        if self.video is None or not boxes:
            return
        lo = self.start if self.start is not None else 0.0
        hi = min([x for x in (self.end, self.cutoff) if x is not None], default=math.inf)
        tracks: dict[str, list[float]] = {}
        for b in boxes:
            tracks.setdefault(b.label, []).append(b.t)
        if not any(min(ts) - BOX_TOLERANCE <= hi and max(ts) + BOX_TOLERANCE >= lo for ts in tracks.values()):
            times = [b.t for b in boxes]
            raise SampleError(
                f"every box (times {min(times):g} to {max(times):g} s) lies outside the clip's window "
                f"[{lo:g}, {hi:g}] s: the context view would equal the full view",
                field="interaction.boxes",
            )


def _typed(v: Any, t: type, name: str) -> None:
    if not isinstance(v, t):
        raise SampleError(f"expected {t.__name__}, got {type(v).__name__} ({v!r:.40})", field=name)


def _number(v: Any, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SampleError(f"expected a finite number, got {v!r:.40}", field=name)


def _interaction_from(d: Any) -> Interaction:
    if isinstance(d, Interaction):
        return d
    if not isinstance(d, dict):
        raise SampleError("expected an object", field="interaction")
    objs = d.get("objects")
    if not isinstance(objs, list):
        raise SampleError("expected a list", field="interaction.objects")
    objects = []
    for o in objs:
        if isinstance(o, str):
            objects.append(InteractionObject(o))
        elif isinstance(o, dict) and isinstance(o.get("name"), str):
            objects.append(InteractionObject(o["name"], list(o.get("synonyms") or [])))
        else:
            raise SampleError(f"each object needs a name, got {o!r:.60}", field="interaction.objects")
    boxes = []
    for b in d.get("boxes") or []:
        if not isinstance(b, dict) or not {"t", "label", "box"} <= set(b):
            raise SampleError(f"each box needs t, label and box, got {b!r:.60}", field="interaction.boxes")
        boxes.append(TimedBox(b["t"], b["label"], b["box"]))
    return Interaction(objects, d.get("action") or "", boxes, d.get("contact"))


def _validate_interaction(it: Interaction) -> None:
    if not it.objects:
        raise SampleError("needs at least one object", field="interaction.objects")
    for o in it.objects:
        if not isinstance(o.name, str) or not o.name.strip():
            raise SampleError("object names must be non-empty strings", field="interaction.objects")
        if not all(isinstance(s, str) for s in o.synonyms):
            raise SampleError("synonyms must be strings", field="interaction.objects")
    _typed(it.action, str, "interaction.action")
    for b in it.boxes:
        _number(b.t, "interaction.boxes.t")
        _typed(b.label, str, "interaction.boxes.label")
        if not isinstance(b.box, (list, tuple)) or len(b.box) != 4:
            raise SampleError(f"box must be [x1, y1, x2, y2], got {b.box!r:.60}", field="interaction.boxes.box")
        for v in b.box:
            _number(v, "interaction.boxes.box")
        x1, y1, x2, y2 = b.box
        if not (0 <= x1 <= 1 and 0 <= y1 <= 1 and 0 <= x2 <= 1 and 0 <= y2 <= 1):
            raise SampleError(f"box coordinates must lie in [0, 1], got {list(b.box)}", field="interaction.boxes.box")
        if x1 >= x2 or y1 >= y2:
            raise SampleError(
                f"box needs x1 < x2 and y1 < y2 (a zero-area or inverted box masks nothing), got {list(b.box)}",
                field="interaction.boxes.box",
            )
    if it.contact is not None:
        if not isinstance(it.contact, (list, tuple)) or len(it.contact) != 2:
            raise SampleError("contact must be [start, end] in seconds", field="interaction.contact")
        for v in it.contact:
            _number(v, "interaction.contact")
        if it.contact[1] < it.contact[0]:
            raise SampleError("contact end is before its start", field="interaction.contact")
