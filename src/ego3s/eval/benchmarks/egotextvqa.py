"""EgoTextVQA (zhousheng97/EgoTextVQA, CVPR 2025): open-ended, scene-text-aware QA on egocentric
videos, indoor (2,216 QA, house-keeping, EgoSchema/Ego4D clips) and outdoor (4,848 QA, driving).

Files: `indoor_total.json`, `outdoor_total.json`, `outdoor_real_time.json` (as mirrored in
data/benchmarks/egotextvqa), or the repository's `data/egotextvqa_{indoor,outdoor}/total.json`
and `data/egotextvqa_outdoor/real_time.json`. Each is `[{"dataset", "split", "task_setting",
"data": [{"video_id", "question_id", "question", "question_type", "correct_answer", "timestamp"}]}]`.

- Sample ids: f"{setting}-{video_id}-{question_id}" (outdoor question ids are floats: 8.1 and 8.2
  are one question asked at two timestamps). The real-time subset keeps the outdoor ids.
- Only frames before the question's `timestamp` may be shown: `Sample.cutoff = timestamp`.
- Videos: `<video_root>/<setting>/<video_id>.mp4` (override per setting with `indoor_videos`,
  `outdoor_videos`); not needed for blind runs.
- Scoring (official `gpt_eval.py`): an LLM judge says yes/no and gives a 0-5 score per answer, on
  the lowercased, newline-free reference and prediction; accuracy = share of yes, score = mean;
  per question type and overall. The judge prompt is the official one, verbatim
  (`ego3s.judge.EGOTEXTVQA`). A judgement that still fails after the retries is graded no / 0,
  as the official script does, and counted (`judge_failed`, and `judge_failed: true` on its row).
  EM and ROUGE-L are always computed beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import extract_answer
from ego3s.data.schema import Sample
from ego3s.eval.benchmarks import _common as C
from ego3s.eval.metrics import breakdown, group_means

NAME = "egotextvqa"
TASK = "openqa"
VISUAL = "video"
NEEDS_JUDGE = True
SUBDIR = "egotextvqa"
SETTINGS = ("indoor", "outdoor", "realtime")
MAX_NEW_TOKENS = 64

FILES = {
    "indoor": ("indoor_total.json", "egotextvqa_indoor/total.json", "data/egotextvqa_indoor/total.json"),
    "outdoor": ("outdoor_total.json", "egotextvqa_outdoor/total.json", "data/egotextvqa_outdoor/total.json"),
    "realtime": (
        "outdoor_real_time.json",
        "egotextvqa_outdoor/real_time.json",
        "data/egotextvqa_outdoor/real_time.json",
    ),
}
QUESTION_TYPES = {
    "indoor": ("hands-on", "kitchen", "shopping", "gameplay", "book-related", "others"),
    "outdoor": ("location", "direction", "description", "intention reasoning", "others"),
}

# The benchmark's published prompt for API models (mllm_prompt.json: gpt-4o / gemini entries).
OFFICIAL_PROMPT = (
    "Based on the video, please briefly answer the following question with a single word, a "
    "phrase, or a short sentence. Question: {question}.  Output the answer to the question in "
    "the following format: Answer: [Full answer]. If you cannot answer the question, please "
    "answer 'Unanswerable' and briefly explain why you cannot answer."
)
FIELDS = {"accuracy": 100.0, "score": 1.0, "em": 100.0, "rouge_l": 100.0}
# What official gpt_eval.py records when a judgement fails (`score_dict.get('pred', 'no')`, `.get('score', 0)`)
FAILED = {"pred": "no", "score": 0}


def load(
    path: str | os.PathLike,
    *,
    settings: Sequence[str] = ("indoor", "outdoor"),
    video_root=None,
    indoor_videos=None,
    outdoor_videos=None,
    skip_invalid: bool = False,
) -> list[Sample]:
    """Samples of the given settings ('indoor', 'outdoor', 'realtime') from the folder `path`,
    or of the one annotation file `path` (its setting read from the file)."""
    p = Path(path)
    if isinstance(settings, str):
        settings = (settings,)
    for s in settings:
        if s not in SETTINGS:
            raise ValueError(f"EgoTextVQA setting must be one of {SETTINGS}, got {s!r}")
    if p.is_file():
        jobs = [(None, p)]
        root = p.parent
    else:
        jobs = [(s, C.find_file(p, FILES[s], f"EgoTextVQA {s} annotations")) for s in settings]
        root = p
    video_root = Path(video_root) if video_root is not None else root
    dirs = {
        "indoor": Path(indoor_videos) if indoor_videos else video_root / "indoor",
        "outdoor": Path(outdoor_videos) if outdoor_videos else video_root / "outdoor",
    }
    out: list[Sample] = []
    for setting, file in jobs:
        out += _load_file(file, setting, dirs)
    return C.finish(out, p, skip_invalid=skip_invalid)


def _load_file(path: Path, setting: str | None, dirs: dict) -> list[Sample]:
    data = C.read_json(path)
    if isinstance(data, dict):
        data = [data]
    C.check_list(data, path, "a JSON list of {dataset, split, data} blocks")
    realtime = setting == "realtime" or "real_time" in path.name
    out = []
    for block in data:
        if not isinstance(block, dict) or not isinstance(block.get("data"), list):
            raise ValueError(f"{path}: each block needs a 'data' list")
        split = str(block.get("split", "")).lower()
        this = "outdoor" if setting == "realtime" else setting or split
        if this not in ("indoor", "outdoor"):
            raise ValueError(f"{path}: cannot tell indoor from outdoor (split {block.get('split')!r})")
        for i, rec in enumerate(block["data"]):
            vid = C.field_of(rec, "video_id", (str, int), path, i)
            qid = C.field_of(rec, "question_id", (int, float, str), path, i)
            sid = f"{this}-{vid}-{C.number_text(qid)}"
            question = C.field_of(rec, "question", str, path, i, sid)
            answer = C.field_of(rec, "correct_answer", (str, int, float), path, i, sid)
            qtype = C.field_of(rec, "question_type", str, path, i, sid)
            ts = C.field_of(rec, "timestamp", (int, float), path, i, sid)
            if ts <= 0:
                raise C.bad(path, i, sid, "timestamp", f"must be > 0 (frames before it are shown), got {ts}")
            out.append(
                Sample(
                    id=sid,
                    question=question.strip(),
                    answer=str(answer).strip(),
                    task="openqa",
                    video=str(dirs[this] / f"{vid}.mp4"),
                    cutoff=float(ts),
                    meta={
                        "benchmark": NAME,
                        "setting": this,
                        "realtime": realtime,
                        "video_id": vid,
                        "question_id": qid,
                        "question_type": qtype.strip().lower(),
                        "timestamp": ts,
                    },
                )
            )
    return out


def official_prompt(sample: Sample) -> str:
    return OFFICIAL_PROMPT.format(question=sample.question)


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    """The answer text: the `<answer>` content (else the text), without a leading 'Answer:'."""
    return C.strip_answer_prefix(extract_answer(output)) or None


def _clean(text: str) -> str:
    """What the official script sends to the judge: newlines removed, lowercased."""
    return str(text).replace("\n", "").lower()


def score(samples: Sequence[Sample], predictions, judge=None) -> dict:
    """Judge accuracy (% yes) and score (mean 0-5) with `judge` (a `Judge`), plus EM and ROUGE-L F
    (%), overall, per setting and per setting/question type."""
    from ego3s.judge import EGOTEXTVQA, JudgeItem

    outputs, missing = C.pair(samples, predictions)
    preds = [extract(s, o) or "" for s, o in zip(samples, outputs)]
    rows = C.open_rows(samples, preds, ("setting", "question_type"))
    jsum = None
    if judge is not None:
        items = [JudgeItem(s.id, s.question, _clean(s.answer), _clean(p)) for s, p in zip(samples, preds)]
        ratings, jsum = C.run_judge(judge, EGOTEXTVQA, items, empty={"pred": "no", "score": 0})
        for row, r in zip(rows, ratings):
            if r is None:  # a failed judgement is graded no / 0, as the official gpt_eval.py does
                row["judge_failed"] = True
                r = FAILED
            row["accuracy"] = float(r["pred"] == "yes")
            row["score"] = float(r["score"])
    else:
        for row in rows:
            row["accuracy"] = row["score"] = None
    metrics = group_means(rows, FIELDS)
    by = {
        "setting": breakdown(rows, "setting", FIELDS),
        "question_type": breakdown(rows, ("setting", "question_type"), FIELDS),
    }
    return C.result(NAME, samples, missing, metrics, by, rows, judge=jsum)
