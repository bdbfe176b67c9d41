"""Benchmark loaders (real annotation files and fixtures), prompts, answer extraction and scoring
(ego3s.eval.benchmarks), and the deterministic metrics (ego3s.eval.metrics)."""

import json
import shutil
import statistics
from collections import Counter
from pathlib import Path

import pytest
from judge_server import JudgeServer

from ego3s.data.io import write_jsonl
from ego3s.data.schema import LETTERS, Sample, SampleError
from ego3s.eval import metrics as M
from ego3s.eval.benchmarks import ALIASES, BENCHMARKS, get_benchmark
from ego3s.eval.benchmarks import egothink as egothink_mod
from ego3s.judge import Judge
from helpers import FIXTURES, REPO

SHARED = REPO / "data" / "benchmarks"
FIX = FIXTURES / "eval"


def shared(sub: str) -> Path:
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"{p} not found: run `python data/benchmarks/fetch_egoschema.py` (see data/benchmarks/README.md)")
    return p


@pytest.fixture(scope="module")
def server():
    with JudgeServer() as srv:
        yield srv


def scripted_judge(server, **kw):
    return Judge("scripted", base_url=server.base_url, api_key="test", timeout=5.0, backoff=0.01, **kw)


# ----------------------------------------------------------------------------------------------
# Registry


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("QAEgo4D", "qaego4d"),
        ("QAEgo4D-close", "qaego4d-close"),
        ("qaego4d_close", "qaego4d-close"),
        ("EgoTextVQA", "egotextvqa"),
        ("EgoTextVQA-indoor", "egotextvqa-indoor"),
        ("egotextvqa_outdoor", "egotextvqa-outdoor"),
        ("EgoSchema", "egoschema"),
        ("EgoSchema-full", "egoschema"),
        ("egoschema_subset", "egoschema-subset"),
        ("EgoSchema-subset", "egoschema-subset"),
        ("egothink_forecasting", "egothink-forecasting"),
        ("EgoThink-Object-affordance", "egothink-affordance"),
        ("egothink_forecast", "egothink-forecasting"),
        ("EgoPlan2", "egoplan2"),
        ("EgoPlan-Bench2", "egoplan2"),
        ("egoplan_bench2", "egoplan2"),
        ("EgoThink", "egothink"),
        ("EgoSynth", "egosynth"),
        (" egosynth-ATYPICAL ", "egosynth-atypical"),
    ],
)
def test_registry_names(name, canonical):
    assert get_benchmark(name).name == canonical


def test_registry_contents():
    assert all(v in BENCHMARKS for v in ALIASES.values())
    with pytest.raises(KeyError, match="egothink"):
        get_benchmark("EgoThinking")
    kinds = {n: (b.task, b.visual, b.needs_judge) for n, b in BENCHMARKS.items()}
    assert kinds["egotextvqa"] == ("openqa", "video", True) and kinds["egothink"] == ("openqa", "image", True)
    assert kinds["egoschema"] == ("closeqa", "video", False) and kinds["qaego4d-close"][0] == "closeqa"
    assert kinds["egosynth"][0] == "mixed"
    fmt = get_benchmark("egoplan2").prompt_format
    assert fmt["official_prompt"] and fmt["formats"] == ["direct", "reasoning", "official"]
    assert get_benchmark("egotextvqa").locate(FIX.parent) == FIX.parent  # no egotextvqa/ there


# ----------------------------------------------------------------------------------------------
# EgoTextVQA (real files)

INDOOR_TYPES = {"hands-on": 698, "shopping": 358, "kitchen": 335, "book-related": 323, "gameplay": 301, "others": 201}
OUTDOOR_TYPES = {"location": 1505, "description": 1387, "direction": 952, "intention reasoning": 813, "others": 191}


def test_egotextvqa_real_files():
    root = shared("egotextvqa")
    both = get_benchmark("EgoTextVQA").load(root)
    indoor = [s for s in both if s.meta["setting"] == "indoor"]
    outdoor = [s for s in both if s.meta["setting"] == "outdoor"]
    assert (len(both), len(indoor), len(outdoor)) == (7064, 2216, 4848)
    assert len({s.id for s in both}) == 7064
    assert Counter(s.meta["question_type"] for s in indoor) == INDOOR_TYPES
    assert Counter(s.meta["question_type"] for s in outdoor) == OUTDOOR_TYPES
    assert all(isinstance(s.meta["video_id"], str) for s in indoor)
    assert all(isinstance(s.meta["video_id"], int) and isinstance(s.meta["question_id"], float) for s in outdoor)
    assert all(s.task == "openqa" and s.cutoff == s.meta["timestamp"] > 0 for s in both)
    by_id = {s.id: s for s in both}
    a, b = by_id["outdoor-11-8.1"], by_id["outdoor-11-8.2"]  # one question at two timestamps
    assert a.question == b.question and (a.cutoff, b.cutoff) == (6.5, 1.1) and a.answer != b.answer
    first = by_id["indoor-0479bea8-d221-4c6a-8c91-60108e43fe56-1"]
    assert first.answer == "the book is being placed on the shelf" and first.cutoff == 10.3
    assert first.video == str(root / "indoor" / "0479bea8-d221-4c6a-8c91-60108e43fe56.mp4")
    assert not Path(first.video).exists()  # loaders need no video (blind runs)
    assert by_id["outdoor-3-1.0"].video == str(root / "outdoor" / "3.mp4")


