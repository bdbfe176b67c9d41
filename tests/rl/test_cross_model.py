"""The method carries across VLM architectures: loading, `encode`, generation, likelihood scoring and
video GRPO on a tiny random Qwen2-VL (`Qwen2VLForConditionalGeneration`: `video_grid_thw` but no
`second_per_grid_ts`, M-RoPE without absolute time, no Qwen2.5-VL rope-index patch). CPU, offline."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from test_video_grpo import ForwardAudit, _samples, _trainer
from test_video_grpo import test_every_forward_sees_the_video_and_logps_match as _every_forward_check

from ego3s.data import Sample
from ego3s.data.video import Clip
from ego3s.models import BUILDERS
from ego3s.models.inputs import encode
from ego3s.models.loading import load_model, patch_qwen25_rope_index
from ego3s.models.tiny import build_tiny_qwen2vl, read_marker
from helpers import write_video


@pytest.fixture(scope="session")
def qwen2vl_dir(tmp_path_factory):
    return str(build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny_qwen2vl") / "model", seed=0))


@pytest.fixture(scope="session")
def qwen2vl(qwen2vl_dir):
    return load_model(qwen2vl_dir, dtype="float32", device="cpu")


def _clip(t: int, h: int, w: int, fps: float, seed: int = 0) -> Clip:
    frames = np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    return Clip(frames=frames, timestamps=np.arange(t) / fps, fps=fps)


def _user(kind, text):
    return [{"role": "user", "content": ([{"type": kind}] if kind else []) + [{"type": "text", "text": text}]}]


def test_qwen2vl_builds_reloads_offline_forward_and_generate(qwen2vl_dir, qwen2vl, caplog):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ego3s.models.generation import generate_batch

    assert BUILDERS["tiny-qwen2vl"] is build_tiny_qwen2vl
    marker = read_marker(qwen2vl_dir)
    assert marker["builder"] == "tiny-qwen2vl" and marker["parameters"] < 1_000_000
    assert (
        type(AutoModelForImageTextToText.from_pretrained(qwen2vl_dir, local_files_only=True)).__name__
        == "Qwen2VLForConditionalGeneration"
    )
    assert type(AutoProcessor.from_pretrained(qwen2vl_dir, local_files_only=True)).__name__ == "Qwen2VLProcessor"
    model, processor = qwen2vl
    assert type(model).__name__ == "Qwen2VLForConditionalGeneration"
    # the Qwen2.5-VL rope-index patch leaves Qwen2-VL alone, silently
    with caplog.at_level(logging.WARNING, logger="ego3s.models.loading"):
        assert patch_qwen25_rope_index(model) is False
    assert not caplog.records
    assert "get_rope_index" not in vars(model.model)

    clips = [_clip(8, 56, 84, 2.0, seed=1), _clip(4, 56, 56, 1.0, seed=2)]
    batch = encode(processor, [_user("video", "What did I pick up?"), _user("video", "Where?")], clips)
    assert "second_per_grid_ts" not in batch  # Qwen2-VL has no absolute time
    assert batch["video_grid_thw"].tolist() == [[4, 4, 6], [2, 4, 4]]
    n_video = (batch["input_ids"] == model.config.video_token_id).sum(1)
    assert n_video.tolist() == (batch["video_grid_thw"].prod(-1) // 4).tolist()
    assert (batch["mm_token_type_ids"] == 2).sum() == n_video.sum()
    with torch.no_grad():
        logits = model(**batch).logits  # every key encode returns is accepted
        swapped = encode(processor, [_user("video", "What did I pick up?")], [_clip(8, 56, 84, 2.0, seed=9)])
        other = model(**swapped).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()
    assert not torch.allclose(logits[0, -1], other[0, -1])  # the video reaches the output
    # batched greedy generation (evaluation's path) == one prompt at a time
    answers, stats = generate_batch(model, processor, batch, [6, 6])
    for i in range(2):
        one = encode(processor, [_user("video", ["What did I pick up?", "Where?"][i])], [clips[i]])
        alone, _ = generate_batch(model, processor, one, [6])
        assert answers[i] == alone[0], i
    assert stats["batch_size"] == 2
    # image and text-only prompts, and teacher forcing
    image = np.random.default_rng(3).integers(0, 256, (56, 84, 3), dtype=np.uint8)
    for messages, visual in [(_user("image", "What is it?"), image), (_user(None, "What is it?"), None)]:
        b = encode(processor, [messages], [visual])
        out = model.generate(**b, max_new_tokens=3, do_sample=False)
        assert out.shape[1] > b["input_ids"].shape[1]
    forced = encode(processor, [_user("video", "Which one?")], [clips[1]], answers=["B<|im_end|>"])
    with torch.no_grad():
        assert torch.isfinite(model(**forced).loss)


def test_qwen2vl_likelihood_scores_under_the_three_views(qwen2vl, tmp_path):
    from ego3s.data.video import VIEWS
    from ego3s.select.cache import ScoreCache
    from ego3s.select.scoring import ScoringConfig, score_all, score_table

    model, processor = qwen2vl
    inter = {
        "objects": [{"name": "cup"}],
        "action": "pick up",
        "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.1, 0.6, 0.6]}],
    }
    samples = [
        Sample(
            id="c",
            question="What did I pick up?",
            answer="B",
            task="closeqa",
            options=["a cup", "a knife"],
            video=write_video(tmp_path / "a.mp4", n=8, seed=1),
            interaction=inter,
        ),
        Sample(
            id="o",
            question="Where did I put the cup?",
            answer="in the sink",
            task="openqa",
            video=write_video(tmp_path / "b.mp4", n=8, size=84, seed=2),
            interaction=inter,
        ),
    ]
    cfg = ScoringConfig(views=list(VIEWS), nframes=4, max_pixels=84 * 84, min_pixels=28 * 28, batch_size=2)
    cache = ScoreCache(tmp_path / "cache", model="tiny-qwen2vl")
    stats = score_all(model, processor, samples, cfg, cache, progress=False)
    assert stats["scored"] == 2 and stats["skipped_unreadable"] == 0
    rows = score_table(samples, cache)
    for r in rows:
        for v in VIEWS:
            s = r[f"s_{v}"]
            assert s is not None and math.isfinite(s) and 0.0 <= s <= 1.0, (r, v)
    assert any(r["s_full"] != r["s_blind"] for r in rows)  # the frames reach the scorer


def test_qwen2vl_every_grpo_forward_sees_the_video_and_logps_match(qwen2vl_dir, tmp_path):
    # test_video_grpo's check, unchanged, on Qwen2-VL: generation prefill and every log-prob forward
    # get the visual tensors, mm_token_type_ids and 3-D positions; batched log-probs == plain forward
    _every_forward_check(qwen2vl_dir, tmp_path)


def test_qwen2vl_one_training_step(qwen2vl_dir, tmp_path, monkeypatch):
    from trl import GRPOTrainer

    from ego3s.files import read_log

    samples = _samples(tmp_path)
    trainer = _trainer(qwen2vl_dir, tmp_path, samples)

    def rewards(self, inputs, *args):  # the random policy earns nothing: give each group some spread
        t = torch.zeros(len(inputs), len(self.reward_funcs))
        t[:, 0] = torch.arange(len(inputs)) % 2
        return t

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", rewards)
    assert type(trainer.model).__name__ == "Qwen2VLForConditionalGeneration"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    audit, ref_audit = ForwardAudit(trainer.model), ForwardAudit(trainer.ref_model)
    result = trainer.train()
    audit.remove()
    ref_audit.remove()
    assert len(audit.calls) >= 2 and not audit.bad()
    assert len(ref_audit.calls) >= 1 and not ref_audit.bad()
    assert trainer.state.global_step == 1 and math.isfinite(result.training_loss)
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(n.startswith("model.visual") for n in changed)  # the vision tower got gradients
    log = read_log(tmp_path / "rewards.jsonl")
    assert sorted(r["sample_id"] for r in log) == sorted(s.id for s in samples)
