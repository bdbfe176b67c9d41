"""The Ego4D builder on small fixtures in Ego4D's published layouts (tests/fixtures/ego4d)."""

import json
import shutil
from pathlib import Path

import pytest

from ego3s.data import read_jsonl
from ego3s.data.ego4d import DROP_REASONS, Ego4DFormatError, build_ego4d, clean_name, same_name, summary
from helpers import FIXTURES

FIX = FIXTURES / "ego4d"
ANN = FIX / "annotations"
DURATION = {v["video_uid"]: v["duration_sec"] for v in json.loads((FIX / "ego4d.json").read_text())["videos"]}
V1, V2, V3, V4 = sorted(DURATION)

EXPECTED_DROPS = {
    "answer_not_an_object": 2,
    "empty_query": 1,
    "no_answer_slot": 1,
    "no_interaction_nearby": 1,
    "no_interaction_video": 1,
    "no_matching_interaction": 1,
    "no_template": 1,
    "unsupported_template": 1,
    "window_outside_video": 1,
    "window_too_short": 1,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("ego4d")
    samples, report = build_ego4d(ANN, "/data/ego4d/v2/full_scale", out)
    return out, samples, report


def _copy_annotations(tmp_path: Path) -> Path:
    ann = tmp_path / "annotations"
    shutil.copytree(ANN, ann)
    return ann


def test_counts_and_report(built):
    out, samples, report = built
    assert report["read"] == 17
    assert report["built"] == len(samples) == 6 == report["usable"]
    assert (report["closeqa"], report["openqa"]) == (3, 3)
    assert report["dropped"] == EXPECTED_DROPS
    assert report["dropped_total"] == 11 and set(report["dropped"]) <= set(DROP_REASONS)
    assert report["read"] == report["usable"] + report["dropped_total"]
    assert report["shortfall"] == 12000 - 6
    pt = report["per_template"]
    assert pt["Place: Where did I put X?"]["read"] == 6 and pt["Place: Where did I put X?"]["built"] == 1
    assert pt["Objects: What X did I Y?"]["built"] == 2
    assert pt["(none)"]["dropped"] == {"no_template": 1}
    assert sum(d["read"] for d in pt.values()) == report["read"]
    assert sum(d["built"] for d in pt.values()) == report["built"]
    fho = report["fho"]
    assert fho["actions_skipped"] == {"no_frames": 1, "rejected": 1}
    assert fho["boxes_dropped"] == {"outside_frame": 4}  # the knife box lies right of the frame (4 frames)
    assert fho["boxes_clipped_to_frame"] >= 4  # the onion box starts left of the frame
    assert report["unknown_keys"] == {}
    # report.json is the same report, written next to train.jsonl
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["dropped"] == EXPECTED_DROPS
    assert "built 6 samples (3 closeqa, 3 openqa)" in summary(report)


def test_samples_read_back_and_are_well_formed(built):
    out, samples, _ = built
    back = read_jsonl(out / "train.jsonl")
    assert [s.id for s in back] == [s.id for s in samples]
    by_answer = {s.answer_text: s for s in back}
    assert set(by_answer) == {"milk", "cup", "onion", "mugs", "spoon", "screw"}
    for s in back:
        uid = s.meta["video_uid"]
        assert s.video == f"/data/ego4d/v2/full_scale/{uid}.mp4"
        assert 0 <= s.start < s.end <= DURATION[uid]
        a0, a1 = s.meta["answer_window"]
        assert s.start <= a0 < a1 <= s.end  # the answer window is inside the clip window
        it = s.interaction
        assert it.objects[0].name == s.answer_text and it.action
        assert it.boxes and {"left_hand", "right_hand"} <= {b.label for b in it.boxes}
        for b in it.boxes:
            assert all(0.0 <= v <= 1.0 for v in b.box) and b.box[0] < b.box[2] and b.box[1] < b.box[3]
            assert s.start <= b.t <= s.end
        assert it.contact is not None and s.start <= it.contact[0] <= it.contact[1] <= s.end
        if s.task == "closeqa":
            assert len(s.options) == 4
            assert sum(same_name(o, s.answer_text) for o in s.options) == 1
            assert len({" ".join(o.split()) for o in s.options}) == 4
            assert len(s.meta["distractor_tiers"]) == 3
        else:
            assert s.options is None
    # answers from the FHO object of change keep the query text; slot answers are re-asked
    assert by_answer["milk"].question == "What did I put in the fridge?"
    assert by_answer["milk"].meta["answer_source"] == "fho_object"
    assert by_answer["cup"].question == "Which object did I put?"
    assert by_answer["cup"].meta["answer_source"] == "nlq_slot"
    assert by_answer["onion"].question == "What vegetable did I cut?"
    assert by_answer["onion"].interaction.action == "cut"
    assert by_answer["milk"].interaction.objects[0].synonyms == ["beverage"]
    assert by_answer["mugs"].interaction.objects[0].synonyms == ["mug"]  # plural slot matched the FHO noun
    assert by_answer["screw"].interaction.objects[1].name == "screwdriver"  # the tool comes after
    assert by_answer["milk"].meta["narration"] == "#C C puts the milk in the fridge"
    # the onion box starting left of the frame was clipped to x1 = 0
    onion = [b for b in by_answer["onion"].interaction.boxes if b.label == "onion"]
    assert onion and all(b.box[0] == 0.0 for b in onion)
    assert not any(b.label == "knife" for b in by_answer["onion"].interaction.boxes)


def test_distractors_never_repeat_the_answer_and_positions_are_seeded(tmp_path):
    letters = set()
    for seed in range(12):
        samples, report = build_ego4d(ANN, tmp_path / "v", seed=seed, closed_fraction=1.0)
        assert report["closeqa"] == 6
        for s in samples:
            opts = s.options
            assert sum(same_name(o, s.answer_text) for o in opts) == 1
            for i, a in enumerate(opts):  # no two options name the same object ("cup" / "Cups")
                assert not any(same_name(a, b) for b in opts[i + 1 :])
            if s.answer_text == "milk":
                assert "fridge" not in opts  # the question's own object is never an option
            letters.add(s.answer)
    assert letters == {"A", "B", "C", "D"}
    a, _ = build_ego4d(ANN, tmp_path / "v", seed=3)
    b, _ = build_ego4d(ANN, tmp_path / "v", seed=3)
    assert [x.to_dict() for x in a] == [x.to_dict() for x in b]


def test_size_and_mix(tmp_path):
    samples, report = build_ego4d(ANN, tmp_path, size=4, closed_fraction=0.25)
    assert (report["built"], report["closeqa"], report["openqa"]) == (4, 1, 3)
    assert report["not_selected"] == 2 and report["shortfall"] == 0
    samples, report = build_ego4d(ANN, tmp_path, closed_fraction=0.0)
    assert report["closeqa"] == 0 and report["openqa"] == 6
    with pytest.raises(ValueError, match="closed_fraction"):
        build_ego4d(ANN, tmp_path, closed_fraction=1.5)
    with pytest.raises(ValueError, match="layout"):
        build_ego4d(ANN, tmp_path, layout="frames")


def test_clips_layout_splits_and_exclusions(tmp_path):
    samples, report = build_ego4d(ANN, "/clips", layout="clips", splits=("train", "val"), exclude_video_uids={V3})
    assert report["read"] == 18
    assert report["dropped"]["excluded_video"] == 2
    ids = {s.id: s for s in samples}
    assert "ego4d-ann-v2-val-0" in ids  # the val query (pan) was read
    mug = ids["ego4d-ann-v1-c-0"]  # its NLQ clip starts at 480 s of the video
    assert mug.video == "/clips/c1-0001.mp4"
    assert mug.meta["answer_window"] == [19.0, 22.0]
    assert 0 <= mug.start < mug.end <= 120.0
    assert all(mug.start <= b.t <= mug.end for b in mug.interaction.boxes)


def test_v1_scod_layout(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    shutil.copy(ANN / "nlq_train.json", ann)
    shutil.copy(FIX / "v1" / "fho_scod_train.json", ann)
    samples, report = build_ego4d(ann, tmp_path / "videos")
    assert report["files"]["fho"][0].endswith("fho_scod_train.json")
    assert [s.answer_text for s in samples] == ["milk"]  # the only video with SCOD boxes
    s = samples[0]
    assert s.interaction.action == "put"  # SCOD has no verb (and no narration here): the query verb
    assert {b.t for b in s.interaction.boxes} == {99.5, 100.5, 101.0}


def test_names():
    assert clean_name("container_(box,_crate)") == ("container", ["box", "crate"])
    assert clean_name("Cutting_board") == ("cutting board", [])
    assert same_name("the Knives", "knife") and same_name("cups", "Cup") and same_name("egg shell", "eggshell")
    assert same_name("boxes", "a box") and not same_name("cup", "cupboard")


# ---------------------------------------------------------------------------------------------
# Named errors on malformed files


def test_missing_field_names_file_record_and_field(tmp_path):
    ann = _copy_annotations(tmp_path)
    shutil.copy(FIX / "malformed" / "nlq_missing_field.json", ann / "nlq_train.json")
    with pytest.raises(Ego4DFormatError) as e:
        build_ego4d(ann, tmp_path)
    err = e.value
    assert err.file.endswith("nlq_train.json") and err.field == "video_end_sec"
    assert err.path == "videos[0].clips[0].annotations[1].language_queries[2]"
    assert "missing field" in str(err) and "language_queries[2]" in str(err)


@pytest.mark.parametrize(
    "mutate, path, field, message",
    [
        (
            lambda d: d["videos"][1]["annotated_intervals"][0]["narrated_actions"][0]["frames"][1]["boxes"][2].update(
                object_type="right_foot"
            ),
            "videos[1].annotated_intervals[0].narrated_actions[0].frames[1].boxes[2]",
            "object_type",
            "unknown object_type",
        ),
        (
            lambda d: d["videos"][0]["annotated_intervals"][0]["narrated_actions"][2]["frames"][0].update(
                frame_type="pre_60"
            ),
            "videos[0].annotated_intervals[0].narrated_actions[2].frames[0]",
            "frame_type",
            "unknown frame_type",
        ),
        (lambda d: d["videos"][2]["video_metadata"].pop("fps"), "videos[2].video_metadata", "fps", "missing field"),
        (
            lambda d: d["videos"][0]["annotated_intervals"][0]["narrated_actions"][0]["frames"][0]["boxes"][0][
                "bbox"
            ].update(width="wide"),
            "videos[0].annotated_intervals[0].narrated_actions[0].frames[0].boxes[0].bbox",
            "width",
            "finite number",
        ),
    ],
)
def test_fho_errors(tmp_path, mutate, path, field, message):
    ann = _copy_annotations(tmp_path)
    data = json.loads((ann / "fho_main.json").read_text())
    mutate(data)
    (ann / "fho_main.json").write_text(json.dumps(data))
    with pytest.raises(Ego4DFormatError) as e:
        build_ego4d(ann, tmp_path)
    assert (e.value.path, e.value.field) == (path, field)
    assert message in e.value.message and e.value.file.endswith("fho_main.json")


def test_unknown_keys_counted_or_strict(tmp_path):
    ann = _copy_annotations(tmp_path)
    data = json.loads((ann / "nlq_train.json").read_text(encoding="utf-8"))
    data["videos"][0]["clips"][0]["annotations"][0]["language_queries"][0]["answer"] = "milk"
    (ann / "nlq_train.json").write_text(json.dumps(data), encoding="utf-8")
    _, report = build_ego4d(ann, tmp_path)
    assert report["unknown_keys"] == {"nlq_train.json:language_query.answer": 1}
    with pytest.raises(Ego4DFormatError, match="unknown field") as e:
        build_ego4d(ann, tmp_path, strict=True)
    assert e.value.field == "answer" and e.value.path.endswith("language_queries[0]")


def test_unreadable_and_missing_files(tmp_path):
    ann = _copy_annotations(tmp_path)
    (ann / "nlq_train.json").write_text('{"videos": [', encoding="utf-8")
    with pytest.raises(Ego4DFormatError, match="not valid JSON"):
        build_ego4d(ann, tmp_path)
    (ann / "nlq_train.json").write_text('{"videos": {}}', encoding="utf-8")
    with pytest.raises(Ego4DFormatError, match="expected a list") as e:
        build_ego4d(ann, tmp_path)
    assert e.value.field == "videos"
    with pytest.raises(FileNotFoundError, match="nlq_test.json"):
        build_ego4d(ANN, tmp_path, splits=("test",))
    shutil.copy(ANN / "nlq_train.json", ann)
    (ann / "fho_main.json").unlink()
    with pytest.raises(FileNotFoundError, match="fho_main.json"):
        build_ego4d(ann, tmp_path)


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from ego3s.cli import app

    args = [
        "build-ego4d",
        "--annotations",
        str(ANN),
        "--video-root",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "out"),
        "--size",
        "5",
        "--closed-fraction",
        "0.4",
        "--seed",
        "1",
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "built 5 samples (2 closeqa, 3 openqa)" in r.output
    back = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(back) == 5 and all(Path(s.video).parent == tmp_path / "videos" for s in back)
    r = CliRunner().invoke(app, args[:-2] + ["--seed", "1", "--splits", "test"])
    assert r.exit_code == 1 and "nlq_test.json" in r.output
