"""The mypy baseline check (.ci/mypy_baseline.py): a file's error count may only shrink."""

from __future__ import annotations

import importlib.util
import json

from helpers import REPO as ROOT

_spec = importlib.util.spec_from_file_location("mypy_baseline", ROOT / ".ci" / "mypy_baseline.py")
mb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mb)

OUTPUT = """src/ego3s/a.py:3: error: Incompatible types in assignment  [assignment]
src/ego3s/a.py:3: note: this is a note, not an error
src/ego3s/a.py:9:5: error: Item "None" has no attribute "x"  [union-attr]
src/ego3s/b/c.py:1: error: Need type annotation for "d"  [var-annotated]
Found 3 errors in 2 files (checked 9 source files)
"""


def test_counts_errors_per_file_not_notes():
    assert mb.count_errors(OUTPUT) == {"src/ego3s/a.py": 2, "src/ego3s/b/c.py": 1}


def test_growth_fails_and_shrinking_is_reported():
    counts = {"src/ego3s/a.py": 2, "src/ego3s/b/c.py": 1, "src/ego3s/new.py": 1}
    grown, shrunk = mb.compare(counts, {"src/ego3s/a.py": 3, "src/ego3s/b/c.py": 1, "src/ego3s/gone.py": 4})
    assert grown == ["src/ego3s/new.py: 1 errors, baseline 0"]  # a file not in the baseline has 0
    assert shrunk == ["src/ego3s/a.py: 2 errors, baseline 3", "src/ego3s/gone.py: 0 errors, baseline 4"]
    assert mb.compare(counts, counts) == ([], [])


def test_main_fails_on_growth_and_update_only_lowers(tmp_path, monkeypatch, capsys):
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"src/ego3s/a.py": 1}))
    monkeypatch.setattr(mb, "BASELINE", base)
    monkeypatch.setattr(mb, "run_mypy", lambda: OUTPUT)
    assert mb.main([]) == 1 and "src/ego3s/a.py: 2 errors, baseline 1" in capsys.readouterr().out
    assert mb.main(["--update"]) == 1 and json.loads(base.read_text()) == {"src/ego3s/a.py": 1}
    assert mb.main(["--update", "--allow-growth"]) == 0
    assert json.loads(base.read_text()) == {"src/ego3s/a.py": 2, "src/ego3s/b/c.py": 1}
    monkeypatch.setattr(mb, "run_mypy", lambda: OUTPUT.splitlines()[0] + "\n")
    assert mb.main([]) == 0 and "lower it" in capsys.readouterr().out
    assert mb.main(["--update"]) == 0 and json.loads(base.read_text()) == {"src/ego3s/a.py": 1}


def test_the_shipped_baseline_names_existing_files():
    baseline = json.loads((ROOT / ".ci" / "mypy_baseline.json").read_text())
    assert baseline and all((ROOT / f).is_file() and n > 0 for f, n in baseline.items())
