"""YAML configs with the paper's key names, overridable with `key=value` on the command line.

A config is a dataclass whose fields carry their help text in `metadata["help"]` (as TRL's
config classes do). `load_config` reads YAML, applies dotted overrides, checks every key exists
and converts values to the field's type, so a typo fails before a long job starts.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key with a value it cannot take; the message starts with the key's dotted path."""


# ------------------------------------------------------------------------------------ checks
# Every config dataclass checks its own keys in __post_init__ with these, so a bad value fails at
# load (before any model or data is touched) with the key, the value and what is allowed; the
# loader prefixes the key with its dotted path (`selection.scoring.views: ...`).

_INTERVAL = re.compile(r"^([\[(])\s*(-inf|[-+0-9.e]+)\s*,\s*(inf|[-+0-9.e]+)\s*([\])])$")


def check_choice(key: str, value: Any, allowed) -> None:
    """`value` (or each item of a list value) must be one of `allowed`."""
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if v not in allowed:
            raise ConfigError(f"{key}: {v!r} is not one of {', '.join(str(a) for a in allowed)}")


def check_range(key: str, value: Any, interval: str) -> None:
    """`value` must be a finite number in `interval`, written as in mathematics: `"(0, 1]"`,
    `"[1, inf)"`, `"(-inf, inf)"` (any finite number). None passes (optional keys)."""
    if value is None:
        return
    m = _INTERVAL.match(interval)
    if not m:
        raise ValueError(f"bad interval {interval!r}")
    lo_br, lo, hi, hi_br = m.group(1), float(m.group(2)), float(m.group(3)), m.group(4)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: {value!r} is not a number in {interval}")
    ok = math.isfinite(value) and (value > lo if lo_br == "(" else value >= lo) and (
        value < hi if hi_br == ")" else value <= hi)
    if not ok:
        raise ConfigError(f"{key}: {value!r} is not in {interval}")


def check_fields(cfg: Any, choices: dict[str, Any] | None = None, ranges: dict[str, str] | None = None) -> None:
    """`check_choice` and `check_range` over several fields of `cfg` at once."""
    for name, allowed in (choices or {}).items():
        check_choice(name, getattr(cfg, name), allowed)
    for name, interval in (ranges or {}).items():
        check_range(name, getattr(cfg, name), interval)


def check_steps(key: str, value: Any) -> None:
    """A step budget: -1 (no limit: epochs decide) or >= 1."""
    if value != -1:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: {value!r} is not -1 (use num_train_epochs) or an integer >= 1")


def check_report_to(key: str, value: Any) -> None:
    """`report_to`: "none", or tracker names (a list, or one string separated by commas)."""
    from ego3s.tracking import report_to_list

    try:
        report_to_list(value, key)
    except ValueError as e:
        raise ConfigError(str(e)) from None


DTYPES = ("auto", "bfloat16", "float32", "float16")
DEVICES = ("auto", "cpu", "cuda")
MASTER_WEIGHTS = ("float32", "bfloat16")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["a.b=1", "c=[1,2]"]` -> `{"a": {"b": 1}, "c": [1, 2]}`; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping, recursing into nested dataclass fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown key(s) {unknown}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # raised by cls's own __post_init__ checks: name the key's full path
        if where:
            raise ConfigError(f"{where}{e}") from None
        raise


def _convert(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if v is None:
            return None
        if len(args) == 1:  # `X | None`: X's own message, not a generic one
            return _convert(args[0], v, where)
        for a in args:
            try:
                return _convert(a, v, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: cannot read {v!r} as {tp}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, where + ".")
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {v!r}")
        (a, *_) = typing.get_args(tp) or (Any,)
        return [_convert(a, x, where) for x in v]
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: expected a mapping, got {v!r}")
        return dict(v)
    if tp is Any:
        return v
    if tp is bool:
        if isinstance(v, bool):
            return v
        raise ConfigError(f"{where}: expected true/false, got {v!r}")
    if tp in (int, float):
        if isinstance(v, str):  # YAML 1.1 reads `1e-6` (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {v!r}")
        if tp is int and isinstance(v, float) and not v.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {v!r}")
        return tp(v)
    if tp is str:
        if isinstance(v, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {v!r}")
        return str(v)
    if typing.get_origin(tp) is typing.Literal:
        if v not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {typing.get_args(tp)}, got {v!r}")
        return v
    return v


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                section: str | None = None) -> T:
    """Read `path` (optionally one top-level `section` of it), apply overrides, build `cls`."""
    data = read_yaml(path) if path else {}
    if section is not None:
        data = data.get(section) or {}
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls: type) -> str:
    """One line per key with its default and help: printed by `--help` of the commands."""
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n".join(lines)
