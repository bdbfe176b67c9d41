"""Vision pretraining on interaction labels (ego3s.train.vision_pretrain): the dense box targets
on hand-made boxes, and a few real steps on the tiny model's tower."""

import json
import math

import pytest
import torch

from ego3s.data.schema import Interaction, InteractionObject, TimedBox
from ego3s.data.video import ClipSpec
from ego3s.train.vision_pretrain import VisionPretrainConfig, pretrain_vision, token_box_targets


def test_token_box_targets_mark_the_cells_a_box_touches():
    it = Interaction(
        objects=[InteractionObject("mug")],
        boxes=[
            TimedBox(0.0, "mug", [0.0, 0.0, 0.5, 0.5]),
            TimedBox(1.0, "mug", [0.0, 0.0, 0.5, 0.5]),
            TimedBox(3.0, "right_hand", [0.75, 0.75, 1.0, 1.0]),
        ],
    )
    # 4 frames -> 2 temporal tokens; 8 x 8 patches, merge 2 -> 4 x 4 tokens per temporal token
    t = token_box_targets(it, [0.0, 0.5, 1.0, 2.5], [2, 8, 8], merge=2).reshape(2, 4, 4)
    first = torch.zeros(4, 4)
    first[:2, :2] = 1  # the mug's top-left quarter; the hand's one box (t = 3) is held 1 s: not yet
    assert torch.equal(t[0], first)
    second = first.clone()
    second[3, 3] = 1  # frame 3 (t = 2.5) adds the hand's bottom-right cell
    assert torch.equal(t[1], second)
    assert token_box_targets(Interaction(objects=[]), [0.0, 0.5], [1, 4, 4], merge=2).sum() == 0
    objects = token_box_targets(it, [0.0, 0.5, 1.0, 2.5], [2, 8, 8], merge=2, objects_only=True).reshape(2, 4, 4)
    assert torch.equal(objects[0], first) and torch.equal(objects[1], first)  # the hand's cell is not an object's


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from ego3s.data.egosynth import EgoSynthConfig, generate

    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=6, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


def test_pretrain_moves_the_tower_and_restores_its_flags(tiny_model_dir, synth, tmp_path):
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model

    model, processor = load_model(tiny_model_dir, dtype="float32")
    tower = model.model.visual
    for p in tower.parameters():
        p.requires_grad_(False)  # as a caller that trains only the language model would leave it
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    samples = read_jsonl(synth / "train.jsonl")
    bad = json.loads(json.dumps(samples[0].to_dict()))
    bad["id"], bad["video"] = "unreadable", str(tmp_path / "missing.mp4")
    from ego3s.data.schema import Sample

    cfg = VisionPretrainConfig(steps=4, batch_size=3, learning_rate=1e-3, held_out=2, workers=2)
    sampling = ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56)
    stats = pretrain_vision(model, processor, [Sample.from_dict(bad)] + samples, cfg, sampling, progress=False)
    assert stats["usable"] == 7 and stats["steps"] == 4 and stats["unreadable"] == 1
    assert stats["train_clips"] + stats["held_out_clips"] == 6
    held = stats["held_out"]  # object accuracy of the held-out clips, unmasked and with the interaction masked
    assert set(held) == {"full", "context"} and all(0.0 <= held[v]["all"] <= 1.0 for v in held)
    assert [c["step"] for c in stats["curve"]] == [1, 2, 3, 4] and stats["curve"][-1]["full"] == held["full"]
    assert stats["classes"] == len(
        {s.interaction.objects[0].name for s in samples} | {bad["interaction"]["objects"][0]["name"]}
    )
    assert 0.0 <= stats["object_acc"] <= 1.0 and stats["box_loss"] > 0
    moved = sum(not torch.equal(p, before[n]) for n, p in tower.named_parameters())
    assert moved == len(before)  # every tower tensor, the merger included
    assert not any(p.requires_grad for p in tower.parameters())
    assert pretrain_vision(model, processor, samples, VisionPretrainConfig(steps=0), sampling)["classes"] > 0