def test_egotextvqa_variants_and_single_file(tmp_path):
    root = shared("egotextvqa")
    assert len(get_benchmark("EgoTextVQA-indoor").load(root)) == 2216
    assert len(get_benchmark("EgoTextVQA-outdoor").load(root, outdoor_videos=tmp_path)) == 4848
    rt = get_benchmark("egotextvqa-realtime").load(root)
    assert len(rt) == 623 and all(s.meta["realtime"] and s.id.startswith("outdoor-") for s in rt)
    one = get_benchmark("egotextvqa").load(root / "outdoor_total.json", video_root=tmp_path)
    assert len(one) == 4848 and one[0].video == str(tmp_path / "outdoor" / "3.mp4")
    with pytest.raises(ValueError, match="setting"):
        get_benchmark("egotextvqa").load(root, settings=("kitchen",))


def test_egotextvqa_bad_records(tmp_path):
    f = tmp_path / "indoor_total.json"
    rec = {
        "video_id": "v",
        "question_id": 1,
        "question": "q?",
        "question_type": "kitchen",
        "correct_answer": "a",
        "timestamp": 3.0,
    }
    f.write_text(json.dumps([{"dataset": "egotextqa", "split": "indoor", "data": [rec, {**rec, "timestamp": None}]}]))
    with pytest.raises(SampleError) as e:
        get_benchmark("egotextvqa-indoor").load(tmp_path)
    assert "indoor_total.json" in str(e.value) and "'timestamp'" in str(e.value) and "indoor-v-1" in str(e.value)
    f.write_text(json.dumps([{"split": "indoor", "data": [rec, rec]}]))
    with pytest.raises(SampleError, match="duplicate id"):
        get_benchmark("egotextvqa-indoor").load(tmp_path)
    assert len(get_benchmark("egotextvqa-indoor").load(tmp_path, skip_invalid=True)) == 1
    with pytest.raises(FileNotFoundError, match="outdoor_total.json"):
        get_benchmark("egotextvqa").load(tmp_path)


def _etv(sid, setting, qtype, answer):
    return Sample(
        id=sid,
        question="what does the sign say?",
        answer=answer,
        task="openqa",
        video="v.mp4",
        cutoff=2.0,
        meta={"setting": setting, "question_type": qtype},
    )


ETV_SAMPLES = [
    _etv("i1", "indoor", "hands-on", "the red button"),
    _etv("i2", "indoor", "hands-on", "the red button"),
    _etv("i3", "indoor", "kitchen", "salt"),
    _etv("i4", "indoor", "kitchen", "exit 12"),
    _etv("o1", "outdoor", "location", "barclays center"),
    _etv("o2", "outdoor", "location", "30 mph"),
]
ETV_OUTPUTS = {
    "i1": "<think>The label reads red button.</think><answer>The red button</answer>",
    "i2": "Answer: red",
    "i3": "",
    "i4": "garbage-please",
    "o1": "Barclays Center",
    "o2": "It says 45 km/h",
}


def test_egotextvqa_scoring_without_judge():
    r = get_benchmark("egotextvqa").score(ETV_SAMPLES, ETV_OUTPUTS)
    rows = {row["id"]: row for row in r["per_sample"]}
    assert rows["i1"]["pred"] == "The red button" and rows["i2"]["pred"] == "red"  # "Answer:" stripped
    assert r["metrics"]["em"] == pytest.approx(100 * 2 / 6, abs=0.01)
    assert rows["i2"]["rouge_l"] == pytest.approx(0.5)  # LCS 1: P 1, R 1/3
    assert r["metrics"]["accuracy"] is None and r["metrics"]["score"] is None and r["judge"] is None


