"""Hub-aware model loading (a model id found in the Hugging Face cache, offline) and samples read
from a `datasets.save_to_disk` folder."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ego3s.data.io import read_jsonl, to_dataset, write_jsonl
from ego3s.data.schema import Sample, SampleError
from ego3s.models.loading import load_model, resolve_model_path

REV = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(model_dir: str, hub: Path, repo_id: str) -> Path:
    """Write `model_dir`'s files into the hub cache layout by hand, as `hf download` leaves it:
    models--org--name/{blobs/<sha>, snapshots/<rev>/<file> -> ../../blobs/<sha>, refs/main}."""
    import hashlib

    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snap = repo / "snapshots" / REV
    for f in sorted(Path(model_dir).rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        dst = snap / f.relative_to(model_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(Path("../" * (len(f.relative_to(model_dir).parts) + 1)) / "blobs" / blob.name)
    (repo / "refs" / "main").write_text(REV)
    return snap


def test_model_id_in_the_hub_cache_loads_by_id_offline(tiny_model_dir, tmp_path, monkeypatch):
    home = tmp_path / "hf"
    snap = populate_hub_cache(tiny_model_dir, home / "hub", "ego3s-test/tiny-vl")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model_path("ego3s-test/tiny-vl") == snap
    model, processor = load_model("ego3s-test/tiny-vl", dtype="float32", device="cpu")
    ref, _ = load_model(tiny_model_dir, dtype="float32", device="cpu")
    a, b = model.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert processor.tokenizer("hello").input_ids == _.tokenizer("hello").input_ids
    # an id that is not cached: offline, a clear error naming the id and the cache (no download)
    with pytest.raises(FileNotFoundError, match=r"ego3s-test/absent.*HF_HUB_OFFLINE"):
        resolve_model_path("ego3s-test/absent")
    # a folder that exists without config.json is not taken for a Hub id
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(tmp_path / "empty")


def _samples(root: Path) -> list[Sample]:
    (root / "clips").mkdir(parents=True)
    (root / "clips" / "a.mp4").write_bytes(b"")
    return [
        Sample(
            id="a",
            question="What is C holding?",
            answer="B",
            task="closeqa",
            options=["a cup", "a knife"],
            video=str(root / "clips" / "a.mp4"),
            start=1.0,
            end=3.5,
            meta={"source": "x", "k": [1, 2]},
        ),
        Sample(id="b", question="Where is the pan?", answer="on the stove", task="openqa"),
    ]


def test_save_to_disk_folder_reads_like_jsonl(tmp_path):
    folder = tmp_path / "ds"
    samples = _samples(folder)
    write_jsonl(folder / "samples.jsonl", samples)
    from_jsonl = read_jsonl(folder / "samples.jsonl")
    ds = to_dataset(samples)
    # paths relative to the folder, as in a JSONL file: the folder can move as a whole
    ds = ds.map(lambda r: {"video": "clips/a.mp4" if r["video"] else None})
    ds.save_to_disk(str(folder))
    got = read_jsonl(folder)
    assert [s.to_dict() for s in got] == [s.to_dict() for s in from_jsonl]
    assert got[0].video == str(folder.resolve() / "clips" / "a.mp4") and got[0].options == ["a cup", "a knife"]
    assert got[0].meta == {"source": "x", "k": [1, 2]} and got[1].video is None
    moved = tmp_path / "moved"
    shutil.move(str(folder), moved)
    assert read_jsonl(moved)[0].video == str(moved.resolve() / "clips" / "a.mp4")


def test_save_to_disk_folder_bad_rows(tmp_path):
    import datasets

    rows = [
        {"id": "a", "question": "q?", "answer": "x", "task": "openqa"},
        {"id": "b", "question": "q?", "answer": "x", "task": "guess"},
        {"id": "a", "question": "q?", "answer": "y", "task": "openqa"},
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(SampleError) as e:
        read_jsonl(tmp_path / "bad")
    assert e.value.sample_id == "b" and e.value.field == "task" and str(tmp_path / "bad") in str(e.value)
    errors: list = []
    ok = read_jsonl(tmp_path / "bad", skip_invalid=True, errors=errors)
    assert [s.id for s in ok] == ["a"] and [(x.sample_id, x.field) for x in errors] == [("b", "task"), ("a", "id")]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"DatasetDict.*train"):
        read_jsonl(tmp_path / "dd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="save_to_disk"):
        read_jsonl(tmp_path / "plain")


@pytest.mark.slow
def test_lora_adapter_over_a_hub_id_merges_from_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    """An adapter names its base by Hub id (as PEFT writes it); `ego3s merge` finds it in the cache."""
    from peft import get_peft_model

    from ego3s.train.merge import merge
    from ego3s.train.plumbing import lora_config

    home = tmp_path / "hf"
    populate_hub_cache(tiny_model_dir, home / "hub", "ego3s-test/tiny-vl")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, _ = load_model("ego3s-test/tiny-vl", dtype="float32", device="cpu")
    peft = get_peft_model(base, lora_config(2, 4))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    peft.peft_config["default"].base_model_name_or_path = "ego3s-test/tiny-vl"
    peft.save_pretrained(tmp_path / "adapter")
    assert (
        json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "ego3s-test/tiny-vl"
    )
    report = merge(tmp_path / "adapter", tmp_path / "merged", dtype="float32", echo=lambda m: None)
    assert report["kind"] == "lora" and report["base"].endswith(REV) and report["verified"]
    merged, _ = load_model(tmp_path / "merged", dtype="float32", device="cpu")
    ref = peft.merge_and_unload().state_dict()
    got = merged.state_dict()
    assert set(got) == set(ref) and all(torch.allclose(got[k], ref[k], rtol=0, atol=1e-6) for k in ref)
