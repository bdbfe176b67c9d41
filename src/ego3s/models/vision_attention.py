"""Window attention of the Qwen2.5-VL vision tower in a few SDPA calls instead of hundreds.

Qwen2.5-VL's vision tower attends inside 112 px windows in 28 of its 32 blocks. Without flash
attention, transformers (5.17 to 5.24) runs one `scaled_dot_product_attention` per window in a
Python loop: a 16-frame 448 px clip has 128 windows, so 3,584 small kernels per clip, and the
tower runs far below its FLOP floor (0.215 s for ~12 TFLOP on an H100, docs/PERFORMANCE.md).
Most windows have the same length, so they can be stacked into one batch: here every group of
equal-length chunks of `cu_seqlens` is one SDPA call (usually one to four groups per block),
with the same math and the outputs put back in sequence order.

`patch_vision_attention(model)` swaps the forward of each vision attention module of a
Qwen2.5-VL model whose attention implementation is "sdpa"; flash attention (varlen kernels
already) and eager (kept exact for attention read-outs) are left alone.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def grouped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Block-diagonal attention over the chunks `cu_seqlens` delimits. q, k, v: (heads, seq, dim);
    returns (seq, heads, dim), as the per-chunk loop concatenates it."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    starts = cu_seqlens[:-1].tolist()
    groups: dict[int, list[int]] = {}
    for start, n in zip(starts, lengths):
        if n:
            groups.setdefault(n, []).append(start)
    outs, order = [], []
    for n, group_starts in groups.items():
        pos = torch.tensor(group_starts, device=q.device)[:, None] + torch.arange(n, device=q.device)  # (chunks, n)
        qg, kg, vg = (t[:, pos].transpose(0, 1) for t in (q, k, v))  # (chunks, heads, n, dim)
        o = F.scaled_dot_product_attention(qg, kg, vg, scale=scaling)
        outs.append(o.permute(0, 2, 1, 3).reshape(-1, q.shape[0], q.shape[2]))  # (chunks * n, heads, dim)
        order.append(pos.reshape(-1))
    out = torch.cat(outs)
    order = torch.cat(order)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return out[inverse]


def _forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    seq_length = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    out = grouped_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), cu_seqlens, self.scaling)
    return self.proj(out.reshape(seq_length, -1).contiguous())


def patch_vision_attention(model) -> int:
    """Use `grouped_attention` in every Qwen2.5-VL vision attention module running SDPA; returns
    how many modules were patched (0 for other models and attention implementations)."""
    try:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention
    except ImportError:  # pragma: no cover - transformers without Qwen2.5-VL
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, Qwen2_5_VLVisionAttention) and module.config._attn_implementation == "sdpa":
            module.forward = types.MethodType(_forward, module)
            n += 1
    return n
