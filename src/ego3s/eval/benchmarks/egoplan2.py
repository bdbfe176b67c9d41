"""EgoPlan-Bench2 (qiulu66/EgoPlan-Bench2): 1,321 four-way questions on the next action towards a
task goal, over the task progress seen so far in an Ego4D video; 4 domains, 24 scenarios.

File (from the benchmark's dataset page, not in the repository): a JSON list of `{"sample_id",
"domain", "scenario", "task_goal", "choice_a" .. "choice_d", "golden_choice_idx": "A".."D",
"answer", "task_start_frame", "current_observation_frame", "task_progress_metadata": [...]}`.

- Video (official `eval.py`): the Ego4D video `<video_root>/<video_uid>.mp4` with
  `video_uid = sample_id.split('_')[0]` (or a `video_uid` / `video_id` field when present), from
  `task_start_frame` to `current_observation_frame` inclusive; frame numbers are at the video's
  frame rate, 30 fps for Ego4D (`fps=`).
- Prompt: the official template (README, `eval.py`) is the `official` format; the question text is
  its question sentence.
- Scoring: accuracy of the extracted letter, overall, per domain and per scenario. (The official
  extractor takes the first capital A-D after removing a few answer prefixes; we use
  `ego3s.answers.extract_letter`.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import extract_letter, normalize_text
from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common as C

NAME = "egoplan2"
TASK = "closeqa"
VISUAL = "video"
NEEDS_JUDGE = False
SUBDIR = "egoplan2"
FPS = 30.0
MAX_NEW_TOKENS = 16
FILES = ("EgoPlan-Bench2.json", "EgoPlan_Bench2.json", "egoplan_bench2.json", "egoplan2.json", "annotations.json")
QUESTION = (
    "Considering the progress shown in the video and my current observation in the last frame, "
    "what action should I take next in order to {goal}?"
)
OFFICIAL_TEMPLATE = (
    "Select the best answer to the following multiple-choice question based on the video. "
    "Respond with only the letter (A, B, C, or D) of the correct option.\n\n{question}\n\n"
    "A. {a}\nB. {b}\nC. {c}\nD. {d}"
)


def _find(path: Path) -> Path:
    try:
        return C.find_file(path, FILES, "EgoPlan-Bench2 annotations")
    except FileNotFoundError:
        if path.is_dir():
            files = sorted(path.glob("*.json"))
            if len(files) == 1:
                return files[0]
        raise


def load(path: str | os.PathLike, *, fps: float = FPS, video_root=None, skip_invalid: bool = False) -> list[Sample]:
    """Samples from the annotation file `path` or the folder holding it."""
    file = _find(Path(path))
    video_root = Path(video_root) if video_root is not None else file.parent
    data = C.check_list(C.read_json(file), file)
    out: list[Sample] = []
    for i, rec in enumerate(data):
        sid = str(C.field_of(rec, "sample_id", (str, int), file, i))
        goal = C.field_of(rec, "task_goal", str, file, i, sid).strip()
        options = [str(C.field_of(rec, f"choice_{k}", (str, int, float), file, i, sid)).strip() for k in "abcd"]
        gold = C.field_of(rec, "golden_choice_idx", str, file, i, sid).strip().upper()
        if gold not in ("A", "B", "C", "D"):
            raise C.bad(file, i, sid, "golden_choice_idx", f"must be one of A..D, got {gold!r}")
        text = rec.get("answer")
        if isinstance(text, str) and normalize_text(text) != normalize_text(options["ABCD".index(gold)]):
            C.log.warning(
                "%s: sample %s: answer %r is not choice %s (%r); using golden_choice_idx",
                file,
                sid,
                text,
                gold,
                options["ABCD".index(gold)],
            )
        f0 = C.field_of(rec, "task_start_frame", (int, float), file, i, sid)
        f1 = C.field_of(rec, "current_observation_frame", (int, float), file, i, sid)
        if f0 < 0 or f1 < f0:
            raise C.bad(
                file,
                i,
                sid,
                "current_observation_frame",
                f"frames must satisfy 0 <= task_start_frame <= current_observation_frame, got {f0}, {f1}",
            )
        vuid = rec.get("video_uid") or rec.get("video_id") or sid.split("_")[0]
        start = f0 / fps
        end = f1 / fps if f1 > f0 else start + 0.5 / fps  # the last frame is the current observation
        out.append(
            Sample(
                id=sid,
                question=QUESTION.format(goal=goal),
                answer=gold,
                task="closeqa",
                options=options,
                video=str(video_root / f"{vuid}.mp4"),
                start=start,
                end=end,
                meta={
                    "benchmark": NAME,
                    "domain": rec.get("domain"),
                    "scenario": rec.get("scenario"),
                    "task_goal": goal,
                    "video_uid": vuid,
                    "task_start_frame": f0,
                    "current_observation_frame": f1,
                    "fps": fps,
                    "task_progress_metadata": rec.get("task_progress_metadata") or [],
                },
            )
        )
    return C.finish(out, file, skip_invalid=skip_invalid)


def official_prompt(sample: Sample) -> str:
    a, b, c, d = sample.options
    return OFFICIAL_TEMPLATE.format(question=sample.question, a=a, b=b, c=c, d=d)


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    return extract_letter(output, sample.options)


def score(samples: Sequence[Sample], predictions, judge=None) -> dict:
    """Accuracy (%) overall, per domain and per domain/scenario."""
    outputs, missing = C.pair(samples, predictions)
    rows = C.closed_rows(samples, outputs, ("domain", "scenario"))
    metrics = {"accuracy": C.accuracy_of(rows), "n": len(rows), "unparsed": sum(not r["parsed"] for r in rows)}
    by = {"domain": C.accuracy_by(rows, "domain"), "scenario": C.accuracy_by(rows, ("domain", "scenario"))}
    return C.result(NAME, samples, missing, metrics, by, rows)
