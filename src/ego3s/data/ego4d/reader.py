"""Reading Ego4D's JSON with errors that name the file, the record path and the field; the parsed records."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ego3s.data.ego4d.config import Ego4DFormatError
from ego3s.data.schema import InteractionObject

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
