"""The TRL video defect, proven fixed: every forward of a GRPO step sees the visual tensors and 3-D
M-RoPE positions, and the log-probs the loss uses equal those of a plain forward with the video."""

import numpy as np
import pytest
import torch
from PIL import Image
from trl import GRPOTrainer

from conftest import write_video
from ego3s.data import Sample
from ego3s.rl.train import TrainingConfig, grpo_args, reward_functions, training_dataset
from ego3s.models.inputs import vision_token_ids
from ego3s.rl.trainer import VideoGRPOTrainer

LOGP_ATOL = 1e-5  # float32, same kernels: only summation order may differ


def _samples(tmp_path):
    inter = {"objects": [{"name": "cup", "synonyms": ["mug"]}], "action": "pick up",
             "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.1, 0.5, 0.5]}]}
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(img)
    return [
        Sample(id="v4", question="What did I pick up?", answer="A", task="closeqa", options=["cup", "knife"],
               video=write_video(tmp_path / "a.mp4", n=8, seed=1), interaction=inter),
        Sample(id="v6", question="Where did I put the cup?", answer="in the sink", task="openqa",
               video=write_video(tmp_path / "b.mp4", n=12, size=84, seed=2), interaction=inter),
        Sample(id="img", question="What is on the table?", answer="a cup", task="openqa", image=str(img),
               interaction=inter),
        Sample(id="txt", question="What colour is a banana?", answer="yellow", task="openqa"),
    ]


def _trainer(tiny_model_dir, tmp_path, samples, strategy="grpo", G=2, beta=0.04, **kw):
    from ego3s.models.loading import load_model

    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    cfg = TrainingConfig(model=tiny_model_dir, out=str(tmp_path / "run"), strategy=strategy,
                         batch_size=G * len(samples), per_device_train_batch_size=G * len(samples),
                         num_generations=G, max_completion_length=8, max_steps=1, learning_rate=1e-3,
                         nframes=4, max_pixels=84 * 84, min_pixels=28 * 28, beta=beta, **kw)
    return VideoGRPOTrainer(
        model=model, processing_class=processor,
        args=grpo_args(cfg, suppress_tokens=vision_token_ids(processor.tokenizer)),
        reward_funcs=reward_functions(cfg, ["cup", "knife"]), train_dataset=training_dataset(samples),
        sampling={"nframes": 4, "max_pixels": 84 * 84, "min_pixels": 28 * 28}, strategy=strategy,
        reward_log=str(tmp_path / "rewards.jsonl"))


class ForwardAudit:
    """Hooks the language model: records, for every forward over video/image tokens, whether the
    visual tensors reached the model and whether the positions were 3-D (t/h/w rows differ)."""

    def __init__(self, model):
        self.calls = []
        cfg = model.config
        self.vis_ids = (cfg.video_token_id, cfg.image_token_id)
        self.h1 = model.model.register_forward_pre_hook(self.outer, with_kwargs=True)
        self.h2 = model.model.language_model.register_forward_pre_hook(self.inner, with_kwargs=True)

    def outer(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # prefill / teacher-forced passes, not decode steps
            has_tokens = bool(torch.isin(ids, torch.tensor(self.vis_ids)).any())
            # newer transformers encode the visuals once before generating and pass the features
            visual = any(kwargs.get(k) is not None for k in ("pixel_values_videos", "pixel_values", "mm_encoder_outputs"))
            self.calls.append({"visual_tokens": has_tokens, "visual_tensors": visual,
                               "mm_types": kwargs.get("mm_token_type_ids") is not None, "pos3d": None, "ids": ids})

    def inner(self, module, args, kwargs):
        pos = kwargs.get("position_ids")
        if self.calls and self.calls[-1]["pos3d"] is None:
            ids = self.calls[-1]["ids"]
            vis = torch.isin(ids, torch.tensor(self.vis_ids))
            ok = pos is not None and pos.dim() == 3 and pos.shape[0] >= 3
            if ok and vis.any():
                t, h, w = pos[-3], pos[-2], pos[-1]  # (batch, seq); the last three rows are t, h, w
                ok = bool(((h != w) | (t != h))[vis].any())
            self.calls[-1]["pos3d"] = ok

    def bad(self):
        return [c for c in self.calls if c["visual_tokens"] and not (c["visual_tensors"] and c["mm_types"] and c["pos3d"])]

    def remove(self):
        self.h1.remove()
        self.h2.remove()


def _plain_logps(model, out, visual, row):
    """Per-token log-probs of row `row`'s completion from one ordinary forward with its visuals."""
    from ego3s.rl.trainer import merge_visual, mm_token_type_ids

    ids = torch.cat([out["prompt_ids"][row], out["completion_ids"][row]])[None]
    mask = torch.cat([out["prompt_mask"][row], out["completion_mask"][row]])[None]
    keep = mask[0].bool()
    ids, mask = ids[:, keep], mask[:, keep]
    vis = merge_visual([visual[row]])
    kw = dict(vis)
    if vis:
        kw["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, **kw).logits[0].float()
    n = int(out["completion_mask"][row].sum())
    comp = out["completion_ids"][row][:n]
    lp = torch.log_softmax(logits[-n - 1:-1], -1)
    return lp.gather(1, comp[:, None]).squeeze(1)


def test_every_forward_sees_the_video_and_logps_match(tiny_model_dir, tmp_path):
    samples = _samples(tmp_path)
    trainer = _trainer(tiny_model_dir, tmp_path, samples)
    model = trainer.model
    audit = ForwardAudit(model)
    rows = [r for r in trainer.train_dataset for _ in range(2)]  # G = 2 copies of each prompt, as TRL's sampler gives
    model.eval()
    out = trainer._generate_and_score_completions(rows)
    assert audit.calls and not audit.bad(), f"forwards without visuals or 3-D positions: {audit.bad()}"
    # the log-probs the loss uses (our override, batched over all rows) == plain forward per row
    trainer._rows_visual = out["visual"]
    logits_to_keep = out["completion_ids"].shape[1]
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        batched, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, logits_to_keep, batch_size=3)
    trainer._rows_visual = None
    assert not audit.bad()
    for row in range(len(rows)):
        n = int(out["completion_mask"][row].sum())
        plain = _plain_logps(model, out, out["visual"], row)
        torch.testing.assert_close(batched[row, :n], plain, atol=LOGP_ATOL, rtol=0)
    # stock TRL's log-prob pass over the same batch: the video never reaches the model
    audit.calls.clear()
    with torch.no_grad():
        stock, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, model, ids, mask, logits_to_keep)
    assert audit.bad(), "stock TRL unexpectedly passed the video tensors"
    video_rows = [i for i, r in enumerate(rows) if r["sample_id"] in ("v4", "v6")]
    assert (stock[video_rows] - batched[video_rows]).abs().max() > 1e-3  # it scores something else
    audit.remove()


def test_training_step_forwards_carry_visuals_and_reward_log(tiny_model_dir, tmp_path):
    samples = _samples(tmp_path)
    trainer = _trainer(tiny_model_dir, tmp_path, samples)
    audit = ForwardAudit(trainer.model)
    ref_audit = ForwardAudit(trainer.ref_model)  # beta > 0: a separate reference model
    trainer.train()
    audit.remove()
    ref_audit.remove()
    # policy: generation prefill + the loss forward; reference: its log-probs. All saw the visuals in 3-D.
    assert len(audit.calls) >= 2 and not audit.bad()
    assert len(ref_audit.calls) >= 1 and not ref_audit.bad()
    from ego3s.files import read_log

    log = read_log(tmp_path / "rewards.jsonl")
    assert sorted(r["sample_id"] for r in log) == sorted(s.id for s in samples)
    assert all(len(r["rewards"]["total"]) == 2 and r["step"] == 0 for r in log)
    assert set(log[0]["rewards"]) == {"accuracy", "format", "interaction", "total"}


@pytest.mark.parametrize("strategy, factor", [("grpo", None), ("rloo", 2.0), ("dr_grpo", None)])
def test_strategy_advantages_hand_computed(tiny_model_dir, tmp_path, strategy, factor, monkeypatch):
    samples = _samples(tmp_path)[:2]
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy=strategy)
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.5]])  # acc, fmt, int
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *a: rewards.clone())
    rows = [r for r in trainer.train_dataset for _ in range(2)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    total = rewards.sum(1)  # [1, 0, 2, 1.5]; groups (1, 0) and (2, 1.5)
    centred = torch.tensor([0.5, -0.5, 0.25, -0.25])
    if strategy == "grpo":  # divided by the unbiased group std (+1e-4)
        expected = centred / (torch.tensor([0.70710678, 0.70710678, 0.35355339, 0.35355339]) + 1e-4)
    elif strategy == "rloo":  # r_i - mean of the others = G/(G-1) (r_i - mean)
        expected = torch.tensor([1.0, -1.0, 0.5, -0.5])
    else:
        expected = centred
    assert total.tolist() == [1.0, 0.0, 2.0, 1.5]
    torch.testing.assert_close(out["advantages"], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strategy", ["grpo", "dapo", "dr_grpo"])
def test_strategy_loss_hand_computed(tiny_model_dir, tmp_path, strategy, monkeypatch):
    """One step, one iteration: the ratio is exactly 1, so each loss is a known weighting of -A."""
    samples = _samples(tmp_path)[:2]
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy=strategy, beta=0.0)
    fixed = torch.zeros(4, len(trainer.reward_funcs))  # dapo adds the overlong reward
    fixed[:, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *a: fixed.clone())
    rows = [r for r in trainer.train_dataset for _ in range(2)]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    out = trainer._generate_and_score_completions(rows)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.25])
    out["advantages"] = adv
    loss = trainer._compute_loss(trainer.model, out)
    n = out["completion_mask"].sum(1).float()  # tokens per completion
    if strategy == "grpo":  # mean over each sequence's tokens, then over sequences
        expected = -adv.mean()
    elif strategy == "dapo":  # one mean over all tokens of the batch
        expected = -(adv * n).sum() / n.sum()
    else:  # Dr. GRPO: a constant normaliser, rows x max_completion_length
        expected = -(adv * n).sum() / (len(n) * trainer.max_completion_length)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-6, rtol=0)