def test_egotextvqa_scoring_with_judge(server):
    server.reset_counts()
    r = get_benchmark("egotextvqa").score(ETV_SAMPLES, ETV_OUTPUTS, judge=scripted_judge(server, parse_retries=2))
    # judged: i1 yes/5, i2 yes/3 (a shared word), i3 empty -> no/0 without a request, i4 fails to parse
    # (graded no/0 as the official gpt_eval.py does, and counted), o1 yes/5, o2 no/1.
    assert r["judge"]["judge_failed"] == 1 and r["judge"]["judged"] == 5 and r["judge"]["empty_predictions"] == 1
    assert server.count == 4 + 3  # four good replies, three tries of the unparseable one
    assert r["metrics"]["accuracy"] == 50.0 and r["metrics"]["score"] == round(14 / 6, 2)  # 3 yes of 6; 5+3+0+0+5+1
    assert r["by"]["setting"]["indoor"] == {"n": 4, "accuracy": 50.0, "score": 2.0, "em": 25.0, "rouge_l": 37.5}
    assert r["by"]["setting"]["outdoor"]["accuracy"] == 50.0 and r["by"]["setting"]["outdoor"]["score"] == 3.0
    assert r["by"]["question_type"]["indoor/kitchen"] == {
        "n": 2,
        "accuracy": 0.0,
        "score": 0.0,
        "em": 0.0,
        "rouge_l": 0.0,
    }
    assert set(r["by"]["question_type"]) == {"indoor/hands-on", "indoor/kitchen", "outdoor/location"}
    rows = {row["id"]: row for row in r["per_sample"]}
    assert rows["i4"]["accuracy"] == 0.0 and rows["i4"]["score"] == 0.0 and rows["i4"]["judge_failed"] is True
    assert rows["i3"]["score"] == 0.0 and rows["o1"]["score"] == 5.0 and "judge_failed" not in rows["o1"]


# ----------------------------------------------------------------------------------------------
# EgoSchema


def test_egoschema_real_answers_and_first20(tmp_path):
    root = shared("egoschema")
    from ego3s.eval.benchmarks.egoschema import load_answers

    answers = load_answers(root)
    assert len(answers) == 500 and Counter(answers.values()) == {4: 117, 1: 108, 0: 101, 2: 91, 3: 83}
    full = get_benchmark("egoschema").load(root)
    assert len(full) == 20 and all(s.meta["answer_hidden"] and len(s.options) == 5 for s in full)
    assert full[0].id == "001934bb-81bd-4cd8-a574-0472ef3f6678" and full[0].video == str(root / f"{full[0].id}.mp4")
    assert full[0].options[4] == "C takes a break to drink from a cup, briefly shifting focus"
    ego = get_benchmark("egoschema").load(root, ego4d_root=tmp_path)
    assert ego[0].video == str(tmp_path / "2fa72a4f-b318-4e04-97b8-efdc3b039258.mp4")
    assert (ego[0].start, ego[0].end) == (240.0, 420.0)
    assert get_benchmark("egoschema_subset").load(root) == []  # none of the first 20 is in the public subset
    # The subset with questions whose answers are public.
    qs = json.loads((root / "questions_first20.json").read_text())[:3]
    for q, uid in zip(qs, list(answers)[:3]):
        q["q_uid"] = uid
    (tmp_path / "questions.json").write_text(json.dumps(qs))
    shutil.copy(root / "subset_answers.json", tmp_path)
    sub = get_benchmark("egoschema_subset").load(tmp_path)
    assert [s.answer for s in sub] == [LETTERS[answers[s.id]] for s in sub] and len(sub) == 3


def test_egoschema_fixture_and_scoring(tmp_path):
    full = get_benchmark("egoschema").load(FIX / "egoschema")
    sub = get_benchmark("egoschema_subset").load(FIX / "egoschema")
    assert [s.answer for s in sub] == ["D", "E"] and len(full) == 3 and full[2].meta["answer_hidden"]
    outputs = {
        "0074f737-11cb-497d-8d07-77c3a8127391": "The answer is D.",
        "00b9a0de-c59e-49cb-a127-6081e2fb8c8e": "<think>C scrolls first, then types, and later talks with a man."
        "</think><answer>B</answer>",
        "ffff0000-1111-2222-3333-444455556666": "Option (B)",
    }
    r = get_benchmark("egoschema").score(full, outputs)
    assert r["metrics"] == {"accuracy": 50.0, "n_scored": 2, "n_hidden": 1, "unparsed": 0}
    assert r["submission"] == {
        "0074f737-11cb-497d-8d07-77c3a8127391": 3,
        "00b9a0de-c59e-49cb-a127-6081e2fb8c8e": 1,
        "ffff0000-1111-2222-3333-444455556666": 1,
    }
    from ego3s.eval.benchmarks.egoschema import write_submission

    out = write_submission(tmp_path / "sub.json", full, {**outputs, "ffff0000-1111-2222-3333-444455556666": "no idea"})
    assert json.loads((tmp_path / "sub.json").read_text()) == out and out["ffff0000-1111-2222-3333-444455556666"] == -1
    # "C" (the camera wearer) starts every option: the option's text is an answer, a bare "C" a letter.
    r = get_benchmark("egoschema_subset").score(sub, ["C is cooking a stir fry for lunch.", "C"])
    assert [row["pred"] for row in r["per_sample"]] == ["D", "C"] and r["metrics"]["accuracy"] == 50.0


