"""The split-KV decode attention (`ego3s.models.split_kv`), run by Triton's interpreter on the CPU
(a fresh process: the interpreter is chosen when Triton is imported): float32 outputs equal
float64 attention with and without masks, and the decode loop through it returns generate's
greedy tokens; plus the compiled sampled step tracing as one graph (the draw is an op, no break)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from ego3s.models import graph_decode, split_kv

pytestmark = pytest.mark.skipif(not split_kv.HAVE_TRITON, reason="needs triton (its CPU interpreter)")

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _run(code: str, *args: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1", PYTHONPATH=SRC)
    env.pop("EGO3S_DECODE_ATTENTION", None)
    p = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_split_kv_equals_float64_attention():
    """Grouped and plain heads, several splits and a ragged last block, masks that hide scattered
    positions, a whole padded tail, a mask shared by every row, and no mask."""
    out = _run(
        """
        import torch
        from ego3s.models import split_kv
        split_kv.PROGRAMS_PER_SM = 16  # many splits on a small problem
        torch.manual_seed(0)
        ref = torch.nn.functional.scaled_dot_product_attention
        for B, Hq, Hk, S, D in [(3, 14, 2, 300, 64), (2, 4, 4, 70, 32), (8, 28, 4, 257, 128), (2, 4, 2, 40, 16)]:
            q, k, v = (torch.randn(B, h, n, D) for h, n in ((Hq, 1), (Hk, S), (Hk, S)))
            kk, vv = (t.double().repeat_interleave(Hq // Hk, 1) for t in (k, v))
            mask = torch.rand(B, 1, 1, S + 7) > 0.3
            mask[..., 0] = True
            mask[0, ..., S // 2 :] = False  # a static cache's unwritten tail
            for m, scale in ((mask, None), (mask[:1], None), (None, 0.1)):
                assert split_kv.usable(q, k, v, m)
                got = split_kv.attention(q, k, v, m, scale).double()
                want = ref(q.double(), kk, vv, attn_mask=None if m is None else m[..., :S], scale=scale)
                want = want.transpose(1, 2)
                assert got.shape == want.shape == (B, 1, Hq, D)
                err = ((got - want).norm() / want.norm()).item()
                assert err < 1e-5, (B, Hq, Hk, S, D, err)
        assert split_kv.splits(8, 4, 2560, "cpu")[0] > 1
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_usable_refuses_what_the_kernel_does_not_take():
    q, k = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 10, 16)
    assert not split_kv.usable(torch.randn(2, 4, 3, 16), k, k, None)  # a prompt, not one token
    assert not split_kv.usable(torch.randn(2, 4, 1, 24), torch.randn(2, 2, 10, 24), torch.randn(2, 2, 10, 24), None)
    assert not split_kv.usable(q, k, k, torch.zeros(2, 1, 1, 10))  # an additive float mask
    assert not split_kv.usable(q, k, k, torch.ones(2, 1, 1, 5, dtype=torch.bool))  # shorter than the keys
    if not split_kv.INTERPRET:
        assert not split_kv.usable(q, k, k, None)  # the CPU without the interpreter


def test_decode_loop_through_split_kv_returns_generates_greedy_tokens(tiny_model_dir):
    """The tiny model (2 query heads per key/value head, head size 16) decoded by the loop with
    the kernel: generate's greedy tokens, and every decode step's attention took the kernel."""
    out = _run(
        """
        import sys
        import numpy as np
        import torch
        from transformers import GenerationConfig
        from ego3s.data.video import Clip
        from ego3s.models import split_kv
        from ego3s.models.generation import group_generate
        from ego3s.models.inputs import encode
        from ego3s.models.loading import load_model

        model, processor = load_model(sys.argv[1], dtype="float32", device="cpu")
        rng = np.random.default_rng(0)
        clips = [Clip(frames=rng.integers(0, 255, (t, 56, 56, 3), dtype=np.uint8),
                      timestamps=np.arange(t) / 2.0, fps=2.0) for t in (4, 2)]
        msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}]
                for q in ("What did I pick up, and where?", "Where?")]
        inputs = dict(encode(processor, msgs, clips))
        gc = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
        calls = []
        real = split_kv.split_kv_decode
        split_kv.split_kv_decode = lambda *a: calls.append(1) or real(*a)
        with torch.no_grad():
            copies = encode(processor, [m for m in msgs for _ in range(3)], [c for c in clips for _ in range(3)])
            stock = model.generate(**copies, generation_config=gc)
            loop = group_generate(model, inputs, 3, gc, static_cache=True, decoder="graph")
        assert torch.equal(loop, stock), (loop, stock)
        assert len(calls) == model.config.get_text_config().num_hidden_layers * 6, len(calls)
        print("ok")
        """,
        tiny_model_dir,
    )
    assert out.strip().endswith("ok")


def test_the_compiled_sampled_step_is_one_graph(tiny, monkeypatch):
    """The sampled step (temperature, top-k, top-p, then the inverse-CDF draw) traces as one graph
    with no break: the draw is an op of its own, opaque to the compiler."""
    from torch._dynamo.utils import counters

    from ego3s.models.generation import group_generate
    from ego3s.models.inputs import encode

    model, processor = tiny
    import numpy as np

    from ego3s.data.video import Clip

    rng = np.random.default_rng(0)
    clip = Clip(frames=rng.integers(0, 255, (4, 56, 56, 3), dtype=np.uint8), timestamps=np.arange(4) / 2.0, fps=2.0)
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where?"}]}]]
    inputs = dict(encode(processor, msgs, [clip]))
    gc = GenerationConfig(
        max_new_tokens=4,
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    monkeypatch.setitem(
        graph_decode._COMPILED,
        "step",
        torch.compile(graph_decode._step, backend="eager", fullgraph=True, dynamic=False),
    )
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            out = group_generate(model, inputs, 2, gc, static_cache=True, decoder="graph-compiled")
        graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    finally:
        torch._dynamo.reset()
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)
    assert graphs == 1 and breaks == 0
