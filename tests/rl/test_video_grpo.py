"""The TRL video defect, proven fixed: every forward of a GRPO step sees the visual tensors and 3-D
M-RoPE positions, and the log-probs the loss uses equal those of a plain forward with the video."""

import numpy as np
import pytest
import torch
from PIL import Image
from trl import GRPOTrainer

from ego3s.data import Sample
from ego3s.models.inputs import vision_token_ids
from ego3s.rl.run import TrainingConfig, grpo_args, reward_functions, training_dataset
from ego3s.rl.trainer import VideoGRPOTrainer
from helpers import write_video

EPS32 = float(torch.finfo(torch.float32).eps)


def fp32_logp_tolerance(model, seq_len: int, max_logit: float, patches: int = 0) -> float:
    """How far a float32 log-prob may sit from the exact value, from rounding alone.

    A length-K float32 reduction errs by about sqrt(K) * eps relative to the sum of the magnitudes
    it adds (probabilistic rounding-error analysis, Higham & Mary, SIAM J. Sci. Comput. 2019); to
    first order the relative errors of the reductions a logit passes through add up, and the
    log-softmax turns a logit error into at most twice that error in a log-prob. The reductions:
    per text layer two RMSNorms (K = hidden), q.k (head dim), the softmax sum and the
    attention-weighted sum (K = sequence length), o_proj and gate/up (hidden), down (intermediate);
    per vision block the same with the patch count; the final norm, lm_head (hidden) and the
    log-softmax's sum over the vocabulary. Any summation order (batched, padded, other CPU kernels)
    stays inside this bound; the constant in front is 1."""
    t, v = model.config.text_config, model.config.vision_config
    d, f, hd = t.hidden_size, t.intermediate_size, t.hidden_size // t.num_attention_heads
    layer = 2 * d**0.5 + hd**0.5 + 2 * seq_len**0.5 + 2 * d**0.5 + f**0.5
    stages = t.num_hidden_layers * layer + 2 * d**0.5 + t.vocab_size**0.5
    if patches:
        vd = getattr(v, "embed_dim", None) or v.hidden_size
        vf = getattr(v, "intermediate_size", None) or int(vd * getattr(v, "mlp_ratio", 4))
        vhd = vd // v.num_heads
        stages += v.depth * (2 * vd**0.5 + vhd**0.5 + 2 * patches**0.5 + 2 * vd**0.5 + vf**0.5)
    return 2 * EPS32 * max_logit * stages


def _samples(tmp_path):
    inter = {
        "objects": [{"name": "cup", "synonyms": ["mug"]}],
        "action": "pick up",
        "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.1, 0.5, 0.5]}],
    }
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(img)
    return [
        Sample(
            id="v4",
            question="What did I pick up?",
            answer="A",
            task="closeqa",
            options=["cup", "knife"],
            video=write_video(tmp_path / "a.mp4", n=8, seed=1),
            interaction=inter,
        ),
        Sample(
            id="v6",
            question="Where did I put the cup?",
            answer="in the sink",
            task="openqa",
            video=write_video(tmp_path / "b.mp4", n=12, size=84, seed=2),
            interaction=inter,
        ),
        Sample(
            id="img", question="What is on the table?", answer="a cup", task="openqa", image=str(img), interaction=inter
        ),
        Sample(id="txt", question="What colour is a banana?", answer="yellow", task="openqa"),
    ]