# ----------------------------------------------------------------------------------------------
# EgoThink


def test_egothink_real_dimensions():
    root = shared("egothink")
    s = get_benchmark("EgoThink").load(root)
    assert Counter(x.meta["dimension"] for x in s) == {"Activity": 100, "Object/affordance": 50}
    assert s[0].id == "egothink-Activity-0" and s[0].answer == "tightening the screws" and s[0].task == "openqa"
    assert s[0].image == str(root / "Activity" / "images" / "1.jpg") and s[0].video is None
    aff = [x for x in s if x.meta["dimension"] == "Object/affordance"]
    assert aff[0].id == "egothink-Object-affordance-0" and aff[0].meta["capability"] == "Object"
    one = get_benchmark("egothink").load(root / "Object" / "affordance" / "annotations.json")
    assert len(one) == 50 and one[0].meta["dimension"] == "Object/affordance"
    assert get_benchmark("egothink").max_new_tokens(s[0]) == 30


def make_egothink_tree(root: Path, per_dim: int = 2) -> None:
    for d in egothink_mod.DIMENSIONS:
        folder = root / d
        (folder / "images").mkdir(parents=True)
        recs = []
        for i in range(per_dim):
            (folder / "images" / f"{i + 1}.jpg").write_bytes(b"\xff\xd8\xff\xd9")
            recs.append(
                {
                    "source_dataset": "ego4d",
                    "image_path": [f"{i + 1}.jpg"],
                    "question": f"{d} question {i}?",
                    "answer": f"answer {i}",
                }
            )
        (folder / "annotations.json").write_text(json.dumps(recs))


def test_egothink_all_twelve_dimensions(tmp_path):
    make_egothink_tree(tmp_path / "data")  # the repository layout: <root>/data/<Dim>/...
    b = get_benchmark("egothink")
    s = b.load(tmp_path)
    assert len(s) == 24 and [x.meta["dimension"] for x in s[::2]] == list(egothink_mod.DIMENSIONS)
    assert all(Path(x.image).exists() for x in s)
    assert len({x.id for x in s}) == 24 and s[-1].id == "egothink-Reasoning-situated-1"
    plan = b.load(tmp_path / "data", dimensions=["Planning/assistance", "Planning/navigation"])
    assert len(plan) == 4 and b.max_new_tokens(plan[0]) == 300
    with pytest.raises(FileNotFoundError, match="Forecasting"):
        b.load(tmp_path, dimensions=["Forecasting"])
    with pytest.raises(FileNotFoundError, match="no EgoThink"):
        b.load(tmp_path / "data" / "Activity" / "images")


def test_egothink_scoring_with_judge(server):
    def sample(i, dim, answer):
        return Sample(
            id=f"t{i}",
            question="What am I doing?",
            answer=answer,
            task="openqa",
            image="x.jpg",
            meta={"dimension": dim},
        )

    samples = [
        sample(0, "Activity", "tightening the screws"),
        sample(1, "Activity", "tightening the screws"),
        sample(2, "Activity", "tightening the screws"),
        sample(3, "Object/affordance", "yes"),
        sample(4, "Object/affordance", "painting"),
    ]
    outputs = ["Tightening the screws.", "<answer>screws</answer>", "Short answer: cooking", "Yes", "garbage-please"]
    b = get_benchmark("egothink")
    r = b.score(samples, outputs, judge=scripted_judge(server, parse_retries=1))
    dims = r["by"]["dimension"]
    assert list(dims) == ["Activity", "Object/affordance"]
    assert dims["Activity"]["score"] == 50.0 and dims["Object/affordance"]["score"] == 100.0
    assert r["metrics"]["score"] == 75.0 and r["metrics"]["score_micro"] == 62.5  # macro, as the leaderboard
    assert r["judge"]["judge_failed"] == 1 and r["per_sample"][2]["pred"] == "cooking"
    assert dims["Activity"]["em"] == pytest.approx(33.33) and dims["Object/affordance"]["em"] == 50.0
    plain = b.score(samples, outputs)
    assert plain["metrics"]["score"] is None and plain["metrics"]["em"] == pytest.approx((100 / 3 + 50) / 2, abs=0.01)


# ----------------------------------------------------------------------------------------------
# QAEgo4D (fixtures in the published record layout)


