"""Atomic file writes: a reader never sees a half-written output.

Every output of ego3s (subsets, score tables, reports, checkpoints' side files) goes through
these helpers: write to a temporary file in the same folder, fsync, then rename over the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
            fsync(f.fileno(), path)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and e.filename is None:  # a full disk in write(): name the file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def fsync(fd: int, path: str | os.PathLike) -> None:
    """`os.fsync`, whose error (a full disk shows here) names the file, which the OS's does not."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e


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
        fsync(f.fileno(), path)


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
        fsync(f.fileno(), path)
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


# ----------------------------------------------------------------------------------------------
# One writer per folder

LOCK_NAME = ".ego3s.lock"


class FolderLocked(ValueError):
    """Another live process writes into the folder; the message names it (a ValueError, as every
    error about what a command was asked to do, so the CLI prints it as one line)."""


_HELD: dict[str, int] = {}  # folder -> nesting depth held by this process


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so that a pid reused by a new
    process is not taken for the lock's owner; None where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _lock_is_stale(info: dict) -> bool:
    """A lock whose owner is dead: same host, and its pid gone or now another process."""
    import socket

    if info.get("host") != socket.gethostname():
        return False  # cannot see processes of another machine: never taken over silently
    pid = info.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return True
    start = info.get("proc_start")
    return start is not None and _proc_start(pid) not in (None, start)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "ego3s", echo=None) -> Iterator[Path]:
    """Hold `folder/.ego3s.lock` while writing the folder: a second process is refused with
    `FolderLocked` naming the owner (pid, host, start time, command).

    The exclusion itself is an advisory `flock` on the file, which the kernel drops when its
    holder dies, so a crash cannot leave the folder locked; the file's text (pid, host, start
    time) names the holder. A file still naming a dead process of this host (killed, never
    cleaned up) is a stale lock: taken over with a message. One naming another host is refused
    (delete the file once that run is gone). Re-entrant within a process; in a distributed job
    only rank 0 takes it (the ranks write one folder together)."""
    import fcntl
    import socket
    import sys
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD or os.environ.get("RANK", "0") != "0":
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held_by_other = False
        except BlockingIOError:
            held_by_other = True
        try:
            text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
            old = json.loads(text) if text.strip() else None
        except ValueError:
            old = {}
        if held_by_other or (old and not _lock_is_stale(old)):
            old = old or {}
            raise FolderLocked(
                f"{folder}: another process writes this folder ({old.get('what', '?')}, pid {old.get('pid', '?')} "
                f"on {old.get('host', '?')}, since {old.get('started', '?')}: {old.get('command', '')!r}); wait for "
                f"it to end or choose another out"
                + ("" if held_by_other else f" (if that process is gone, delete {path})")
            )
        if old is not None:
            (echo or (lambda m: print(m, file=sys.stderr)))(
                f"{folder}: taking over a stale lock (pid {old.get('pid')} on {old.get('host')}, since "
                f"{old.get('started')}, is no longer running)"
                if old
                else f"{folder}: taking over a torn lock file"
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "proc_start": _proc_start(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": what,
            "command": " ".join(sys.argv)[:300],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        fsync(fd, path)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)  # free: empty (the file stays: unlinking it would race with a waiter)
    finally:
        os.close(fd)  # drops the flock
