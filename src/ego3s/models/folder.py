"""What a local model folder must hold, checked before anything is loaded from it.

transformers, given an incomplete folder, fails late and about something else (a tokenizer class
it cannot find, a shard it tries to download although `local_files_only` is set, a safetensors
header error with no file name). `check_model_folder` names the folder and each missing or
unreadable part instead: `config.json`; the weights (`model.safetensors`, `pytorch_model.bin`, or
a `*.index.json` with every shard it lists; each safetensors file's header readable and its data
as long as the header says); the tokenizer (`tokenizer.json`, `tokenizer.model` or
`vocab.json` + `merges.txt`); the processor (`processor_config.json` or
`preprocessor_config.json`).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path


class ModelFolderError(ValueError):
    """A model folder that lacks a part or holds an unreadable one; the message names both."""


def _safetensors_problem(path: Path) -> str | None:
    """Why `path` is not a complete safetensors file, or None."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name}: {size} bytes, too short for a safetensors file"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name}: header of {n} bytes in a file of {size} bytes (truncated or not safetensors)"
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError):
        return f"{path.name}: unreadable safetensors header (not a safetensors file, or corrupt)"
    if not isinstance(header, dict):
        return f"{path.name}: unreadable safetensors header"
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
    ]
    need = 8 + n + max(ends, default=0)
    if need > size:
        return f"{path.name}: truncated ({size} bytes, its header needs {need})"
    return None


def _weights_problems(root: Path) -> list[str]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = root / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                return [f"{index_name}: not a valid weights index (needs a 'weight_map')"]
            missing = [s for s in shards if not (root / s).is_file()]
            if missing:
                return [f"weight shard(s) listed in {index_name} but absent: {', '.join(missing)}"]
            return [p for s in shards if s.endswith(".safetensors") and (p := _safetensors_problem(root / s))]
    if (root / "model.safetensors").is_file():
        problem = _safetensors_problem(root / "model.safetensors")
        return [problem] if problem else []
    if (root / "pytorch_model.bin").is_file():
        return []
    return ["weights (model.safetensors, pytorch_model.bin, or an index with its shards)"]


def check_model_folder(path: str | os.PathLike) -> Path:
    """Raise `ModelFolderError` naming every missing or unreadable part of a model folder."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(
            f"{root}: no such model folder (one holding config.json, the weights, tokenizer and "
            "processor; weights are never downloaded: build a test model with "
            "`ego3s build-model tiny --out DIR`)"
        )
    if not root.is_dir():
        raise ModelFolderError(
            f"{root}: is a file; expected a model folder (config.json, weights, tokenizer, processor)"
        )
    problems = []
    if not (root / "config.json").is_file():
        problems.append("config.json")
    else:
        try:
            json.loads((root / "config.json").read_text())
        except (ValueError, UnicodeDecodeError):
            problems.append("config.json: not valid JSON")
    problems += _weights_problems(root)
    if not (
        (root / "tokenizer.json").is_file()
        or (root / "tokenizer.model").is_file()
        or ((root / "vocab.json").is_file() and (root / "merges.txt").is_file())
    ):
        problems.append("tokenizer (tokenizer.json, tokenizer.model, or vocab.json + merges.txt)")
    if not any((root / n).is_file() for n in ("processor_config.json", "preprocessor_config.json")):
        problems.append("processor (processor_config.json or preprocessor_config.json)")
    if problems:
        raise ModelFolderError(f"{root}: not a complete model folder: missing or unreadable: {'; '.join(problems)}")
    return root
