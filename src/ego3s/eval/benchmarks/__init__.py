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
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common, egoplan2, egoschema, egosynth, egothink, egotextvqa, qaego4d

__all__ = ["Benchmark", "BENCHMARKS", "ALIASES", "get_benchmark", "benchmark_names", "FORMATS"]

FORMATS = _common.FORMATS


@dataclass(frozen=True)
class Benchmark:
    """One benchmark (or one variant of it): its module and the load options of the variant."""

    name: str
    module: ModuleType
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    task_override: str | None = None

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
        return {"task": self.task, "visual": self.visual, "formats": list(FORMATS),
                "official_prompt": hasattr(self.module, "official_prompt"), "needs_judge": self.needs_judge}

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

    def build_messages(self, sample: Sample, fmt: str = "direct", *, visual: str | None = "auto",
                       system: str | None = None) -> list[dict]:
        """Chat messages in the transformers format (see `ego3s.models.prompts.build_messages`);
        `visual=None` leaves the visual entry out (blind view)."""
        return _common.build_messages(sample, fmt, getattr(self.module, "official_prompt", None), visual=visual,
                                      system=system)

    def max_new_tokens(self, sample: Sample, fmt: str = "direct") -> int:
        """The answer budget of the direct/official formats (the reasoning format needs the runner's own)."""
        return self.module.max_new_tokens(sample, fmt)

    def extract(self, sample: Sample, output) -> str | None:
        """The answer in a raw model output: an option letter or the answer text; None if none."""
        return self.module.extract(sample, output)

    # -- scoring
    def score(self, samples: Sequence[Sample], predictions, judge=None, **opts) -> dict:
        """Official metrics and breakdowns. `predictions`: {sample id: raw output} or a list
        aligned with `samples`. `judge`: an `ego3s.eval.judge.Judge` for the judge metrics."""
        return self.module.score(samples, predictions, judge=judge, **opts)


def _b(name, module, description, task=None, **options) -> Benchmark:
    return Benchmark(name, module, dict(options), description, task)


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    _b("qaego4d", qaego4d, "QAEgo4D open-ended (EM, BLEU-4, ROUGE-L, METEOR, similarity)", variant="open"),
    _b("qaego4d-close", qaego4d, "QAEgo4D-close: 4-way choice, accuracy averaged over seeds", "closeqa",
       variant="close"),
    _b("egotextvqa", egotextvqa, "EgoTextVQA indoor + outdoor (LLM judge: accuracy, 0-5 score)",
       settings=("indoor", "outdoor")),
    _b("egotextvqa-indoor", egotextvqa, "EgoTextVQA indoor", settings=("indoor",)),
    _b("egotextvqa-outdoor", egotextvqa, "EgoTextVQA outdoor", settings=("outdoor",)),
    _b("egotextvqa-realtime", egotextvqa, "EgoTextVQA outdoor real-time subset", settings=("realtime",)),
    _b("egoschema", egoschema, "EgoSchema public 500-question subset (accuracy)", split="subset"),
    _b("egoschema-full", egoschema, "EgoSchema full set (submission file; subset accuracy)", split="full"),
    _b("egoplan2", egoplan2, "EgoPlan-Bench2 (accuracy per domain)"),
    _b("egothink", egothink, "EgoThink, 12 dimensions (LLM judge 0/0.5/1, x100)"),
    _b("egosynth", egosynth, "EgoSynth test_id + test_atypical", splits=("test_id", "test_atypical")),
    _b("egosynth-id", egosynth, "EgoSynth test_id", splits=("test_id",)),
    _b("egosynth-atypical", egosynth, "EgoSynth test_atypical", splits=("test_atypical",)),
]}

ALIASES: dict[str, str] = {
    "qaego4d-open": "qaego4d", "qaego4d-oe": "qaego4d",
    "qaego4d-closed": "qaego4d-close", "qaego4dclose": "qaego4d-close", "qaego4d-mc": "qaego4d-close",
    "egotextvqa-real-time": "egotextvqa-realtime",
    "egoschema-subset": "egoschema", "egoschema-all": "egoschema-full",
    "egoplan-bench2": "egoplan2", "egoplanbench2": "egoplan2", "egoplan-bench-2": "egoplan2", "egoplan-2": "egoplan2",
    "egosynth-test-id": "egosynth-id", "egosynth-test-atypical": "egosynth-atypical",
}


def _norm(name: str) -> str:
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called `name` (case-insensitive; '_' and '-' alike; aliases allowed)."""
    key = _norm(name)
    key = ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} "
                       f"(aliases: {', '.join(sorted(ALIASES))})")
    return BENCHMARKS[key]


def benchmark_names() -> list[str]:
    return list(BENCHMARKS)
