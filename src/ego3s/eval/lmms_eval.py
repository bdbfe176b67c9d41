"""ego3s results in lmms-eval's results JSON layout (`ego3s eval --export lmms-eval`).

lmms-eval writes `<output_path>/<model_name_sanitized>/<date>_results.json` holding
`results` ({task: {"alias", "<metric>,<filter>": value, "<metric>_stderr,<filter>": ...}}),
`groups`, `group_subtasks`, `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`
({task: {"original", "effective"}}), `config` (model, model_args, batch_size, limit, ...) and
`date`. We write the same keys, with:

- tasks named as lmms-eval names them (`egoschema_subset`, `egoplan2`, `egothink_activity`, ...;
  `Benchmark.lmms_eval`); benchmarks lmms-eval has no task for (EgoTextVQA, QAEgo4D, EgoSynth) keep
  their ego3s name;
- lmms-eval's metric under its key and on its scale (a fraction: `score`, `egoplan2_mcq_accuracy`,
  `gpt_eval_score` = mean judge rating in [0, 1]); ego3s's own metrics beside it as
  `ego3s_<key>,none` (ego3s's scale: percentages); counts go to `n-samples`;
- stderr "N/A", as lmms-eval reports for these tasks (their aggregations are custom functions);
- `egoschema` (the full set): `submission` is null, since only EgoSchema's server scores it; the
  submission file is `<eval out>/egoschema/submission.json`.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

from ego3s.eval.benchmarks import EGOTHINK_TASKS, get_benchmark
from ego3s.files import write_json

FILTER = "none"
# lmms-eval's task metadata versions (the task YAMLs' `metadata.version`; egoschema has none)
VERSIONS = {"egoplan2": 0.1, "egothink": 0.0}
COUNT_KEYS = ("n", "unparsed")


def sanitize_model_name(name: str) -> str:
    """lmms-eval's `sanitize_model_name`: the last two path parts, separators replaced by '__'."""
    parts = str(name).rstrip("/").split("/")
    last_two = "/".join(parts[-2:]) if len(parts) > 1 else parts[-1]
    return re.sub(r"[\"<>:/\|\\?\*\[\]]+", "__", last_two)


def _is_count(key: str) -> bool:
    return key in COUNT_KEYS or key.startswith("n_")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _frac(v):
    return None if v is None else round(v / 100.0, 6)


def _task_entry(alias: str, lmms_metric: str | None, lmms_value, metrics: dict, prefix: str) -> dict:
    entry: dict = {"alias": alias}
    if lmms_metric is not None:
        entry[f"{lmms_metric},{FILTER}"] = lmms_value
        entry[f"{lmms_metric}_stderr,{FILTER}"] = "N/A"
    for k, v in metrics.items():
        if _number(v) and not _is_count(k):
            entry[f"{prefix}{k},{FILTER}"] = v
            entry[f"{prefix}{k}_stderr,{FILTER}"] = "N/A"
    return entry


def _metric_names(entry: dict) -> dict[str, bool]:
    return {k.split(",")[0]: True for k in entry if "," in k and "_stderr," not in k}


def to_lmms_eval(results: dict, date: str | None = None) -> dict:
    """The lmms-eval results dict of an `ego3s eval` results dict (see the module docstring)."""
    cfg = results.get("config") or {}
    out: dict = {
        "results": {},
        "groups": {},
        "group_subtasks": {},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
    }

    def add(task: str, entry: dict, bench, summary: dict, n_original: int, n_effective: int, subtasks=()):
        out["results"][task] = entry
        out["group_subtasks"][task] = list(subtasks)
        out["configs"][task] = {
            "task": task,
            "output_type": "generate_until",
            "test_split": bench.split,
            "num_fewshot": 0,
            "metric_list": [{"metric": m, "higher_is_better": True} for m in _metric_names(entry)],
            "ego3s": {
                "benchmark": bench.name,
                "split": bench.split,
                "path": summary.get("path"),
                "lmms_eval_task": bench.lmms_eval is not None,
            },
        }
        out["versions"][task] = VERSIONS.get(bench.family, "Yaml")
        out["n-shot"][task] = 0
        out["higher_is_better"][task] = _metric_names(entry)
        out["n-samples"][task] = {"original": n_original, "effective": n_effective}

    for name, summary in results.get("benchmarks", {}).items():
        b = get_benchmark(name)
        m = summary.get("metrics") or {}
        n_orig, n_eff = summary.get("n_samples", 0), summary.get("n_scored", 0)
        if b.lmms_eval is None:
            add(name, _task_entry(name, None, None, m, ""), b, summary, n_orig, n_eff)
            continue
        if b.family == "egoschema":
            value = None if b.split == "full" else _frac(m.get("accuracy"))  # full: scored by EgoSchema's server
        elif b.family == "egothink":
            value = _frac(m.get("score"))
        else:  # egoplan2
            value = _frac(m.get("accuracy"))
        if b.name == "egothink":  # the group: one lmms-eval task per dimension found, then the group row
            dims = (summary.get("by") or {}).get("dimension") or {}
            subtasks = []
            for k, (folder, _) in EGOTHINK_TASKS.items():
                if folder in dims:
                    d = dims[folder]
                    task = f"egothink_{k}"
                    subtasks.append(task)
                    add(
                        task,
                        _task_entry(
                            task,
                            "gpt_eval_score",
                            _frac(d.get("score")),
                            {x: v for x, v in d.items() if x != "n"},
                            "ego3s_",
                        ),
                        get_benchmark(task),
                        summary,
                        d.get("n", 0),
                        d.get("n", 0),
                    )
            group = _task_entry("egothink", None, None, m, "ego3s_")
            out["groups"]["egothink"] = group
            add("egothink", group, b, summary, n_orig, n_eff, subtasks)
            continue
        add(b.lmms_eval, _task_entry(b.lmms_eval, b.lmms_metric, value, m, "ego3s_"), b, summary, n_orig, n_eff)

    if not out["groups"]:
        del out["groups"]
    model = results.get("model") or ""
    out["config"] = {
        "model": "ego3s",
        "model_args": f"pretrained={model}",
        "batch_size": cfg.get("batch_size"),
        "batch_sizes": [],
        "device": cfg.get("device"),
        "use_cache": None,
        "limit": cfg.get("limit"),
        "bootstrap_iters": 0,
        "gen_kwargs": {"fmt": cfg.get("fmt"), "max_new_tokens": cfg.get("max_new_tokens")},
        "random_seed": None,
        "numpy_seed": None,
        "torch_seed": None,
        "fewshot_seed": None,
        "ego3s": {"view": cfg.get("view"), "model_fingerprint": results.get("model_fingerprint")},
    }
    import ego3s

    out["git_hash"] = None
    out["ego3s_version"] = ego3s.__version__
    out["date"] = date or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S")
    out["model_name"] = model
    out["model_name_sanitized"] = sanitize_model_name(model) if model else "ego3s"
    out["total_evaluation_time_seconds"] = str(results.get("seconds", ""))
    return out


def export_lmms_eval(results: dict, out: str | os.PathLike, date: str | None = None) -> Path:
    """Write `<out>/lmms-eval/<model_name_sanitized>/<date>_results.json`; returns its path."""
    doc = to_lmms_eval(results, date)
    path = Path(out) / "lmms-eval" / doc["model_name_sanitized"] / f"{doc['date'].replace(':', '-')}_results.json"
    write_json(path, doc)
    return path
