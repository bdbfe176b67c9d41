"""LLM judge through any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, llama.cpp server, ...).

    judge = Judge("gpt-4o-mini", base_url="http://127.0.0.1:8000/v1", api_key="...",
                  cache="runs/judge_cache.jsonl", concurrency=8)
    results = judge.rate(EGOTHINK, [JudgeItem(id, question, reference, prediction), ...])
    # -> [Judgement(id, rating=0.5, ...), Judgement(id, rating=None, error="...")]

- Rubrics (`EGOTEXTVQA`, `EGOTHINK`) are the benchmarks' official judge prompts, verbatim (the
  source repository, file and commit beside each), each with a strict parser of its rating format
  (see docs/evaluation.md).
- Transport failures (timeouts, connection errors, HTTP 429 and 5xx) are retried with exponential
  backoff; an unparseable rating is asked for again (`parse_retries`); what still fails is a
  `Judgement` with `rating=None` and the error, which scorers count as `judge_failed` (EgoTextVQA
  grades it no / 0, as its official script; EgoThink leaves it out, as its official script). Errors that would fail every request (HTTP 401, 403, 404) raise `JudgeError`.
- Judgements are cached on disk in an append-only JSONL keyed by (judge model, hash of the
  request: messages, temperature, max tokens); a second run over the same items makes no request.
  Only parsed judgements are cached; the cache is read once when the judge is made, and only the
  thread that collects results writes it.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ego3s.files import append_jsonl, read_log

__all__ = [
    "Judge",
    "JudgeItem",
    "Judgement",
    "Rubric",
    "JudgeError",
    "JudgeParseError",
    "EGOTEXTVQA",
    "EGOTHINK",
    "RUBRICS",
    "parse_egotextvqa",
    "parse_egothink",
    "request_key",
]

log = logging.getLogger(__name__)


class JudgeError(RuntimeError):
    """The judge endpoint refuses every request (bad key, unknown model, wrong URL)."""


class JudgeParseError(ValueError):
    """A judge reply that is not a rating in the rubric's format."""


# ----------------------------------------------------------------------------------------------
# Rubrics


@dataclass(frozen=True)
class Rubric:
    """A grading prompt and the strict parser of its rating."""

    name: str
    version: str
    system: str | None
    template: str  # the user prompt; `{field}` placeholders named by `fields`, other braces literal
    parse: Callable[[str], Any]
    fields: tuple[str, str, str] = ("question", "reference", "prediction")  # placeholder names, in this order
    max_tokens: int = 256

    def messages(self, question: str, reference: str, prediction: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        values = dict(zip(self.fields, (question, reference, prediction)))
        pattern = re.compile("{(" + "|".join(re.escape(f) for f in self.fields) + ")}")
        # one pass: a value that itself contains "{answer}" is not filled again
        msgs.append({"role": "user", "content": pattern.sub(lambda m: values[m.group(1)], self.template)})
        return msgs


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)


def parse_egotextvqa(text: str) -> dict:
    """`{'pred': 'yes'|'no', 'score': 0..5}` from a reply that is exactly one Python/JSON dict
    with those two keys (whitespace and a code fence around it are allowed; nothing else).
    `pred` is matched case-insensitively; `score` must be an integer (not a string, float or bool)."""
    if not isinstance(text, str):
        raise JudgeParseError(f"reply is {type(text).__name__}, not text")
    s = text.strip()
    m = _FENCE.match(s)
    if m:
        s = m.group(1).strip()
    if not (s.startswith("{") and s.endswith("}")):
        raise JudgeParseError(f"not a single dict: {text!r:.80}")
    try:
        d = ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise JudgeParseError(f"not a Python dict literal: {text!r:.80}") from None
    if not isinstance(d, dict) or set(d) != {"pred", "score"}:
        raise JudgeParseError(f"needs exactly the keys 'pred' and 'score': {text!r:.80}")
    pred, score = d["pred"], d["score"]
    if not isinstance(pred, str) or pred.strip().lower() not in ("yes", "no"):
        raise JudgeParseError(f"'pred' must be 'yes' or 'no': {text!r:.80}")
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 5:
        raise JudgeParseError(f"'score' must be an integer 0..5: {text!r:.80}")
    return {"pred": pred.strip().lower(), "score": score}


