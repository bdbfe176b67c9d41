"""`ego3s sft` and `ego3s merge` on the CPU with the tiny model.

SFT: a few real steps through TRL's SFTTrainer with ego3s's video batches lower the loss, the
loss is the one a plain forward pass with the video gives, checkpoints are written and a resume
continues to the new step count. Merge: LoRA folded into the base gives the PEFT model's logits;
a real torch.distributed.checkpoint (FSDP's format) and a ZeRO-2 checkpoint in the layout
deepspeed's zero_to_fp32 reads are consolidated back to the original weights; anything missing is
an error, never a silent drop.
"""

import json
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ego3s.data.egosynth import EgoSynthConfig, generate
from ego3s.train.merge import MergeError, detect, merge
from ego3s.train.sft import SFTRunConfig, run_sft
from helpers import REPO

PIX = 56 * 56


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """8 EgoSynth samples, each with a reasoning trace in `meta.rationale`."""
    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=8, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    lines = (out / "train.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines if x.strip()]
    for r in rows:
        obj = r["interaction"]["objects"][0]["name"]
        r["meta"]["rationale"] = f"My hand moves toward the {obj}; the answer follows from that."
    (out / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def _cfg(tiny_model_dir, synth, out, **kw):
    base = dict(
        model=tiny_model_dir,
        data=str(synth / "traces.jsonl"),
        out=str(out),
        fmt="reasoning",
        rationale="meta.rationale",
        learning_rate=2e-3,
        warmup_ratio=0.0,
        per_device_train_batch_size=4,
        max_steps=4,
        save_steps=2,
        nframes=4,
        max_pixels=PIX,
        min_pixels=28 * 28,
        dtype="float32",
        freeze_vision=False,
    )
    return SFTRunConfig(**{**base, **kw})


def _batch(processor, cfg, synth, n=2):
    from ego3s.data.io import read_jsonl
    from ego3s.train.collator import ClipCollator

    rows = [{"sample": json.dumps(s.to_dict())} for s in read_jsonl(synth / "traces.jsonl")[:n]]
    return ClipCollator(processor, cfg)(rows)


def test_sft_lowers_loss_checkpoints_and_resumes(tiny_model_dir, synth, tmp_path):
    out = tmp_path / "sft"
    cfg = _cfg(tiny_model_dir, synth, out)
    trainer = run_sft(cfg)
    assert trainer.state.global_step == 4
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.3, losses
    assert (out / "checkpoint-2" / "trainer_state.json").exists() and (out / "checkpoint-4").is_dir()
    assert (out / "final" / "config.json").exists() and (out / "final" / "processor_config.json").exists()
    hist = json.loads((out / "log_history.json").read_text())
    assert [h["step"] for h in hist if "loss" in h] == [1, 2, 3, 4]
    assert all("mean_token_accuracy" in h for h in hist if "loss" in h)

    # the loss SFTTrainer optimises is the teacher-forced loss of a forward pass *with* the video
    model, batch = trainer.model.eval(), _batch(trainer.processing_class, cfg, synth)
    assert "pixel_values_videos" in batch and "second_per_grid_ts" in batch
    with torch.no_grad():
        sft_loss = trainer.compute_loss(model, dict(batch))
        plain = model(**batch, fused_lm_head=False).loss
        blind = model(
            **{
                k: v
                for k, v in batch.items()
                if k not in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
            }
        ).loss
    assert torch.allclose(sft_loss, plain, atol=1e-5), (sft_loss, plain)
    assert abs(float(plain - blind)) > 1e-4  # the video matters to that loss

    # killed after checkpoint-2: the resumed run trains steps 3 and 4 again and ends where the
    # uninterrupted one did
    uninterrupted = load_file(out / "final" / "model.safetensors")
    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(out / "final")
    resumed = run_sft(cfg, resume=True)
    assert resumed.state.global_step == 4
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3, 4]
    again = load_file(out / "final" / "model.safetensors")
    assert set(again) == set(uninterrupted)
    for k in again:
        torch.testing.assert_close(again[k], uninterrupted[k], atol=1e-6, rtol=1e-5)
    # resuming a finished run only rewrites final/ (no fifth step)
    shutil.rmtree(out / "final")
    assert run_sft(cfg, resume=True).state.global_step == 4
    for k in again:
        assert torch.equal(load_file(out / "final" / "model.safetensors")[k], again[k])


def test_missing_trace_is_an_error(tiny_model_dir, synth, tmp_path):
    cfg = _cfg(tiny_model_dir, synth, tmp_path / "x", data=str(synth / "train.jsonl"))
    with pytest.raises(ValueError, match="meta.rationale"):
        run_sft(cfg)


def test_lora_sft_then_merge_gives_the_peft_logits(tiny_model_dir, synth, tmp_path):
    from peft import PeftModel
    from typer.testing import CliRunner

    from ego3s.cli import app
    from ego3s.models.loading import load_model

    out = tmp_path / "lora"
    cfg = _cfg(
        tiny_model_dir, synth, out, lora=True, lora_r=8, lora_alpha=16, learning_rate=1e-2, max_steps=2, save_steps=10
    )
    run_sft(cfg)
    assert detect(out / "final")[0] == "lora"
    base, processor = load_model(tiny_model_dir, dtype="float32")
    peft_model = PeftModel.from_pretrained(base, out / "final").eval()
    batch = _batch(processor, cfg, synth)
    with torch.no_grad():
        want = peft_model(**batch).logits
        with peft_model.disable_adapter():
            untouched = peft_model(**batch).logits

    merged_dir = tmp_path / "merged"
    res = CliRunner().invoke(app, ["merge", str(out / "final"), "--out", str(merged_dir), "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    assert "LoRA adapter" in res.output and "verified" in res.output
    merged, _ = load_model(merged_dir, dtype="float32")  # what `ego3s eval` does
    with torch.no_grad():
        got = merged(**batch).logits
    effect = float((want - untouched).abs().max())
    assert effect > 1e-2, effect  # the adapter changed the model well beyond the tolerance below
    # float32; W + BA folded into one matrix sums in another order (measured max |diff| 2.7e-5)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    res = CliRunner().invoke(app, ["merge", str(out / "final"), "--out", str(merged_dir)])
    assert res.exit_code == 1 and "exists" in res.output


def _perturbed(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # so a merge that reads the base instead would show
    return model


def _checkpoint_dir(tiny_model_dir, model, path):
    """A checkpoint-N folder as the Trainer leaves it beside the shards: config and processor."""
    from transformers import AutoProcessor

    path.mkdir(parents=True)
    model.config.save_pretrained(path)
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def _same_weights(model, folder):
    from transformers import AutoModelForImageTextToText

    got = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).state_dict()
    want = model.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_merge_fsdp_dcp_checkpoint(tiny_model_dir, tmp_path):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    model = _perturbed(tiny_model_dir)
    ckpt = _checkpoint_dir(tiny_model_dir, model, tmp_path / "run" / "checkpoint-3")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        # accelerate's layout for FSDP's SHARDED_STATE_DICT
        dcp.save({"model": model.state_dict()}, checkpoint_id=str(ckpt / "pytorch_model_fsdp_0"))
        broken = dict(model.state_dict())
        broken.pop("model.language_model.layers.0.mlp.up_proj.weight")
        dcp.save({"model": broken}, checkpoint_id=str(tmp_path / "broken" / "checkpoint-3" / "pytorch_model_fsdp_0"))
    finally:
        dist.destroy_process_group()
    assert detect(ckpt) == ("fsdp", ckpt / "pytorch_model_fsdp_0")
    messages = []
    report = merge(ckpt, tmp_path / "merged", dtype="float32", echo=messages.append)
    assert report["kind"] == "fsdp" and report["verified"] and "FSDP" in messages[0]
    _same_weights(model, tmp_path / "merged")
    with pytest.raises(MergeError, match="up_proj"):  # never a merge with a weight left at random
        merge(tmp_path / "broken" / "checkpoint-3", tmp_path / "m2", base=ckpt, dtype="float32", echo=lambda m: None)
    merge(ckpt, tmp_path / "bf16", echo=lambda m: None)  # the default output dtype
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_merge_zero_checkpoint_in_zero_to_fp32_layout(tiny_model_dir, tmp_path):
    """A one-rank ZeRO-2 checkpoint written by hand in the layout zero_to_fp32 reads (a real one
    needs DeepSpeed on a GPU): the fp32 master weights flat in one partition, names and shapes in
    the model states, the tied lm_head as a shared parameter."""
    pytest.importorskip("deepspeed")
    model = _perturbed(tiny_model_dir)
    ckpt = _checkpoint_dir(tiny_model_dir, model, tmp_path / "checkpoint-5")
    step = ckpt / "global_step5"
    step.mkdir()
    (ckpt / "latest").write_text("global_step5")
    params = OrderedDict((n, p.detach()) for n, p in model.named_parameters())
    flat = torch.cat([p.reshape(-1) for p in params.values()])
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 2)])  # ZeRO-2 aligns to 2 x world size
    torch.save(
        {
            "module": {},
            "buffer_names": [],
            "param_shapes": [OrderedDict((n, p.shape) for n, p in params.items())],
            "frozen_param_shapes": None,
            "ds_version": "0.19.8",
            "shared_params": {"lm_head.weight": "model.language_model.embed_tokens.weight"},
        },
        step / "mp_rank_00_model_states.pt",
    )
    torch.save(
        {"optimizer_state_dict": {"zero_stage": 2, "partition_count": 1, "single_partition_of_fp32_groups": [flat]}},
        step / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    )
    assert detect(ckpt) == ("deepspeed", ckpt) and detect(step) == ("deepspeed", ckpt)
    report = merge(step, tmp_path / "merged", dtype="float32", echo=lambda m: None)
    assert report["kind"] == "deepspeed" and report["verified"]
    _same_weights(model, tmp_path / "merged")


