"""The package's import rule (docs/CONVENTIONS.md): every import, at module or function level,
goes from a layer to the same or a lower one, and the packages import each other without cycles.

Layers, lowest first:
  core (config, files, skips, tracking, embedding) -> data (data, answers, identity, rewards, judge)
  -> models -> stages (select, rl, train, curriculum) -> eval -> pipeline (pipeline, summary, seeds, report) -> cli

Parsed with `ast` from the source files, so a lazy import inside a function counts as much as one
at the top of the module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ego3s

SRC = Path(ego3s.__file__).resolve().parent  # the package under test, wherever this file lives

LAYERS = [
    {"__init__", "config", "files", "skips", "tracking", "embedding"},
    {"data", "answers", "identity", "rewards", "judge"},
    {"models"},
    {"select", "rl", "train", "curriculum"},
    {"eval"},
    {"pipeline", "summary", "seeds", "report"},
    {"cli"},
]
LEVEL = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}

KNOWN_UPWARD: set[tuple[str, str]] = set()  # (file, imported module) pairs still to fix: none
KNOWN_CYCLE_EDGES: set[tuple[str, str]] = set()


def unit_of(module: str) -> str | None:
    """`ego3s.rl.run` -> `rl`; `ego3s` -> `__init__`; not ours -> None."""
    parts = module.split(".")
    if parts[0] != "ego3s":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1].removesuffix(".py")


def imports() -> list[tuple[str, str, str]]:
    """(file relative to src/ego3s, its unit, imported ego3s module) for every import statement."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        unit = rel.split("/")[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from ego3s import skips` imports the module ego3s.skips; `from ego3s.x import y`, ego3s.x
                if node.module == "ego3s":
                    targets = [
                        f"ego3s.{a.name}" if (SRC / f"{a.name}.py").exists() or (SRC / a.name).is_dir() else "ego3s"
                        for a in node.names
                    ]
                else:
                    targets = [node.module]
            else:
                continue
            out += [(rel, unit, t) for t in targets if unit_of(t) not in (None, unit)]
    return out


def test_every_unit_has_a_layer():
    units = {
        rel.split("/")[0].removesuffix(".py") for rel in (p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py"))
    }
    assert units - set(LEVEL) == set(), "give the new package a layer here and in docs/CONVENTIONS.md"


def test_no_upward_import():
    upward = {(rel, target) for rel, unit, target in imports() if LEVEL[unit_of(target)] > LEVEL[unit]}
    assert upward - KNOWN_UPWARD == set(), "an import from a lower layer to a higher one"
    assert KNOWN_UPWARD - upward == set(), "fixed: remove it from KNOWN_UPWARD"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle in the unit graph, as a path, or None (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(edges):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_no_package_cycle():
    found = {(rel, target) for rel, _, target in imports()}
    assert KNOWN_CYCLE_EDGES - found == set(), "fixed: remove it from KNOWN_CYCLE_EDGES"
    edges: dict[str, set[str]] = {}
    for rel, unit, target in imports():
        if (rel, target) not in KNOWN_CYCLE_EDGES | KNOWN_UPWARD:
            edges.setdefault(unit, set()).add(unit_of(target))
    assert _cycle(edges) is None


def test_the_checks_see_a_cycle_and_an_upward_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None
    assert LEVEL[unit_of("ego3s.rl.run")] > LEVEL[unit_of("ego3s.models.loading")]


def test_choice_tuples_are_defined_once():
    """The views, prompt formats, blind modes and fills are assigned in one module each; every
    other module imports them."""
    names = {"VIEWS", "FORMATS", "BLIND_MODES", "FILLS", "BACKENDS"}
    where: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id in names:
                        where.setdefault(t.id, []).append(path.relative_to(SRC).as_posix())
    assert where["VIEWS"] == where["BLIND_MODES"] == where["FILLS"] == ["data/video.py"]
    # the prompt formats; the benchmarks' list adds `official` to them (ego3s.eval.benchmarks._common)
    assert where["FORMATS"] == ["eval/benchmarks/_common.py", "models/prompts.py"]
    assert "PROMPT_FORMATS" in (SRC / "eval/benchmarks/_common.py").read_text()


def test_only_rl_builds_on_other_stages():
    """Within the stages layer, `rl/` may use `select/` (CSM re-scoring for the curriculum),
    `train/` (the run plumbing) and `curriculum/`; those use no other stage."""
    stages = LAYERS[LEVEL["rl"]]
    across = {
        (rel, target)
        for rel, unit, target in imports()
        if unit in stages and unit_of(target) in stages and unit != "rl"
    }
    assert across == set()
