"""On-disk cache of per-view scores, so an interrupted scoring run resumes without rescoring.

One append-only JSONL file per scoring setup (model fingerprint, estimator and everything else
that changes a score: frames, prompt format, K...). Each line is one finished (sample, view)
with the sample's fingerprint (`ego3s.identity.sample_fingerprint`: its question, answer,
options, interaction and video file identity); a line counts only for a sample with that
fingerprint, so other data with the same ids, an edited sample or a replaced video is scored
again, never served old scores. Lines written before fingerprints existed have none and are
ignored (scored again). A failed (sample, view) (its video missing or unreadable) is recorded
with its error and tried again by the next run (`ScoreCache.done`).
A crash can only tear the last line, which `read_log` drops; that (sample, view) is scored again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ego3s.data.schema import Sample
from ego3s.files import append_jsonl, read_log, write_text
from ego3s.identity import sample_fingerprint

# settings that change how fast a score comes (or how a file is recognised), never its value: left
# out of the key, so changing them (or a release adding them) reuses the scores on disk
SPEED_ONLY = ("decode_threads", "video_identity")
# settings added after scores were cached: at their default they are left out of the key, so the
# scores on disk stay valid; any other value is part of it
ADDED_DEFAULTS = {"greedy": False}


def setup_key(**settings) -> str:
    """A short stable hash of the settings that determine a score."""
    blob = json.dumps(
        {
            k: v
            for k, v in settings.items()
            if k not in SPEED_ONLY and not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScoreCache:
    """`(sample, view) -> record` backed by an append-only log; a record is served only for the
    sample it was computed from (same fingerprint)."""

    def __init__(self, folder: str | Path, **settings):
        self.key = setup_key(**settings)
        self.video_identity = settings.get("video_identity", "stat")  # how a video file is recognised
        self.path = Path(folder) / f"scores-{self.key}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.path.with_suffix(".settings.json")
        if not meta.exists():
            write_text(meta, json.dumps(settings, indent=2, sort_keys=True, default=str))  # atomic: never torn
        self._data = {(r["id"], r["view"]): r for r in read_log(self.path)}  # the newest line wins
        self._fps: dict[str, tuple[Sample, str]] = {}

    def fingerprint(self, sample: Sample) -> str:
        """The sample's fingerprint, computed once per sample object (one stat of its video)."""
        hit = self._fps.get(sample.id)
        if hit is None or hit[0] is not sample:
            hit = (sample, sample_fingerprint(sample, self.video_identity))
            self._fps[sample.id] = hit
        return hit[1]

    def get(self, sample: Sample, view: str) -> dict | None:
        rec = self._data.get((sample.id, view))
        return rec if rec is not None and rec.get("fp") == self.fingerprint(sample) else None

    def __contains__(self, key: tuple[Sample, str]) -> bool:
        return self.get(*key) is not None

    def done(self, sample: Sample, view: str) -> bool:
        """Scored for this very sample, and not a failure that may pass now (a video that was
        missing or unreadable then is tried again)."""
        rec = self.get(sample, view)
        return rec is not None and not rec.get("error")

    def put(self, sample: Sample, view: str, score: float | None, **extra) -> None:
        rec = {"id": sample.id, "view": view, "fp": self.fingerprint(sample), "score": score, **extra}
        append_jsonl(self.path, rec)
        self._data[(sample.id, view)] = rec

    def __len__(self) -> int:
        return len(self._data)
