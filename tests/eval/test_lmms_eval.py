"""Benchmark names in lmms-eval's terms: the name table of docs/evaluation.md against the
registry and the real annotation files, the warning for names whose meaning changed, and the
results export in lmms-eval's layout."""

from __future__ import annotations

import json
import logging
import re

from ego3s.eval.benchmarks import BENCHMARKS, get_benchmark
from helpers import REPO as ROOT

DATA = ROOT / "data" / "benchmarks"


def doc_table() -> dict[str, dict]:
    text = (ROOT / "docs" / "evaluation.md").read_text()
    block = text.split("<!-- lmms-eval name table: start -->")[1].split("<!-- lmms-eval name table: end -->")[0]
    rows = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, lmms, split, questions, metric = cells
        metrics = re.findall(r"`([^`]+)`", metric)
        rows[name.strip("`")] = {
            "lmms_eval": None if lmms == "—" else lmms.strip("`"),
            "split": split,
            "questions": None if questions == "—" else int(questions.replace(",", "")),
            "metric": metrics[0],
            "lmms_metric": metrics[1] if len(metrics) > 1 else None,
        }
    return rows


def test_name_table_matches_the_registry():
    table = doc_table()
    assert list(table) == list(BENCHMARKS)  # every entry, in registry order
    for name, row in table.items():
        b = BENCHMARKS[name]
        assert row == {
            "lmms_eval": b.lmms_eval,
            "split": b.split,
            "questions": b.questions,
            "metric": b.metric,
            "lmms_metric": b.lmms_metric,
        }, name
        if b.lmms_eval:  # lmms-eval's task name resolves to the same entry
            assert get_benchmark(b.lmms_eval).name == name


def test_question_counts_against_the_real_files():
    for name in (
        "egotextvqa-indoor",
        "egotextvqa-outdoor",
        "egotextvqa-realtime",
        "egothink-activity",
        "egothink-affordance",
    ):
        b = get_benchmark(name)
        assert len(b.load(b.locate(DATA))) == b.questions, name
    assert get_benchmark("egotextvqa").questions == 2216 + 4848
    # EgoThink: 12 dimensions, 700 questions, as the table says
    dims = [b for b in BENCHMARKS.values() if b.family == "egothink" and b.name != "egothink"]
    assert len(dims) == 12 and sum(b.questions for b in dims) == BENCHMARKS["egothink"].questions == 700
    assert {b.split for b in dims} == {
        "Activity",
        "Forecasting",
        "Localization_location",
        "Localization_spatial",
        "Object_affordance",
        "Object_attribute",
        "Object_existence",
        "Planning_assistance",
        "Planning_navigation",
        "Reasoning_comparing",
        "Reasoning_counting",
        "Reasoning_situated",
    }  # lmms-eval's dataset_name


def test_egothink_dimension_entries_load_one_dimension():
    s = get_benchmark("egothink_affordance").load(DATA / "egothink")
    assert len(s) == 50 and {x.meta["dimension"] for x in s} == {"Object/affordance"}


def test_changed_names_warn_with_the_split_they_mean(caplog):
    with caplog.at_level(logging.WARNING):
        assert get_benchmark("EgoSchema").name == "egoschema"
    assert "full 5,031-question set" in caplog.text and "egoschema_subset" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert get_benchmark("egoschema").name == "egoschema"  # lmms-eval's own spelling: no warning
        assert get_benchmark("egoschema_subset").name == "egoschema-subset"
        assert get_benchmark("egoschema-full").name == "egoschema"
    assert caplog.text == ""
    assert get_benchmark("egoschema").options == {"split": "full"}
    assert get_benchmark("egoschema_subset").options == {"split": "subset"}