def test_non_finite_steps_are_skipped_and_a_diverged_tower_stops(tiny_model_dir, synth, monkeypatch):
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train import vision_pretrain as vp

    model, processor = load_model(tiny_model_dir, dtype="float32")
    samples = read_jsonl(synth / "train.jsonl")
    sampling = ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56)
    real, calls = vp.tower_tokens, {"n": 0}

    def nan_on_second_step(tower, pix, grid):
        calls["n"] += 1
        tok, counts = real(tower, pix, grid)
        return (tok * float("nan") if calls["n"] == 2 and tower.training else tok), counts

    monkeypatch.setattr(vp, "tower_tokens", nan_on_second_step)
    cfg = VisionPretrainConfig(steps=3, batch_size=2, held_out=0, workers=0)
    stats = pretrain_vision(model, processor, samples, cfg, sampling, progress=False)
    assert stats["skipped_steps"] == 1
    assert all(torch.isfinite(p).all() for p in model.model.visual.parameters())  # the NaN step never landed

    monkeypatch.setattr(
        vp, "tower_tokens", lambda tower, pix, grid: (lambda t: (t[0] * float("nan"), t[1]))(real(tower, pix, grid))
    )
    with pytest.raises(FloatingPointError, match="non-finite steps in a row"):
        pretrain_vision(
            model,
            processor,
            samples,
            VisionPretrainConfig(steps=vp.MAX_SKIPS_IN_A_ROW + 5, batch_size=2, held_out=0, workers=0),
            sampling,
            progress=False,
        )


def test_warmup_stops_at_the_first_nan_log():
    from types import SimpleNamespace

    from ego3s.train.plumbing import stop_on_nan

    cb, state = stop_on_nan(), SimpleNamespace(global_step=40)
    cb.on_log(None, state, None, logs={"loss": 0.5, "grad_norm": 1.2, "learning_rate": 1e-4})
    with pytest.raises(FloatingPointError, match="step 40"):
        cb.on_log(None, state, None, logs={"loss": 0.0, "grad_norm": float("nan")})
    with pytest.raises(FloatingPointError):
        cb.on_log(None, state, None, logs={"loss": "0", "grad_norm": "nan"})  # as printed by the progress bar


def test_heads_pool_a_batch_of_equal_clips_as_clip_by_clip():
    from ego3s.train.vision_pretrain import VisionHeads

    torch.manual_seed(0)
    heads, tokens = VisionHeads(8, 5), torch.randn(12, 8)
    box, cls = heads(tokens, [4, 4, 4])  # batched path
    _, one = heads(tokens[:4], [4])
    _, mixed = heads(torch.cat([tokens, tokens[:2]]), [4, 4, 4, 2])  # per-clip path
    assert box.shape == (12,) and cls.shape == (3, 5)
    assert torch.allclose(cls[0], one[0], atol=1e-6) and torch.allclose(cls, mixed[:3], atol=1e-6)


def test_a_diverging_warmup_stops_at_its_first_nan_log(tiny_model_dir, synth, tmp_path):
    from ego3s.train.warmup import WarmupConfig, warmup

    cfg = WarmupConfig(
        steps=10,
        batch_size=2,
        learning_rate=1e8,
        nframes=4,
        max_pixels=56 * 56,
        min_pixels=56 * 56,
        train_language_model=True,
    )
    with pytest.raises(FloatingPointError, match="diverged at step 10"):  # the first log (logging_steps 10)
        warmup(tiny_model_dir, str(synth / "train.jsonl"), str(tmp_path / "w"), cfg)
    assert not (tmp_path / "w" / "final").exists()


def test_warmup_can_keep_the_pretrained_tower_fixed(tiny_model_dir, synth, tmp_path, monkeypatch):
    """`train_vision_tower: false`: vision pretraining trains the tower, the QA warm-up only the
    merger and the language model."""
    from safetensors.torch import load_file

    from ego3s.train import vision_pretrain as vp
    from ego3s.train.warmup import WarmupConfig, warmup

    pretrained = {}

    def spy(model, *args, **kwargs):  # the tower as vision pretraining leaves it
        stats = real(model, *args, **kwargs)
        pretrained.update({f"visual.{k}": v.detach().clone() for k, v in model.model.visual.state_dict().items()})
        return stats

    real = vp.pretrain_vision
    monkeypatch.setattr(vp, "pretrain_vision", spy)
    pix = 56 * 56
    vcfg = VisionPretrainConfig(steps=2, batch_size=2, held_out=0, workers=0)
    common = dict(
        steps=2,
        batch_size=2,
        learning_rate=1e-3,
        nframes=4,
        max_pixels=pix,
        min_pixels=pix,
        train_language_model=True,
        vision_pretrain=vcfg,
    )
    before = load_file(f"{tiny_model_dir}/model.safetensors")
    block = next(k for k in before if k.startswith("visual.blocks.0") and k.endswith("qkv.weight"))
    merger = next(k for k in before if k.startswith("visual.merger") and k.endswith("weight"))
    lm = next(k for k in before if "visual" not in k and k.endswith("q_proj.weight"))
    after = {}
    for frozen in (False, True):
        final = warmup(
            tiny_model_dir,
            str(synth / "train.jsonl"),
            str(tmp_path / f"w{frozen}"),
            WarmupConfig(**common, train_vision_tower=not frozen),
        )
        after[frozen] = load_file(f"{final}/model.safetensors")
        assert not torch.equal(pretrained[block], before[block])  # pretraining moved the tower
        # frozen: exactly the pretrained tower; trained: the QA warm-up moved it further
        assert torch.equal(after[frozen][block], pretrained[block]) is frozen
        for k in (merger, lm):  # the merger and the language model learn either way
            assert not torch.equal(after[frozen][k], before[k]), k