def test_detect_says_what_it_found(tiny_model_dir, tmp_path):
    with pytest.raises(MergeError, match="found neither"):
        detect(tmp_path)
    assert detect(tiny_model_dir)[0] == "hf"
    with pytest.raises(MergeError, match="already a Hugging Face model"):
        merge(tiny_model_dir, tmp_path / "o", echo=lambda m: None)
    assert not Path(tmp_path / "o").exists()


def test_shipped_sft_config_loads():
    from ego3s.config import load_config

    root = REPO
    cfg = load_config(SFTRunConfig, root / "configs" / "sft_config.yaml", ["lora=true", "max_steps=5"])
    assert cfg.lora and cfg.max_steps == 5 and cfg.rationale == "meta.rationale"


def test_reasoning_warmup_trains_a_share_in_the_direct_format(tiny_model_dir, synth):
    """A base model that only saw <think> gives CSM's direct-answer likelihoods noise (H200,
    the first 2026-11-26 H200 study: s_full = s_context = s_blind); `direct_share` trains that share answer-only."""
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train.collator import sample_format
    from ego3s.train.warmup import WarmupConfig

    samples = read_jsonl(synth / "traces.jsonl")
    ids = [f"s{i}" for i in range(400)]
    half = [
        sample_format(samples[0].__class__.from_dict({**samples[0].to_dict(), "id": i}), "reasoning", 0.5) for i in ids
    ]
    assert 150 < half.count("direct") < 250 and set(half) == {"direct", "reasoning"}
    assert (
        sample_format(samples[0], "direct", 0.0) == "direct"
        and sample_format(samples[0], "reasoning", 0.0) == "reasoning"
    )
    _, processor = load_model(tiny_model_dir, dtype="float32")
    pix = 56 * 56
    for share, think in ((0.0, True), (1.0, False)):
        cfg = WarmupConfig(fmt="reasoning", direct_share=share, nframes=4, max_pixels=pix, min_pixels=pix)
        batch = _batch(processor, cfg, synth)
        text = processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
        assert ("<think>" in text) is think, text


