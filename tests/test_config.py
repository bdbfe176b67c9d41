from dataclasses import dataclass, field

import pytest

from ego3s.config import ConfigError, load_config, parse_overrides


@dataclass
class Inner:
    lambda_c: float = 0.1
    views: list[str] = field(default_factory=lambda: ["full", "blind"])


@dataclass
class Outer:
    name: str = "x"
    steps: int = 3
    ecr: bool = True
    inner: Inner = field(default_factory=Inner)
    note: str | None = None


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\ninner:\n  lambda_c: 0.2\n")
    cfg = load_config(Outer, p, ["steps=7", "inner.views=[full]", "ecr=false"])
    assert cfg == Outer(name="run", steps=7, ecr=False, inner=Inner(0.2, ["full"]))
    assert parse_overrides(["a.b=1", "c="]) == {"a": {"b": 1}, "c": ""}


@pytest.mark.parametrize(
    "ov, msg",
    [
        (["stepz=1"], "unknown key.*'stepz': did you mean 'steps'"),
        (["inner.lambda_cc=1"], r"^inner: unknown key.*'lambda_cc': did you mean 'lambda_c'"),
        (["steps=1.5"], "integer"),
        (["ecr=yes please"], "true/false"),
        (["inner.lambda_c=abc"], "number"),
        (["inner.nope=1"], "inner.*unknown key"),
        (["steps"], "key=value"),
    ],
)
def test_bad_config_fails_early(ov, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Outer, None, ov)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, tmp_path / "l.yaml")