def test_name_alignment_pulls_the_object_tokens_towards_the_name_embedding(tiny_model_dir, synth):
    """lm_align: the merged tokens on the object's box move towards the language model's input
    embedding of the object's name; the language model itself is not trained."""
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train.vision_pretrain import name_prototypes

    model, processor = load_model(tiny_model_dir, dtype="float32")
    protos = name_prototypes(model, processor.tokenizer, ["cutting board", "mug"])
    emb = model.get_input_embeddings().weight
    ids = processor.tokenizer(" mug", add_special_tokens=False)["input_ids"]
    assert torch.allclose(protos[1], torch.nn.functional.normalize(emb[ids].mean(0), dim=0), atol=1e-6)
    lm_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("model.visual")}
    samples = read_jsonl(synth / "train.jsonl")
    sampling = ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56)
    cfg = VisionPretrainConfig(steps=30, batch_size=4, learning_rate=3e-3, held_out=2, workers=0, lm_align=1.0)
    torch.manual_seed(0)
    stats = pretrain_vision(model, processor, samples, cfg, sampling, progress=False)
    first = stats["curve"][0]
    # 30 steps on 4 clips: the name loss falls well below chance (ln of the classes) ...
    assert stats["name_loss"] < 0.5 * torch.log(torch.tensor(float(stats["classes"]))).item()
    # ... and the held-out report says how often the object's tokens read as its name
    assert 0.0 <= stats["held_out"]["full"]["as_name"]["all"] <= 1.0 and "as_name" in first["context"]
    assert all(torch.equal(p, lm_before[n]) for n, p in model.named_parameters() if n in lm_before)
    off = pretrain_vision(
        model,
        processor,
        samples,
        VisionPretrainConfig(steps=1, batch_size=2, held_out=2, workers=0),
        sampling,
        progress=False,
    )
    assert "name_loss" not in off and "as_name" not in off["held_out"]["full"]


def test_vision_pretraining_can_read_its_own_pool(tiny_model_dir, synth, tmp_path):
    """`vision_pretrain.data`: the tower pretrains on another JSONL than the QA warm-up's."""
    from ego3s.data.io import read_jsonl, write_jsonl
    from ego3s.train.warmup import WarmupConfig, warmup

    write_jsonl(tmp_path / "vision.jsonl", read_jsonl(synth / "train.jsonl")[:4])
    pix = 56 * 56
    vcfg = VisionPretrainConfig(steps=1, batch_size=2, held_out=0, workers=0, data=str(tmp_path / "vision.jsonl"))
    warmup(
        tiny_model_dir,
        str(synth / "train.jsonl"),
        str(tmp_path / "w"),
        WarmupConfig(steps=1, batch_size=2, nframes=4, max_pixels=pix, min_pixels=pix, vision_pretrain=vcfg),
    )
    stats = json.loads((tmp_path / "w" / "vision_pretrain.json").read_text())
    assert stats["samples"] == 4 and stats["data"] == str(tmp_path / "vision.jsonl")  # not the warm-up's 6


def test_context_share_trains_typical_clips_with_the_interaction_masked(tiny_model_dir, synth):
    """`context_share`: those clips reach the tower as CSM's context view and count in the object
    loss only (their box cells show the fill colour, not the object)."""
    from ego3s.data.io import read_jsonl
    from ego3s.data.video import load_sample_clip
    from ego3s.data.views import make_view
    from ego3s.models.loading import load_model
    from ego3s.train.vision_pretrain import _Encoded, encode_clips

    model, processor = load_model(tiny_model_dir, dtype="float32")
    samples = read_jsonl(synth / "train.jsonl")
    sampling = ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56)
    names = sorted({s.interaction.objects[0].name for s in samples})
    tower = model.model.visual
    ds = _Encoded(
        samples,
        processor.video_processor,
        sampling,
        names,
        ("input",),
        tower.spatial_merge_size,
        tower.config.temporal_patch_size,
        context_share=1.0,
    )
    for i, s in enumerate(samples):
        item = ds[i]
        assert item["masked"] is bool(s.meta["typical"])
        view = "context" if item["masked"] else "full"
        want, _ = encode_clips(
            processor.video_processor,
            [make_view(load_sample_clip(s, **sampling.sampling_kwargs()), view, s.interaction)],
        )
        assert torch.equal(item["input"][0], want.to(torch.bfloat16))
    assert any(ds[i]["masked"] for i in range(len(samples))) and not all(ds[i]["masked"] for i in range(len(samples)))

    cfg = VisionPretrainConfig(steps=2, batch_size=6, held_out=0, workers=0, lm_align=1.0, context_share=1.0)
    stats = pretrain_vision(model, processor, samples, cfg, sampling, progress=False)
    assert stats["masked_clips"] == sum(bool(s.meta["typical"]) for s in samples)
    assert all(math.isfinite(stats[k]) for k in ("box_loss", "name_loss", "object_loss"))
    with pytest.raises(ValueError, match="context_share"):
        VisionPretrainConfig(context_share=2.0)