def _results():
    """An ego3s results dict as `ego3s eval` writes it (numbers chosen by hand)."""
    return {
        "model": "/models/org/Qwen2.5-VL-7B-Instruct",
        "model_fingerprint": "abc",
        "seconds": 12.5,
        "config": {
            "batch_size": 8,
            "limit": None,
            "fmt": "direct",
            "max_new_tokens": None,
            "device": "cpu",
            "view": "full",
        },
        "benchmarks": {
            "egoschema-subset": {
                "path": "x",
                "n_samples": 500,
                "n_scored": 500,
                "metrics": {"accuracy": 48.2, "n_scored": 500, "n_hidden": 0, "unparsed": 3},
            },
            "egoschema": {
                "path": "x",
                "n_samples": 5031,
                "n_scored": 5031,
                "metrics": {"accuracy": 50.0, "n_scored": 500, "n_hidden": 4531, "unparsed": 0},
            },
            "egoplan2": {
                "path": "y",
                "n_samples": 1321,
                "n_scored": 1320,
                "metrics": {"accuracy": 39.67, "n": 1320, "unparsed": 1},
            },
            "egothink": {
                "path": "z",
                "n_samples": 150,
                "n_scored": 150,
                "metrics": {"score": 62.5, "em": 10.0, "rouge_l": 30.0, "n": 150, "n_dimensions": 2},
                "by": {
                    "dimension": {
                        "Activity": {"n": 100, "score": 75.0, "em": 12.0, "rouge_l": 31.0},
                        "Object/affordance": {"n": 50, "score": 50.0, "em": 8.0, "rouge_l": 29.0},
                    }
                },
            },
            "egotextvqa-indoor": {
                "path": "w",
                "n_samples": 4,
                "n_scored": 4,
                "metrics": {"accuracy": 25.0, "score": 1.5, "em": 0.0, "rouge_l": 12.0},
            },
        },
    }


def test_export_in_lmms_eval_layout(tmp_path):
    from ego3s.eval.lmms_eval import export_lmms_eval

    path = export_lmms_eval(_results(), tmp_path, date="20261203_130000")
    assert path == tmp_path / "lmms-eval" / "org__Qwen2.5-VL-7B-Instruct" / "20261203_130000_results.json"
    doc = json.loads(path.read_text())
    assert {
        "results",
        "groups",
        "group_subtasks",
        "configs",
        "versions",
        "n-shot",
        "higher_is_better",
        "n-samples",
        "config",
        "date",
    } <= set(doc)
    r = doc["results"]
    assert set(r) == {
        "egoschema_subset",
        "egoschema",
        "egoplan2",
        "egothink_activity",
        "egothink_affordance",
        "egothink",
        "egotextvqa-indoor",
    }
    # lmms-eval's metric, on lmms-eval's scale (fractions), stderr N/A; ego3s's metrics beside it
    assert r["egoschema_subset"] == {
        "alias": "egoschema_subset",
        "score,none": 0.482,
        "score_stderr,none": "N/A",
        "ego3s_accuracy,none": 48.2,
        "ego3s_accuracy_stderr,none": "N/A",
    }
    assert r["egoschema"]["submission,none"] is None and r["egoschema"]["ego3s_accuracy,none"] == 50.0
    assert r["egoplan2"]["egoplan2_mcq_accuracy,none"] == 0.3967
    assert r["egothink_activity"]["gpt_eval_score,none"] == 0.75
    assert r["egothink_affordance"]["gpt_eval_score,none"] == 0.5
    assert r["egothink"]["ego3s_score,none"] == 62.5 and "gpt_eval_score,none" not in r["egothink"]
    assert doc["groups"] == {"egothink": r["egothink"]}
    assert doc["group_subtasks"]["egothink"] == ["egothink_activity", "egothink_affordance"]
    assert r["egotextvqa-indoor"]["accuracy,none"] == 25.0 and r["egotextvqa-indoor"]["score,none"] == 1.5
    assert doc["n-samples"]["egoplan2"] == {"original": 1321, "effective": 1320}
    assert doc["n-samples"]["egothink_affordance"] == {"original": 50, "effective": 50}
    assert doc["higher_is_better"]["egoschema_subset"] == {"score": True, "ego3s_accuracy": True}
    assert doc["versions"]["egoplan2"] == 0.1 and doc["n-shot"]["egothink_activity"] == 0
    assert doc["config"]["model_args"] == "pretrained=/models/org/Qwen2.5-VL-7B-Instruct"
    assert doc["configs"]["egothink_activity"]["test_split"] == "Activity"