def test_qaego4d_open_loader():
    b = get_benchmark("QAEgo4D")
    s = b.load(FIX / "qaego4d", window="moment")
    assert [x.task for x in s] == ["openqa"] * 4 and s[0].id == "9d2a9d3e-7b1f-4b3a-9d4e-1f2a3b4c5d6e_0"
    assert (s[0].start, s[0].end) == (42.0, 47.0) and s[0].answer == "in the drawer"
    assert s[0].video == str(FIX / "qaego4d" / "0a8f6747-7f79-4176-85ca-f5ec01a15435.mp4")
    assert s[3].start == 150.0 and s[3].end == pytest.approx(150.0 + 1 / 30)  # a one-frame moment
    full = b.load(FIX / "qaego4d" / "annotations.test.json", video_root="/videos")
    assert full[0].video.startswith("/videos/")


def test_qaego4d_defaults_to_the_whole_clip_as_the_benchmark():
    """The benchmark feeds the whole NLQ clip (the model has to find the moment); the annotated
    moment is an option, kept in meta either way."""
    for name in ("QAEgo4D", "QAEgo4D-close"):
        b = get_benchmark(name)
        for x in b.load(FIX / "qaego4d"):
            assert x.start is None and x.end is None and x.meta["window"] == "full"
        assert b.load(FIX / "qaego4d")[0].meta["moment"] == [42.0, 47.0]
        moment = b.load(FIX / "qaego4d", window="moment")
        assert (moment[0].start, moment[0].end) == (42.0, 47.0)
    from ego3s.eval.run import EvalConfig, _load_benchmark

    cfg = EvalConfig(
        data=["QAEgo4D"], paths={"QAEgo4D": str(FIX / "qaego4d")}, options={"QAEgo4D": {"window": "moment"}}
    )  # the config key: options.QAEgo4D.window
    assert _load_benchmark("QAEgo4D", cfg)[2][0].start == 42.0


def test_qaego4d_close_loader():
    b = get_benchmark("QAEgo4D-close")
    s = b.load(FIX / "qaego4d")
    assert len(s) == 3 * 5 and s[0].id.endswith("_0@seed0") and s[0].meta["seed"] == 0
    for x in s:
        assert x.task == "closeqa" and x.options[LETTERS.index(x.answer)] == x.meta["answer_text"]
    assert s[0].options == ["in the drawer", "in the sink", "on the shelf", "on the table"]  # fixed per seed
    assert b.load(FIX / "qaego4d") == s  # same order on every load
    orders = {tuple(x.options) for x in s if x.meta["sample_id"].endswith("_1")}
    assert len(orders) > 1  # seeds shuffle differently
    assert len(b.load(FIX / "qaego4d", seeds=[7])) == 3


def test_qaego4d_bad_records(tmp_path):
    rec = {
        "video_id": "v",
        "sample_id": "s_0",
        "question": "q?",
        "answer": "a",
        "moment_start_frame": 30,
        "moment_end_frame": 60,
        "wrong_answers": ["b", "c"],
    }
    (tmp_path / "annotations.test.json").write_text(json.dumps([{k: v for k, v in rec.items() if k != "answer"}]))
    with pytest.raises(SampleError) as e:
        get_benchmark("qaego4d").load(tmp_path)
    assert "annotations.test.json" in str(e.value) and "'answer'" in str(e.value) and "s_0" in str(e.value)
    (tmp_path / "annotations.QaEgo4D_test_close.json").write_text(json.dumps([rec]))
    with pytest.raises(SampleError, match="3 wrong answers"):
        get_benchmark("qaego4d-close").load(tmp_path)
    (tmp_path / "annotations.QaEgo4D_test_close.json").write_text(
        json.dumps([{**rec, "wrong_answers": ["b", "A", "c"]}])
    )
    with pytest.raises(SampleError, match="distinct"):
        get_benchmark("qaego4d-close").load(tmp_path)


def test_qaego4d_open_scoring():
    s = get_benchmark("qaego4d").load(FIX / "qaego4d")
    outputs = ["In the drawer.", "<think>The bowl was green.</think><answer>green</answer>", "two", "boiled water"]
    r = get_benchmark("qaego4d").score(s, outputs, similarity=False)
    m = r["metrics"]
    assert m["em"] == 50.0 and m["plain_acc"] == 25.0  # official equality: case and the period count
    assert m["rouge_l"] == pytest.approx(100 * (1 + 1 + 2 / 3 + 0.5) / 4, abs=0.01)  # no stemming: boiled != boiling
    meteors = [1 - 0.5 / 27, 0.5, (0.5 / 0.95) * 0.5, 1 - 0.5 / 8]  # penalty 0.5 (chunks/matches)^3
    assert [row["meteor"] for row in r["per_sample"]] == pytest.approx(meteors)
    assert m["meteor"] == pytest.approx(100 * sum(meteors) / 4, abs=0.01)
    # corpus BLEU-4: 13a tokens, case kept; n-gram precisions 5/8, 1/4, then exp-smoothed 1/(2*2), 1/(4*1)
    assert m["bleu4"] == pytest.approx((62.5 * 25 * 25 * 25) ** 0.25, abs=0.01) and m["bleu4_bp"] == 1.0
    assert m["similarity"] is None and r["missing_predictions"] == 0


