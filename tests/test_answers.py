"""Answer extraction and open-answer metrics (ego3s.answers)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ego3s.answers import (
    exact_match,
    extract_answer,
    extract_letter,
    extract_think,
    format_ok,
    normalize_text,
    rouge_l_f,
)

OPTS = ["red cup", "blue cup", "green bowl", "knife"]
# EgoSchema style: 5 options, "C" is the camera wearer inside the option texts.
EGO = [
    "C picks up the knife and cuts onions",
    "C washes the dishes",
    "C opens the fridge",
    "C talks to a man",
    "C wipes the table",
]

LETTER_CASES = [
    # plain forms
    ("B", OPTS, "B"),
    ("(B)", OPTS, "B"),
    ("B.", OPTS, "B"),
    ("B)", OPTS, "B"),
    ("[B]", OPTS, "B"),
    ("**B**", OPTS, "B"),
    ("Option B", OPTS, "B"),
    ("The answer is B", OPTS, "B"),
    ("answer: (b)", OPTS, "B"),
    ("Final answer: D", OPTS, "D"),
    ("b", OPTS, "B"),
    ("  c  \n", OPTS, "C"),
    ("\\boxed{C}", OPTS, "C"),
    ("answer is: **C**", OPTS, "C"),
    ("（Ｂ）", OPTS, "B"),  # full-width brackets and letter
    # letter followed by its text
    ("B. the blue cup", OPTS, "B"),
    ("(D) knife", OPTS, "D"),
    ("My answer: D) knife", OPTS, "D"),
    ("<answer>Option C: green bowl</answer>", OPTS, "C"),
    ("B blue cup", OPTS, "B"),
    # option text instead of the letter
    ("the blue cup", OPTS, "B"),
    ("The Blue Cup.", OPTS, "B"),
    ("<answer>the green bowls</answer>", OPTS, "C"),  # near-exact
    ("<answer>I think it's the green bowl</answer>", OPTS, "C"),  # contained, unique
    ("cup", OPTS, None),  # contained in two options: not unique
    ("C washes the dishes", EGO, "B"),  # EgoSchema: the text, not the "C" in it
    ("The answer is C washes the dishes.", EGO, "B"),
    ("<answer>B. C washes the dishes</answer>", EGO, "B"),
    ("C picks up the knife first. So E.", EGO, "E"),  # "C" is the person; E is the choice
    # tags
    ("<think>A cup is on the table and the hand reaches</think><answer>C</answer>", OPTS, "C"),
    ("<think>maybe A, maybe B</think>\n<answer> D </answer>", OPTS, "D"),
    ("<answer> B </answer> wait, no <answer>C</answer>", OPTS, "C"),  # last tag
    ("<ANSWER>d", OPTS, "D"),  # case, missing closing tag
    ("<think>reasoning</think>The answer is A.", OPTS, "A"),  # after </think>, no answer tag
    ("<answer></answer>", OPTS, None),
    # "A" the article, "I" the pronoun
    ("A cup is near the sink, so the answer is D.", OPTS, "D"),
    ("The answer is A cup", OPTS, None),
    ("A is correct", OPTS, "A"),
    ("It is A.", OPTS, "A"),
    ("I would pick C", OPTS, "C"),
    ("I think B", OPTS, "B"),
    ("I'd say C.", OPTS, "C"),
    ("Answer: A cup is being held", OPTS, None),
    ("The answer is a red cup", OPTS, "A"),  # via the option text "red cup", not the article
    ("I'm not sure", None, None),
    ("e.g. the cup", EGO, None),
    # several letters
    ("The answer is A or B", OPTS, None),
    ("B and C", OPTS, None),
    ("Both (A) and (C) fit", OPTS, None),
    ("A B C D", OPTS, None),
    ("<think>Option A shows a bowl, option B shows a cup</think>", OPTS, None),
    ("Option A is wrong; option B shows the hand. The correct option is B.", OPTS, "B"),
    ("A and B are plausible but the answer is B", OPTS, "B"),
    ("B is incorrect, C is correct", OPTS, "C"),
    ("The answer is B, not C", OPTS, "B"),
    ("I think the answer is B because the hand holds it.", OPTS, "B"),
    ("I choose option A", OPTS, "A"),
    # out of range, nothing
    ("The answer is F", EGO, None),
    ("E", OPTS, None),  # 4 options
    ("Neither; none of the options", OPTS, None),
    ("", OPTS, None),
    (None, OPTS, None),
    # Chinese
    ("答案是B", OPTS, "B"),
    ("答案：C。", OPTS, "C"),
    ("选项C", OPTS, "C"),
]


@pytest.mark.parametrize("text,options,expected", LETTER_CASES)
def test_extract_letter_table(text, options, expected):
    assert extract_letter(text, options) == expected


def test_letter_table_is_large():
    assert len(LETTER_CASES) >= 30


def test_n_options_bounds_letters():
    assert extract_letter("The answer is E", None, n_options=5) == "E"
    assert extract_letter("The answer is E", None, n_options=4) is None
    assert extract_letter("The answer is H") == "H"  # default A..J


def test_options_with_letters_are_tolerated():
    opts = ["A. red cup", "B. blue cup", "C. bowl"]
    assert extract_letter("blue cup", opts) == "B"


def test_conversational_completion():
    assert extract_letter([{"role": "assistant", "content": "<answer>(C)</answer>"}], OPTS) == "C"


def test_extract_answer():
    assert extract_answer("<think>x</think>\n<answer>  B </answer>") == "B"
    assert extract_answer("<think>x</think> the cup ") == "the cup"
    assert extract_answer("<Answer >B") == "B"
    assert extract_answer("<answer>B</answer><answer>C</answer>") == "C"
    assert extract_answer("the hand </think> B</answer>") == "B"
    assert extract_answer("plain text") == "plain text"
    assert extract_answer("<answer>B<|im_end|>") == "B"
    assert extract_answer("<answer></answer>") is None
    assert extract_answer(None) is None and extract_answer("   ") is None


def test_extract_think():
    assert extract_think("<think> I see a cup </think><answer>B</answer>") == "I see a cup"
    assert extract_think("no tags") == ""
    assert extract_think("<think>unclosed <answer>B</answer>") == "unclosed"
    assert extract_think("<think>a</think><think>b</think>") == "a\nb"


@pytest.mark.parametrize(
    "text,ok",
    [
        ("<think>r</think><answer>B</answer>", True),
        (" <think>r\n</think>\n<answer>B</answer>\n", True),
        ("<think></think><answer></answer>", True),
        ("<think>r</think><answer>B</answer>x", False),
        ("x<think>r</think><answer>B</answer>", False),
        ("<think>r</think><think>r</think><answer>B</answer>", False),
        ("<think>r</think><answer>B</answer><answer>C</answer>", False),
        ("<answer>B</answer>", False),
        ("<answer>B</answer><think>r</think>", False),
        ("<think>r<answer>x</answer></think><answer>B</answer>", False),
        ("<think>r</think><answer>B", False),
        ("<THINK>r</THINK><ANSWER>B</ANSWER>", False),
        ("", False),
        (None, False),
    ],
)
def test_format_ok(text, ok):
    assert format_ok(text) is ok


def test_normalize_and_exact_match():
    assert normalize_text("The cutting-board's edge!") == "cutting boards edge"
    assert normalize_text("  A  Red\tCUP. ") == "red cup"
    assert exact_match("The red cup.", "red cup") == 1.0
    assert exact_match("red cups", "red cup") == 0.0
    assert exact_match("", "") == 0.0


def test_rouge_l_hand_computed():
    # stemmed tokens: pred [a, red, cup, on, the, tabl], ref [the, red, cup]; LCS = 2 (red cup)
    # P = 2/6, R = 2/3, F = 2PR/(P+R) = 4/9
    assert rouge_l_f("a red cup on the table", "the red cup") == pytest.approx(4 / 9)
    assert rouge_l_f("the red cup", "the red cup") == 1.0
    assert rouge_l_f("Cups!", "cup") == 1.0  # stemming and punctuation
    assert rouge_l_f("", "cup") == 0.0 and rouge_l_f("cup", None) == 0.0
    assert rouge_l_f("杯子在桌上", "杯子") > 0  # CJK is not dropped


def test_rouge_matches_rouge_score_on_ascii():
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [
        ("the person is washing the dishes in the sink", "washing dishes"),
        ("he put the knife back into the drawer", "into the drawer, the knife"),
        ("It's on the counter-top near the stove.", "counter top by the stove"),
    ]
    for p, r in pairs:
        assert rouge_l_f(p, r) == pytest.approx(ref.score(r, p)["rougeL"].fmeasure)


def test_rouge_long_input_is_bounded():
    long = "cup " * 50_000
    assert 0.0 < rouge_l_f(long, "cup") < 0.01


_ascii_words = st.lists(
    st.sampled_from(
        ["the", "cup", "cups", "running", "ran", "knife", "A", "on", "table", "it's", "co-op", "42", "!", "."]
    ),
    max_size=12,
).map(" ".join)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(_ascii_words, _ascii_words)
def test_fuzz_rouge_agrees_with_rouge_score(p, r):
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert rouge_l_f(p, r) == pytest.approx(ref.score(r, p)["rougeL"].fmeasure)


_junk = st.one_of(
    st.none(),
    st.text(max_size=300),
    st.binary(max_size=100),
    st.text(alphabet=st.sampled_from(list("<>/answerthink ABCDabcd()[]*.:答案是\n\udcff")), max_size=200),
    st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text(max_size=100)}), max_size=2),
)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    _junk, st.one_of(st.none(), st.lists(st.text(max_size=20), max_size=6)), st.one_of(st.none(), st.integers(-3, 20))
)
def test_fuzz_never_raises(text, options, n_options):
    letter = extract_letter(text, options, n_options)
    assert letter is None or (len(letter) == 1 and letter in "ABCDEFGHIJ")
    a = extract_answer(text)
    assert a is None or isinstance(a, str)
    assert isinstance(extract_think(text), str)
    assert isinstance(format_ok(text), bool)
    f = rouge_l_f(text, "the red cup")
    assert 0.0 <= f <= 1.0
    assert exact_match(text, "cup") in (0.0, 1.0)