_DOUBLE = re.compile(r"\[\[\s*([^\[\]]*?)\s*\]\]")
_SINGLE = re.compile(r"(?<!\[)\[\s*(\d+(?:\.\d+)?)\s*\](?!\])")
_RATING_VALUE = re.compile(r"\d+(?:\.\d+)?")
_EGOTHINK_VALUES = (0.0, 0.5, 1.0)


def parse_egothink(text: str) -> float:
    """0.0, 0.5 or 1.0 from a reply containing `[[rating]]` (every `[[...]]` in the reply must
    hold the same allowed value); failing that, exactly one `[rating]` (the official backup
    pattern). Any other value, or disagreeing ratings, is a parse error."""
    if not isinstance(text, str):
        raise JudgeParseError(f"reply is {type(text).__name__}, not text")
    found = _DOUBLE.findall(text)
    if not found:
        found = _SINGLE.findall(text)
        if len(found) != 1:
            raise JudgeParseError(f"no single [[rating]] in reply: {text[-120:]!r}")
    values = set()
    for v in found:
        if not _RATING_VALUE.fullmatch(v):
            raise JudgeParseError(f"rating {v!r} is not a number")
        values.add(float(v))
    if len(values) != 1:
        raise JudgeParseError(f"disagreeing ratings {sorted(values)}")
    value = values.pop()
    if value not in _EGOTHINK_VALUES:
        raise JudgeParseError(f"rating {value:g} is not 0, 0.5 or 1")
    return value


# EgoTextVQA's judge prompt, verbatim: zhousheng97/EgoTextVQA, gpt_eval.py (`annotate`), commit
# d5d7ccd05312f2806fe6d8e8b21543b4de729eae. The official f-string's fields are `question`, `answer`
# (the lowercased correct answer) and `model_pred` (the lowercased prediction); the adjacent string
# literals are kept as they are (the official prompt joins some of them without a space).
EGOTEXTVQA = Rubric(
    name="egotextvqa",
    version="official-d5d7ccd",
    system=(
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer pairs. "
        "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. Here's how you can accomplish the task:"
        "------"
        "##INSTRUCTIONS: "
        "- Focus on the meaningful match between the predicted answer and the correct answer. "
        "Please note that not only matches of noun phrases between answers, but also matches of prepositional phrases. "
        'For example, "at the car wash on your right" does not exactly match "car wash". '
        '"at the gas station beside the sign \'gas sale\'" does not exactly match "gas station".\n'
        "- Consider synonyms or paraphrases as valid matches. "
        "Note that the predicted answer must be consistent with the string type of the correct answer, which may include phone numbers, email addresses, numbers, dates, etc. "
        'For example, the string types of "www.usps.com" and "visit their website" are inconsistent, '
        'and the string types of "9849041316" and "advertiser\'s contact number" are inconsistent.\n'
        "- Evaluate the correctness of the prediction compared to the answer."
    ),
    template=(
        "Please evaluate the following video-based question-answer pair:\n\n"
        "Question: {question}\n"
        "Correct Answer: {answer}\n"
        "Predicted Answer: {model_pred}\n\n"
        "Provide your eval_code only as a yes/no and score where the score is an integer value between 0 and 5, with 5 indicating the highest meaningful match. "
        "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING. "
        "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
        "For example, your response should look like this: {'pred': 'yes', 'score': 5}, {'pred': 'no', 'score': 1}."
    ),
    parse=parse_egotextvqa,
    fields=("question", "answer", "model_pred"),
    max_tokens=64,
)

# EgoThink's judge prompt, verbatim: AdaCheng/EgoThink, judge_prompts.jsonl, entry "single-math-v2"
# (system_prompt and prompt_template; the reference-based judge `gen_judgment.py` uses), commit
# fbafe8fe4e963c8b30be62bafd5ce16f61bb0141. Fields `question`, `ref_answer_1`, `answer`.
EGOTHINK = Rubric(
    name="egothink",
    version="official-fbafe8f",
    system="You are a helpful assistant.",
    template=(
        "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an "
        "AI assistant to the user question displayed below. Your evaluation should consider correctness and "
        "helpfulness. You will be given a reference answer and the assistant's answer. Begin your evaluation by "
        "comparing the assistant's answer with the reference answer. Identify and correct any mistakes. The "
        "assistant has access to an image alongwith questions but you will not be given images. Therefore, please "
        "consider only how the answer is close to the reference answer. If the assistant's answer is not exactly "
        "same as or similar to the answer, then he must be wrong.  Be as objective as possible. Discourage "
        "uninformative answers. Also, equally treat short and long answers and focus on the correctness of "
        "answers.  After providing your explanation, you must rate the response with either 0, 0.5 or 1 by "
        'strictly following this format: "[[rating]]", for example: "Rating: [[0.5]]".\n\n[Question]\n'
        "{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
        "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
    ),
    parse=parse_egothink,
    fields=("question", "ref_answer_1", "answer"),
    max_tokens=2048,  # gen_judgment.py's max_tokens for OpenAI judges
)

