"""Split-KV attention for one decode step (flash-decoding), as a Triton kernel behind a custom op.

Why: with one query token, the flash kernels behind SDPA give each (row, key/value head) one
program: 8 rows x 4 heads of Qwen2.5-VL-7B are 32 programs on a GPU of 132 multiprocessors, so a
decode step's attention read the KV cache at about 0.7 TB/s (1.56 ms of an 8.5 ms step on an H200,
2,087-token prompt, G = 8). Here the cached positions are cut into splits, each program reads one
split of one (row, key/value head) for all the query heads that share it (grouped-query heads
packed as rows of one query, so the cache is read once as stored), and a second small kernel
merges the splits by their log-sum-exp. Positions the mask hides are not read at all: a static
cache's unwritten tail costs nothing.

`attention(query, key, value, mask, scale)`: query `(B, Hq, 1, D)`, key/value `(B, Hk, S, D)`,
mask `(B, S)` bool (True: attend) or None; returns `(B, 1, Hq, D)` (what transformers' attention
functions return). `usable(...)` says whether the kernel takes these inputs; the caller falls back
to SDPA otherwise. The op is opaque to torch.compile (no graph break) and captured in CUDA graphs
like any kernel. On the CPU it runs only under Triton's interpreter (`TRITON_INTERPRET=1`), which
the tests use.
"""

import functools
import importlib.util
import math
import os
from typing import Optional  # torch.library reads the op's schema from its annotations

import torch

# read once: the checks below run inside traced code, which should see plain constants
HAVE_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)

BLOCK_N = 64  # cached positions per inner iteration
PROGRAMS_PER_SM = 4  # splits are sized so that a step has about this many programs per multiprocessor


