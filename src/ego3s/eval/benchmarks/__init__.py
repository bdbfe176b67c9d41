"""The evaluation benchmarks: loaders from the official annotation files to `Sample`s, prompts,
answer extraction and the official scoring, one module each, behind one registry.

    bench = get_benchmark("EgoTextVQA-outdoor")        # case-insensitive, aliases allowed
    samples = bench.load("data/benchmarks/egotextvqa")   # no video files needed
    messages = bench.build_messages(samples[0], fmt="direct")  # or "reasoning", "official"
    result = bench.score(samples, {s.id: output, ...}, judge=Judge(...))  # judge optional

`BENCHMARKS` maps each canonical name to its `Benchmark`; `ALIASES` maps other spellings to a
canonical name. Scores are percentages (EgoTextVQA's judge score stays on its 0-5 scale, BLEU on
sacreBLEU's 0-100); see docs/evaluation.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common, egoplan2, egoschema, egosynth, egotextvqa, egothink, qaego4d
from ego3s.eval.benchmarks._common import FORMATS

__all__ = [
    "Benchmark",
    "BENCHMARKS",
    "ALIASES",
    "AMBIGUOUS",
    "get_benchmark",
    "benchmark_names",
    "lmms_eval_name",
    "FORMATS",
]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark (or one variant of it): its module and the load options of the variant."""

    name: str
    module: ModuleType
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    task_override: str | None = None
    # what the name means, in lmms-eval's terms (docs/evaluation.md has the table)
    split: str = "test"  # the split / subset / dimension this entry evaluates
    questions: int | None = None  # questions in that split (None: not published in a file)
    metric: str = "accuracy"  # ego3s's headline metric key in `score(...)["metrics"]`
    lmms_eval: str | None = None  # lmms-eval's task name for the same thing (None: no task there)
    lmms_metric: str | None = None  # lmms-eval's metric key of that task

    @property
    def family(self) -> str:
        """The benchmark the entry belongs to (its module's name: egoschema, egothink, ...)."""
        return self.module.NAME

    # -- what the runner needs to know
    @property
    def task(self) -> str:
        """'closeqa', 'openqa' or 'mixed'."""
        return self.task_override or self.module.TASK

    @property
    def visual(self) -> str:
        """'video' or 'image'."""
        return self.module.VISUAL

    @property
    def needs_judge(self) -> bool:
        """Whether the official metric is an LLM judge (deterministic metrics are computed anyway)."""
        return self.module.NEEDS_JUDGE

    @property
    def subdir(self) -> str:
        """The benchmark's folder name under a benchmarks root (as in data/benchmarks)."""
        return self.module.SUBDIR

    @property
    def prompt_format(self) -> dict:
        """How to prompt: the task, the visual input, the formats and whether an official wording exists."""
        return {
            "task": self.task,
            "visual": self.visual,
            "formats": list(FORMATS),
            "official_prompt": hasattr(self.module, "official_prompt"),
            "needs_judge": self.needs_judge,
        }

    # -- data
    def locate(self, root: str | os.PathLike) -> Path:
        """`root/<subdir>` when it exists, else `root` (a benchmark folder or file given directly)."""
        root = Path(root)
        return root / self.subdir if (root / self.subdir).exists() else root

    def load(self, path: str | os.PathLike, **opts) -> list[Sample]:
        """Samples from the official files at `path` (a folder or an annotation file); `opts`
        override the variant's options (see the module's `load`)."""
        return self.module.load(path, **{**self.options, **opts})

    # -- prompting and answers
    def question_text(self, sample: Sample, fmt: str = "direct") -> str:
        return _common.question_text(sample, fmt, getattr(self.module, "official_prompt", None))

    def build_messages(
        self, sample: Sample, fmt: str = "direct", *, visual: str | None = "auto", system: str | None = None
    ) -> list[dict]:
        """Chat messages in the transformers format (see `ego3s.models.prompts.build_messages`);
        `visual=None` leaves the visual entry out (blind view)."""
        return _common.build_messages(
            sample, fmt, getattr(self.module, "official_prompt", None), visual=visual, system=system
        )

    def max_new_tokens(self, sample: Sample, fmt: str = "direct") -> int:
        """The answer budget of the direct/official formats (the reasoning format needs the runner's own)."""
        return self.module.max_new_tokens(sample, fmt)

    def extract(self, sample: Sample, output) -> str | None:
        """The answer in a raw model output: an option letter or the answer text; None if none."""
        return self.module.extract(sample, output)

    # -- scoring
    def score(self, samples: Sequence[Sample], predictions, judge=None, **opts) -> dict:
        """Official metrics and breakdowns. `predictions`: {sample id: raw output} or a list
        aligned with `samples`. `judge`: an `ego3s.judge.Judge` for the judge metrics."""
        return self.module.score(samples, predictions, judge=judge, **opts)


