"""Batched window attention of the Qwen2.5-VL vision tower (ego3s.models.vision_attention):
the same outputs and gradients as transformers' per-window loop, in fewer SDPA calls."""

import copy

import pytest
import torch

from ego3s.models.vision_attention import grouped_attention, patch_vision_attention


def _loop(q, k, v, cu, scaling):  # transformers' reference: one SDPA per chunk
    outs = [
        torch.nn.functional.scaled_dot_product_attention(
            q[:, a:b][None], k[:, a:b][None], v[:, a:b][None], scale=scaling
        )[0].transpose(0, 1)
        for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())
        if b > a
    ]
    return torch.cat(outs)


@pytest.mark.parametrize("lengths", [[16] * 8, [16, 16, 9, 16, 4, 9], [7], [5, 0, 5]])
def test_grouped_equals_loop(lengths):
    torch.manual_seed(0)
    cu = torch.tensor([0] + lengths).cumsum(0)
    q, k, v = (torch.randn(3, int(cu[-1]), 8, requires_grad=True) for _ in range(3))
    ref = _loop(q, k, v, cu, 0.3)
    got = grouped_attention(q, k, v, cu, 0.3)
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    g_got = torch.autograd.grad(got.square().sum(), (q, k, v))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_patched_tower_matches_stock(tiny_model_dir, monkeypatch):
    """The tiny Qwen2.5-VL's vision tower on a clip whose grid leaves partial windows."""
    from ego3s.models.loading import load_model

    stock, _ = load_model(tiny_model_dir, dtype="float32", grouped_vision_attention=False)
    patched = copy.deepcopy(stock)
    assert patch_vision_attention(patched) == len(patched.model.visual.blocks)
    assert patch_vision_attention(load_model(tiny_model_dir, dtype="float32", attn_implementation="eager")[0]) == 0
    cfg = stock.config.vision_config
    grid = torch.tensor([[4, 10, 14]])  # 4 x 10 x 14 patches: windows of unequal size at the edges
    pix = torch.randn(int(grid.prod()), cfg.in_channels * cfg.temporal_patch_size * cfg.patch_size**2)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(
        torch.nn.functional, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k)
    )
    a = stock.model.visual(pix, grid_thw=grid).pooler_output
    n_stock = len(calls)
    b = patched.model.visual(pix, grid_thw=grid).pooler_output
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # block 0: 16 windows of 4 lengths (64, 48, 16, 12 patches); block 1: 4 frames of 140
    assert (n_stock, len(calls) - n_stock) == (16 + 4, 4 + 1)
