"""EgoSchema (egoschema/EgoSchema, NeurIPS 2023): 5-way multiple choice on 3-minute Ego4D clips,
5,031 questions; the answers of a 500-question subset are public.

Files: `questions.json` (or the mirrored `questions_first20.json`): `[{"q_uid", "google_drive_id",
"question", "option 0" .. "option 4"}]`; `subset_answers.json`: `{q_uid: 0..4}`;
`uid_to_ego4d.json`: `{q_uid: {"video_uid", "starting_sec", "ending_sec"}}`.

- `split="subset"`: the questions with a public answer (scored offline: accuracy).
  `split="full"`: every question; those without a public answer carry a placeholder gold "A" and
  `meta.answer_hidden = True`, are left out of the accuracy, and go to the submission file
  `{q_uid: 0..4}` (`submission`, `write_submission`; unparsed answers are -1).
- Video: `<video_root>/<q_uid>.mp4` (the official videos are named by q_uid; `video_root` defaults
  to the annotation folder), or with `ego4d_root` the full Ego4D video `<ego4d_root>/<video_uid>.mp4`
  cut to `[starting_sec, ending_sec]` from `uid_to_ego4d.json`.
- Prompt: the `official` format is lmms-eval's (`tasks/egoschema/utils.py`: the question, then
  each option as "A. ..." on its own line, then "Answer with the option's letter from the given
  choices directly."); our `direct` format says the same with an "Options:" line before the options.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import extract_letter
from ego3s.data.schema import LETTERS, Sample, SampleError
from ego3s.eval.benchmarks import _common as C
from ego3s.files import write_json

NAME = "egoschema"
TASK = "closeqa"
VISUAL = "video"
NEEDS_JUDGE = False
SUBDIR = "egoschema"
SPLITS = ("subset", "full")
MAX_NEW_TOKENS = 16
QUESTION_FILES = ("questions.json", "questions_first20.json")


def load_answers(path: str | os.PathLike) -> dict[str, int]:
    """`subset_answers.json` (or the folder holding it) as {q_uid: 0..4}."""
    file = C.find_file(path, ("subset_answers.json",), "EgoSchema subset answers")
    data = C.read_json(file)
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object {{q_uid: answer index}}")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 4:
            raise SampleError(f"answer must be an integer 0..4, got {v!r}", field="answer", file=str(file), sample_id=k)
    return dict(data)


def load(
    path: str | os.PathLike,
    *,
    split: str = "subset",
    answers=None,
    video_root=None,
    ego4d_root=None,
    mapping=None,
    skip_invalid: bool = False,
) -> list[Sample]:
    """Samples from the questions file `path` or the folder holding it (and `subset_answers.json`,
    `uid_to_ego4d.json` beside it unless given)."""
    if split not in SPLITS:
        raise ValueError(f"EgoSchema split must be one of {SPLITS}, got {split!r}")
    file = C.find_file(path, QUESTION_FILES, "EgoSchema questions")
    root = file.parent
    if answers is None:
        answers = load_answers(root) if (root / "subset_answers.json").is_file() else {}
    elif not isinstance(answers, dict):
        answers = load_answers(answers)
    if split == "subset" and not answers:
        raise FileNotFoundError(f"{root}: the EgoSchema subset needs subset_answers.json (or answers=...)")
    ego4d = {}
    if ego4d_root is not None:
        mfile = C.find_file(mapping if mapping is not None else root, ("uid_to_ego4d.json",), "EgoSchema uid_to_ego4d")
        ego4d = C.read_json(mfile)
    video_root = Path(video_root) if video_root is not None else root
    data = C.check_list(C.read_json(file), file)
    out: list[Sample] = []
    for i, rec in enumerate(data):
        uid = C.field_of(rec, "q_uid", str, file, i)
        if split == "subset" and uid not in answers:
            continue
        question = C.field_of(rec, "question", str, file, i, uid)
        options = [str(C.field_of(rec, f"option {k}", (str, int, float), file, i, uid)).strip() for k in range(5)]
        hidden = uid not in answers
        meta = {
            "benchmark": NAME,
            "q_uid": uid,
            "google_drive_id": rec.get("google_drive_id"),
            "answer_hidden": hidden,
            "subset": not hidden,
        }
        start = end = None
        if ego4d_root is not None:
            m = ego4d.get(uid)
            if not isinstance(m, dict) or "video_uid" not in m:
                raise C.bad(file, i, uid, "q_uid", "no entry in uid_to_ego4d.json")
            video = str(Path(ego4d_root) / f"{m['video_uid']}.mp4")
            start, end = float(m["starting_sec"]), float(m["ending_sec"])
            meta["ego4d"] = m
        else:
            video = str(video_root / f"{uid}.mp4")
        out.append(
            Sample(
                id=uid,
                question=question.strip(),
                answer="A" if hidden else LETTERS[answers[uid]],
                task="closeqa",
                options=options,
                video=video,
                start=start,
                end=end,
                meta=meta,
            )
        )
    if split == "subset" and not out:
        C.log.warning("%s holds none of the %d subset questions of %s", file, len(answers), root)
    return C.finish(out, file, skip_invalid=skip_invalid)


LMMS_EVAL_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def official_prompt(sample: Sample) -> str:
    """lmms-eval's EgoSchema prompt, character for character (its options carry "A. " already)."""
    return (
        sample.question + "".join(f"\n{LETTERS[i]}. {o}" for i, o in enumerate(sample.options)) + LMMS_EVAL_POST_PROMPT
    )


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    return extract_letter(output, sample.options)


def submission(samples: Sequence[Sample], predictions) -> dict[str, int]:
    """The official submission `{q_uid: 0..4}` (-1 where no option could be read)."""
    outputs, _ = C.pair(samples, predictions)
    out = {}
    for s, o in zip(samples, outputs):
        letter = extract_letter(o, s.options)
        out[s.meta.get("q_uid", s.id)] = LETTERS.index(letter) if letter else -1
    return out


def write_submission(path: str | os.PathLike, samples: Sequence[Sample], predictions) -> dict[str, int]:
    sub = submission(samples, predictions)
    write_json(path, sub)
    return sub


def score(samples: Sequence[Sample], predictions, judge=None) -> dict:
    """Accuracy (%) over the questions whose answer is public, and the submission dict for all."""
    outputs, missing = C.pair(samples, predictions)
    rows = C.closed_rows(samples, outputs, ("answer_hidden",))
    scored = [r for r in rows if not r["answer_hidden"]]
    for r in rows:
        if r["answer_hidden"]:
            r["gold"] = r["correct"] = None
    metrics = {
        "accuracy": C.accuracy_of(scored),
        "n_scored": len(scored),
        "n_hidden": len(rows) - len(scored),
        "unparsed": sum(not r["parsed"] for r in rows),
    }
    sub = {s.meta.get("q_uid", s.id): (LETTERS.index(r["pred"]) if r["pred"] else -1) for s, r in zip(samples, rows)}
    return C.result(NAME, samples, missing, metrics, {}, rows, submission=sub)