def test_dapo_dynamic_sampling_refills_zero_variance_groups(tiny_model_dir, tmp_path, monkeypatch):
    """Groups with all-equal rewards are replaced by fresh prompts until every group carries
    signal; the batch keeps its shape and the loss runs on it."""
    samples = _samples(tmp_path)  # v4, v6, img, txt
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy="dapo", beta=0.0)
    calls = []

    def rewards(self, inputs, prompts, completions, ids):
        # "v4" always gets 1.0 (zero variance: no signal); other groups get 1, 0, 1, 0, ...
        calls.append([r["sample_id"] for r in inputs])
        vals = [1.0 if r["sample_id"] == "v4" else float(i % 2) for i, r in enumerate(inputs)]
        t = torch.zeros(len(inputs), len(self.reward_funcs))
        t[:, 0] = torch.tensor(vals)
        return t

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", rewards)
    trainer.dynamic_sampling_rounds = 8
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    rows = [r for r in trainer.train_dataset if r["sample_id"] in ("v4", "v6") for _ in range(2)]
    out = trainer._generate_and_score_completions(rows)
    assert len(calls) >= 2  # the v4 group was regenerated at least once
    groups = out["advantages"].view(-1, 2)
    assert not (groups == 0).all(dim=1).any(), "a zero-variance group is left"
    assert out["completion_ids"].shape[0] == 4 and len(out["visual"]) == 4
    assert out["num_items_in_batch"] == out["completion_mask"].sum()
    loss = trainer._compute_loss(trainer.model, out)
    assert torch.isfinite(loss)