def _trainer(tiny_model_dir, tmp_path, samples, strategy="grpo", G=2, beta=0.04, per_device=None, **kw):
    from ego3s.models.loading import load_model

    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    per_device = per_device or G * len(samples)
    cfg = TrainingConfig(
        model=tiny_model_dir,
        out=str(tmp_path / "run"),
        strategy=strategy,
        batch_size=per_device,
        per_device_train_batch_size=per_device,
        num_generations=G,
        max_completion_length=8,
        max_steps=1,
        learning_rate=1e-3,
        nframes=4,
        max_pixels=84 * 84,
        min_pixels=28 * 28,
        beta=beta,
        **kw,
    )
    return VideoGRPOTrainer(
        model=model,
        processing_class=processor,
        args=grpo_args(cfg, suppress_tokens=vision_token_ids(processor.tokenizer), num_prompts=len(samples)),
        reward_funcs=reward_functions(cfg, ["cup", "knife"]),
        train_dataset=training_dataset(samples),
        sampling={"nframes": 4, "max_pixels": 84 * 84, "min_pixels": 28 * 28},
        strategy=strategy,
        reward_log=str(tmp_path / "rewards.jsonl"),
    )


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
            visual = any(
                kwargs.get(k) is not None for k in ("pixel_values_videos", "pixel_values", "mm_encoder_outputs")
            )
            self.calls.append(
                {
                    "visual_tokens": has_tokens,
                    "visual_tensors": visual,
                    "mm_types": kwargs.get("mm_token_type_ids") is not None,
                    "pos3d": None,
                    "ids": ids,
                }
            )

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
        return [
            c for c in self.calls if c["visual_tokens"] and not (c["visual_tensors"] and c["mm_types"] and c["pos3d"])
        ]

    def remove(self):
        self.h1.remove()
        self.h2.remove()


