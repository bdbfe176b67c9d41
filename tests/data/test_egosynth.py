"""EgoSynth: determinism, resumability, schema, boxes vs pixels, answerability, options, audit."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ego3s.data import egosynth as es
from ego3s.data import read_jsonl
from ego3s.data.egosynth_render import decode_mp4
from ego3s.data.schema import LETTERS, Sample

SMALL = es.EgoSynthConfig(train=16, test=8, probe=4)  # 36 clips
# a smaller world (the CPU demo's kind): 2 scenes x 3 objects, larger objects, fewer lying around
WORLD = es.EgoSynthConfig(
    train=16, test=8, probe=4, size=84, frames=8, scenes=2, objects_per_scene=3, object_scale=1.6, max_distractors=1
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("egosynth") / "a"
    es.generate(out, SMALL, workers=2, log=None)
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(d)): p.read_bytes()
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name not in ("generation.json", "card.md")
    }


def test_catalog():
    assert len(es.SCENES) >= 6 and len(es.OBJECTS) >= 24
    names = es.object_vocabulary()
    assert len(names) == len(set(names)), "object names and synonyms must be unique"
    for scene in es.SCENES:
        assert len(es.SCENE_OBJECTS[scene]) >= 4
        assert len(es.SCENES[scene].destinations) == 3
    looks = {(o.parts, o.colour) for o in es.OBJECTS.values()}
    assert len(looks) == len(es.OBJECTS)
    assert all(o.synonyms for o in es.OBJECTS.values())


def test_deterministic_across_runs_and_workers(dataset, tmp_path):
    other = tmp_path / "b"
    es.generate(other, SMALL, workers=1, log=None)
    a, b = _files(dataset), _files(other)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []  # JSONL, mp4, audit: byte for byte
    v = sorted(k for k in a if k.endswith(".mp4"))[0]
    assert np.array_equal(decode_mp4(dataset / v), decode_mp4(other / v))
    # metadata-only generation gives the same samples as the folder
    meta_only = es.generate_samples("train", SMALL.train, SMALL)
    on_disk = read_jsonl(dataset / "train.jsonl")
    for s, t in zip(meta_only, on_disk):
        d = t.to_dict()
        d["video"] = s.video
        assert s.to_dict() == d
    # another seed, another dataset
    assert es.generate_samples("train", 3, dataclasses.replace(SMALL, seed=1))[0].to_dict() != meta_only[0].to_dict()


def test_resumable_and_refuses_other_settings(dataset, tmp_path):
    d = tmp_path / "c"
    es.generate(d, SMALL, workers=1, log=None, audit=False)
    before = _files(d)
    gone = sorted((d / "videos").glob("*.mp4"))[:3]
    for p in gone:
        p.unlink()
    (d / "videos" / ".train_00000.mp4.abc.tmp").write_bytes(b"torn")  # left by a killed run
    summary = es.generate(d, SMALL, workers=1, log=None, audit=False)
    assert summary["videos_written"] == 3 and summary["videos_skipped"] == sum(n for _, n, _ in SMALL.splits()) - 3
    assert _files(d) == before
    with pytest.raises(ValueError, match="size"):
        es.generate(d, dataclasses.replace(SMALL, size=112), workers=1, log=None)


def test_records_valid(dataset):
    for split, n, _p in SMALL.splits():
        samples = read_jsonl(dataset / f"{split}.jsonl")  # validates every record
        assert len(samples) == n and len({s.id for s in samples}) == n
        for s in samples:
            assert Path(s.video).exists() and s.start == 0.0 and s.end == SMALL.frames / SMALL.fps
            m = s.meta
            assert m["split"] == split and m["scene"] in es.SCENES and isinstance(m["typical"], bool)
            for key in ("template", "hand", "destination", "kind", "object", "distractors", "gt"):
                assert key in m
            labels = {b.label for b in s.interaction.boxes}
            assert m["object"] in labels and f"{m['hand']}_hand" in labels
            assert labels <= {m["object"], "left_hand", "right_hand"}
            assert s.interaction.objects[0].synonyms and s.interaction.contact[0] < s.interaction.contact[1]
            times = {b.t for b in s.interaction.boxes}
            assert times <= {round(i / SMALL.fps, 4) for i in range(SMALL.frames)}
            if split == "test_atypical":
                assert not m["typical"]
    frames = decode_mp4(read_jsonl(dataset / "train.jsonl")[0].video)
    assert frames.shape == (SMALL.frames, SMALL.size, SMALL.size, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("cfg", [SMALL, WORLD], ids=["default", "small_world"])
def test_boxes_cover_the_drawn_pixels(dataset, cfg):
    W = cfg.size
    samples = es.generate_samples("train", 6, cfg) + es.generate_samples("test_atypical", 4, cfg)
    centres = (np.arange(W) + 0.5) / W
    for s in samples:
        split, idx = s.meta["split"], s.meta["generator"]["index"]
        frames, masks = es.render_clip(split, idx, cfg, masks=True)
        boxes = {(round(b.t * cfg.fps), b.label): b.box for b in s.interaction.boxes}
        for f, fm in enumerate(masks):
            for label, m in fm.items():
                if not m.any():
                    assert (f, label) not in boxes
                    continue
                x0, y0, x1, y1 = boxes[(f, label)]
                ys, xs = np.nonzero(m)
                assert centres[xs].min() >= x0 and centres[xs].max() <= x1, (s.id, f, label)
                assert centres[ys].min() >= y0 and centres[ys].max() <= y1, (s.id, f, label)
                # and tight: within 2 px of the drawn pixels (a pointed or curved extreme can fall
                # between pixel centres)
                assert x0 > (xs.min() - 2.01) / W and x1 < (xs.max() + 3.01) / W
                assert y0 > (ys.min() - 2.01) / W and y1 < (ys.max() + 3.01) / W
        # the hand is really drawn over the object at contact: skin pixels inside the object's box
        c0 = s.meta["gt"]["contact_frames"][0]
        hand = masks[c0][f"{s.meta['hand']}_hand"]
        bx = boxes[(c0, s.meta["object"])]
        sub = hand[int(bx[1] * W) : int(np.ceil(bx[3] * W)), int(bx[0] * W) : int(np.ceil(bx[2] * W))]
        assert sub.any(), s.id
    if cfg is not SMALL:
        return
    # the mp4 holds what was rendered (lossy, but close)
    s = read_jsonl(dataset / "train.jsonl")[0]
    rendered = es.render_clip("train", 0, cfg).astype(np.int16)
    assert np.abs(decode_mp4(s.video).astype(np.int16) - rendered).mean() < 8


def test_scene_object_boxes_cover_their_pixels():
    """meta.gt.scene_objects: each object lying in the scene has a box per frame in view that holds
    the pixels it adds to the rendered frame (render with and without it; the warp samples the
    canvas at the nearest pixel, hence one pixel of slack)."""
    cfg, W = SMALL, SMALL.size
    for split, idx in (("train", 0), ("train", 3), ("test_atypical", 1)):
        pl, _ = es._plan(cfg, split, idx, cfg.p_of(split))
        meta = es.generate_samples(split, 1, cfg, start=idx)[0].meta
        assert [o["name"] for o in meta["gt"]["scene_objects"]] == [es.OBJECTS[n].name for n, *_ in pl.distractors]
        full = es.to_rgb(es._render(pl, cfg))
        for k, entry in enumerate(meta["gt"]["scene_objects"]):
            without = es.to_rgb(
                es._render(dataclasses.replace(pl, distractors=pl.distractors[:k] + pl.distractors[k + 1 :]), cfg)
            )
            boxes = {round(b[0] * cfg.fps): b[1:] for b in entry["boxes"]}
            tight = 0
            for f in range(cfg.frames):
                ys, xs = np.nonzero((full[f] != without[f]).any(-1))
                if len(xs) == 0:
                    continue  # hidden by what is drawn over it
                x0, y0, x1, y1 = boxes[f]
                assert xs.min() >= x0 * W - 1.01 and xs.max() + 1 <= x1 * W + 1.01, (split, idx, k, f)
                assert ys.min() >= y0 * W - 1.01 and ys.max() + 1 <= y1 * W + 1.01, (split, idx, k, f)
                tight += (
                    max(
                        abs(xs.min() - x0 * W),
                        abs(xs.max() + 1 - x1 * W),
                        abs(ys.min() - y0 * W),
                        abs(ys.max() + 1 - y1 * W),
                    )
                    <= 3
                )
            assert tight, (split, idx, k)  # not just any large box: tight where nothing covers it


def test_every_question_answerable_and_tampering_caught():
    samples = [s for split in ("train", "test_atypical") for s in es.generate_samples(split, 300, SMALL)]
    problems = {s.id: es.check_answerable(s) for s in samples}
    assert {k: v for k, v in problems.items() if v} == {}
    assert Counter(s.meta["kind"] for s in samples).keys() == set(es.KIND_WEIGHTS)
    assert set(Counter(s.meta["template"] for s in samples)) == set(es.TEMPLATES)

    s = next(x for x in samples if x.task == "closeqa" and x.meta["kind"] == "object")
    wrong = Sample.from_dict({**s.to_dict(), "answer": LETTERS[(s.answer_index + 1) % 4]})
    assert any("gold option" in p for p in es.check_answerable(wrong))
    d = s.to_dict()
    d["meta"] = json.loads(json.dumps(s.meta))
    d["meta"]["destination"] = next(n for n in es.DESTINATIONS if n != s.meta["destination"])
    d["meta"]["gt"]["dest_box"] = [0.0, 0.0, 0.05, 0.05]
    assert any("does not end in" in p for p in es.check_answerable(Sample.from_dict(d)))
    h = next(x for x in samples if x.meta["kind"] == "hand" and x.task == "openqa")
    flipped = Sample.from_dict({**h.to_dict(), "answer": "left hand" if h.answer == "right hand" else "right hand"})
    assert es.check_answerable(flipped)
    u = next(x for x in samples if x.meta["action"] == "use")
    d = u.to_dict()
    d["meta"] = {**u.meta, "verb": {"swipe": "tap", "tap": "swipe", "stir": "tip", "tip": "stir"}[u.meta["verb"]]}
    assert any("use motion" in p for p in es.check_answerable(Sample.from_dict(d)))


def test_smaller_world_draws_only_from_its_catalog():
    """scenes / objects_per_scene restrict every object that appears (held, lying, named in an
    option) to the catalog in use; the oracles and the checker read it from meta.generator; the
    shortcut design holds (priors answer typical clips, never atypical ones)."""
    scenes, in_use = WORLD.catalog()
    assert scenes == es.SCENE_NAMES[:2] and all(len(v) == 3 for v in in_use.values())
    objects = {o for v in in_use.values() for o in v}
    samples = [s for split in ("train", "test_atypical") for s in es.generate_samples(split, 300, WORLD)]
    for s in samples:
        m = s.meta
        assert m["scene"] in scenes and m["object"] in objects and m["theme"] in in_use[m["scene"]]
        assert set(m["distractors"]) <= objects and 2 <= len(m["distractors"]) <= 3, s.id
        assert (m["object"] in in_use[m["scene"]]) == m["typical"]
        assert m["generator"]["scenes"] == 2 and m["generator"]["object_scale"] == 1.6
        if s.task == "closeqa" and m["kind"] == "object":
            assert set(s.options) <= objects and sum(o in in_use[m["scene"]] for o in s.options) == 1
            assert len(set(s.options)) == 4
        assert es.check_answerable(s) == [], s.id
    typical = es.audit_samples([s for s in samples if s.meta["typical"]])
    atypical = es.audit_samples([s for s in samples if not s.meta["typical"]])
    assert typical["prior_only"]["closeqa"] == 1.0 and typical["context_only"]["all"] == 1.0
    assert atypical["prior_only"]["all"] == 0.0 and atypical["context_only"]["all"] == 0.0


def test_object_scale_draws_larger_objects():
    """The same plan at object_scale 1.6 draws the lying object 1.6 times as wide (boxes follow);
    a default config's samples carry no world keys (their bytes are unchanged)."""
    base = dataclasses.replace(WORLD, object_scale=1.0)
    widths = []
    for cfg in (base, WORLD):
        s = es.generate_samples("train", 1, cfg, start=5)[0]
        x0, _, x1, _ = next(b.box for b in s.interaction.boxes if b.t == 0.0 and b.label == s.meta["object"])
        widths.append((x1 - x0) * cfg.size)
    assert abs(widths[1] / widths[0] - 1.6) < 4 / widths[0], widths  # pixel snapping: <= 2 px per side
    assert set(es.generate_samples("train", 1, SMALL)[0].meta["generator"]) == {
        "name",
        "version",
        "seed",
        "index",
        "p_typical",
        "frames",
        "fps",
        "size",
    }


