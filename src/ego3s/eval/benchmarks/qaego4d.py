"""QAEgo4D (lbaermann/qaego4d, CVPRW 2022) and its close-ended variant QAEgo4D-close
(Becomebright/GroundVQA, CVPR 2024): questions about Ego4D NLQ clips.

Files (not public; made from Ego4D + QAEgo4D by the official tools): `annotations.test.json`
(open; GroundVQA: `annotations.QaEgo4D_test.json`) and `annotations.QaEgo4D_test_close.json`
(close), JSON lists of `{"video_id", "sample_id", "question", "answer", "moment_start_frame",
"moment_end_frame"}`; the close file adds `"wrong_answers"` (3 strings).

- Video: `<video_root>/<video_id>.mp4` (the NLQ clip). Clip window: the whole clip
  (`window="full"`, the default: the benchmark's episodic-memory protocol, where the model must find
  the moment itself), or the annotated moment, `moment_*_frame / 30` seconds (`window="moment"`,
  an easier oracle setting; `--opt QAEgo4D.window=moment`). The moment is kept in `meta`.
- Open (official `eval.py`): exact match, BLEU-4 (sacreBLEU corpus score), ROUGE-L F (rouge-score,
  no stemming), METEOR (NLTK), and GroundVQA's sentence similarity (all-MiniLM-L6-v2). We report
  the official string-equality `plain_acc` beside our normalised `em`; METEOR omits WordNet
  synonyms (see `ego3s.eval.metrics.meteor`).
- Close (GroundVQA): 4 options (answer + 3 wrong answers) shuffled per seed, one sample per
  (question, seed) with id f"{sample_id}@seed{seed}"; accuracy per seed and its mean (and
  standard deviation) over the seeds 0, 1111, 2222, 3333, 4444 (GroundVQA's evaluation script).
"""

from __future__ import annotations

import os
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

from ego3s.answers import extract_answer
from ego3s.data.schema import LETTERS, Sample
from ego3s.eval.benchmarks import _common as C
from ego3s.eval.metrics import (
    corpus_bleu,
    exact_match,
    group_means,
    meteor,
    plain_match,
    rouge_l_official,
    sentence_bleu,
    sentence_similarity,
)

NAME = "qaego4d"
TASK = "openqa"  # "closeqa" for the close variant
VISUAL = "video"
NEEDS_JUDGE = False
SUBDIR = "qaego4d"
FPS = 30.0
SEEDS = (0, 1111, 2222, 3333, 4444)
MAX_NEW_TOKENS = 32
VARIANTS = ("open", "close")
WINDOWS = ("moment", "full")


def _candidates(split: str, variant: str) -> tuple[str, ...]:
    if variant == "open":
        return (f"annotations.{split}.json", f"annotations.QaEgo4D_{split}.json")
    return (
        f"annotations.QaEgo4D_{split}_close.json",
        f"annotations.{split}_close.json",
        f"annotations.{split}.close.json",
    )


def load(
    path: str | os.PathLike,
    *,
    variant: str = "open",
    split: str = "test",
    seeds: Sequence[int] = SEEDS,
    window: str = "full",
    fps: float = FPS,
    video_root=None,
    skip_invalid: bool = False,
) -> list[Sample]:
    """Open samples, or close samples (one per question and seed), from the annotation file `path`
    or the folder holding it."""
    if variant not in VARIANTS:
        raise ValueError(f"QAEgo4D variant must be one of {VARIANTS}, got {variant!r}")
    if window not in WINDOWS:
        raise ValueError(f"QAEgo4D window must be one of {WINDOWS}, got {window!r}")
    if variant == "close" and not seeds:
        raise ValueError("QAEgo4D-close needs at least one seed")
    file = C.find_file(path, _candidates(split, variant), f"QAEgo4D {variant} annotations")
    video_root = Path(video_root) if video_root is not None else file.parent
    data = C.check_list(C.read_json(file), file)
    out: list[Sample] = []
    for i, rec in enumerate(data):
        sid = C.field_of(rec, "sample_id", (str, int), file, i)
        sid = str(sid)
        vid = C.field_of(rec, "video_id", str, file, i, sid)
        question = C.field_of(rec, "question", str, file, i, sid)
        answer = str(C.field_of(rec, "answer", (str, int, float), file, i, sid)).strip()
        f0 = C.field_of(rec, "moment_start_frame", (int, float), file, i, sid)
        f1 = C.field_of(rec, "moment_end_frame", (int, float), file, i, sid)
        if f0 < 0 or f1 < f0:
            raise C.bad(
                file, i, sid, "moment_end_frame", f"moment frames must satisfy 0 <= start <= end, got {f0}, {f1}"
            )
        t0, t1 = f0 / fps, f1 / fps
        start, end = (t0, t1 if t1 > t0 else t0 + 1.0 / fps) if window == "moment" else (None, None)
        meta = {
            "benchmark": NAME,
            "variant": variant,
            "video_id": vid,
            "sample_id": sid,
            "moment": [round(t0, 4), round(t1, 4)],
            "moment_frames": [f0, f1],
            "window": window,
        }
        video = str(video_root / f"{vid}.mp4")
        if variant == "open":
            out.append(
                Sample(
                    id=sid,
                    question=question.strip(),
                    answer=answer,
                    task="openqa",
                    video=video,
                    start=start,
                    end=end,
                    meta=meta,
                )
            )
            continue
        wrong = C.field_of(rec, "wrong_answers", list, file, i, sid)
        if len(wrong) != 3 or not all(isinstance(w, (str, int, float)) for w in wrong):
            raise C.bad(file, i, sid, "wrong_answers", f"expected 3 wrong answers, got {wrong!r:.80}")
        for seed in seeds:
            options = shuffled_options(answer, [str(w).strip() for w in wrong], seed, sid)
            out.append(
                Sample(
                    id=f"{sid}@seed{seed}",
                    question=question.strip(),
                    answer=LETTERS[options.index(answer)],
                    task="closeqa",
                    options=options,
                    video=video,
                    start=start,
                    end=end,
                    meta={**meta, "seed": seed, "answer_text": answer},
                )
            )
    return C.finish(out, file, skip_invalid=skip_invalid)