def test_qaego4d_similarity_with_an_embedder():
    import numpy as np

    class Bag:  # bag-of-letters vectors: deterministic and fast
        def encode(self, texts, **kw):
            return np.array([[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], dtype=float)

    s = get_benchmark("qaego4d").load(FIX / "qaego4d")[:2]
    r = get_benchmark("qaego4d").score(s, {s[0].id: "in the drawer", s[1].id: "xyz"}, embedder=Bag())
    assert [row["similarity"] for row in r["per_sample"]] == pytest.approx([1.0, 0.0])
    assert r["metrics"]["similarity"] == 50.0


def test_qaego4d_close_scoring():
    s = get_benchmark("qaego4d-close").load(FIX / "qaego4d")
    outputs = {}
    for x in s:
        seed, text = x.meta["seed"], x.meta["answer_text"]
        q = int(x.meta["sample_id"][-1])
        if seed == 0:
            outputs[x.id] = f"The answer is {x.answer}."
        elif seed == 1111:
            outputs[x.id] = text if q < 2 else next(L for L in "ABCD" if L != x.answer)
        elif seed == 2222:
            outputs[x.id] = f"<answer>{x.answer}</answer>" if q == 0 else "I don't know"
        elif seed == 3333:
            assert x.answer != "A"
            outputs[x.id] = "A"
        else:
            outputs[x.id] = f"({x.answer}) {text}"
    r = get_benchmark("qaego4d-close").score(s, outputs)
    accs = [100.0, 66.67, 33.33, 0.0, 100.0]
    assert [r["by"]["seed"][str(k)]["accuracy"] for k in (0, 1111, 2222, 3333, 4444)] == accs
    assert r["metrics"]["accuracy"] == 60.0 and r["metrics"]["n_seeds"] == 5 and r["metrics"]["n_questions"] == 3
    assert r["metrics"]["accuracy_std"] == pytest.approx(statistics.stdev(accs), abs=0.01)
    assert r["metrics"]["unparsed"] == 2


# ----------------------------------------------------------------------------------------------
# EgoPlan-Bench2 (fixture in the published record layout)


def test_egoplan2_loader_and_prompts():
    b = get_benchmark("EgoPlan-Bench2")
    s = b.load(FIX / "egoplan2")
    assert len(s) == 4 and s[0].id == "ca6e9ec9-46ac-4a02-8034-7c31157dc52c_2"
    assert (
        s[0].options == ["attach stopwatch", "place oven tray", "operate oven", "set stopwatch"] and s[0].answer == "A"
    )
    assert s[0].question.endswith("in order to bake pastry in the oven and set a stopwatch?")
    assert s[0].video == str(FIX / "egoplan2" / "ca6e9ec9-46ac-4a02-8034-7c31157dc52c.mp4")
    assert (s[0].start, s[0].end) == (0.0, pytest.approx(656 / 30))
    assert s[1].start == 4.0 and s[2].end == pytest.approx(1.0 + 0.5 / 30)  # start == current observation
    assert s[0].meta["domain"] == "Hobbies" and len(s[0].meta["task_progress_metadata"]) == 6
    assert len(b.load(FIX / "egoplan2", fps=15.0, video_root="/ego4d")) == 4
    official = b.question_text(s[0], "official")
    assert official.startswith("Select the best answer") and "\nA. attach stopwatch\n" in official
    assert official.endswith("D. set stopwatch")
    direct = b.build_messages(s[0], "direct")
    assert direct[-1]["content"][0] == {"type": "video"}
    assert "A. attach stopwatch" in direct[-1]["content"][1]["text"]
    blind = b.build_messages(s[0], "official", visual=None)
    assert blind[-1]["content"] == [{"type": "text", "text": official}]
    assert "<answer>" in b.question_text(s[0], "reasoning")


def test_egoplan2_scoring():
    s = get_benchmark("egoplan2").load(FIX / "egoplan2")
    outputs = ["A", "The best answer is (A) pour hot water into the cup", "pick up the drill", "D. close the paint can"]
    r = get_benchmark("egoplan2").score(s, outputs)
    assert [row["pred"] for row in r["per_sample"]] == ["A", "A", "B", "D"]
    assert r["metrics"]["accuracy"] == 75.0
    assert r["by"]["domain"] == {
        "Daily life": {"n": 1, "accuracy": 100.0},
        "Hobbies": {"n": 1, "accuracy": 100.0},
        "Work": {"n": 2, "accuracy": 50.0},
    }
    assert r["by"]["scenario"]["Work/carpentry"]["accuracy"] == 50.0
    partial = get_benchmark("egoplan2").score(s, {s[0].id: "A"})  # a dict may leave samples out
    assert partial["missing_predictions"] == 3 and partial["metrics"]["accuracy"] == 25.0
    with pytest.raises(ValueError, match="3 predictions for 4 samples"):
        get_benchmark("egoplan2").score(s, outputs[:3])


# ----------------------------------------------------------------------------------------------
# EgoSynth


def test_egosynth_loader_and_scoring(tmp_path):
    def s(i, split, typical, task, answer, options=None):
        return Sample(
            id=f"egosynth-{split}-{i:05d}",
            question="What did I pick up?",
            answer=answer,
            task=task,
            options=options,
            video=f"videos/{split}_{i:05d}.mp4",
            start=0.0,
            end=3.0,
            meta={"split": split, "typical": typical, "kind": "object"},
        )

    opts = ["mug", "knife", "sponge", "towel"]
    write_jsonl(
        tmp_path / "test_id.jsonl",
        [
            s(0, "test_id", True, "closeqa", "B", opts),
            s(1, "test_id", False, "closeqa", "C", opts),
            s(2, "test_id", True, "openqa", "mug"),
        ],
    )
    write_jsonl(
        tmp_path / "test_atypical.jsonl",
        [s(0, "test_atypical", False, "openqa", "left hand"), s(1, "test_atypical", False, "closeqa", "A", opts)],
    )
    b = get_benchmark("EgoSynth")
    samples = b.load(tmp_path)
    assert len(samples) == 5 and samples[0].video == str(tmp_path / "videos" / "test_id_00000.mp4")
    assert len(get_benchmark("egosynth-atypical").load(tmp_path)) == 2
    outputs = [
        "<think>The hand grasps the knife.</think><answer>B</answer>",
        "A",
        "<answer>the mug</answer>",
        "right hand",
        "I cannot tell",
    ]
    r = b.score(samples, outputs)
    assert r["metrics"]["accuracy"] == pytest.approx(33.33) and r["metrics"]["em"] == 50.0
    assert r["metrics"]["rouge_l"] == pytest.approx(100 * (2 / 3 + 0.5) / 2, abs=0.01)
    assert (r["metrics"]["n_closed"], r["metrics"]["n_open"]) == (3, 2)
    assert r["by"]["split"]["test_id"]["accuracy"] == 50.0 and r["by"]["split"]["test_atypical"]["accuracy"] == 0.0
    assert r["by"]["typical"]["test_id/typical"] == {"n": 2, "accuracy": 100.0, "em": 100.0, "rouge_l": 66.67}
    assert r["by"]["typical"]["test_id/atypical"]["em"] is None


# ----------------------------------------------------------------------------------------------
# Prompts and extraction across benchmarks


def test_prompts_for_every_benchmark(tmp_path):
    make_egothink_tree(tmp_path)
    samples = {
        "egothink": get_benchmark("egothink").load(tmp_path)[0],
        "qaego4d": get_benchmark("qaego4d").load(FIX / "qaego4d")[0],
        "qaego4d-close": get_benchmark("qaego4d-close").load(FIX / "qaego4d")[0],
        "egoschema": get_benchmark("egoschema_subset").load(FIX / "egoschema")[0],
        "egoplan2": get_benchmark("egoplan2").load(FIX / "egoplan2")[0],
        "egotextvqa": _etv("x", "indoor", "kitchen", "salt"),
    }
    for name, sample in samples.items():
        b = get_benchmark(name)
        for fmt in ("direct", "reasoning", "official"):
            msgs = b.build_messages(sample, fmt)
            kinds = [p["type"] for p in msgs[-1]["content"]]
            assert kinds == [b.visual, "text"], (name, fmt)
            assert sample.question.split("?")[0][:20] in msgs[-1]["content"][1]["text"]
        assert b.max_new_tokens(sample) > 0
    assert get_benchmark("egothink").question_text(samples["egothink"], "official").endswith("Short answer:")
    assert "Answer: [Full answer]" in get_benchmark("egotextvqa").question_text(samples["egotextvqa"], "official")
    # lmms-eval's egoschema_doc_to_text: question + "\n" + each "A. ..." option + its post-prompt
    es = samples["egoschema"]
    assert (
        get_benchmark("egoschema_subset").question_text(es, "official")
        == es.question
        + "".join("\n" + "ABCDE"[i] + ". " + o for i, o in enumerate(es.options))
        + "\nAnswer with the option's letter from the given choices directly."
    )
    with pytest.raises(ValueError, match="fmt"):
        get_benchmark("egoschema_subset").question_text(samples["egoschema"], "fancy")


@pytest.mark.parametrize(
    "name, output, expected",
    [
        ("egotextvqa", "Answer: gas sale", "gas sale"),
        ("egotextvqa", "<think>The sign says gas sale.</think><answer>Gas sale</answer>", "Gas sale"),
        ("egotextvqa", "**Answer:** Unanswerable, the text is blurry", "Unanswerable, the text is blurry"),
        ("egothink", "Short answer: cutting onions", "cutting onions"),
        ("egothink", "", None),
        ("qaego4d", "<answer>on the table</answer>", "on the table"),
    ],
)
def test_open_extraction(name, output, expected):
    s = _etv("x", "indoor", "kitchen", "salt")
    assert get_benchmark(name).extract(s, output) == expected


# ----------------------------------------------------------------------------------------------
# Metrics


class _NoWordNet:
    def synsets(self, word):
        return []


def test_meteor_matches_nltk_without_synonyms():
    from nltk.translate.meteor_score import meteor_score

    cases = [
        ("the cups are on the table", "a cup is on the tables"),
        ("boiled water", "boiling water"),
        ("in the drawer next to the sink", "next to the sink in the drawer"),
        ("", "green"),
        ("red", ""),
    ]
    for pred, ref in cases:
        want = meteor_score([M.meteor_tokens(ref)], M.meteor_tokens(pred), wordnet=_NoWordNet())
        assert M.meteor(pred, ref) == pytest.approx(want, abs=1e-12)
    assert M.meteor("the cup", ["a mug", "the cup"]) == pytest.approx(1 - 0.5 / 8)  # best reference


def test_bleu_against_sacrebleu_when_installed():
    sacrebleu = pytest.importorskip("sacrebleu")
    preds = ["In the drawer.", "two pieces", "it's 3.5 km, isn't it?", "", "the U.S. flag & a sign"]
    refs = ["in the drawer", "two pieces", "3.5 km", "green", "a U.S. flag"]
    assert M.corpus_bleu(preds, refs).score == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    for p, r in zip(preds, refs):
        assert M.sentence_bleu(p, [r]).score == pytest.approx(sacrebleu.sentence_bleu(p, [r]).score)


def test_bleu_and_tokenizer_by_hand():
    assert M.tokenize_13a("It's 3.5 km, isn't it? (U.S.)") == [
        "It's",
        "3.5",
        "km",
        ",",
        "isn't",
        "it",
        "?",
        "(",
        "U",
        ".",
        "S",
        ".",
        ")",
    ]
    assert M.corpus_bleu(["a b c d"], ["a b c d"]).score == pytest.approx(100.0)
    assert M.corpus_bleu(["a b c"], ["a b c"]).score == 0.0  # no 4-gram at all (sacreBLEU's corpus rule)
    assert M.sentence_bleu("a b c", ["a b c"]).score == pytest.approx(100.0)  # effective order
    short = M.corpus_bleu(["a b c d"], ["a b c d e f g h"])
    assert short.bp == pytest.approx(2.718281828 ** (1 - 2)) and short.ratio == 0.5
    assert M.corpus_bleu([], []).score == 0.0
    with pytest.raises(ValueError):
        M.corpus_bleu(["a"], [])


def test_exact_match_and_rouge():
    assert M.plain_match(" green ", "green") == 1.0 and M.plain_match("Green", "green") == 0.0
    assert M.exact_match("The Green.", "green") == 1.0
    assert M.rouge_l_official("boiled water", "boiling water") == 0.5  # no stemming
    assert M.rouge_l_f("boiled water", "boiling water") == 1.0  # the project's stemmed ROUGE-L
    assert M.rouge_l_official("x", ["y", "x"]) == 1.0


def test_aggregation_helpers():
    rows = [{"c": "a", "v": 1.0}, {"c": "a", "v": None}, {"c": "b", "v": 0.0}, {"v": 1.0}]
    assert M.mean([None, None]) is None and M.mean([1, None, 0]) == 0.5
    assert M.group_means(rows, {"v": 100.0}) == {"n": 4, "v": 66.67}
    assert M.breakdown(rows, "c", {"v": 100.0}) == {
        "a": {"n": 2, "v": 100.0},
        "b": {"n": 1, "v": 0.0},
        "unknown": {"n": 1, "v": 100.0},
    }
    assert M.pct(0.12345) == 12.35 and M.pct(None) is None


@pytest.mark.slow
def test_sentence_similarity_with_minilm():
    sims = M.sentence_similarity(["inside the drawer"] * 3, ["inside the drawer", "on the table", "in the drawer"])
    assert sims == pytest.approx([1.0, 0.49, 0.93], abs=0.02)  # GroundVQA's reference values