def test_collator_skips_and_lists_an_unreadable_clip(tiny_model_dir, synth, tmp_path):
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train.collator import ClipCollator
    from ego3s.train.warmup import WarmupConfig

    good = read_jsonl(synth / "traces.jsonl")[0].to_dict()
    bad = {**good, "id": "broken", "video": str(tmp_path / "missing.mp4")}
    _, processor = load_model(tiny_model_dir, dtype="float32")
    log = tmp_path / "skipped.jsonl"
    pix = 56 * 56
    collate = ClipCollator(processor, WarmupConfig(nframes=4, max_pixels=pix, min_pixels=pix), skip_log=log)
    batch = collate([{"sample": json.dumps(bad)}, {"sample": json.dumps(good)}])
    assert batch["input_ids"].shape[0] == 1 and collate.skipped == 1
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["id"] == "broken" and "missing.mp4" in json.loads(line)["error"]


def test_context_share_masks_the_interaction_of_typical_samples_only(tiny_model_dir, synth):
    """A base that never saw a hidden hand cannot fall back on the scene, and CSM's fine filter then
    keeps typical samples (the 2026-11-26 complete-table study: s_context 0.30 vs s_full 0.61 on typical object questions)."""
    import torch

    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train.collator import ClipCollator, sample_view_name
    from ego3s.train.warmup import WarmupConfig

    samples = read_jsonl(synth / "train.jsonl")
    typical = next(s for s in samples if s.meta["typical"])
    atypical = next(s for s in samples if not s.meta["typical"])
    renamed = [typical.__class__.from_dict({**typical.to_dict(), "id": f"s{i}"}) for i in range(400)]
    views = [sample_view_name(s, 0.3) for s in renamed]
    assert 80 < views.count("context") < 160 and views == [sample_view_name(s, 0.3) for s in renamed]
    assert {sample_view_name(s, 0.0) for s in renamed} == {"full"}
    assert sample_view_name(atypical, 1.0) == "full" and sample_view_name(typical, 1.0) == "context"
    with pytest.raises(ValueError, match="context_share"):
        WarmupConfig(context_share=1.5)

    _, processor = load_model(tiny_model_dir, dtype="float32")
    pix = 56 * 56

    def batch(sample, share):
        cfg = WarmupConfig(
            fmt="reasoning", grounded_share=1.0, context_share=share, nframes=4, max_pixels=pix, min_pixels=pix
        )
        b = ClipCollator(processor, cfg)([{"sample": json.dumps(sample.to_dict())}])
        return b, processor.tokenizer.decode(b["input_ids"][0][b["labels"][0] != -100])

    (full, full_text), (masked, masked_text) = batch(typical, 0.0), batch(typical, 1.0)
    assert not torch.equal(full["pixel_values_videos"], masked["pixel_values_videos"])
    assert "I watch" in full_text and "I watch" not in masked_text and "I am in the" in masked_text
    assert masked_text.endswith(full_text.split("</think>")[1])  # same answer
    (a0, _), (a1, _) = batch(atypical, 0.0), batch(atypical, 1.0)
    assert torch.equal(a0["pixel_values_videos"], a1["pixel_values_videos"])