def logp_tolerance(model, out) -> float:
    """`fp32_logp_tolerance` for a scored batch: its sequence length, largest logit, largest clip."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    with torch.no_grad():
        max_logit = max(
            model(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1]).logits.abs().max().item()
            for i in range(ids.shape[0])
        )
    patches = max(
        (int(v["pixel_values_videos"].shape[0]) for v in out["visual"] if "pixel_values_videos" in v), default=0
    )
    return fp32_logp_tolerance(model, ids.shape[1], max_logit, patches)


def _plain_logps(model, out, visual, row, dtype=torch.float32):
    """Per-token log-probs of row `row`'s completion from one ordinary forward with its visuals
    (`dtype=torch.float64` with a float64 copy of the model: the exact reference)."""
    from ego3s.rl.trainer import merge_visual, mm_token_type_ids

    ids = torch.cat([out["prompt_ids"][row], out["completion_ids"][row]])[None]
    mask = torch.cat([out["prompt_mask"][row], out["completion_mask"][row]])[None]
    keep = mask[0].bool()
    ids, mask = ids[:, keep], mask[:, keep]
    vis = merge_visual([visual[row]])
    kw = {k: v.to(dtype) if v.is_floating_point() else v for k, v in vis.items()}
    if vis:
        kw["mm_token_type_ids"] = mm_token_type_ids(ids, model.config.image_token_id, model.config.video_token_id)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, **kw).logits[0].to(dtype)
    n = int(out["completion_mask"][row].sum())
    comp = out["completion_ids"][row][:n]
    lp = torch.log_softmax(logits[-n - 1 : -1], -1)
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
    # the reference: the same forward in float64 (exact to ~1e-15 at these sizes)
    import copy

    exact = copy.deepcopy(model).double()
    tol = logp_tolerance(model, out)
    assert tol < 1e-2  # a bound, not a free pass: for the tiny model about 3e-4
    for row in range(len(rows)):
        n = int(out["completion_mask"][row].sum())
        ref = _plain_logps(exact, out, out["visual"], row, torch.float64)
        plain = _plain_logps(model, out, out["visual"], row)
        assert (plain.double() - ref).abs().max() <= tol
        assert (batched[row, :n].double() - ref).abs().max() <= tol, f"row {row}: the loss's log-probs are off"
    # stock TRL's log-prob pass over the same batch: the video never reaches the model
    audit.calls.clear()
    with torch.no_grad():
        stock, _, _ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, model, ids, mask, logits_to_keep)
    assert audit.bad(), "stock TRL unexpectedly passed the video tensors"
    video_rows = [i for i, r in enumerate(rows) if r["sample_id"] in ("v4", "v6")]
    # it scores something else, and by far more than rounding could explain (the margin is shown)
    missing = min((stock[i] - batched[i]).abs().max().item() for i in video_rows)
    assert missing >= 100 * tol, f"a missing video moves the log-probs by {missing:.3g}, tolerance {tol:.3g}"
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
    assert set(log[0]["rewards"]) == {"accuracy", "format", "interaction", "correct", "total"}


@pytest.mark.parametrize("strategy, factor", [("grpo", None), ("rloo", 2.0), ("dr_grpo", None)])
def test_strategy_advantages_hand_computed(tiny_model_dir, tmp_path, strategy, factor, monkeypatch):
    samples = _samples(tmp_path)[:2]
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy=strategy)
    rewards = torch.zeros(4, len(trainer.reward_funcs))  # acc, fmt, int, correct (weight 0)
    rewards[:, :4] = torch.tensor(
        [[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.5, 0.0]]
    )
    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", lambda self, *a: rewards.clone())
    rows = [r for r in trainer.train_dataset for _ in range(2)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(rows)
    total = rewards[:, :3].sum(1)  # [1, 0, 2, 1.5]; groups (1, 0) and (2, 1.5); correctness weighs 0
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
    fixed = torch.zeros(4, len(trainer.reward_funcs))  # + correctness (weight 0); dapo adds the overlong reward
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


def test_dapo_dynamic_sampling_refills_uninformative_groups(tiny_model_dir, tmp_path, monkeypatch):
    """Groups whose answers are all right are replaced by fresh prompts until every group carries
    signal; the batch keeps its shape and the loss runs on it."""
    samples = _samples(tmp_path)  # v4, v6, img, txt
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy="dapo", beta=0.0)
    calls = []

    def rewards(self, inputs, prompts, completions, ids):
        # "v4" always gets 1.0 (zero variance: no signal); other groups get 1, 0, 1, 0, ...
        calls.append([r["sample_id"] for r in inputs])
        vals = [1.0 if r["sample_id"] == "v4" else float(i % 2) for i, r in enumerate(inputs)]
        t = torch.zeros(len(inputs), len(self.reward_funcs))
        t[:, 0] = t[:, [f.__name__ for f in self.reward_funcs].index("correct_reward")] = torch.tensor(vals)
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
        lambda m, i, out: out.index_add(-1, torch.tensor([vid]), torch.full_like(out[..., :1], 100.0))
    )
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


# ---------------------------------------------------------------------------- DAPO as defined, PPO clipping


def test_dapo_defaults_are_the_papers():
    from ego3s.rl.strategies import optimizer_steps_per_generation

    cfg = TrainingConfig(
        strategy="dapo", batch_size=512, per_device_train_batch_size=8, num_generations=8, max_completion_length=20480
    )
    args = grpo_args(cfg, world_size=8, num_prompts=100_000)
    # clip-higher, token-level loss, no KL; a rollout trained as 16 mini-batches of batch_size completions
    assert (args.epsilon, args.epsilon_high, args.loss_type, args.beta) == (0.2, 0.28, "dapo", 0.0)
    assert args.gradient_accumulation_steps == 8 and args.steps_per_generation == 16 * 8 and args.num_iterations == 1
    assert not args.mask_truncated_completions
    assert grpo_args(TrainingConfig(strategy="dapo", mask_truncated_completions=True)).mask_truncated_completions
    # fewer prompts than 16 steps need (64 prompts per step): as many steps as the data holds
    assert grpo_args(cfg, world_size=8, num_prompts=300).steps_per_generation == 4 * 8
    assert optimizer_steps_per_generation("grpo", None, 64, 300) == 1  # the others stay on-policy
    assert (
        grpo_args(
            TrainingConfig(
                strategy="grpo",
                num_iterations=2,
                optimizer_steps_per_generation=3,
                batch_size=64,
                per_device_train_batch_size=8,
            )
        ).steps_per_generation
        == 3 * 8
    )
    with pytest.raises(ValueError, match="num_iterations"):
        TrainingConfig(num_iterations=0)
    with pytest.raises(ValueError, match="overlong_cache"):
        TrainingConfig(strategy="dapo", max_completion_length=8, overlong_cache=9)


def test_dapo_overlong_penalty_hand_computed():
    """Eq. 13 of the DAPO paper: 0 up to L_max - L_cache, linear to -1 at L_max; L_cache = L_max / 5."""
    from ego3s.rl.strategies import overlong_penalty

    cfg = TrainingConfig(strategy="dapo", max_completion_length=20)  # L_max 20, L_cache 4
    f = [fn for fn in reward_functions(cfg, []) if fn.__name__ == "overlong"][0]
    lengths = [1, 16, 17, 18, 19, 20]
    assert f([[7] * n for n in lengths]) == pytest.approx([0.0, 0.0, -0.25, -0.5, -0.75, -1.0])
    assert [overlong_penalty(n, 20, 4) for n in lengths + [21]] == pytest.approx([0, 0, -0.25, -0.5, -0.75, -1, -1])
    paper = TrainingConfig(strategy="dapo", max_completion_length=20480)
    g = [fn for fn in reward_functions(paper, []) if fn.__name__ == "overlong"][0]
    assert g([[0] * 16384, [0] * 18432, [0] * 20480]) == pytest.approx([0.0, -0.5, -1.0])
    h = [
        fn
        for fn in reward_functions(TrainingConfig(strategy="dapo", max_completion_length=20, overlong_cache=10), [])
        if fn.__name__ == "overlong"
    ][0]
    assert h([[0] * 15]) == pytest.approx([-0.5])
    assert not [fn for fn in reward_functions(TrainingConfig(strategy="grpo"), []) if fn.__name__ == "overlong"]


def test_uninformative_groups_by_correctness():
    from ego3s.rl.trainer import uninformative_groups

    out = {
        "advantages": torch.tensor([0.5, -0.5, 0.0, 0.0, 0.3, -0.3, 0.0, 0.0]),
        "correct": torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, float("nan"), 0.0]),
    }
    # group 0: both right (total varies: dropped anyway); 1: both wrong; 2: mixed (kept); 3: NaN + wrong
    assert uninformative_groups(out, 2) == [0, 1, 3]
    del out["correct"]  # no correctness column: all-zero advantages
    assert uninformative_groups(out, 2) == [1, 3]


def test_dapo_dynamic_sampling_filters_on_accuracy_not_total(tiny_model_dir, tmp_path, monkeypatch):
    """A group whose answers are all correct but whose format differs has a varying total reward
    (non-zero advantages) and no signal about the answer: DAPO drops it; the mixed group stays."""
    samples = _samples(tmp_path)
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy="dapo", beta=0.0)
    names = [f.__name__ for f in trainer.reward_funcs]
    acc, fmt_, cor = names.index("accuracy_reward"), names.index("format_reward"), names.index("correct_reward")
    calls = []

    def rewards(self, inputs, prompts, completions, ids):
        calls.append([r["sample_id"] for r in inputs])
        t = torch.zeros(len(inputs), len(self.reward_funcs))
        for i, r in enumerate(inputs):
            right = 1.0 if r["sample_id"] == "v4" else float(i % 2 == 0)  # v4: both right; others: mixed
            t[i, acc] = t[i, cor] = right
            t[i, fmt_] = float(i % 2)  # the format varies in every group
        return t

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", rewards)
    trainer.dynamic_sampling_rounds = 8
    trainer.model.train()
    rows = [r for r in trainer.train_dataset if r["sample_id"] in ("v4", "v6") for _ in range(2)]
    out = trainer._generate_and_score_completions(rows)
    assert calls[0] == ["v4", "v4", "v6", "v6"]
    assert len(calls) >= 2 and trainer._metrics["train"]["dapo/uninformative_groups"][0] == 1.0
    kept = [r for r in calls[-1]]
    assert out["correct"].view(-1, 2).tolist()[1] == [1.0, 0.0]  # the v6 group is untouched
    assert out["correct"].view(-1, 2).tolist()[0] == [1.0, 0.0]  # v4's group was replaced by a mixed one
    assert "v4" not in kept[:2] or len(calls) > 2
    assert out["completion_ids"].shape[0] == 4 and len(out["visual"]) == 4


def test_clip_higher_binds_by_the_hand_computed_amount(tiny_model_dir, tmp_path, monkeypatch):
    """The loss with crafted old log-probs: ratios 1.5 (A > 0) and 0.5 (A < 0) are clipped to
    1 + 0.28 and 1 - 0.2, a ratio of 1.1 is not; the loss and the logged clip ratio are what the
    token-level DAPO formula gives by hand."""
    samples = _samples(tmp_path)[:2]
    trainer = _trainer(tiny_model_dir, tmp_path, samples, strategy="dapo", beta=0.0, optimizer_steps_per_generation=1)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    rows = [r for r in trainer.train_dataset for _ in range(2)]
    out = trainer._generate_and_score_completions(rows)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.25])
    ratio = torch.tensor([1.5, 0.5, 1.1, 1.1])  # per row, on every token
    out["advantages"] = adv
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    trainer._rows_visual = out["visual"]
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, out["completion_ids"].shape[1]
        )
    trainer._rows_visual = None
    out["old_per_token_logps"] = logps - ratio.log()[:, None]  # new / old = ratio
    loss = trainer._compute_loss(trainer.model, out)
    n = out["completion_mask"].sum(1).float()
    clipped = torch.tensor([1.28, 0.8, 1.1, 1.1])
    # per token -min(r A, clip(r) A); one mean over all tokens of the batch
    expected = -(torch.minimum(ratio * adv, clipped * adv) * n).sum() / n.sum()
    unclipped = -(ratio * adv * n).sum() / n.sum()
    by_hand = -(1.28 * 1.0 * n[0] + 0.8 * -1.0 * n[1] + 1.1 * 0.5 * n[2] + 1.1 * -0.25 * n[3]) / n.sum()
    torch.testing.assert_close(expected, by_hand)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=0)
    # the clip changes the loss by (1.5 - 1.28) * 1 * n0 + (0.8 - 0.5) * 1 * n1 over all tokens
    delta = ((1.5 - 1.28) * n[0] + (0.8 - 0.5) * n[1]) / n.sum()
    torch.testing.assert_close((loss.detach() - unclipped), delta, atol=1e-5, rtol=0)
    m = trainer._metrics["train"]
    assert m["clip_ratio/high_mean"][-1] == pytest.approx((n[0] / n.sum()).item(), abs=1e-6)
    assert m["clip_ratio/low_mean"][-1] == pytest.approx((n[1] / n.sum()).item(), abs=1e-6)
    assert m["clip_ratio/region_mean"][-1] > 0


@pytest.mark.slow
def test_several_updates_per_generation_carry_the_video_and_clip(tiny_model_dir, tmp_path, monkeypatch):
    """num_iterations = 2 and two optimizer steps per generation: one generation feeds 4 optimizer
    steps from TRL's buffer (shuffled, split); every forward still gets its rows' visuals, the old
    log-probs are computed, and once the policy has moved the clip binds (logged ratio > 0)."""
    samples = _samples(tmp_path)
    trainer = _trainer(
        tiny_model_dir,
        tmp_path,
        samples,
        strategy="dapo",
        beta=0.0,
        G=2,
        num_iterations=2,
        optimizer_steps_per_generation=2,
        per_device=4,
    )
    trainer.args.learning_rate = 0.05

    def rewards(self, inputs, prompts, completions, ids):  # one right, one wrong answer per group: a gradient
        t = torch.zeros(len(inputs), len(self.reward_funcs))
        t[:, 0] = t[:, [f.__name__ for f in self.reward_funcs].index("correct_reward")] = torch.arange(len(inputs)) % 2
        return t

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", rewards)
    generations = []
    score = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda batch: generations.append(len(batch)) or score(batch)
    audit = ForwardAudit(trainer.model)
    trainer.args.max_steps = 4
    trainer.train()
    audit.remove()
    assert generations == [8]  # 4 prompts x G = 2, once for the 4 steps
    assert len(audit.calls) >= 5 and not audit.bad()
    hist = [h for h in trainer.state.log_history if "clip_ratio/region_mean" in h]
    assert len(hist) == 4 and max(h["clip_ratio/region_mean"] for h in hist) > 0