@functools.cache
def _kernels():
    """The two Triton kernels, built on first use (Triton is imported only where it runs)."""
    import triton
    import triton.language as tl

    @triton.jit
    def split_kv_attention(
        Q, K, V, M, Op, L,
        sqb, sqh, sqg, skb, skh, skn, svb, svh, svn, smb, smn,
        S, per_split, scale,
        HK: tl.constexpr, G: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        D: tl.constexpr, HAS_MASK: tl.constexpr, IEEE: tl.constexpr,
    ):  # fmt: skip
        bh = tl.program_id(0)
        sp = tl.program_id(1)
        nsplit = tl.num_programs(1)
        b = bh // HK
        h = bh % HK
        rows = tl.arange(0, BLOCK_M)
        d = tl.arange(0, D)
        cols = tl.arange(0, BLOCK_N)
        q = tl.load(Q + b * sqb + h * sqh + rows[:, None] * sqg + d[None, :], mask=rows[:, None] < G, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        start = sp * per_split
        end = tl.minimum(start + per_split, S)
        for n0 in range(start, end, BLOCK_N):
            n = n0 + cols
            ok = n < end
            if HAS_MASK:
                ok = ok & (tl.load(M + b * smb + n * smn, mask=ok, other=0) != 0)
            k = tl.load(K + b * skb + h * skh + n[:, None] * skn + d[None, :], mask=ok[:, None], other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = tl.where(ok[None, :], s * scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(V + b * svb + h * svh + n[:, None] * svn + d[None, :], mask=ok[:, None], other=0.0)
            if IEEE:
                pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            m_i = m_new
        seen = l_i > 0
        lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
        out = tl.where(seen[:, None], acc / tl.where(seen, l_i, 1.0)[:, None], 0.0)
        base = bh * nsplit + sp
        tl.store(Op + (base * BLOCK_M + rows[:, None]) * D + d[None, :], out)
        tl.store(L + base * BLOCK_M + rows, lse)

    @triton.jit
    def split_kv_attention_merge(
        Op, L, Out, nsplit, sob, soh,
        HK: tl.constexpr, G: tl.constexpr, BLOCK_M: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        bh = tl.program_id(0)
        b = bh // HK
        h = bh % HK
        rows = tl.arange(0, BLOCK_M)
        d = tl.arange(0, D)
        top = tl.full([BLOCK_M], float("-inf"), tl.float32)
        for sp in range(0, nsplit):
            top = tl.maximum(top, tl.load(L + (bh * nsplit + sp) * BLOCK_M + rows))
        top = tl.where(top == float("-inf"), 0.0, top)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        total = tl.zeros([BLOCK_M], tl.float32)
        for sp in range(0, nsplit):
            w = tl.exp(tl.load(L + (bh * nsplit + sp) * BLOCK_M + rows) - top)
            o = tl.load(Op + ((bh * nsplit + sp) * BLOCK_M + rows[:, None]) * D + d[None, :])
            acc += w[:, None] * o
            total += w
        acc = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(
            Out + b * sob + (h * G + rows[:, None]) * soh + d[None, :],
            acc.to(Out.dtype.element_ty),
            mask=rows[:, None] < G,
        )

    return split_kv_attention, split_kv_attention_merge  # names a profile files under attention


def usable(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask) -> bool:
    """The kernel takes these inputs: one query token, grouped heads, a power-of-two head size,
    a boolean mask (or none), on CUDA (or the CPU under Triton's interpreter)."""
    if query.dim() != 4 or query.shape[2] != 1 or key.shape != value.shape:
        return False
    heads, kv_heads, d = query.shape[1], key.shape[1], query.shape[-1]
    if heads % kv_heads or d < 16 or d & (d - 1) or d > 256 or heads // kv_heads > 64:
        return False
    if mask is not None and (
        mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1
        or mask.shape[0] not in (1, query.shape[0]) or mask.shape[3] < key.shape[2]
    ):  # fmt: skip
        return False
    if not HAVE_TRITON or (query.device.type != "cuda" and not INTERPRET):
        return False
    return query.dtype == key.dtype == value.dtype


@functools.cache
def _sms(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count
    return 8


def splits(rows: int, kv_heads: int, length: int, device) -> tuple[int, int]:
    """(splits, positions per split): about `PROGRAMS_PER_SM` programs per multiprocessor, each
    split a whole number of `BLOCK_N` blocks."""
    blocks = max(1, -(-length // BLOCK_N))
    want = max(1, min(blocks, -(-PROGRAMS_PER_SM * _sms(str(device)) // (rows * kv_heads))))
    per = -(-blocks // want)
    return -(-blocks // per), per * BLOCK_N


@torch.library.custom_op("ego3s::split_kv_decode", mutates_args=())
def split_kv_decode(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor],  # noqa: UP045
    scale: float,
) -> torch.Tensor:
    """Attention of one query token per row; see the module docstring (`mask`: `(B, S)` bool)."""
    split, merge = _kernels()
    b, hq, _, d = query.shape
    hk, s = key.shape[1], key.shape[2]
    g = hq // hk
    q = query.reshape(b, hk, g, d)
    if q.stride(-1) != 1:
        q = q.contiguous()
    k = key if key.stride(-1) == 1 else key.contiguous()
    v = value if value.stride(-1) == 1 else value.contiguous()
    block_m = max(16, 1 << (g - 1).bit_length())
    nsplit, per = splits(b, hk, s, query.device)
    part = torch.empty(b * hk * nsplit * block_m * d, dtype=torch.float32, device=query.device)
    lse = torch.empty(b * hk * nsplit * block_m, dtype=torch.float32, device=query.device)
    out = torch.empty(b, 1, hq, d, dtype=query.dtype, device=query.device)
    # the mask's bytes as uint8 (a view; inside the op, where inductor does not lower it)
    m = mask.view(torch.uint8) if mask is not None else k  # without a mask: any pointer, not read
    ieee = query.dtype == torch.float32
    split[(b * hk, nsplit)](
        q, k, v, m, part, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        m.stride(0) if mask is not None else 0, m.stride(1) if mask is not None else 0,
        s, per, scale,
        HK=hk, G=g, BLOCK_M=block_m, BLOCK_N=BLOCK_N, D=d, HAS_MASK=mask is not None, IEEE=ieee,
        num_warps=4, num_stages=2,
    )  # fmt: skip
    merge[(b * hk,)](
        part, lse, out, nsplit, out.stride(0), out.stride(2), HK=hk, G=g, BLOCK_M=block_m, D=d, num_warps=4
    )
    return out


@split_kv_decode.register_fake
def _(query, key, value, mask, scale):
    b, hq, _, d = query.shape
    return query.new_empty(b, 1, hq, d)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: Optional[torch.Tensor],  # noqa: UP045 - the op's schema is read from these
    scale: Optional[float] = None,  # noqa: UP045
) -> torch.Tensor:
    """`(B, 1, Hq, D)` attention output of one query token per row (see the module docstring)."""
    if mask is not None:  # (B or 1, 1, 1, >= S) bool, see `usable`; views only, no kernel
        mask = mask[:, 0, 0, : key.shape[2]].expand(query.shape[0], -1)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    return split_kv_decode(query, key, value, mask, scale)