def test_closed_answer_sets_what_the_warm_up_teaches_for_closed_questions(tiny_model_dir, synth):
    """`closed_answer: text` trains the option's text as a closed question's answer (the letter by
    default), in both formats; open questions keep their reference answer."""
    from ego3s.data.io import read_jsonl
    from ego3s.models.loading import load_model
    from ego3s.train.collator import ClipCollator
    from ego3s.train.warmup import WarmupConfig

    samples = read_jsonl(synth / "train.jsonl")
    closed = next(s for s in samples if s.task == "closeqa")
    opened = next(s for s in samples if s.task == "openqa")
    _, processor = load_model(tiny_model_dir, dtype="float32")
    pix = 56 * 56

    def taught(sample, **kw):
        cfg = WarmupConfig(nframes=4, max_pixels=pix, min_pixels=pix, **kw)
        b = ClipCollator(processor, cfg)([{"sample": json.dumps(sample.to_dict())}])
        return processor.tokenizer.decode(b["input_ids"][0][b["labels"][0] != -100])

    eos = processor.tokenizer.eos_token or ""
    assert taught(closed) == closed.answer + eos
    assert taught(closed, closed_answer="text") == closed.answer_text + eos
    assert taught(closed, closed_answer="letter_text") == f"{closed.answer}. {closed.answer_text}" + eos
    assert f"<answer>{closed.answer_text}</answer>" in taught(closed, fmt="reasoning", closed_answer="text")
    assert taught(opened, closed_answer="text") == opened.answer + eos
    with pytest.raises(ValueError, match="closed_answer"):
        WarmupConfig(closed_answer="word")