def test_generation_never_emits_vision_placeholders(tiny_model_dir, tmp_path):
    """A policy that wants to emit <|video_pad|> (forced here through its logits) must not: one
    sampled placeholder makes the next forward count more placeholders than visual features."""
    samples = _samples(tmp_path)[:2]
    trainer = _trainer(tiny_model_dir, tmp_path, samples, beta=0.0)
    vid = trainer.model.config.video_token_id
    handle = trainer.model.lm_head.register_forward_hook(
        lambda m, i, out: out.index_add(-1, torch.tensor([vid]), torch.full_like(out[..., :1], 100.0)))
    try:
        rows = [r for r in trainer.train_dataset for _ in range(2)]
        out = trainer._generate_and_score_completions(rows)
    finally:
        handle.remove()
    banned = set(vision_token_ids(trainer.processing_class.tokenizer))
    assert vid in banned
    assert not (torch.isin(out["completion_ids"], torch.tensor(sorted(banned))) & out["completion_mask"].bool()).any()


def test_an_unreadable_video_does_not_stop_training(tiny_model_dir, tmp_path):
    """A sample whose video is gone trains on its text alone, and is counted."""
    samples = _samples(tmp_path)[:2]
    (tmp_path / "a.mp4").unlink()  # sample "v4"
    trainer = _trainer(tiny_model_dir, tmp_path, samples, beta=0.0)
    rows = [r for r in trainer.train_dataset for _ in range(2)]
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    out = trainer._generate_and_score_completions(rows)
    assert trainer._metrics["train"]["visual/unreadable_samples"] == [1.0]
    assert out["visual"][0] == {} and "pixel_values_videos" in out["visual"][2]
    assert torch.isfinite(trainer._compute_loss(trainer.model, out))
