"""fp32 master weights for bf16 training (ego3s.models.loading.upcast_trainable).

A pure-bf16 model trained at an RL learning rate keeps almost none of its updates: the first test
shows the effect on a bare layer, the last one on two real GRPO steps of the tiny model loaded in
bf16, where the checkpoint's language-model weights move with fp32 masters and barely without."""

import pytest
import torch
from safetensors.torch import load_file

from ego3s.models.loading import downcast, upcast_trainable
from helpers import tiny_grpo_config


def _changed_share(master_weights: str, lr: float) -> float:
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.normal_(0, 0.05)
    before = layer.weight.detach().float().clone()
    low = upcast_trainable(layer, master_weights)
    opt = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(5):
        layer.weight.grad = torch.randn_like(layer.weight)
        opt.step()
    downcast(layer, low)
    assert layer.weight.dtype == torch.bfloat16
    # compare the bf16 result of 5 steps of lr-sized updates with what they should add up to
    return (layer.weight.detach().float() != before).float().mean().item()


def test_bf16_weights_lose_small_updates_fp32_masters_keep_them():
    pure, master = _changed_share("bfloat16", 1e-5), _changed_share("float32", 1e-5)
    assert pure < 0.15  # 6% on this layer: most updates rounded away
    # with fp32 masters each weight moved by ~5e-5; it shows in bf16 only where that crosses a
    # rounding boundary, which is far more often than the updates that survive in pure bf16
    assert master > 2 * pure


def test_upcast_casts_only_trainable_and_respects_sharded_engines(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert upcast_trainable(model) == torch.bfloat16
    assert model[0].weight.dtype == torch.bfloat16 and model[1].weight.dtype == torch.float32
    downcast(model, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert upcast_trainable(model, "bfloat16") is None
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # DeepSpeed keeps its own fp32 masters
    assert upcast_trainable(model) is None and model[1].weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="master_weights"):
        upcast_trainable(model, "fp8")
    fp32 = torch.nn.Linear(4, 4)
    assert upcast_trainable(fp32) is None  # nothing to cast: the final model is not downcast either


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from ego3s.data.egosynth import EgoSynthConfig, generate

    out = tmp_path_factory.mktemp("egosynth")
    generate(out, EgoSynthConfig(train=4, test=0, probe=0, frames=8, size=56), workers=1, audit=False, log=None)
    return out


def _dtypes(path) -> set:
    return {w.dtype for w in load_file(str(path / "model.safetensors")).values()}


def _lm_changed_share(start_dir, ckpt) -> float:
    """Share of the language model's matrix entries (the tiny model's `visual` tower excluded) that
    differ from the start, in the dtype the checkpoint keeps them in (the optimizer's weights)."""
    start, after = load_file(f"{start_dir}/model.safetensors"), load_file(str(ckpt / "model.safetensors"))
    changed = total = 0
    for name, w in after.items():
        if "visual" in name or w.ndim != 2:
            continue
        changed += int((w.float() != start[name].to(torch.bfloat16).float()).sum())
        total += w.numel()
    return changed / total


def test_grpo_in_bf16_trains_fp32_masters_and_saves_bf16(tiny_model_dir, synth, tmp_path):
    from ego3s.rl.run import run_training

    for mw, ckpt_dtypes in (("float32", {torch.float32, torch.bfloat16}), ("bfloat16", {torch.bfloat16})):
        out = tmp_path / mw
        run_training(
            tiny_grpo_config(
                tiny_model_dir,
                synth / "train.jsonl",
                out,
                max_completion_length=8,
                learning_rate=1e-5,
                dtype="bfloat16",
                master_weights=mw,
            )
        )
        assert _dtypes(out / "checkpoint-1") == ckpt_dtypes  # trained LM in fp32; frozen tower bf16
        assert _dtypes(out / "final") == {torch.bfloat16}  # saved in the dtype it was loaded in


def test_sft_in_bf16_moves_the_weights_only_with_fp32_masters(tiny_model_dir, synth, tmp_path):
    """A random tiny policy earns no reward, so GRPO has no gradient to show this with; the
    supervised loss always has one and goes through the same upcast."""
    from ego3s.train.sft import SFTRunConfig, run_sft

    share = {}
    for mw in ("float32", "bfloat16"):
        out = tmp_path / mw
        run_sft(
            SFTRunConfig(
                model=tiny_model_dir,
                data=str(synth / "train.jsonl"),
                out=str(out),
                fmt="direct",
                learning_rate=1e-5,
                warmup_ratio=0.0,
                per_device_train_batch_size=4,
                max_steps=4,
                save_steps=4,
                nframes=4,
                max_pixels=56 * 56,
                min_pixels=28 * 28,
                dtype="bfloat16",
                master_weights=mw,
            )
        )
        share[mw] = _lm_changed_share(tiny_model_dir, out / "checkpoint-4")
    # the fp32 masters hold every update; in pure bf16 most round away (1.6% of entries moved)
    assert share["float32"] > 0.5 and share["bfloat16"] < 0.5 * share["float32"], share
