"""Prompts: one sample -> chat `messages` in the transformers chat-template format.

Two formats:
- `reasoning`: the RL format. The model thinks inside `<think>...</think>` and answers inside
  `<answer>...</answer>`; for closed QA the answer is the option letter.
- `direct`: answer at once (a letter for closed QA, a short phrase for open QA); what the
  likelihood scorer and most benchmarks use.

The visual entry (`{"type": "video"}` or `{"type": "image"}`) comes first in the user turn, as in
Qwen's own examples; `visual=None` leaves it out (the blind view that removes the video). The
frames themselves are not in the messages: `ego3s.models.inputs.encode` takes them beside it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from ego3s.data.schema import LETTERS, Sample

PromptFormat = Literal["direct", "reasoning"]  # the answer alone, or <think>...</think> then the answer
FORMATS = get_args(PromptFormat)
VISUALS = ("video", "image", None)

REASONING_CLOSED = (
    "Think about the question step by step inside <think> </think> tags, then give the letter of the "
    "correct option inside <answer> </answer> tags, for example <think>...</think><answer>A</answer>."
)
REASONING_OPEN = (
    "Think about the question step by step inside <think> </think> tags, then give a short answer "
    "inside <answer> </answer> tags, for example <think>...</think><answer>a red cup</answer>."
)
DIRECT_CLOSED = "Answer with the option's letter from the given choices directly."
DIRECT_OPEN = "Answer the question using a single word or phrase."


def format_options(options: list[str]) -> str:
    """`["a cup", "a knife"]` -> `"A. a cup\\nB. a knife"`."""
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def option_letters(sample: Sample) -> list[str]:
    """The letters of a closed-QA sample's options (`["A", "B", ...]`); empty for open QA."""
    return list(LETTERS[: len(sample.options)]) if sample.task == "closeqa" and sample.options else []


def question_text(sample: Sample, *, fmt: str = "reasoning") -> str:
    """The user's text: question, lettered options (closed QA), then the format instruction."""
    if fmt not in FORMATS:
        raise ValueError(f"sample {sample.id!r}: fmt must be one of {FORMATS}, got {fmt!r}")
    q = sample.question.strip()
    if sample.task == "closeqa":
        body = f"{q}\nOptions:\n{format_options(sample.options or [])}"
        rule = REASONING_CLOSED if fmt == "reasoning" else DIRECT_CLOSED
    else:
        body = q
        rule = REASONING_OPEN if fmt == "reasoning" else DIRECT_OPEN
    return f"{body}\n{rule}"


ClosedAnswer = Literal["letter", "text", "letter_text"]
CLOSED_ANSWERS = get_args(ClosedAnswer)


def target_text(sample: Sample, *, fmt: str = "direct", closed_answer: str = "letter") -> str:
    """What a perfect completion contains as its answer: for closed QA the gold letter
    (`closed_answer="letter"`), the gold option's text ("text") or both ("letter_text": "B. mug"),
    every one of which `ego3s.answers.extract_letter` reads as the gold option; for open QA the
    reference answer. Wrapped in `<answer>` tags for the reasoning format."""
    if closed_answer not in CLOSED_ANSWERS:
        raise ValueError(f"sample {sample.id!r}: closed_answer must be one of {CLOSED_ANSWERS}, got {closed_answer!r}")
    gold = sample.answer.strip()
    if sample.task == "closeqa" and closed_answer != "letter":
        text = sample.answer_text.strip()
        gold = text if closed_answer == "text" else f"{gold}. {text}"
    return f"<answer>{gold}</answer>" if fmt == "reasoning" else gold


def build_messages(
    sample: Sample, *, fmt: str = "reasoning", visual: str | None = "auto", system: str | None = None
) -> list[dict[str, Any]]:
    """Chat messages for one sample.

    `visual`: "video", "image", None (no visual entry: the blind view without a clip), or "auto"
    (video when the sample has one, else image when it has one, else none). `system`: an
    optional system prompt; without one, the chat template's default system turn is used.
    """
    if visual == "auto":
        visual = "video" if sample.video is not None else "image" if sample.image is not None else None
    if visual not in VISUALS:
        raise ValueError(f"sample {sample.id!r}: visual must be one of {VISUALS} or 'auto', got {visual!r}")
    content: list[dict[str, Any]] = [{"type": visual}] if visual else []
    content.append({"type": "text", "text": question_text(sample, fmt=fmt)})
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": content})
    return messages