RUBRICS = {r.name: r for r in (EGOTEXTVQA, EGOTHINK)}


# ----------------------------------------------------------------------------------------------
# Items and results


@dataclass
class JudgeItem:
    id: str
    question: str
    reference: str
    prediction: str


@dataclass
class Judgement:
    id: str
    rating: Any = None  # the parsed rating; None when the judgement failed
    raw: str | None = None  # the judge's last reply
    cached: bool = False
    attempts: int = 0  # HTTP requests made for this item (0 when cached)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.rating is not None


def request_key(messages: list[dict], temperature: float, max_tokens: int) -> str:
    """The hash of one judge request (the cache key beside the judge model's name)."""
    blob = json.dumps(
        {"messages": messages, "temperature": temperature, "max_tokens": max_tokens}, sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class _Abort(Exception):
    pass


# ----------------------------------------------------------------------------------------------
# The judge


class Judge:
    """An OpenAI-compatible chat endpoint used as a grader.

    `model`: the judge model's name at the endpoint. `base_url`/`api_key`: default to the
    environment (`OPENAI_BASE_URL`, `OPENAI_API_KEY`; a local server needs no real key).
    `cache`: path of the JSONL cache, or None. `concurrency`: requests in flight. `timeout`:
    seconds per request. `max_retries`: extra tries after a timeout, connection error, 429 or 5xx,
    with a delay of `backoff * 2**k` seconds (at most `max_backoff`, plus up to 10% jitter).
    `parse_retries`: extra requests after a reply that does not parse. `client`: an `openai.OpenAI`
    to use instead of making one."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        cache: str | os.PathLike | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        parse_retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        temperature: float = 0.0,
        seed: int | None = None,
        client: Any = None,
    ):
        if not isinstance(model, str) or not model:
            raise ValueError("judge model name must be a non-empty string")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if max_retries < 0 or parse_retries < 0:
            raise ValueError("max_retries and parse_retries must be >= 0")
        self.model = model
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.parse_retries = int(parse_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.temperature = float(temperature)
        self.seed = seed
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if client is None:
            import openai

            client = openai.OpenAI(
                base_url=self.base_url,
                api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                timeout=self.timeout,
                max_retries=0,
            )
        self.client = client
        self.cache_path = Path(cache) if cache is not None else None
        self._cache: dict[tuple[str, str], dict] = {}
        if self.cache_path is not None:
            for rec in read_log(self.cache_path):
                if isinstance(rec, dict) and "model" in rec and "key" in rec and "raw" in rec:
                    self._cache[(rec["model"], rec["key"])] = rec
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "parse_failures": 0, "cache_hits": 0, "failed": 0, "judged": 0}

    # -- public

    def info(self) -> dict:
        """What a result file should record about the judge."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "cache": str(self.cache_path) if self.cache_path else None,
            **self.stats,
        }

    def rate(
        self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: Callable[[int, int], None] | None = None
    ) -> list[Judgement]:
        """Judge every item (in parallel, cached); results in the order of `items`. Items whose
        prompts are identical share one request."""
        out: list[Judgement | None] = [None] * len(items)
        todo: dict[str, tuple[list[int], list[dict]]] = {}  # one request per distinct prompt
        max_tokens = rubric.max_tokens
        for i, it in enumerate(items):
            msgs = rubric.messages(it.question, it.reference, it.prediction)
            key = request_key(msgs, self.temperature, max_tokens)
            if key in todo:
                todo[key][0].append(i)
                continue
            hit = self._cache.get((self.model, key))
            if hit is not None:
                try:
                    rating = rubric.parse(hit["raw"])
                except JudgeParseError:
                    hit = None  # a stale entry the parser no longer accepts: ask again
                else:
                    out[i] = Judgement(it.id, rating, hit["raw"], cached=True)
                    self.stats["cache_hits"] += 1
            if hit is None:
                todo[key] = ([i], msgs)
        done = len(items) - sum(len(idx) for idx, _ in todo.values())
        if progress:
            progress(done, len(items))
        if todo:
            abort = threading.Event()
            with cf.ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(todo)), thread_name_prefix="judge"
            ) as pool:
                futures = {
                    pool.submit(self._judge_one, rubric, items[idx[0]], msgs, max_tokens, abort): key
                    for key, (idx, msgs) in todo.items()
                }
                try:
                    for fut in cf.as_completed(futures):
                        key = futures[fut]
                        idx = todo[key][0]
                        j = fut.result()  # JudgeError propagates
                        for n, i in enumerate(idx):
                            out[i] = j if n == 0 else dataclasses.replace(j, id=items[i].id, attempts=0)
                        if j.ok:
                            self.stats["judged"] += len(idx)
                            if self.cache_path is not None:
                                rec = {
                                    "model": self.model,
                                    "key": key,
                                    "rubric": rubric.name,
                                    "rubric_version": rubric.version,
                                    "raw": j.raw,
                                    "rating": j.rating,
                                    "time": round(time.time(), 3),
                                }
                                append_jsonl(self.cache_path, rec)
                                self._cache[(self.model, key)] = rec
                        else:
                            self.stats["failed"] += len(idx)
                        done += len(idx)
                        if progress:
                            progress(done, len(items))
                except BaseException:
                    abort.set()
                    for f in futures:
                        f.cancel()
                    raise
        return out  # type: ignore[return-value]

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if callable(close):
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- internals

    def _count(self, name: str, k: int = 1) -> None:
        with self._lock:
            self.stats[name] += k

    def _sleep(self, attempt: int, abort: threading.Event) -> None:
        delay = min(self.max_backoff, self.backoff * (2**attempt))
        delay += random.uniform(0, 0.1 * delay)
        if abort.wait(delay):
            raise _Abort()

    def _judge_one(
        self, rubric: Rubric, item: JudgeItem, msgs: list[dict], max_tokens: int, abort: threading.Event
    ) -> Judgement:
        j = Judgement(item.id)
        try:
            for _parse_try in range(self.parse_retries + 1):
                raw = self._request(msgs, max_tokens, j, abort)
                if raw is None:
                    return j  # transport failure after retries; j.error is set
                j.raw = raw
                try:
                    j.rating = rubric.parse(raw)
                    j.error = None
                    return j
                except JudgeParseError as e:
                    self._count("parse_failures")
                    j.error = f"unparseable rating: {e}"
            return j
        except _Abort:
            j.error = "aborted"
            return j

    def _request(self, msgs: list[dict], max_tokens: int, j: Judgement, abort: threading.Event) -> str | None:
        import openai

        kwargs: dict[str, Any] = dict(
            model=self.model, messages=msgs, temperature=self.temperature, max_tokens=max_tokens
        )
        if self.seed is not None:
            kwargs["seed"] = self.seed
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Abort()
            if attempt:
                self._count("retries")
            self._count("requests")
            j.attempts += 1
            try:
                resp = self.client.chat.completions.create(**kwargs)
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                raise JudgeError(
                    f"judge endpoint {self.base_url or 'default'} refused model {self.model!r}: "
                    f"HTTP {e.status_code}: {_short(e)}"
                ) from None
            except openai.APIStatusError as e:
                if e.status_code == 429 or e.status_code >= 500 or e.status_code in (408, 409):
                    j.error = f"HTTP {e.status_code}: {_short(e)}"
                else:  # 400, 422...: this request will not succeed as it is
                    j.error = f"HTTP {e.status_code}: {_short(e)}"
                    return None
            except openai.APITimeoutError:
                j.error = f"timed out after {self.timeout:g} s"
            except openai.APIConnectionError as e:
                j.error = f"connection error: {_short(e)}"
            else:
                text = _content(resp)
                if text is None:
                    j.error = "reply has no message content"
                    return ""  # parsed as a failure (and retried as one)
                return text
            if attempt < self.max_retries:
                self._sleep(attempt, abort)
        return None


def _content(resp) -> str | None:
    try:
        content = resp.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _short(e: Exception) -> str:
    s = str(e).replace("\n", " ")
    return s if len(s) <= 200 else s[:200] + "..."
