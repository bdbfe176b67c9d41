"""The LLM judge (ego3s.judge) against a real OpenAI-compatible HTTP server on 127.0.0.1
(tests/fixtures/judge_server.py): parsing, retries, timeouts, caching, concurrency, a real model."""

import time

import pytest
from judge_server import ByteLM, JudgeServer, TinyQwenLM

from ego3s.files import read_log
from ego3s.judge import (
    EGOTEXTVQA,
    EGOTHINK,
    RUBRICS,
    Judge,
    JudgeError,
    JudgeItem,
    JudgeParseError,
    parse_egotextvqa,
    parse_egothink,
    request_key,
)

ITEMS = [
    JudgeItem("q1", "What special offer is advertised here?", "gas sale", "gas sale"),
    JudgeItem("q2", "Where is the book titled fables?", "on the shelf", "the shelf by the door"),
    JudgeItem("q3", "What is the speed limit?", "30 mph", "45"),
]
EXPECT = {
    "egotextvqa": [{"pred": "yes", "score": 5}, {"pred": "yes", "score": 3}, {"pred": "no", "score": 1}],
    "egothink": [1.0, 0.5, 0.0],
}


@pytest.fixture(scope="module")
def server():
    with JudgeServer() as srv:
        yield srv


@pytest.fixture()
def srv(server):
    server.reset_counts()
    return server


def judge(srv, model, **kw):
    kw = {
        "api_key": "test",
        "timeout": 5.0,
        "max_retries": 3,
        "parse_retries": 2,
        "backoff": 0.01,
        "max_backoff": 0.05,
        **kw,
    }
    return Judge(model, base_url=srv.base_url, **kw)


# ----------------------------------------------------------------------------------------------
# Strict parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{'pred': 'yes', 'score': 5}", {"pred": "yes", "score": 5}),
        ("{'pred': 'no', 'score': 0}", {"pred": "no", "score": 0}),
        ('{"pred": "yes", "score": 4}', {"pred": "yes", "score": 4}),
        ("  {'score': 2, 'pred': 'No'}\n", {"pred": "no", "score": 2}),
        ("```python\n{'pred': 'yes', 'score': 3}\n```", {"pred": "yes", "score": 3}),
        ("```\n{'pred': 'no', 'score': 1}\n```", {"pred": "no", "score": 1}),
    ],
)
def test_parse_egotextvqa_good(text, expected):
    assert parse_egotextvqa(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yes",
        "{'pred': 'yes'}",
        "{'score': 4}",
        "{'pred': 'maybe', 'score': 3}",
        "{'pred': 'yes', 'score': '4'}",
        "{'pred': 'yes', 'score': 4.5}",
        "{'pred': 'yes', 'score': 4.0}",
        "{'pred': 'yes', 'score': 6}",
        "{'pred': 'yes', 'score': -1}",
        "{'pred': 'yes', 'score': True}",
        "{'pred': 'yes', 'score': 4, 'reason': 'ok'}",
        "Sure! {'pred': 'yes', 'score': 4}",
        "{'pred': 'yes', 'score': 4} {'pred': 'no', 'score': 1}",
        "{'pred': 'yes', 'score': 4}.",
        "{pred: yes, score: 4}",
        "{'pred': 'yes', 'score': __import__('os')}",
        "[{'pred': 'yes', 'score': 4}]",
    ],
)
def test_parse_egotextvqa_bad(text):
    with pytest.raises(JudgeParseError):
        parse_egotextvqa(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Rating: [[1]]", 1.0),
        ("Rating: [[0.5]]", 0.5),
        ("[[0]]", 0.0),
        ("The answer is wrong.\nRating: [[0.0]]", 0.0),
        ("Rating: [[ 1.0 ]]", 1.0),
        ("It matches the reference [[1]]. Rating: [[1]]", 1.0),
        ("Close but vague. Rating: [0.5]", 0.5),
        ("Rating: [[0.50]]", 0.5),
    ],
)
def test_parse_egothink_good(text, expected):
    assert parse_egothink(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Rating: 1",
        "Rating: [[2]]",
        "Rating: [[0.7]]",
        "Rating: [[10]]",
        "Rating: [[-1]]",
        "Rating: [[one]]",
        "[[1]] ... on reflection [[0]]",
        "Rating: [1] or maybe [0]",
        "Rating: [[]]",
        "Rating: [[0.5.1]]",
    ],
)
def test_parse_egothink_bad(text):
    with pytest.raises(JudgeParseError):
        parse_egothink(text)