def shuffled_options(answer: str, wrong: list[str], seed: int, sample_id: str) -> list[str]:
    """The 4 options in the order of `seed` for this question: the same on every run and machine,
    independent of the order questions are read in."""
    options = [answer, *wrong]
    random.Random(f"qaego4d-close:{seed}:{sample_id}").shuffle(options)
    return options


def max_new_tokens(sample: Sample, fmt: str = "direct") -> int:
    return 16 if sample.task == "closeqa" else MAX_NEW_TOKENS


def extract(sample: Sample, output) -> str | None:
    return C.extract(sample, output)


def score(
    samples: Sequence[Sample],
    predictions,
    judge=None,
    *,
    similarity: bool = True,
    embedder=None,
    meteor_synonyms: bool = False,
) -> dict:
    """Open: EM, plain_acc, BLEU-4 (corpus), ROUGE-L F, METEOR, sentence similarity (all x 100).
    Close: accuracy per seed, mean and standard deviation over seeds. A set mixing both is scored
    as two parts. `judge` is not used (QAEgo4D has none)."""
    closed = [s for s in samples if s.task == "closeqa"]
    opened = [s for s in samples if s.task != "closeqa"]
    if closed and opened:
        return {
            "benchmark": NAME,
            "n": len(samples),
            "parts": {
                "open": score(
                    opened, predictions, similarity=similarity, embedder=embedder, meteor_synonyms=meteor_synonyms
                ),
                "close": score(closed, predictions),
            },
        }
    outputs, missing = C.pair(samples, predictions)
    if closed:
        rows = C.closed_rows(samples, outputs, ("seed", "sample_id"))
        per_seed = C.accuracy_by(rows, "seed")
        accs = [v["accuracy"] for v in per_seed.values()]
        metrics = {
            "accuracy": round(statistics.fmean(accs), 2) if accs else None,
            "accuracy_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
            "n_seeds": len(per_seed),
            "n_questions": len({r["sample_id"] for r in rows}),
            "unparsed": sum(not r["parsed"] for r in rows),
        }
        by = {"seed": per_seed}
        return C.result(NAME + "-close", samples, missing, metrics, by, rows)
    preds = [(extract_answer(o) or "").strip() for o in outputs]
    refs = [s.answer for s in samples]
    rows = []
    for s, p in zip(samples, preds):
        rows.append(
            {
                "id": s.id,
                "pred": p,
                "gold": s.answer,
                "em": exact_match(p, s.answer),
                "plain_acc": plain_match(p, s.answer),
                "rouge_l": rouge_l_official(p, s.answer),
                "meteor": meteor(p, s.answer, synonyms=meteor_synonyms),
                "bleu4_sentence": sentence_bleu(p, s.answer).score / 100.0,
            }
        )
    if similarity and rows:
        for row, sim in zip(rows, sentence_similarity(preds, refs, embedder=embedder)):
            row["similarity"] = sim
    fields = {
        "em": 100.0,
        "plain_acc": 100.0,
        "rouge_l": 100.0,
        "meteor": 100.0,
        "similarity": 100.0,
        "bleu4_sentence": 100.0,
    }
    metrics = group_means(rows, fields)
    bleu = corpus_bleu(preds, refs) if rows else None
    metrics["bleu4"] = round(bleu.score, 2) if bleu else None
    metrics["bleu4_bp"] = round(bleu.bp, 4) if bleu else None
    metrics["meteor_synonyms"] = meteor_synonyms
    return C.result(NAME, samples, missing, metrics, {}, rows)