def test_closed_options():
    closed = [
        s for split in ("train", "test_atypical") for s in es.generate_samples(split, 400, SMALL) if s.task == "closeqa"
    ]
    assert len(closed) > 300
    for s in closed:
        assert len(s.options) == 4 and len({o.lower() for o in s.options}) == 4
        assert [o.lower() for o in s.options].count(s.answer_text.lower()) == 1
        if s.meta["kind"] == "object":  # exactly one option is typical for the scene
            assert sum(o in es.SCENE_OBJECTS[s.meta["scene"]] for o in s.options) == 1
    share = Counter(s.answer for s in closed)
    assert set(share) == set("ABCD") and all(0.17 < v / len(closed) < 0.33 for v in share.values())


def test_audit_measures_the_shortcuts():
    p = SMALL.p_typical
    train = es.audit_samples(es.generate_samples("train", 500, SMALL))
    atyp = es.audit_samples(es.generate_samples("test_atypical", 300, SMALL))
    assert abs(train["typical_share"] - p) < 0.06
    for oracle in ("prior_only", "context_only"):
        assert abs(train[oracle]["closeqa"] - p) < 0.08, oracle
        assert atyp[oracle]["all"] <= 0.02, oracle
    assert abs(train["context_only"]["all"] - p) < 0.08
    assert train["prior_only"]["by_template"]["pick_activity"] > 0.5
    low = dataclasses.replace(SMALL, p_typical=0.3)
    assert abs(es.audit_samples(es.generate_samples("train", 400, low))["typical_share"] - 0.3) < 0.07


def test_audit_card_and_preview_files(dataset, tmp_path):
    a = json.loads((dataset / "audit.json").read_text())
    assert set(a["splits"]) == {"train", "test_id", "test_atypical", "probe"}
    assert a["splits"]["test_atypical"]["prior_only"]["all"] == 0.0
    card = (dataset / "card.md").read_text()
    assert "Shortcut audit" in card and "test_atypical" in card
    png = es.preview(dataset, tmp_path / "p.png", n=3)
    from PIL import Image

    im = Image.open(png)
    assert im.width > 4 * SMALL.size and im.height >= 3 * SMALL.size and png.stat().st_size < 300_000


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from ego3s.cli import app

    r = CliRunner().invoke(
        app,
        [
            "synth",
            "--out",
            str(tmp_path / "d"),
            "--train",
            "3",
            "--test",
            "2",
            "--probe",
            "1",
            "--workers",
            "1",
            "--frames",
            "8",
            "--size",
            "112",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "EgoSynth dataset" in r.output and len(read_jsonl(tmp_path / "d" / "train.jsonl")) == 3
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "e"), "--p-typical", "1.5"])
    assert bad.exit_code == 1 and "p_typical" in bad.output
