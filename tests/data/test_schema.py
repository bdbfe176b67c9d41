import json

import pytest

from ego3s.data import Sample, SampleError, from_dataset, read_jsonl, to_dataset, write_jsonl


def closed(**kw):
    d = {
        "id": "s1",
        "question": "What did I pick up?",
        "answer": "B",
        "task": "closeqa",
        "options": ["knife", "mug", "sponge", "plate"],
        "video": "videos/s1.mp4",
        "start": 1.0,
        "end": 5.0,
        "interaction": {
            "objects": [{"name": "mug", "synonyms": ["cup"]}],
            "action": "pick up",
            "boxes": [
                {"t": 1.5, "label": "right_hand", "box": [0.1, 0.5, 0.3, 0.9]},
                {"t": 1.5, "label": "mug", "box": [0.2, 0.4, 0.35, 0.6]},
            ],
            "contact": [1.4, 3.0],
        },
        "meta": {"scene": "kitchen", "typical": True},
    }
    d.update(kw)
    return d


def test_roundtrip_jsonl_and_dataset(tmp_path):
    s = Sample.from_dict(closed())
    o = Sample.from_dict(
        {
            "id": "s2",
            "question": "Where did I put the mug?",
            "answer": "in the sink",
            "task": "openqa",
            "video": "/abs/v.mp4",
            "cutoff": 12.5,
        }
    )
    path = tmp_path / "d" / "train.jsonl"
    assert write_jsonl(path, [s, o]) == 2
    # relative paths are stored relative to the file and come back absolute
    raw = [json.loads(x) for x in path.read_text().splitlines()]
    assert raw[0]["video"] == "videos/s1.mp4" and raw[1]["video"] == "/abs/v.mp4"
    back = read_jsonl(path)
    assert back[0].video == str(tmp_path / "d" / "videos" / "s1.mp4")
    assert back[1] == o
    assert back[0].answer_text == "mug" and back[0].interaction.objects[0].names() == ["mug", "cup"]
    assert from_dataset(to_dataset(back)) == back
    # writing again gives the same bytes (relative paths restored)
    path2 = tmp_path / "d" / "again.jsonl"
    write_jsonl(path2, back)
    assert path2.read_bytes() == path.read_bytes()


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"task": "mcq"}, "task"),
        ({"answer": "E"}, "answer"),
        ({"options": ["mug", "Mug ", "knife"]}, "options"),
        ({"options": None}, "options"),
        ({"question": 3}, "question"),
        ({"start": 5.0, "end": 2.0}, "end"),
        ({"start": float("nan")}, "start"),
        ({"start": -1}, "start"),
        ({"meta": []}, "meta"),
        ({"extra": 1}, "extra"),
        ({"image": "x.jpg"}, "image"),
        ({"interaction": {"objects": []}}, "interaction.objects"),
        (
            {"interaction": {"objects": ["mug"], "boxes": [{"t": 0, "label": "mug", "box": [0.5, 0, 0.2, 1]}]}},
            "interaction.boxes.box",
        ),
        (
            {"interaction": {"objects": ["mug"], "boxes": [{"t": 0, "label": "mug", "box": [0, 0, 1.2, 1]}]}},
            "interaction.boxes.box",
        ),
        ({"interaction": {"objects": ["mug"], "boxes": [{"t": 0, "box": [0, 0, 1, 1]}]}}, "interaction.boxes"),
        ({"interaction": {"objects": ["mug"], "contact": [3, 1]}}, "interaction.contact"),
    ],
)
def test_invalid_records_name_file_line_id_field(tmp_path, patch, field):
    good = closed(id="ok")
    bad = closed(id="bad", **patch)
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SampleError) as e:
        read_jsonl(path)
    err = e.value
    assert err.field == field and err.line == 2 and err.sample_id == "bad" and err.file == str(path)
    assert f"{path}:2" in str(err) and "'bad'" in str(err) and repr(field) in str(err)


def test_missing_field_duplicates_bad_json_bad_utf8(tmp_path):
    path = tmp_path / "x.jsonl"
    d = closed()
    del d["question"]
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(SampleError, match="field 'question'"):
        read_jsonl(path)
    path.write_text(json.dumps(closed()) + "\n\n" + json.dumps(closed()) + "\n")
    with pytest.raises(SampleError, match=r"x.jsonl:3.*duplicate id \(first seen on line 1\)"):
        read_jsonl(path)
    path.write_text(json.dumps(closed()) + "\n" + '{"id": "half", "quest' + "\n")
    with pytest.raises(SampleError, match=r"x.jsonl:2: not valid JSON"):
        read_jsonl(path)
    path.write_bytes(json.dumps(closed()).encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(SampleError, match=r"x.jsonl:2: not valid UTF-8"):
        read_jsonl(path)
    # a long job can skip and count instead
    errors = []
    assert len(read_jsonl(path, skip_invalid=True, errors=errors)) == 1 and len(errors) == 1
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_write_is_atomic_and_rejects_duplicates(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [Sample.from_dict(closed())])
    before = path.read_bytes()
    s = Sample.from_dict(closed())
    with pytest.raises(SampleError, match="duplicate id"):
        write_jsonl(path, [s, s])
    assert path.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind
