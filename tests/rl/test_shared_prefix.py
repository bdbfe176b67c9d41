"""Shared-prefix group rollouts: one vision encoding and one prompt prefill per group of G, and the
same completions as TRL's path (greedy), through the function and through the trainer."""

import math

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from ego3s.data import Sample
from ego3s.data.video import Clip
from ego3s.models.generation import group_generate, supported
from ego3s.models.inputs import encode, vision_token_ids
from ego3s.models.loading import load_model
from ego3s.rl.rollout import groups_of
from ego3s.rl.run import TrainingConfig, grpo_args, reward_functions, training_dataset
from ego3s.rl.trainer import VideoGRPOTrainer
from helpers import write_video


class PrefillCount:
    """Counts prompt rows prefilled (forwards over more than one token) and vision encodings."""

    def __init__(self, model):
        self.rows, self.encodings = 0, 0
        self.h1 = model.model.register_forward_pre_hook(self.outer, with_kwargs=True)
        self.h2 = model.model.visual.register_forward_pre_hook(self.visual)

    def outer(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            self.rows += ids.shape[0]

    def visual(self, module, args):
        self.encodings += 1

    def remove(self):
        self.h1.remove()
        self.h2.remove()


def _clip(t, h, w, seed):
    frames = np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    return Clip(frames=frames, timestamps=np.arange(t) / 2.0, fps=2.0)


def test_group_generate_equals_generate_with_one_prefill_per_prompt(tiny_model_dir):
    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    assert supported(model)
    msgs = [
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What did I pick up, and where?"}]}],
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where?"}]}],
    ]
    clips = [_clip(4, 56, 84, 0), _clip(2, 56, 56, 1)]  # different lengths: left padding is exercised
    G = 3
    gc = GenerationConfig(max_new_tokens=10, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    stock_in = encode(processor, [m for m in msgs for _ in range(G)], [c for c in clips for _ in range(G)])
    with torch.no_grad():
        count = PrefillCount(model)
        stock = model.generate(**stock_in, generation_config=gc)
        stock_rows, stock_enc = count.rows, count.encodings
        count.rows = count.encodings = 0
        shared = group_generate(model, dict(encode(processor, msgs, clips)), G, gc)
        count.remove()
    assert torch.equal(stock, shared)
    assert (stock_rows, count.rows) == (len(msgs) * G, len(msgs))  # one prefill per prompt, not per completion
    assert count.encodings == 1 and stock_enc == 1  # one batched vision call, over B clips instead of B*G


def test_groups_of_needs_identical_runs():
    vis = {"pixel_values_videos": torch.ones(4, 3)}
    assert groups_of([[1, 2], [1, 2], [3], [3]], [vis, vis, None, None], 2) == [0, 2]
    assert groups_of([[1, 2], [1, 3]], None, 2) is None
    assert groups_of([[1, 2], [1, 2]], [vis, {"pixel_values_videos": torch.zeros(4, 3)}], 2) is None
    assert groups_of([[1], [1], [1]], None, 2) is None
    # rows carry the vision cache's clip name beside their tensors: equal copies match, others not
    keyed = {"pixel_values_videos": torch.ones(4, 3), "video_key": "s1|full"}
    assert groups_of([[1], [1]], [keyed, dict(keyed)], 2) == [0]
    assert groups_of([[1], [1]], [keyed, {**keyed, "video_key": "s2|full"}], 2) is None
    assert groups_of([[1], [1]], None, 1) is None


def _samples(tmp_path):
    inter = {
        "objects": [{"name": "cup"}],
        "action": "pick up",
        "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.1, 0.5, 0.5]}],
    }
    return [
        Sample(
            id="a",
            question="What did I pick up?",
            answer="A",
            task="closeqa",
            options=["cup", "knife"],
            video=write_video(tmp_path / "a.mp4", n=8, seed=1),
            interaction=inter,
        ),
        Sample(
            id="b",
            question="Where did I put the cup after washing it?",
            answer="in the sink",
            task="openqa",
            video=write_video(tmp_path / "b.mp4", n=12, size=84, seed=2),
            interaction=inter,
        ),
        Sample(id="txt", question="What colour is a banana?", answer="yellow", task="openqa"),
    ]


def _trainer(tiny_model_dir, tmp_path, samples, G=2, shared=True, lora=False, **kw):
    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    cfg = TrainingConfig(
        model=tiny_model_dir,
        out=str(tmp_path / "run"),
        batch_size=G * len(samples),
        per_device_train_batch_size=G * len(samples),
        num_generations=G,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-3,
        beta=0.0,
    )
    sampling = {"nframes": 4, "max_pixels": 84 * 84, "min_pixels": 28 * 28}
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=4, lora_alpha=8, task_type="CAUSAL_LM", target_modules=r".*language_model.*\.(q_proj|v_proj)"
        )
    return VideoGRPOTrainer(
        model=model,
        processing_class=processor,
        args=grpo_args(cfg, suppress_tokens=vision_token_ids(processor.tokenizer)),
        reward_funcs=reward_functions(cfg, ["cup", "knife"]),
        train_dataset=training_dataset(samples),
        sampling=sampling,
        shared_prefix_rollouts=shared,
        peft_config=peft_config,
        **kw,
    )


def test_trainer_rollouts_same_as_trl_with_one_prefill_per_group(tiny_model_dir, tmp_path):
    samples = _samples(tmp_path)
    G = 3
    trainer = _trainer(tiny_model_dir, tmp_path, samples, G=G)
    trainer.generation_config.do_sample = False  # greedy: the two paths must agree token for token
    trainer.model.eval()
    rows = [r for r in trainer.train_dataset for _ in range(G)]  # TRL repeats each prompt G times in a row
    outs, prefilled = {}, {}
    for shared, static in ((False, False), (True, False), (True, True)):
        trainer.ego_shared_prefix, trainer.ego_static_cache = shared, static
        count = PrefillCount(trainer.model)
        with torch.no_grad():
            outs[shared, static] = trainer._generate_and_score_completions(rows)
        count.remove()
        prefilled[shared, static] = count.rows  # rollout prefill, then the teacher-forced passes (one row each)
    for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert torch.equal(outs[False, False][k], outs[True, False][k]), k
        assert torch.equal(outs[False, False][k], outs[True, True][k]), k  # the static-cache decode too
    n = len(rows)
    assert prefilled[False, False] - prefilled[True, False] == n - len(samples)  # G prefills per group -> 1
    assert prefilled[True, True] == prefilled[True, False]
    # these prompts differ in length (left padding): the static path took them too, same tokens
    assert trainer.model._ego_static_cache[0][0] == n
    assert trainer._metrics["eval"]["rollout/shared_prefix"] == [0.0, 1.0, 1.0]
    one = [trainer.train_dataset[0]] * G  # one prompt, no padding: decoded against the static cache
    single = {}
    for static in (False, True):
        trainer.ego_static_cache = static
        with torch.no_grad():
            single[static] = trainer._generate_and_score_completions(one)
    assert torch.equal(single[False]["completion_ids"], single[True]["completion_ids"])
    assert getattr(trainer.model, "_ego_static_cache", None) is not None  # the static path really ran
    # through ego3s's decode loop, and TRL's sampled settings take it too (no fallback to generate)
    from ego3s.models import graph_decode

    assert getattr(trainer.model, "_ego_graph_decode", None) is not None
    trainer.generation_config.do_sample = True
    s = graph_decode.sampling_of(trainer.model, trainer.generation_config)
    assert s is not None and not s.greedy and trainer.model.config.image_token_id in s.suppress


@pytest.mark.parametrize("lora", [False, True])
def test_training_step_with_shared_prefix(tiny_model_dir, tmp_path, lora):
    trainer = _trainer(tiny_model_dir, tmp_path, _samples(tmp_path), G=2, lora=lora)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and math.isfinite(logs[-1]["loss"])
    assert logs[-1]["rollout/shared_prefix"] == 1.0


def test_keyed_sampling_draws_the_same_rollouts_either_path(tiny_model_dir, tmp_path):
    """Layout-invariant (keyed) sampling wraps the policy's generate; the shared path goes through it."""
    samples = _samples(tmp_path)
    G = 2
    trainer = _trainer(tiny_model_dir, tmp_path, samples, G=G, layout_invariant_sampling=True)
    trainer.model.eval()
    rows = [r for r in trainer.train_dataset for _ in range(G)]
    outs = {}
    for shared in (False, True):
        trainer.ego_shared_prefix = shared
        with torch.no_grad():
            outs[shared] = trainer._generate_and_score_completions(rows)
    assert torch.equal(outs[False]["completion_ids"], outs[True]["completion_ids"])
    assert trainer._metrics["eval"]["rollout/shared_prefix"] == [0.0, 1.0]


def test_sampling_estimator_shares_the_prefix(tiny_model_dir, monkeypatch):
    """CSM's sampling estimator (K rollouts per sample) takes the shared path; same draws, same seed."""
    from ego3s.models import generation
    from ego3s.select.scoring import ScoringConfig, sampling_batch

    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    items = []
    for i, q in enumerate(["What did I pick up?"] * 2):  # one length (different clips): no padding
        s = Sample(id=f"s{i}", question=q, answer="A", task="closeqa", options=["cup", "knife"])
        msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}]
        items.append((s, msgs, _clip(2, 56, 56, i)))
    cfg = ScoringConfig(estimator="sampling", num_samples=3, max_new_tokens=6)
    runs = {}
    for shared in (True, False):
        monkeypatch.setattr(generation, "supported", lambda m, shared=shared: shared)
        count = PrefillCount(model)
        torch.manual_seed(0)
        runs[shared] = (sampling_batch(model, processor, items, cfg), count.rows)
        count.remove()
    assert runs[True][0] == runs[False][0]
    assert (runs[True][1], runs[False][1]) == (2, 6)
    monkeypatch.setattr(generation, "supported", lambda m: True)
    torch.manual_seed(0)
    static = sampling_batch(
        model, processor, items, ScoringConfig(estimator="sampling", num_samples=3, max_new_tokens=6, static_cache=True)
    )
    assert getattr(model, "_ego_static_cache", None) is not None  # decoded against the static cache
    assert [len(c) for _, c in static] == [3, 3] and all(0.0 <= r <= 1.0 for r, _ in static)