def _b(name, module, description, task=None, *, info: dict, **options) -> Benchmark:
    return Benchmark(name, module, dict(options), description, task, **info)


def _i(split, questions, metric="accuracy", lmms=None, lmms_metric=None) -> dict:
    return {"split": split, "questions": questions, "metric": metric, "lmms_eval": lmms, "lmms_metric": lmms_metric}


# lmms-eval's EgoThink tasks: task suffix -> (the dimension folder, lmms-eval's dataset_name)
EGOTHINK_TASKS = {
    "activity": ("Activity", "Activity"),
    "forecasting": ("Forecast", "Forecasting"),
    "location": ("Localization/location", "Localization_location"),
    "spatial": ("Localization/spatial", "Localization_spatial"),
    "affordance": ("Object/affordance", "Object_affordance"),
    "attribute": ("Object/attribute", "Object_attribute"),
    "existence": ("Object/existence", "Object_existence"),
    "assistance": ("Planning/assistance", "Planning_assistance"),
    "navigation": ("Planning/navigation", "Planning_navigation"),
    "comparing": ("Reasoning/comparing", "Reasoning_comparing"),
    "counting": ("Reasoning/counting", "Reasoning_counting"),
    "situated": ("Reasoning/situated", "Reasoning_situated"),
}
EGOTHINK_QUESTIONS = {"Activity": 100, "Forecast": 100}  # 50 in each other dimension (700 in all)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        _b(
            "qaego4d",
            qaego4d,
            "QAEgo4D open-ended (EM, BLEU-4, ROUGE-L, METEOR, similarity)",
            variant="open",
            info=_i("test", None, "rouge_l"),
        ),
        _b(
            "qaego4d-close",
            qaego4d,
            "QAEgo4D-close: 4-way choice, accuracy averaged over seeds",
            "closeqa",
            variant="close",
            info=_i("test", None),
        ),
        _b(
            "egotextvqa",
            egotextvqa,
            "EgoTextVQA indoor + outdoor (LLM judge: accuracy, 0-5 score)",
            settings=("indoor", "outdoor"),
            info=_i("indoor+outdoor", 7064),
        ),
        _b("egotextvqa-indoor", egotextvqa, "EgoTextVQA indoor", settings=("indoor",), info=_i("indoor", 2216)),
        _b("egotextvqa-outdoor", egotextvqa, "EgoTextVQA outdoor", settings=("outdoor",), info=_i("outdoor", 4848)),
        _b(
            "egotextvqa-realtime",
            egotextvqa,
            "EgoTextVQA outdoor real-time subset",
            settings=("realtime",),
            info=_i("outdoor_real_time", 623),
        ),
        _b(
            "egoschema",
            egoschema,
            "EgoSchema full set, 5,031 questions (submission file; accuracy over the public 500)",
            split="full",
            info=_i("full", 5031, "accuracy", "egoschema", "submission"),
        ),
        _b(
            "egoschema-subset",
            egoschema,
            "EgoSchema public 500-question subset (accuracy)",
            split="subset",
            info=_i("subset", 500, "accuracy", "egoschema_subset", "score"),
        ),
        _b(
            "egoplan2",
            egoplan2,
            "EgoPlan-Bench2 (accuracy per domain)",
            info=_i("test", 1321, "accuracy", "egoplan2", "egoplan2_mcq_accuracy"),
        ),
        _b(
            "egothink",
            egothink,
            "EgoThink, 12 dimensions (LLM judge 0/0.5/1, x100)",
            info=_i("all", 700, "score", "egothink", "gpt_eval_score"),
        ),
        *[
            _b(
                f"egothink-{k}",
                egothink,
                f"EgoThink {d} (LLM judge 0/0.5/1, x100)",
                dimensions=(d,),
                info=_i(ds, EGOTHINK_QUESTIONS.get(d, 50), "score", f"egothink_{k}", "gpt_eval_score"),
            )
            for k, (d, ds) in EGOTHINK_TASKS.items()
        ],
        _b(
            "egosynth",
            egosynth,
            "EgoSynth test_id + test_atypical",
            splits=("test_id", "test_atypical"),
            info=_i("test_id+test_atypical", None),
        ),
        _b("egosynth-id", egosynth, "EgoSynth test_id", splits=("test_id",), info=_i("test_id", None)),
        _b(
            "egosynth-atypical",
            egosynth,
            "EgoSynth test_atypical",
            splits=("test_atypical",),
            info=_i("test_atypical", None),
        ),
    ]
}

