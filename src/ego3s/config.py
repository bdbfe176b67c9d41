"""YAML configs with the paper's key names, overridable with `key=value` on the command line.

A config is a dataclass whose fields carry their help text in `metadata["help"]` (as TRL's
config classes do). `load_config` reads YAML, applies dotted overrides, checks every key exists
and converts values to the field's type, so a typo fails before a long job starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

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
    ok = (
        math.isfinite(value)
        and (value > lo if lo_br == "(" else value >= lo)
        and (value < hi if hi_br == ")" else value <= hi)
    )
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


# choice types shared by the stage configs (a `Literal` field: `--help` lists its choices)
Dtype = Literal["auto", "bfloat16", "float32", "float16"]
Device = Literal["auto", "cpu", "cuda"]
MasterWeights = Literal["float32", "bfloat16"]
DTYPES = get_args(Dtype)
DEVICES = get_args(Device)
MASTER_WEIGHTS = get_args(MasterWeights)


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


def from_dict(cls: Any, data: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a mapping, recursing into nested dataclass fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = {u: difflib.get_close_matches(u, fields, n=1) for u in unknown}
        hint = "".join(f"; {u!r}: did you mean {m[0]!r}?" for u, m in close.items() if m)
        raise ConfigError(
            f"{where.rstrip('.') or cls.__name__}: unknown key(s) {unknown}{hint}; known: {sorted(fields)}"
        )
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
    if origin in (list, tuple, frozenset, set):
        a = (typing.get_args(tp) or (Any,))[0]
        if isinstance(v, str) and a is str:  # `data=QAEgo4D,EgoSynth` on the command line
            v = [x.strip() for x in v.split(",") if x.strip()]
        if not isinstance(v, (list, tuple, set, frozenset)):
            raise ConfigError(f"{where}: expected a list, got {v!r}")
        items = [_convert(a, x, where) for x in v]
        return items if origin is list else origin(items)  # tuple, frozenset, set
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}: expected a mapping, got {v!r}")
        key_value = typing.get_args(tp)
        if len(key_value) == 2 and key_value[1] is not Any:  # {name: path} or {name: {key: value}}
            return {k: _convert(key_value[1], x, f"{where}.{k}") for k, x in v.items()}
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
    return v  # Literal choices included: the config's __post_init__ checks them, with its own message


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None, section: str | None = None
) -> T:
    """Read `path` (optionally one top-level `section` of it), apply overrides, build `cls`."""
    data = read_yaml(path) if path else {}
    if section is not None:
        data = data.get(section) or {}
    data = merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _nested(tp: Any) -> type | None:
    """The config dataclass a field of type `tp` holds (`X` or `X | None`), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_keys(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, dataclasses.Field, Any, Any]]:
    """Every key of config class `cls`: (dotted path, field, default, type), nested configs expanded
    into their own keys (`selection.csm.lambda_c`). A nested config that defaults to None (set it to
    enable it) is listed itself and with its keys. Defaults are those of the enclosing config
    (`training.max_steps` of `RunConfig` is the run's default, not `TrainingConfig`'s)."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, dataclasses.Field, Any, Any]] = []
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        sub = _nested(hints[f.name])
        if sub is None:
            out.append((prefix + f.name, f, default, hints[f.name]))
            continue
        if default is None:
            out.append((prefix + f.name, f, None, hints[f.name]))
        inner = default if dataclasses.is_dataclass(default) else None
        out += config_keys(sub, f"{prefix}{f.name}.", inner)
    return out


def _show(value: Any) -> str:
    """A default as it is typed on the command line (YAML): null, true, 0.5, full, [1, 3]."""
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, (frozenset, set, tuple)):
        value = sorted(value) if isinstance(value, (frozenset, set)) else list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def key_rows(cls: type) -> list[tuple[str, str]]:
    """(key, `help (default: DEFAULT)`) for every key of config class `cls`, nested keys dotted;
    a `Literal` key's help names its choices."""
    rows = []
    for key, f, default, tp in config_keys(cls):
        help_text = f.metadata.get("help", "")
        if typing.get_origin(tp) is typing.Literal:
            help_text = f"{help_text}; one of {_type_name(tp)}" if help_text else f"one of {_type_name(tp)}"
        rows.append((key, f"{help_text} (default: {_show(default)})".lstrip()))
    return rows


def describe(cls: type) -> str:
    """Every key of config class `cls`, one per line as `key: help (default: DEFAULT)`: the key list of
    every command's `--help` (generated from the dataclass, so it cannot miss a key)."""
    return "\n".join(f"{k}: {h}" for k, h in key_rows(cls))


def cli_overrides(cls: type, args: list[str], renames: dict[str, Any] | None = None) -> list[str]:
    """A command's extra arguments -> `key=value` overrides of config class `cls`.

    `key=value` (dotted for nested keys) passes through. Flags spell top-level keys:
    `--max-frames 8` and `--max-frames=8` are `max_frames=8`; a true/false key is switched by
    `--icu` / `--no-icu`. `renames` maps other flags onto keys: `{"--frames": "nframes"}`, a fixed
    value `{"--quiet": ("progress", False)}`, or a prefix `{"--path": "paths."}` (`--path A=x` ->
    `paths.A=x`)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    renames = renames or {}
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--"):
            out.append(arg)
            continue
        flag, eq, value = arg.partition("=")
        target = renames.get(flag)
        if isinstance(target, tuple):  # a switch: fixed value
            out.append(f"{target[0]}={_show(target[1])}")
            continue
        if target is None:
            key = flag[2:].replace("-", "_")
            if key not in names and key.startswith("no_") and hints.get(key[3:]) is bool and not eq:
                out.append(f"{key[3:]}=false")
                continue
            if key not in names or _nested(hints[key]) is not None:
                raise ConfigError(
                    f"{flag}: unknown option; the keys of this command are key=value arguments "
                    f"(see --help): {', '.join(sorted(names))}"
                )
            if hints[key] is bool and not eq:
                out.append(f"{key}=true")
                continue
            target = key
        if not eq:
            if i >= len(args):
                raise ConfigError(f"{flag}: needs a value")
            value = args[i]
            i += 1
        if target.endswith(".") and "=" not in value:  # --path NAME=PATH
            raise ConfigError(f"{flag}: {value!r} is not NAME=VALUE")
        out.append(f"{target}{value}" if target.endswith(".") else f"{target}={value}")
    return out
