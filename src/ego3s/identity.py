"""Fingerprints of what produced an output, so that nothing computed from other inputs is reused.

Every cache entry, prediction line, checkpoint folder and pipeline stage records the fingerprint
of its inputs; a rerun compares them and recomputes what changed or refuses with a message that
names the difference (`claim_folder`, `describe_diff`).

- `sample_fingerprint(sample)`: the sample's content (question, answer, task, options, window,
  interaction) and its video or image file's identity: path, size and modification time, or a
  hash of the file's bytes with `video_identity="content"` (slower, but survives a copy or a
  `touch`). `meta` is left out: it changes reports, never a score or a prediction.
- `stable_hash(obj)`: a short hex key of any JSON-able value.
- `claim_folder(out, identity, ...)`: the check every training-like stage (train, sft, warm-up)
  makes before writing into a folder that may hold another run's checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ego3s.files import write_json

VIDEO_IDENTITIES = ("stat", "content")
IDENTITY_FILE = "identity.json"


class IdentityError(ValueError):
    """An output folder holds results of other inputs; the message names the difference and the way out."""


def stable_hash(obj: Any, n: int = 20) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


_CONTENT: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256: each file is read once per process


def check_video_identity(mode: str, key: str = "video_identity") -> None:
    if mode not in VIDEO_IDENTITIES:
        raise ValueError(f"{key} must be one of {VIDEO_IDENTITIES}, got {mode!r}")


def file_identity(path: str | os.PathLike | None, mode: str = "stat") -> dict | None:
    """`{"path", "size", "mtime_ns"}` (`mode="stat"`) or `{"path", "size", "sha256"}`
    (`mode="content"`) of a file; a missing file is `{"path", "missing": True}`, so that its
    appearance later changes the fingerprint and whatever failed on it is tried again."""
    if path is None:
        return None
    check_video_identity(mode)
    p = str(path)
    try:
        st = os.stat(p)
    except OSError:
        return {"path": p, "missing": True}
    if mode == "stat":
        return {"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    key = (p, st.st_size, st.st_mtime_ns)
    if key not in _CONTENT:
        h = hashlib.sha256()
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return {"path": p, "unreadable": True, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        _CONTENT[key] = h.hexdigest()
    return {"path": p, "size": st.st_size, "sha256": _CONTENT[key]}


def sample_fingerprint(sample, video_identity: str = "stat") -> str:
    """What a score or a prediction of `sample` depends on (see the module docstring)."""
    d = sample.to_dict()
    d.pop("meta", None)
    d["video"] = file_identity(sample.video, video_identity)
    d["image"] = file_identity(sample.image, video_identity)
    return stable_hash(d)


def data_fingerprint(samples: Iterable, video_identity: str = "stat") -> str:
    """Of a list of samples, in order (a training set, a pool)."""
    return stable_hash([[s.id, sample_fingerprint(s, video_identity)] for s in samples])


def jsonl_fingerprint(path: str | os.PathLike, video_identity: str = "stat") -> str:
    """Of a JSONL of samples: its valid samples' fingerprints (invalid lines do not count)."""
    from ego3s.data.io import read_jsonl

    return data_fingerprint(read_jsonl(path, skip_invalid=True), video_identity)


def describe_diff(old: dict, new: dict, limit: int = 6) -> str:
    """`key: old then, new now` for the keys that differ (nested keys dotted), at most `limit`."""
    a, b = flatten(old), flatten(new)
    keys = [k for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    parts = [f"{k}: {_short(a.get(k, '<absent>'))} then, {_short(b.get(k, '<absent>'))} now" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested dict as one level, nested keys dotted (`training.learning_rate`)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def config_identity(cfg, leave_out: tuple[str, ...]) -> dict:
    """A config dataclass as a dict without the keys that never change what a run computes (its
    folder, how long it runs, how often it saves or logs, decoding speed knobs)."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(cfg).items() if k not in leave_out}


def read_identity(out: str | os.PathLike) -> dict | None:
    path = Path(out) / IDENTITY_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def claim_folder(
    out: str | os.PathLike,
    identity: dict,
    *,
    resume: bool,
    overwrite: bool = False,
    outputs: tuple[str, ...] = ("checkpoint-*", "final", "final.partial"),
    logs: tuple[str, ...] = (),
    what: str = "run",
    echo=print,
) -> None:
    """Make sure `out` holds nothing produced by other inputs before a run writes into it.

    `outputs` (globs) are what a run leaves; `logs` are files cleared with them. No outputs: the
    folder is claimed (`identity.json` written). Outputs and `overwrite`: they are deleted, then
    claimed. Outputs without `resume`: refused (a fresh run would mix its checkpoints with the old
    ones). Outputs with `resume`: allowed only when `identity.json` equals `identity`, else refused
    naming the keys that differ."""
    out = Path(out)
    found = sorted({p for g in outputs for p in out.glob(g)}) if out.is_dir() else []
    old = read_identity(out)
    if found and overwrite:
        echo(
            f"{what} {out}: --overwrite: deleting {len(found)} earlier output(s) ({', '.join(p.name for p in found[:4])}"
            f"{', ...' if len(found) > 4 else ''})"
        )
        for p in found:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        for name in logs:
            (out / name).unlink(missing_ok=True)
        found, old = [], None
    if found:
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        if not resume:
            raise IdentityError(
                f"{out}: holds the outputs of an earlier {what} ({names}); pass --resume to continue "
                f"it, --overwrite to delete them and start over, or choose another out"
            )
        if old is None:
            raise IdentityError(
                f"{out}: holds {what} outputs ({names}) without a record of what produced them "
                f"({IDENTITY_FILE}: written by an older ego3s, or deleted); they cannot be checked "
                f"against this run: --overwrite to start over, or choose another out"
            )
        if old != identity:
            raise IdentityError(
                f"{out}: holds a {what} of other inputs ({describe_diff(old, identity)}); --resume "
                f"continues only the same run: --overwrite to delete it and start over, or choose "
                f"another out"
            )
    if old != identity:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / IDENTITY_FILE, identity)
