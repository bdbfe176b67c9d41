"""Atomic file writes: a reader never sees a half-written output.

Every output of ego3s (subsets, score tables, reports, checkpoints' side files) goes through
these helpers: write to a temporary file in the same folder, fsync, then rename over the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside `path`; on clean exit it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename is None:  # a full disk in write/fsync: name the file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False, default=str)
        f.write("\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one line and fsync: used for logs that must survive a crash line by line.

    A crash can leave a torn last line: readers skip it (`read_log`), and the next append cuts it
    first (`repair_log`), so it is never glued to a new record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_log(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def repair_log(path: str | os.PathLike) -> bool:
    """Cut a torn final line (no trailing newline) off an append-only log before appending to it
    again; otherwise the next `append_jsonl` glues its record onto the torn line, and that
    corrupt line, no longer the last, makes every later `read_log` fail. Returns whether it cut."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        try:
            json.loads(data[keep:])
            f.write(b"\n")  # a whole record that only lacks its newline: keep it
        except ValueError:
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True


def read_log(path: str | os.PathLike) -> list[dict]:
    """Read an append-only JSONL log, dropping a torn final line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn tail of a crashed writer
            raise ValueError(f"{path}:{i + 1}: corrupt log line (not the last one)") from None
    return out
