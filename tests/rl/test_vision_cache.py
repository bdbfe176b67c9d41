"""The vision feature cache: with a frozen vision tower, a GRPO log-prob pass encodes each clip
once instead of once per completion, and the log-probs do not change."""

import torch
from test_video_grpo import _plain_logps, _samples, _trainer, logp_tolerance


def _freeze_vision(model):
    for name, p in model.named_parameters():
        if ".visual." in f".{name}":
            p.requires_grad_(False)


def _logps(trainer, out):
    trainer._rows_visual = out["visual"]
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
    try:
        with torch.no_grad():
            lp, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, out["completion_ids"].shape[1], batch_size=5
            )
    finally:
        trainer._rows_visual = None
    return lp


def test_each_clip_is_encoded_once_and_logps_are_unchanged(tiny_model_dir, tmp_path, monkeypatch):
    from ego3s.models.loading import load_model

    samples = [s for s in _samples(tmp_path) if s.id in ("v4", "v6", "txt")]
    real_load = load_model

    def frozen_load(*a, **k):
        model, processor = real_load(*a, **k)
        _freeze_vision(model)
        return model, processor

    monkeypatch.setattr("ego3s.models.loading.load_model", frozen_load)
    trainer = _trainer(tiny_model_dir, tmp_path, samples, G=4)
    cache = trainer._vision_cache
    assert cache is not None and trainer.ref_model is not None

    frames = []
    hook = trainer.model.model.visual.register_forward_hook(lambda m, a, o: frames.append(a[0].shape[0]))
    rows = [r for r in trainer.train_dataset for _ in range(4)]  # G = 4 copies of each prompt
    trainer.model.eval()
    out = trainer._generate_and_score_completions(rows)
    frames.clear()
    cache.encoded = cache.reused = 0
    cache.clear()
    cached = _logps(trainer, out)
    # 8 video rows in chunks of 5: each of the 2 clips encoded once, the other 6 rows reuse them
    assert (cache.encoded, cache.reused) == (2, 6)
    patches = sum(
        int(v["video_grid_thw"].prod()) for v in {id(v): v for v in out["visual"] if "video_grid_thw" in v}.values()
    )
    assert sum(frames) == patches
    tol = logp_tolerance(trainer.model, out)  # float32 rounding only (derived in test_video_grpo)
    for row in range(len(rows)):  # the same log-probs as a plain forward of each row with its video
        n = int(out["completion_mask"][row].sum())
        torch.testing.assert_close(
            cached[row, :n], _plain_logps(trainer.model, out, out["visual"], row), atol=tol, rtol=0
        )
    # a second pass over the batch (the loss after the old-policy pass) encodes nothing
    frames.clear()
    _logps(trainer, out)
    assert frames == [] and cache.reused == 6 + 8
    hook.remove()
    assert cache.keys is None  # nothing left for an unrelated forward
    # a store bounded to one clip: the oldest clip goes, the log-probs stay
    cache.clear()
    cache.max_items, cache.encoded, cache.reused = 1, 0, 0
    small = _logps(trainer, out)
    assert len(cache.store) <= 2 and cache.encoded >= 2  # at most this call's clips are kept
    torch.testing.assert_close(small, cached, atol=tol, rtol=0)


def test_no_cache_when_the_vision_tower_trains(tiny_model_dir, tmp_path):
    samples = [s for s in _samples(tmp_path) if s.id in ("v4", "txt")]
    trainer = _trainer(tiny_model_dir, tmp_path, samples)
    assert any(p.requires_grad for p in trainer.model.model.visual.parameters())
    assert trainer._vision_cache is None
