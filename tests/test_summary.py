"""`summary.json` of a run folder, on a hand-made folder whose figures are computed by hand here."""

from __future__ import annotations

import json

import pytest

from ego3s.report import build_html, mechanism_lines
from ego3s.summary import summarize_run, wilson


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _rows(closed: list[int], em: list[int], split: str) -> list[dict]:
    rows = [
        {"id": f"{split}-c{i}", "split": split, "task": "closeqa", "accuracy": float(c), "em": None}
        for i, c in enumerate(closed)
    ]
    return rows + [
        {"id": f"{split}-o{i}", "split": split, "task": "openqa", "accuracy": None, "em": float(e)}
        for i, e in enumerate(em)
    ]


@pytest.fixture
def run(tmp_path):
    _write(
        tmp_path / "select" / "report.json",
        {
            "method": "csm",
            "candidates": 20,
            "selected": 5,
            "breakdown": {
                "typical": {
                    "False": {"pool": 2, "selected": 3, "pool_share": 0.1, "selected_share": 0.6},
                    "True": {"pool": 18, "selected": 2, "pool_share": 0.9, "selected_share": 0.4},
                }
            },
        },
    )
    # test_atypical closed: base 1 of 4, trained 3 of 4, never worse on a question; open EM 0/2 -> 1/2
    _jsonl(
        tmp_path / "eval" / "base" / "egosynth" / "per_sample.jsonl",
        _rows([1, 0, 0, 0], [0, 0], "test_atypical") + _rows([1, 1], [1], "test_id"),
    )
    _jsonl(
        tmp_path / "eval" / "trained" / "egosynth" / "per_sample.jsonl",
        _rows([1, 1, 1, 0], [1, 0], "test_atypical") + _rows([1, 0], [1], "test_id"),
    )
    for tag, value in (("base", 5.0), ("trained", 20.0)):
        _write(
            tmp_path / "eval" / tag / "results.json",
            {
                "benchmarks": {
                    "egosynth": {
                        "icu": {
                            "counterfactual_reliance": {
                                "splits": {
                                    "test_atypical": {
                                        "value": value,
                                        "ci95": [0.0, 1.0],
                                        "full": 50.0,
                                        "context": 40.0,
                                        "n": 4,
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    _write(
        tmp_path / "train" / "ecr_state.json",
        {"refreshes": 2, "refreshes_used": 1, "usage_totals": {"added": 3, "added_drawn": 2}},
    )
    _write(tmp_path / "manifest.json", {"stages": {"data": {"seconds": 1.5}, "train": {"seconds": 10.25}}})
    return tmp_path


def test_wilson_interval_matches_the_textbook_values():
    # 1 of 4: the Wilson 95% interval is [0.0456, 0.6994]; 0 of 2: upper z^2 / (n + z^2) = 0.6576
    lo, hi = wilson(1, 4)
    assert lo == pytest.approx(4.56, abs=0.01) and hi == pytest.approx(69.94, abs=0.01)
    assert wilson(0, 2) == [0.0, pytest.approx(65.76, abs=0.01)]
    assert wilson(0, 0) == [None, None]


def test_summary_schema_and_figures(run):
    s = summarize_run(run)
    assert json.loads((run / "summary.json").read_text()) == s
    assert s["select"] == {
        "method": "csm",
        "pool": 20,
        "kept": 5,
        "topped_up": 0,
        "share_atypical_pool": 10.0,
        "share_atypical_kept": 60.0,
        "enrichment": 6.0,
    }
    b, t = s["eval"]["base"]["test_atypical"], s["eval"]["trained"]["test_atypical"]
    assert (b["accuracy"], b["n_closed"], b["n_open"], b["em"]) == (25.0, 4, 2, 0.0)
    assert (t["accuracy"], t["em"]) == (75.0, 50.0)
    assert b["accuracy_ci95"] == pytest.approx([4.56, 69.94], abs=0.01)
    assert s["eval"]["trained"]["test_id"]["accuracy"] == 50.0
    p = s["paired"]["test_atypical"]
    assert p["accuracy_delta"] == 50.0 and p["n"] == 4 and p["ci95"][0] >= 0.0  # differences 0, 1, 1, 0
    assert (p["n_trained_only"], p["n_base_only"]) == (2, 0) and p["mcnemar_p"] == 0.5  # 2 * (1/2)^2
    assert s["paired"]["test_id"]["accuracy_delta"] == -50.0
    # every question: closed 1,0,0,0 -> 1,1,1,0 and open 0,0 -> 1,0, so 1 of 6 -> 4 of 6
    pa = s["paired_all"]["test_atypical"]
    assert pa["accuracy_delta"] == 50.0 and pa["n"] == 6 and (pa["n_trained_only"], pa["n_base_only"]) == (3, 0)
    assert s["paired_all"]["test_id"]["n"] == 3  # closed 1,1 -> 1,0; open 1 -> 1: -1 of 3
    assert s["paired_all"]["test_id"]["accuracy_delta"] == pytest.approx(-33.33, abs=0.01)
    assert s["ecr"] == {"refreshes": 2, "refreshes_used": 1, "added": 3, "added_drawn": 2}
    assert s["reliance"]["trained"]["test_atypical"]["reliance"] == 20.0
    assert s["seconds"] == 11.8  # 1.5 + 10.25, rounded to 0.1
    m = s["mechanisms"]
    assert m["csm_enrichment"]["showed"] is True  # 6x >= 3x
    assert m["ecr_refresh"]["showed"] is True and m["reliance_rises"]["showed"] is True
    assert m["atypical_gain"]["showed"] is (p["ci95"][0] > 0)


def test_a_mechanism_that_did_not_show_is_said_so(run):
    rep = json.loads((run / "select" / "report.json").read_text())
    rep["breakdown"]["typical"]["False"]["selected_share"] = 0.2  # 2x the pool's share: below the 3x bar
    _write(run / "select" / "report.json", rep)
    (run / "train" / "ecr_state.json").unlink()
    s = summarize_run(run)
    assert s["mechanisms"]["csm_enrichment"]["showed"] is False
    assert s["mechanisms"]["ecr_refresh"]["showed"] is None
    assert [ok for ok, _ in mechanism_lines(s)][0] is False
    page = build_html(run)
    assert "What this run shows" in page and "did NOT enrich" in page and "not measured" in page


def test_an_empty_run_folder_summarizes_to_nones(tmp_path):
    s = summarize_run(tmp_path)
    assert s["select"]["pool"] is None and s["eval"]["base"]["test_id"] is None and s["paired"]["test_id"] is None
    assert all(v["showed"] is None for v in s["mechanisms"].values())


def test_a_refresh_that_only_retired_samples_does_not_show_ecr(run):
    """Used (a step trained on the smaller pool) but nothing new drawn: not the mechanism."""
    _write(
        run / "train" / "ecr_state.json",
        {"refreshes": 1, "refreshes_used": 1, "usage_totals": {"added": 0, "added_drawn": 0}},
    )
    assert summarize_run(run)["mechanisms"]["ecr_refresh"]["showed"] is False
