"""CSM's likelihood score (`ego3s.select.scoring.likelihood_batch`) against a hand computation on
the tiny Qwen2.5-VL: the test builds the prompt and inputs with the processor, runs a plain
forward itself and reduces the log-softmax by hand (closed: p(gold letter) renormalised over the
option letters; open: geometric mean of the gold tokens' probabilities)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ego3s.data.schema import LETTERS, Sample
from ego3s.data.video import Clip
from ego3s.models.prompts import build_messages
from ego3s.select.scoring import likelihood_batch


@pytest.fixture(scope="module")
def tiny64(tiny_model_dir):
    """The tiny model in float64, so both forwards agree to ~1e-12 and only the scorer's float32
    reduction is left to bound."""
    from ego3s.models.loading import load_model

    model, processor = load_model(tiny_model_dir, device="cpu")
    return model.double().eval(), processor


def _clip(seed: int, n: int = 4, fps: float = 2.0) -> Clip:
    frames = np.random.default_rng(seed).integers(0, 255, (n, 56, 56, 3), dtype=np.uint8)
    return Clip(frames, np.arange(n) / fps, fps)


def _hand(model, processor, sample: Sample, clip: Clip | None, answer: str | None = None) -> tuple[float, dict]:
    """The score from scratch: chat text, processor, prompt + gold tokens, one plain forward,
    float64 log-softmax. Also returns the numbers the margins below need. `answer`: teacher-force
    that text instead and return its summed log-probability."""
    tok = processor.tokenizer
    msgs = build_messages(sample, fmt="direct", visual="video" if clip is not None else None)
    text = processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if clip is not None:
        inputs = processor(
            text=[text],
            videos=[clip.frames],
            return_tensors="pt",
            videos_kwargs={"do_sample_frames": False, "do_resize": False},
        )
        # Qwen2.5-VL: one temporal patch spans temporal_patch_size (2) frames, i.e. 2 / fps seconds
        inputs["second_per_grid_ts"] = torch.tensor([2.0 / clip.fps])
    else:
        inputs = processor(text=[text], return_tensors="pt")
    prompt_len = inputs["input_ids"].shape[1]
    gold = tok(answer if answer is not None else sample.answer, add_special_tokens=False)["input_ids"]
    extra = torch.tensor([gold])
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], 1)
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], 1)
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    info = {"max_logit": float(logits.abs().max()), "vocab": logits.shape[-1]}
    if answer is not None:
        return float(sum(logp[prompt_len - 1 + j, t] for j, t in enumerate(gold))), info
    if sample.task == "closeqa":
        letters = [tok(L, add_special_tokens=False)["input_ids"] for L in LETTERS[: len(sample.options)]]
        assert all(len(ids) == 1 for ids in letters)
        lp = logp[prompt_len - 1, [ids[0] for ids in letters]]  # the first answer token's distribution
        k = LETTERS.index(sample.answer)
        info["unnormalised"] = float(lp[k].exp())
        return float(lp[k].exp() / lp.exp().sum()), info
    rows = [logp[prompt_len - 1 + j, t] for j, t in enumerate(gold)]  # position t predicts token t + 1
    info["shifted"] = (
        float(torch.stack([logp[prompt_len + j, t] for j, t in enumerate(gold[:-1])]).mean().exp())
        if len(gold) > 1
        else None
    )
    return float(torch.stack(rows).mean().exp()), info


@pytest.mark.slow
def test_likelihood_score_equals_a_hand_computation(tiny64):
    model, processor = tiny64
    closed = Sample.from_dict(
        {
            "id": "c",
            "question": "What did I pick up from the counter?",
            "answer": "C",
            "task": "closeqa",
            "options": ["a knife", "a board", "a red mug", "a towel"],
            "video": "v.mp4",
        }
    )
    opened = Sample.from_dict(
        {
            "id": "o",
            "question": "Where did I put the mug?",
            "answer": "on the top shelf",
            "task": "openqa",
            "video": "v.mp4",
        }
    )
    blind = Sample.from_dict(
        {
            "id": "b",
            "question": "Which hand?",
            "answer": "A",
            "task": "closeqa",
            "options": ["left", "right"],
            "video": "v.mp4",
        }
    )
    cases = [(closed, _clip(1)), (opened, _clip(2, n=6)), (blind, None)]  # three prompt lengths: left padding
    items = [(s, build_messages(s, fmt="direct", visual="video" if c is not None else None), c) for s, c in cases]
    got = likelihood_batch(model, processor, items)
    alone = [likelihood_batch(model, processor, [it])[0] for it in items]
    for (s, clip), g, a in zip(cases, got, alone):
        want, info = _hand(model, processor, s, clip)
        # The scorer reduces float32 logits: each log-softmax value carries a rounding error of a
        # few ulps of its magnitude, |logit| + log V; 16 ulps (2^-24 each) of that bounds the
        # error of p (closed, a ratio of exps) and of exp(mean log p) (open) relative to the value.
        tol = 16 * 2.0**-24 * (info["max_logit"] + math.log(info["vocab"]))
        assert g == pytest.approx(want, rel=tol, abs=0), (s.id, g, want, tol)
        assert a == pytest.approx(want, rel=tol, abs=0)  # batching (left padding) changes nothing
        # margins: what a wrong reduction would give is far outside the tolerance
        if s.task == "closeqa":
            assert abs(info["unnormalised"] - want) > 1e4 * tol * want  # no renormalisation over letters
            assert 0 < want < 1
        else:
            assert abs(info["shifted"] - want) > 1e3 * tol * want  # labels off by one position


@pytest.mark.slow
def test_likelihood_score_of_a_model_taught_to_answer_with_the_option_text(tiny64):
    """A base whose warm-up taught it to answer closed questions with the option's text
    (`closed_answer: text`, recorded in its config) is scored on the options' texts: p(gold text)
    renormalised over the options' texts, each teacher-forced whole, not on a letter it never
    says. Open questions score as before."""
    from ego3s.select.scoring import closed_answer_of

    model, processor = tiny64
    closed = Sample.from_dict(
        {
            "id": "t",
            "question": "What did I put in the crate?",
            "answer": "B",
            "task": "closeqa",
            "options": ["in the bucket", "in the crate", "mug"],  # a shared prefix and a shorter one
            "video": "v.mp4",
        }
    )
    opened = Sample.from_dict(
        {
            "id": "o",
            "question": "Where did I put the mug?",
            "answer": "on the shelf",
            "task": "openqa",
            "video": "v.mp4",
        }
    )
    cases = [(closed, _clip(4)), (opened, _clip(5))]
    items = [(s, build_messages(s, fmt="direct", visual="video"), c) for s, c in cases]
    letters = likelihood_batch(model, processor, items)
    assert closed_answer_of(model) == "letter"
    model.config.ego3s_closed_answer = "text"
    try:
        assert closed_answer_of(model) == "text"
        got = likelihood_batch(model, processor, items)
    finally:
        del model.config.ego3s_closed_answer
    seq = torch.tensor([_hand(model, processor, closed, cases[0][1], answer=o)[0] for o in closed.options])
    want = float(torch.softmax(seq, -1)[1])
    assert got[0] == pytest.approx(want, rel=1e-5, abs=0)
    assert abs(letters[0] - want) > 1e-3  # the letter reading scores otherwise
    assert got[1] == pytest.approx(letters[1], rel=1e-6)  # open questions: unchanged
