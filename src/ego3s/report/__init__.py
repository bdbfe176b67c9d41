"""`ego3s report RUN_DIR`: one self-contained HTML page for a run folder of `ego3s run`.

    from ego3s.report import render_report
    path = render_report("runs/demo")            # -> runs/demo/report/index.html

The page has inline CSS, PNG images as base64 data URIs, no JavaScript and no external resources:
it opens from disk, in a mail attachment or on a machine without internet. Every part of the run
folder is optional; a part that is absent (or unreadable) renders as a short note, never an
exception. Modules: `html` (helpers), `run` (the folder as read), one per section (`top`, `pipeline`,
`selection`, `training`, `evaluation`) and `build` (the page). Sections, each from the files named:

- What this run shows: the method's four mechanisms (CSM enrichment, trained beats base on
  atypical clips with a paired interval, ECR refreshes trained on, counterfactual reliance rises),
  each said to have shown or not, from `summary.json` (ego3s.summary; computed when absent).
- Headline cards: kept samples, steps, reward start -> end, refreshes, main metric base -> trained.
- Run: `manifest.json` (config, versions, git commit, seeds, per-stage status and timings).
- Selection: `select/report.json` (funnel, breakdown selected vs pool), `select/hist_*.png`,
  `select/scores.csv` (mean view scores of kept vs rejected; histograms if the PNGs are absent).
- Training: `train/log_history.json` (or `trainer_state.json`): reward and its components, reward
  std, share of zero-variance groups, KL, completion length, interaction mentions, loss; the
  supervised warm-up from `warmup/log_history.json`.
- Curriculum: `train/ecr_state.json` (or recomputed from `train/rewards.jsonl`) and
  `train/ecr_events.jsonl`: reward-variance timeline with the refreshes, the table of refreshes.
- Evaluation: `eval/<name>/results.json` (`ego3s eval`; `base` and `trained` side by side, with
  the delta): metrics, breakdowns (typical vs atypical for EgoSynth), interaction cue utilization.
- Samples: `eval/<name>/**/predictions*.jsonl` (+ `per_sample.jsonl`, questions from `data/*.jsonl`):
  a few outputs of base and trained for the same ids, reasoning shown, HTML-escaped.
"""

# ruff: noqa: F401  (the report's names, private ones included, stay importable from ego3s.report)
from .build import CSS, build_html, render_report
from .evaluation import (
    _TAG,
    _by_table,
    _correct,
    _icu_rows,
    _icu_table,
    _metrics,
    _n,
    _typical_chart,
    render_output,
    section_eval,
    section_samples,
)
from .html import (
    _CONTROL,
    C_ACC,
    C_BASE,
    C_TRAINED,
    DPI,
    PALETTE,
    STAGES,
    Raw,
    _figure,
    _flatten,
    _latest_checkpoint_file,
    _num,
    _png,
    _read_json,
    _series,
    _short,
    _smooth,
    _step_of,
    _style,
    cfg_value,
    delta_cell,
    duration,
    esc,
    fmt,
    img_tag,
    mfmt,
    missing,
    pct,
    table,
)
from .pipeline import _SUMMARY_HINTS, _SUMMARY_KEYS, _config_summary, _rel, _stage_details, section_run
from .run import Run, _guard, _guard_value, normalize_results
from .selection import (
    _b,
    _breakdown,
    _f,
    _funnel,
    _hist_from_csv,
    _read_scores,
    _scores_table,
    _value_label,
    section_select,
)
from .top import _ci_text, _main_metric, _one, _parts_line, mechanism_lines, section_mechanisms, summary_cards
from .training import (
    _component_keys,
    _history_from_rewards,
    _points,
    _warmup,
    curriculum_data,
    ecr_usage_html,
    section_curriculum,
    section_train,
    variance_from_rewards,
)