def test_scene_token_labels_name_the_cells_of_scene_objects():
    from ego3s.train.vision_pretrain import scene_token_labels

    scene = [
        {"name": "mug", "boxes": [[0.0, 0.0, 0.0, 0.5, 0.5]]},  # top-left quarter
        {"name": "kettle", "boxes": [[0.0, 0.25, 0.0, 0.75, 0.25]]},  # top strip, overlaps the mug
        {"name": "unknown", "boxes": [[0.0, 0.5, 0.5, 1.0, 1.0]]},
    ]  # not a known name
    exclude = torch.zeros(16)
    exclude[0] = 1  # an interaction cell
    labels = scene_token_labels(
        scene, [0.0, 0.5], [1, 8, 8], merge=2, temporal_patch=2, names=["kettle", "mug"], exclude=exclude
    ).reshape(4, 4)
    want = torch.full((4, 4), -1)
    want[:2, :2] = 1  # mug
    want[0, 2] = 0  # kettle alone
    want[0, 1] = -1  # mug and kettle both: ambiguous
    want[0, 0] = -1  # the interaction's cell
    assert torch.equal(labels, want)
    assert (scene_token_labels(None, [0.0], [1, 4, 4], 2, 2, ["mug"], torch.zeros(4)) == -1).all()


def test_scene_alignment_pulls_scene_object_tokens_towards_their_names(tiny_model_dir, synth):
    """scene_align: the tokens on the objects lying in the scene (EgoSynth's meta.gt.scene_objects)
    learn their names, with the interaction masked too; the held-out report says how often they
    read as the right name."""
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model

    model, processor = load_model(tiny_model_dir, dtype="float32")
    samples = read_jsonl(synth / "train.jsonl")
    assert all(s.meta["gt"]["scene_objects"] for s in samples)
    sampling = ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56)
    cfg = VisionPretrainConfig(steps=30, batch_size=4, learning_rate=3e-3, held_out=2, workers=0, scene_align=1.0)
    torch.manual_seed(0)
    stats = pretrain_vision(model, processor, samples, cfg, sampling, progress=False)
    assert stats["scene_name_loss"] < 0.5 * math.log(stats["classes"]) and "name_loss" not in stats
    for view in ("full", "context"):
        assert 0.0 <= stats["held_out"][view]["scene_as_name"]["all"] <= 1.0


def test_encode_clips_passes_no_cap_so_transformers_does_not_warn(tiny_model_dir, synth, monkeypatch):
    """transformers 5.17-5.2x warn once per process (every DataLoader worker of the warm-up) when
    `cap_pixels_per_frame` is not passed; the frames are not resized, so passing False changes no
    pixel and silences it."""
    import importlib

    from ego3s.data.io import read_jsonl
    from ego3s.data.video import load_sample_clip
    from ego3s.models.inputs import no_cap_kwargs
    from ego3s.models.loading import load_model
    from ego3s.train.vision_pretrain import encode_clips

    _, processor = load_model(tiny_model_dir, dtype="float32")
    vp = processor.video_processor
    if not no_cap_kwargs(vp):
        pytest.skip("this transformers has no cap_pixels_per_frame")
    module = importlib.import_module(type(vp).__module__)
    warned = []
    monkeypatch.setattr(module.logger, "warning_once", lambda msg, *a, **k: warned.append(msg))
    s = read_jsonl(synth / "train.jsonl")[0]
    clip = load_sample_clip(s, **ClipSpec(nframes=4, max_pixels=56 * 56, min_pixels=56 * 56).sampling_kwargs())
    pix, grid = encode_clips(vp, [clip])
    assert warned == []
    plain = vp(videos=[clip.frames], return_tensors="pt", do_resize=False, do_sample_frames=False)
    assert any("cap_pixels_per_frame" in m for m in warned)  # the call without it does warn
    assert torch.equal(pix, plain["pixel_values_videos"]) and torch.equal(grid, plain["video_grid_thw"])