def test_rubric_messages_and_keys():
    assert set(RUBRICS) == {"egotextvqa", "egothink"}
    m = EGOTEXTVQA.messages("Q {x}?", "ref {0}", "pred }{")  # braces in the values are kept as they are
    assert m[0]["role"] == "system" and "Correct Answer: ref {0}\nPredicted Answer: pred }{\n" in m[1]["content"]
    assert "Question: Q {x}?\n" in m[1]["content"]
    assert "{'pred': 'yes', 'score': 5}" in m[1]["content"]
    m = EGOTHINK.messages("What am I doing?", "cooking", "frying eggs")
    assert "[The Start of Reference Answer]\ncooking\n[The End of Reference Answer]" in m[-1]["content"]
    assert "0, 0.5 or 1" in m[-1]["content"]
    k = request_key(m, 0.0, 512)
    assert k == request_key(m, 0.0, 512) and k != request_key(m, 0.0, 256) and k != request_key(m, 0.2, 512)


def _digest(msgs) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(msgs, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def test_judge_prompts_are_the_official_ones_verbatim():
    """SHA-256 of the messages the official code builds for these inputs, computed from the
    official sources (EgoTextVQA gpt_eval.py `annotate` at d5d7ccd, evaluated with question, answer,
    model_pred; EgoThink judge_prompts.jsonl single-math-v2 at fbafe8f, system prompt + the template's
    `format(question, ref_answer_1, answer)`)."""
    assert (
        _digest(EGOTEXTVQA.messages("What does the sign say?", "gas sale", "gas sale {x}"))
        == "fc069c7f1282fdcd38a20f9cfd74f308eaa4e71e980c01f49f1c5a73efc006f9"
    )
    assert (
        _digest(EGOTHINK.messages("What am I doing?", "cooking", "frying eggs"))
        == "615ace4becac40a223984969e378601394fd934a883a3fa57dedddb99debfb6a"
    )
    assert EGOTEXTVQA.messages("q", "a", "p")[0]["content"].startswith(
        "You are an intelligent chatbot designed for evaluating the correctness of generative outputs"
    )


def test_judge_arguments():
    with pytest.raises(ValueError):
        Judge("", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError):
        Judge("m", base_url="http://127.0.0.1:9/v1", concurrency=0)


# ----------------------------------------------------------------------------------------------
# Over HTTP


@pytest.mark.parametrize("rubric", [EGOTEXTVQA, EGOTHINK])
def test_scripted_ratings_and_cache(srv, tmp_path, rubric):
    cache = tmp_path / "cache.jsonl"
    j = judge(srv, "scripted", cache=cache)
    out = j.rate(rubric, ITEMS)
    assert [o.rating for o in out] == EXPECT[rubric.name]
    assert [o.id for o in out] == ["q1", "q2", "q3"] and all(o.attempts == 1 and not o.cached for o in out)
    assert srv.count == 3 and srv.by_model["scripted"] == 3
    log = read_log(cache)
    assert len(log) == 3 and {r["model"] for r in log} == {"scripted"} and {r["rubric"] for r in log} == {rubric.name}
    assert sorted(map(str, (r["rating"] for r in log))) == sorted(map(str, EXPECT[rubric.name]))
    # A second run, by a new judge reading the same cache: no HTTP request at all.
    srv.reset_counts()
    j2 = judge(srv, "scripted", cache=cache)
    again = j2.rate(rubric, ITEMS)
    assert srv.count == 0
    assert [o.rating for o in again] == EXPECT[rubric.name] and all(o.cached and o.attempts == 0 for o in again)
    assert j2.stats["cache_hits"] == 3 and j2.stats["requests"] == 0
    assert len(read_log(cache)) == 3  # nothing appended
    # The cache is keyed by the judge model: another model asks again.
    judge(srv, "sleepy", cache=cache).rate(rubric, ITEMS[:1])
    assert srv.count == 1 and len(read_log(cache)) == 4


def test_cache_survives_a_torn_last_line(srv, tmp_path):
    cache = tmp_path / "cache.jsonl"
    judge(srv, "scripted", cache=cache).rate(EGOTHINK, ITEMS)
    with open(cache, "a") as f:
        f.write('{"model": "scripted", "key": "abc", "ra')  # a crash mid-write
    srv.reset_counts()
    out = judge(srv, "scripted", cache=cache).rate(EGOTHINK, ITEMS)
    assert srv.count == 0 and [o.rating for o in out] == EXPECT["egothink"]


def test_retries_on_500(srv):
    j = judge(srv, "flaky-500")
    out = j.rate(EGOTEXTVQA, ITEMS)
    assert [o.rating for o in out] == EXPECT["egotextvqa"]
    assert [o.attempts for o in out] == [3, 3, 3] and srv.count == 9
    assert j.stats["retries"] == 6 and j.stats["failed"] == 0


def test_500_past_the_retry_budget_fails(srv):
    out = judge(srv, "flaky-500", max_retries=1).rate(EGOTHINK, ITEMS[:2])
    assert [o.rating for o in out] == [None, None]
    assert all(o.attempts == 2 and "HTTP 500" in o.error for o in out) and srv.count == 4


@pytest.mark.parametrize("model", ["rate-limit-once", "drop-once"])
def test_retries_on_429_and_dropped_connections(srv, model):
    out = judge(srv, model).rate(EGOTHINK, ITEMS)
    assert [o.rating for o in out] == EXPECT["egothink"] and [o.attempts for o in out] == [2, 2, 2]
    assert srv.count == 6


def test_timeouts_are_retried_then_fail(srv, tmp_path):
    cache = tmp_path / "cache.jsonl"
    t = time.monotonic()
    j = judge(srv, "slow", timeout=0.25, max_retries=1, cache=cache)
    out = j.rate(EGOTHINK, ITEMS[:2])
    elapsed = time.monotonic() - t
    assert [o.rating for o in out] == [None, None]
    assert all(o.attempts == 2 and "timed out" in o.error for o in out)
    assert j.stats["failed"] == 2 and j.stats["requests"] == 4
    assert elapsed < 3.0  # 2 parallel items x 2 tries x 0.25 s, not the server's 1 s per request
    assert read_log(cache) == []  # failures are not cached


def test_unparseable_replies_are_asked_again_then_fail(srv, tmp_path):
    cache = tmp_path / "cache.jsonl"
    j = judge(srv, "garbage", parse_retries=2, cache=cache)
    out = j.rate(EGOTEXTVQA, ITEMS)
    assert all(o.rating is None and o.attempts == 3 and o.error.startswith("unparseable") for o in out)
    assert out[0].raw == "I think the answer is quite good, maybe."
    assert srv.count == 9 and j.stats["parse_failures"] == 9 and j.stats["failed"] == 3
    assert read_log(cache) == []
    out = judge(srv, "empty", parse_retries=0).rate(EGOTHINK, ITEMS[:1])
    assert out[0].rating is None and out[0].attempts == 1


def test_client_errors_are_not_retried(srv):
    out = judge(srv, "bad-request").rate(EGOTHINK, ITEMS)
    assert all(o.rating is None and o.attempts == 1 and "HTTP 400" in o.error for o in out)
    assert srv.count == 3


def test_auth_errors_abort_the_run(srv):
    with pytest.raises(JudgeError, match="401"):
        judge(srv, "unauthorized").rate(EGOTHINK, ITEMS)


def test_unreachable_endpoint_fails_each_item():
    j = Judge("scripted", base_url="http://127.0.0.1:9/v1", api_key="x", timeout=1.0, max_retries=1, backoff=0.01)
    out = j.rate(EGOTHINK, ITEMS[:1])
    assert out[0].rating is None and out[0].attempts == 2 and "connection" in out[0].error


def test_concurrency(srv):
    items = [JudgeItem(f"c{i}", "q", f"answer {i}", f"answer {i}") for i in range(8)]
    t = time.monotonic()
    out = judge(srv, "sleepy", concurrency=8).rate(EGOTHINK, items)
    parallel = time.monotonic() - t
    assert [o.rating for o in out] == [1.0] * 8 and [o.id for o in out] == [it.id for it in items]
    assert srv.max_in_flight["sleepy"] >= 4 and parallel < 8 * 0.3 * 0.6
    srv.reset_counts()
    judge(srv, "sleepy", concurrency=1).rate(EGOTHINK, items[:3])
    assert srv.max_in_flight["sleepy"] == 1


def test_identical_prompts_share_one_request(srv):
    items = [JudgeItem("a", "q", "cup", "cup"), JudgeItem("b", "q", "cup", "cup"), JudgeItem("c", "q", "cup", "mug")]
    out = judge(srv, "scripted").rate(EGOTHINK, items)
    assert [o.id for o in out] == ["a", "b", "c"] and [o.rating for o in out] == [1.0, 1.0, 0.0]
    assert srv.count == 2 and [o.attempts for o in out] == [1, 0, 1]


def test_progress_callback(srv):
    seen = []
    judge(srv, "scripted").rate(EGOTHINK, ITEMS, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)


# ----------------------------------------------------------------------------------------------
# A real model behind the endpoint


@pytest.fixture(scope="module")
def lm_server(tmp_path_factory):
    try:
        from ego3s.models.tiny import build_tiny

        lm = TinyQwenLM(build_tiny(tmp_path_factory.mktemp("tiny_judge")))
    except Exception:  # the tiny Qwen builder is unavailable: a byte-level Llama built from a config
        lm = ByteLM()
    with JudgeServer(lm=lm) as srv:
        yield srv


@pytest.mark.slow
def test_real_model_generates_replies(lm_server, tmp_path):
    lm_server.reset_counts()
    j = judge(lm_server, "tiny", parse_retries=0, cache=tmp_path / "c.jsonl")
    out = j.rate(EGOTHINK, ITEMS)
    assert lm_server.count == 3
    for o in out:  # a random model's free text: a reply arrives; it rarely parses, and failures are counted
        assert isinstance(o.raw, str) and o.attempts == 1
        assert o.rating is None or o.rating in (0.0, 0.5, 1.0)
    assert j.stats["failed"] == sum(o.rating is None for o in out)
    assert len(read_log(tmp_path / "c.jsonl")) == 3 - j.stats["failed"]


@pytest.mark.slow
def test_real_model_choices_parse_and_are_deterministic(lm_server, tmp_path):
    lm_server.reset_counts()
    first = judge(lm_server, "tiny-choice").rate(EGOTEXTVQA, ITEMS)
    second = judge(lm_server, "tiny-choice").rate(EGOTEXTVQA, ITEMS)
    assert all(
        o.rating is not None and o.rating["pred"] in ("yes", "no") and 0 <= o.rating["score"] <= 5 for o in first
    )
    assert [o.rating for o in first] == [o.rating for o in second] and lm_server.count == 6
    out = judge(lm_server, "tiny-choice", cache=tmp_path / "c.jsonl").rate(EGOTHINK, ITEMS)
    assert all(o.rating in (0.0, 0.5, 1.0) for o in out)
    lm_server.reset_counts()
    judge(lm_server, "tiny-choice", cache=tmp_path / "c.jsonl").rate(EGOTHINK, ITEMS)
    assert lm_server.count == 0