ALIASES: dict[str, str] = {
    "qaego4d-open": "qaego4d",
    "qaego4d-oe": "qaego4d",
    "qaego4d-closed": "qaego4d-close",
    "qaego4dclose": "qaego4d-close",
    "qaego4d-mc": "qaego4d-close",
    "egotextvqa-real-time": "egotextvqa-realtime",
    "egoschema-full": "egoschema",
    "egoschema-all": "egoschema",
    "egoplan-bench2": "egoplan2",
    "egoplanbench2": "egoplan2",
    "egoplan-bench-2": "egoplan2",
    "egoplan-2": "egoplan2",
    "egosynth-test-id": "egosynth-id",
    "egosynth-test-atypical": "egosynth-atypical",
    # EgoThink dimensions by their folder names
    **{
        "egothink-" + d.lower().replace("/", "-"): f"egothink-{k}"
        for k, (d, _) in EGOTHINK_TASKS.items()
        if d.lower() != k
    },
    **{
        "egothink-" + d.split("/")[-1].lower(): f"egothink-{k}"
        for k, (d, _) in EGOTHINK_TASKS.items()
        if d.split("/")[-1].lower() != k
    },
}

# Names whose meaning changed to lmms-eval's: {normalised name: the warning}. lmms-eval's own
# spelling (the exact task name) is not warned about.
AMBIGUOUS: dict[str, str] = {
    "egoschema": "{name!r} is read as lmms-eval's `egoschema`: the full 5,031-question set (answers hidden: a "
    "submission file, accuracy over the 500 public answers only). ego3s used to read EgoSchema as the "
    "500-question subset; for that, write `egoschema_subset`.",
}


def _norm(name: str) -> str:
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (case-insensitive; '_' and '-' alike; aliases and lmms-eval's task
    names allowed). A name whose meaning changed to lmms-eval's logs a warning saying which split
    it means, unless written exactly as lmms-eval's task name."""
    key = _norm(name)
    if key in AMBIGUOUS and str(name).strip() != (BENCHMARKS[key].lmms_eval or key):
        _common.log.warning(AMBIGUOUS[key].format(name=name))
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise KeyError(
            f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (aliases: {', '.join(sorted(ALIASES))})"
        )
    return BENCHMARKS[key]


def benchmark_names() -> list[str]:
    return list(BENCHMARKS)


def lmms_eval_name(name: str) -> str | None:
    """lmms-eval's task name for the benchmark `name` (None where lmms-eval has no such task)."""
    return get_benchmark(name).lmms_eval
