"""JSONL and `datasets.Dataset` I/O for samples.

Samples are read from a JSONL file or from a folder written by `datasets.Dataset.save_to_disk`
(one column per schema field; `to_dataset` writes that layout, and nested fields may also be plain
lists/dicts). Paths inside either are relative to the file's (the folder's) parent folder for
JSONL (for a `datasets` folder: relative to that folder), so a dataset folder can be moved as a
whole. On reading they become absolute; on writing, paths under the output folder are made
relative again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ego3s.data.schema import Sample, SampleError
from ego3s.files import atomic_open

_PATH_FIELDS = ("video", "image")


def _admit(s: Sample, seen: dict[str, int], pos: int, unit: str, base: Path) -> Sample:
    """A read sample, refused if its id came before (`unit` `pos` names where), with relative
    paths made absolute against `base`."""
    if s.id in seen:
        raise SampleError(f"duplicate id (first seen on {unit} {seen[s.id]})", field="id", sample_id=s.id)
    seen[s.id] = pos
    for name in _PATH_FIELDS:
        p = getattr(s, name)
        if p is not None and not os.path.isabs(p):
            setattr(s, name, str(base / p))
    return s


def read_jsonl(
    path: str | os.PathLike, *, skip_invalid: bool = False, errors: list[SampleError] | None = None
) -> list[Sample]:
    """Read and validate samples from a JSONL file (or a `save_to_disk` folder: `read_dataset_folder`).
    Invalid records raise SampleError naming file, line, id and field; with `skip_invalid` they are
    appended to `errors` instead, so a long job can count them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sample file")
    if path.is_dir():
        return read_dataset_folder(path, skip_invalid=skip_invalid, errors=errors)
    check_jsonl_format(path)
    base = path.resolve().parent
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SampleError(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SampleError(f"not valid JSON ({e.msg} at column {e.colno})") from None
                samples.append(_admit(Sample.from_dict(record), seen, lineno, "line", base))
            except SampleError as e:
                e = e.located(file=str(path), line=lineno)
                if not skip_invalid:
                    raise e
                if errors is not None:
                    errors.append(e)
    return samples


class DataFormatError(ValueError):
    """A data file in another format than the JSONL expected; the message names the file and the format."""


_MAGIC = {
    b"PAR1": "a Parquet file (read it with datasets or pandas and write JSONL)",
    b"\x1f\x8b": "gzip-compressed (decompress it first)",
    b"PK\x03\x04": "a zip archive (extract it first)",
    b"\x89HDF": "an HDF5 file",
    b"ARROW1": "an Arrow file (read it with datasets and write JSONL)",
}


def check_jsonl_format(path: str | os.PathLike) -> None:
    """Refuse, with one message naming the file and what it is, a file that is not JSON Lines: a
    binary format (Parquet, gzip, zip, Arrow, HDF5), a JSON array or a pretty-printed JSON
    document, a CSV/TSV table. Otherwise each of its lines would be skipped as invalid, one by one."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise DataFormatError(f"{path}: is {what}; expected JSONL (one JSON object per line)")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        return
    first = text.split(b"\n", 1)[0].strip()
    if text[:1] == b"[":
        raise DataFormatError(
            f"{path}: is a JSON array; expected JSONL, one object per line (convert: "
            f"jq -c '.[]' {path.name} > {path.stem}.jsonl)"
        )
    if first == b"{":
        raise DataFormatError(
            f"{path}: is one JSON document spread over several lines (pretty-printed); "
            "expected JSONL, one object per line"
        )
    if text[:1] != b"{":
        sep = b"," if b"," in first else b"\t" if b"\t" in first else None
        kinds: dict[bytes | None, str] = {b",": "a CSV table", b"\t": "a TSV table"}
        kind = kinds.get(sep, "not JSON Lines")
        raise DataFormatError(
            f"{path}: looks like {kind} (line 1: {first[:80].decode('utf-8', 'replace')!r}); "
            "expected JSONL, one JSON object per line"
        )


def write_jsonl(path: str | os.PathLike, samples: Iterable[Sample]) -> int:
    """Validate and write atomically; duplicate ids are an error. Returns the count written."""
    path = Path(path)
    base = path.resolve().parent
    seen: set[str] = set()
    n = 0
    with atomic_open(path, "w") as f:
        for s in samples:
            s.validate()
            if s.id in seen:
                raise SampleError("duplicate id", field="id", sample_id=s.id, file=str(path))
            seen.add(s.id)
            d = s.to_dict()
            for name in _PATH_FIELDS:
                p = d.get(name)
                if p is not None and os.path.isabs(p):
                    try:
                        d[name] = str(Path(p).relative_to(base))
                    except ValueError:
                        pass
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
            n += 1
    return n


def to_dataset(samples: list[Sample]):
    """A `datasets.Dataset` with one column per field. Nested fields are kept as JSON strings so
    that samples with and without interaction annotations share one Arrow schema."""
    import datasets

    rows = []
    for s in samples:
        d = s.to_dict()
        d["interaction"] = json.dumps(d["interaction"]) if d["interaction"] is not None else None
        d["meta"] = json.dumps(d["meta"])
        d["options"] = json.dumps(d["options"]) if d["options"] is not None else None
        rows.append(d)
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in Sample.__dataclass_fields__})
    return datasets.Dataset.from_list(rows)


def from_dataset(ds) -> list[Sample]:
    """Inverse of `to_dataset`."""
    out = []
    for i, row in enumerate(ds):
        d = dict(row)
        for k in ("interaction", "meta", "options"):
            if isinstance(d.get(k), str):
                d[k] = json.loads(d[k])
        try:
            out.append(Sample.from_dict(d))
        except SampleError as e:
            raise e.located(line=i) from None
    return out


def is_dataset_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `datasets.Dataset.save_to_disk`."""
    p = Path(path)
    return p.is_dir() and (p / "state.json").is_file() and (p / "dataset_info.json").is_file()


def read_dataset_folder(
    path: str | os.PathLike, *, skip_invalid: bool = False, errors: list[SampleError] | None = None
) -> list[Sample]:
    """Samples from a `save_to_disk` folder, validated like JSONL records (row numbers from 0 in
    place of line numbers; duplicate ids are an error). A `DatasetDict` folder is refused with the
    split names, since which split to train on is the caller's choice."""
    import datasets

    path = Path(path)
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        raise ValueError(
            f"{path}: a DatasetDict folder (splits {splits}); pass one split's folder, "
            f"e.g. {path / (splits[0] if splits else 'train')}"
        )
    if not is_dataset_folder(path):
        raise FileNotFoundError(
            f"{path}: a folder, but not one written by datasets' save_to_disk "
            "(no state.json / dataset_info.json); samples are JSONL or such a folder"
        )
    ds = datasets.load_from_disk(str(path))
    base = path.resolve()
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(ds):
        try:
            d = dict(row)
            for k in ("interaction", "meta", "options"):
                if isinstance(d.get(k), str):
                    try:
                        d[k] = json.loads(d[k])
                    except json.JSONDecodeError as e:
                        raise SampleError(f"not valid JSON ({e.msg})", field=k, sample_id=d.get("id")) from None
            if d.get("meta") is None:
                d["meta"] = {}
            samples.append(_admit(Sample.from_dict(d), seen, i, "row", base))
        except SampleError as e:
            e = e.located(file=str(path), line=i)
            if not skip_invalid:
                raise e
            if errors is not None:
                errors.append(e)
    return samples
