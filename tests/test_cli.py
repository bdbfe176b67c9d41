"""The command pattern: every stage command builds its config dataclass from `--config FILE` and
`key=value` arguments, lists every key in `--help`, and still reads the older flags.

The key tests walk the dataclass fields, so a key added later is covered without editing this file;
only a key whose value cannot be guessed from its type (a string with fixed choices) needs a line
in `_VALUES`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing

import pytest
import typer
import yaml
from typer.testing import CliRunner

from ego3s import cli
from ego3s.config import ConfigError, cli_overrides, config_keys

# the commands with a config dataclass, and the arguments each needs besides its keys
REQUIRED = {
    "select": [],
    "train": [],
    "sft": [],
    "eval": [],
    "run": [],
    "demo": [],
    "synth": ["--out", "o"],
    "build-ego4d": ["--annotations", "a", "--video-root", "v", "--out", "o"],
}

# candidate values (the first that differs from the default is used) for keys whose type does not say
# what they accept: choices kept as plain strings, lists checked against a registry
_VALUES = {
    "views": (["full", "blind"],),
    "strategy": ("dapo",),
    "estimator": ("sampling",),
    "rationale": ("meta.trace",),
    "open_metric": ("similarity", "rouge_l"),
    "open_correct": ("similarity", "exact"),
    "monitoring_unit": ("prompts", "steps"),
    "judge": ({"model": "m"},),
    "preset": ("fast",),
    "report_to": ("tensorboard",),
    "eval_data": (["EgoThink"],),
    "limo_band": ([0, 1],),
    "split_fields": (["scene"],),
    "exclude_video_uids": (["u1", "u2"],),
    "splits": (["train", "val"],),
    "paths": ({"EgoSynth": "/x"},),
    "options": ({"EgoTextVQA": {"video_root": "/v"}},),
    # mappings merge into a config's own: the demo's whole block, so that the value is what it sets
    "ecr_scoring": ({"estimator": "sampling", "num_samples": 4, "max_new_tokens": 48},),
}
_LISTS = {"data": ["EgoThink"]}  # a key that is a list in one config and a string in another
_OLD_NAMES = {"frames": "nframes"}  # a config that still reads an old key name stores it under the new one


def _commands() -> dict[str, str]:
    """command name -> its config class (module:Class), read from the app itself."""
    out = {}
    for c in cli.app.registered_commands:
        path = getattr(c.cls, "config_path", None)
        if path:
            out[c.name] = path
    return out


def _values(key: str, default, tp) -> list:
    """Candidate values for `key` that differ from its default; the first the config accepts is used
    (a float or int key may have a range the candidates straddle)."""
    name = key.rsplit(".", 1)[-1]
    origin, args = typing.get_origin(tp), [a for a in typing.get_args(tp) if a is not type(None)]
    if name in _VALUES:
        return [v for v in _VALUES[name] if v != default]
    if name in _LISTS and origin is list:
        return [_LISTS[name]]
    if origin is typing.Literal:
        return [a for a in typing.get_args(tp) if a != default]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if dataclasses.is_dataclass(tp):
        return [{}]  # an optional nested config switched on with its defaults
    if tp is bool:
        return [not default]
    if tp is int:
        return [(default or 1) + 2, (default or 1) + 1, max(default or 0, 1) - 1]  # even stays even first
    if tp is float:
        return [default * f for f in (0.5, 1.25, 1.1, 0.9) if default] or [0.5, 0.25]
    if tp is str:
        return ["x" if default != "x" else "y"]
    raise AssertionError(f"{key}: no value for type {tp}; add one to _VALUES")


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _norm(v):
    if isinstance(v, (tuple, set, frozenset)):
        return sorted(v) if isinstance(v, (set, frozenset)) else list(v)
    return v


@pytest.fixture
def built(monkeypatch):
    """Run a command up to its config: the config it built (the stage itself does not run)."""
    got = []
    real = cli._stage_config

    def spy(*args, **kwargs):
        got.append(real(*args, **kwargs))
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "_stage_config", spy)

    def run(args: list[str], tolerate_errors: bool = False):
        """The config; None when the command failed with an error and `tolerate_errors` is set."""
        got.clear()
        r = CliRunner().invoke(cli.app, [str(a) for a in args])
        if tolerate_errors and r.exit_code == 1 and r.output.startswith("error: "):
            return None
        assert r.exit_code == 0 and got, r.output
        return got[0]

    return run


def test_every_stage_command_has_a_config():
    assert set(_commands()) == set(REQUIRED)


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_every_key_is_settable_on_the_command_line(command, built):
    cls = cli._config_class(_commands()[command])
    keys = config_keys(cls)
    names = {k for k, *_ in keys}
    for key, _, default, tp in keys:
        for value in _values(key, default, tp):
            arg = f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}".replace("\n...", "")
            parent, name = key.rpartition(".")[::2]
            renamed = f"{parent}{'.' if parent else ''}{_OLD_NAMES.get(name)}"
            if renamed in names:  # the new name unset, so the two cannot disagree (a shipped config sets it)
                arg = [arg, f"{renamed}=null"]
            cfg = built([command, *REQUIRED[command], *([arg] if isinstance(arg, str) else arg)], tolerate_errors=True)
            if cfg is not None:
                break
        assert cfg is not None, f"{key}: no candidate value accepted"
        got = _get(cfg, key)
        if renamed in names and got is None:
            got = _get(cfg, renamed)
        if dataclasses.is_dataclass(got):
            # `{}` merges into what the command's own config sets there (the demo's warm-up pool), else defaults
            before = _get(built([command, *REQUIRED[command]]), key)
            assert value == {} and got == (before if before is not None else type(got)()), key
        else:
            assert _norm(got) == _norm(value) and _norm(got) != _norm(default), key


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_help_lists_every_key_with_its_help_and_default(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("TERMINAL_WIDTH", "400")
    r = CliRunner().invoke(cli.app, [command, "--help"])
    assert r.exit_code == 0, r.output
    lines = {line.strip(" │").split(" ", 1)[0]: line for line in r.output.splitlines()}
    for key, f, *_ in config_keys(cli._config_class(_commands()[command])):
        assert key in lines, key
        words = f.metadata.get("help", "").split()
        assert " ".join(words[:3]) in " ".join(lines[key].split()), key
        assert "(default: " in lines[key], key


def test_plain_help_without_rich_lists_the_keys():
    """Without Rich, click formats the help: the keys come as a definition list."""
    import click

    command = typer.main.get_command(cli.app).commands["synth"]
    command.rich_markup_mode = None
    text = command.get_help(click.Context(command, info_name="synth"))
    for key, *_ in config_keys(cli._config_class(_commands()["synth"])):
        assert f"\n  {key} " in text, key


def test_yaml_then_overrides(tmp_path, built):
    (tmp_path / "e.yaml").write_text("data: [EgoSynth]\nfps: 1.0\nmax_frames: 6\n")
    cfg = built(["eval", "--config", tmp_path / "e.yaml", "fps=3", "--max-frames", "5"])
    assert cfg.data == ["EgoSynth"] and cfg.fps == 3.0 and cfg.max_frames == 5


OLD_FLAGS = [  # spelled as in README, docs/, experiments/ and tests
    (
        "eval",
        [
            "--data",
            "QAEgo4D,EgoThink",
            "--model",
            "m",
            "--root",
            "r",
            "--path",
            "EgoSynth=/data/es",
            "--path",
            "EgoThink=/b",
            "--opt",
            "EgoTextVQA.video_root=/videos",
            "--view",
            "blind",
            "--blind-mode",
            "blank",
            "--limit",
            "20",
            "--frames",
            "4",
            "--fps=1.5",
            "--max-frames",
            "9",
            "--min-pixels",
            "100",
            "--batch-size",
            "2",
            "--fmt",
            "reasoning",
            "--icu",
            "--verbose",
            "--quiet",
            "--report-to",
            "tensorboard",
            "--overwrite",
            "--video-identity",
            "content",
            "--judge-model",
            "j",
            "--out",
            "ev",
        ],
        {
            "data": ["QAEgo4D", "EgoThink"],
            "model": "m",
            "root": "r",
            "paths": {"EgoSynth": "/data/es", "EgoThink": "/b"},
            "options": {"EgoTextVQA": {"video_root": "/videos"}},
            "view": "blind",
            "blind_mode": "blank",
            "limit": 20,
            "nframes": 4,
            "frames": None,
            "fps": 1.5,
            "max_frames": 9,
            "min_pixels": 100,
            "batch_size": 2,
            "fmt": "reasoning",
            "icu": True,
            "verbose": True,
            "progress": False,
            "report_to": "tensorboard",
            "overwrite": True,
            "video_identity": "content",
            "judge_model": "j",
            "out": "ev",
        },
    ),
    (
        "synth",
        [
            "--out",
            "o",
            "--train",
            "2000",
            "--test",
            "200",
            "--probe",
            "200",
            "--p-typical",
            "0.6",
            "--frames",
            "8",
            "--size",
            "112",
            "--fps",
            "2",
        ],
        {"train": 2000, "test": 200, "probe": 200, "p_typical": 0.6, "frames": 8, "size": 112, "fps": 2.0},
    ),
    (
        "build-ego4d",
        [
            "--annotations",
            "a",
            "--video-root",
            "v",
            "--out",
            "o",
            "--size",
            "5",
            "--splits",
            "train,val",
            "--layout",
            "clips",
            "--closed-fraction",
            "0.25",
            "--seed",
            "3",
        ],
        {"size": 5, "splits": ("train", "val"), "layout": "clips", "closed_fraction": 0.25, "seed": 3},
    ),
    (
        "select",
        ["--method", "random", "--limit", "3", "--quiet", "data=d.jsonl"],
        {"method": "random", "limit": 3, "data": "d.jsonl"},
    ),
    ("eval", ["--no-icu", "--nframes", "3"], {"icu": False, "nframes": 3}),
]


@pytest.mark.parametrize("command,args,expected", OLD_FLAGS)
def test_old_flags_map_onto_keys(command, args, expected, built):
    cfg = built([command, *args])
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_unknown_flag_and_key_fail_naming_them():
    r = CliRunner().invoke(cli.app, ["eval", "--fpss", "2"])
    assert r.exit_code == 1 and "--fpss: unknown option" in r.output
    r = CliRunner().invoke(cli.app, ["synth", "--out", "o", "trian=3"])
    assert r.exit_code == 1 and "unknown key(s) ['trian']" in r.output
    r = CliRunner().invoke(cli.app, ["eval", "view=sideways"])
    assert r.exit_code == 1 and "view: 'sideways' is not one of full, blind, context" in r.output


def test_cli_overrides_spellings():
    from ego3s.eval.run import EvalConfig

    assert cli_overrides(
        EvalConfig,
        ["a.b=1", "--fps=2", "--fps", "3", "--icu", "--no-verbose", "--path", "A=/x", "--quiet"],
        cli._EVAL_FLAGS,
    ) == ["a.b=1", "fps=2", "fps=3", "icu=true", "verbose=false", "paths.A=/x", "progress=false"]
    with pytest.raises(ConfigError, match="--fps: needs a value"):
        cli_overrides(EvalConfig, ["--fps"])
    with pytest.raises(ConfigError, match="--path: 'EgoSynth' is not NAME=VALUE"):
        cli_overrides(EvalConfig, ["--path", "EgoSynth"], cli._EVAL_FLAGS)


def test_start_up_and_help_do_not_import_torch():
    """`ego3s --help` and each command's `--help` stay light: torch is imported where it is used."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom ego3s.cli import app\n"
        "for args in [['--help'], *[[c, '--help'] for c in %r]]:\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'cv2', 'av') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    ).replace("%r", repr(sorted(REQUIRED)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
