"""Fuzzing (hypothesis, derandomized) of the parsers and numbers that long runs depend on: the
judge-rating parsers, answer extraction against the option count, rewards under any reward
configuration and embedder, the CSM filters and the curriculum monitor with non-finite inputs.
tests/test_answers.py and tests/test_rewards.py fuzz extraction and rewards on odd completions;
this file adds what they leave out. Property: no exception other than the documented one,
outputs in range, and a non-finite input never passes as a number."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ego3s.answers import extract_letter
from ego3s.judge import JudgeParseError, parse_egotextvqa, parse_egothink
from ego3s.rewards import RewardConfig, compute_rewards
from ego3s.select.csm import CSMThresholds, apply_filters, funnel

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
_floats = st.floats(allow_nan=True, allow_infinity=True)


# ---------------------------------------------------------------------------------------- judge
_value = st.one_of(
    st.integers(-10, 10),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.sampled_from(["yes", "No", " YES ", "maybe", "5", "'yes'"]),
    st.lists(st.integers(), max_size=2),
)
_dict_reply = st.builds(
    lambda d, fence, quote: (
        ("```python\n" if fence else "") + (json.dumps(d) if quote else repr(d)) + ("\n```" if fence else "")
    ),
    st.dictionaries(st.sampled_from(["pred", "score", "Pred", "extra"]), _value, max_size=3),
    st.booleans(),
    st.booleans(),
)
_egotextvqa_reply = st.one_of(
    st.text(max_size=200),
    _dict_reply,
    st.text(alphabet=st.sampled_from(list("{}'\":,pred score yesno0123456789[]()\\`\n")), max_size=80),
)
_rating = st.one_of(
    st.sampled_from(["0", "0.5", "1", "1.0", "2", "0.25", "٣", "1e1", "", " 1 ", "-1", "nan"]), st.text(max_size=5)
)
_egothink_reply = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda pre, r, post, n, single: pre + (f"[{r}]" if single else f"[[{r}]]") * n + post,
        st.text(max_size=40),
        _rating,
        st.text(max_size=40),
        st.integers(0, 3),
        st.booleans(),
    ),
    st.text(alphabet=st.sampled_from(list("[]0.51 Rating:\n")), max_size=60),
)


@FUZZ
@given(st.one_of(_egotextvqa_reply, st.none(), st.integers(), st.binary(max_size=20)))
def test_fuzz_parse_egotextvqa(text):
    try:
        d = parse_egotextvqa(text)
    except JudgeParseError:
        return
    assert set(d) == {"pred", "score"} and d["pred"] in ("yes", "no")
    assert type(d["score"]) is int and 0 <= d["score"] <= 5


@FUZZ
@given(st.one_of(_egothink_reply, st.none(), st.integers(), st.binary(max_size=20)))
def test_fuzz_parse_egothink(text):
    try:
        v = parse_egothink(text)
    except JudgeParseError:
        return
    assert v in (0.0, 0.5, 1.0) and isinstance(v, float)


def test_parsers_reject_deep_nesting_and_huge_numbers():
    for text in (
        "{" + "[" * 5000 + "]" * 5000 + "}",
        "{'pred': 'yes', 'score': " + "9" * 5000 + "}",
        "{'pred': 'yes', 'score': 5, 'score': 6, " + "'x': 1, " * 1000 + "}",
    ):
        with pytest.raises(JudgeParseError):
            parse_egotextvqa(text)
    with pytest.raises(JudgeParseError):
        parse_egothink("[[" + "1" * 5000 + "]]")


# ---------------------------------------------------------------------------------------- answers
@FUZZ
@given(
    st.text(max_size=200),
    st.lists(st.text(max_size=15), min_size=0, max_size=12),
    st.one_of(st.none(), st.integers(-3, 20)),
)
def test_fuzz_extracted_letter_names_an_existing_option(text, options, n_options):
    letter = extract_letter(text, options, n_options)
    if letter is None:
        return
    limit = 10
    if options:
        limit = min(limit, len(options))
    if n_options is not None and n_options > 0:
        limit = min(limit, n_options)
    assert letter in "ABCDEFGHIJ"[:limit], (text, options, n_options, letter)


# ---------------------------------------------------------------------------------------- rewards
class _Embedder:
    """Returns whatever vectors hypothesis gives it, NaN and infinities included."""

    def __init__(self, values):
        self.values = values

    def encode(self, texts, **kw):
        import numpy as np

        return np.array([self.values for _ in texts], dtype=np.float64)


@FUZZ
@given(
    st.floats(0, 10),
    st.integers(1, 20),
    st.floats(-5, 5),
    st.sampled_from(["rouge_l", "similarity"]),
    st.lists(_floats, min_size=3, max_size=3),
    st.lists(st.text(alphabet=st.sampled_from(list("<>/thinkanswer cupmugB \n")), max_size=80), min_size=1, max_size=3),
)
def test_fuzz_rewards_under_any_config(alpha, N, H, metric, vec, comps):
    cfg = RewardConfig(alpha=alpha, N=N, H=H, open_metric=metric, embedder=_Embedder(vec), vocabulary=["cup", "mug"])
    inter = json.dumps({"objects": [{"name": "cup", "synonyms": ["mug"]}]})
    n = len(comps)
    for cols in (
        {"task": ["openqa"] * n, "answer": ["a red cup"] * n, "interaction": [inter] * n},
        {
            "task": ["closeqa"] * n,
            "answer": ["B"] * n,
            "options": [json.dumps(["knife", "cup"])] * n,
            "interaction": [inter] * n,
        },
    ):
        out = compute_rewards(comps, cols, cfg)
        for i in range(n):
            a, f, r = out["accuracy"][i], out["format"][i], out["interaction"][i]
            assert all(math.isfinite(v) for v in (a, f, r, out["total"][i]))
            assert 0 <= a <= 1 and f in (0.0, 1.0) and -alpha <= r <= 1


# ---------------------------------------------------------------------------------------- CSM and ECR
@FUZZ
@given(
    st.lists(st.tuples(_floats, _floats, _floats, st.one_of(st.none(), _floats)), min_size=1, max_size=8),
    st.floats(-2, 1, exclude_max=True),
    st.floats(-10, 1),
    st.floats(-2, 1),
)  # every threshold CSMThresholds takes
def test_fuzz_csm_filters_never_keep_an_impossible_score(rows, lc, lf, lo):
    table = [
        {"id": str(i), "s_full": a, "s_blind": b, "s_context": c, "relevance": rel}
        for i, (a, b, c, rel) in enumerate(rows)
    ]
    out = apply_filters(table, CSMThresholds(lambda_c=lc, lambda_f=lf, lambda_o=lo))
    for r in out:
        valid = all(0.0 <= r[k] <= 1.0 for k in ("s_full", "s_blind", "s_context"))  # False for NaN
        assert r["invalid"] is (not valid)
        if r["kept"]:
            assert valid and r["relevance"] is not None and math.isfinite(r["relevance"])
            assert math.isfinite(r["coarse"]) and math.isfinite(r["fine"])
    f = funnel(out)
    assert f["scored"] == len(rows) and f["kept"] == sum(r["kept"] for r in out)
    assert f["invalid"] + f["after_coarse"] + f["failed_coarse"] == len(rows)


@FUZZ
@given(
    st.lists(st.lists(st.one_of(st.none(), _floats), min_size=2, max_size=2), min_size=1, max_size=6), st.integers(1, 3)
)
def test_fuzz_curriculum_variance_is_finite(groups, interval):
    from ego3s.curriculum.ecr import Curriculum
    from ego3s.curriculum.monitor import ECRConfig

    ids = [f"s{i}" for i in range(len(groups))]
    cur = Curriculum(ECRConfig(monitoring_interval=interval), ids, ids)
    for step in range(3):
        recs = [{"sample_id": i, "rewards": {"total": g, "accuracy": g}} for i, g in zip(ids, groups)]
        d = cur.observe_step(step, recs)
        if d is not None:
            assert math.isfinite(d["window_mean"]) and d["window_mean"] >= 0
            assert d["ratio"] >= 0 and not math.isnan(d["ratio"])
    for _, v in cur.monitor["step_variance"]:
        assert math.isfinite(v) and v >= 0
    bad = sum(not all(x is not None and math.isfinite(x) for x in g) for g in groups)
    assert cur.monitor.get("non_finite_groups", 0) == 3 * bad
