"""On-disk cache of per-view scores, so an interrupted scoring run resumes without rescoring.

One append-only JSONL file per scoring setup (model fingerprint, estimator and everything else
that changes a score: frames, prompt format, K...). Each line is one finished (sample, view).
A crash can only tear the last line, which `read_log` drops; that (sample, view) is scored again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ego3s.files import append_jsonl, read_log, write_text


# settings that change how fast a score comes, never its value: left out of the key, so changing
# them (or a release adding them) reuses the scores on disk
SPEED_ONLY = ("decode_threads",)


def setup_key(**settings) -> str:
    """A short stable hash of the settings that determine a score."""
    blob = json.dumps({k: v for k, v in settings.items() if k not in SPEED_ONLY}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ScoreCache:
    """`(sample_id, view) -> record` backed by an append-only log."""

    def __init__(self, folder: str | Path, **settings):
        self.key = setup_key(**settings)
        self.path = Path(folder) / f"scores-{self.key}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.path.with_suffix(".settings.json")
        if not meta.exists():
            write_text(meta, json.dumps(settings, indent=2, sort_keys=True, default=str))  # atomic: never torn
        self._data = {(r["id"], r["view"]): r for r in read_log(self.path)}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._data

    def get(self, sample_id: str, view: str) -> dict | None:
        return self._data.get((sample_id, view))

    def put(self, sample_id: str, view: str, score: float | None, **extra) -> None:
        rec = {"id": sample_id, "view": view, "score": score, **extra}
        append_jsonl(self.path, rec)
        self._data[(sample_id, view)] = rec

    def __len__(self) -> int:
        return len(self._data)
