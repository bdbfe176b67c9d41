"""ego3s's static-cache decode loop (`ego3s.models.graph_decode`): greedy tokens equal to stock
`generate` (float32, CPU; early end of sequence, padding, host checks every k steps, the step
compiled as one graph), and sampled tokens drawn from the distribution `generate` draws from
(transformers' own logits processors, then the same uniforms through the inverse CDF)."""

import numpy as np
import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ego3s.data.video import Clip
from ego3s.models import graph_decode
from ego3s.models.generation import _prefill, group_generate, static_copy
from ego3s.models.inputs import encode
from ego3s.models.loading import load_model

G = 3


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, dtype="float32", device="cpu")


def _inputs(processor, questions=("What did I pick up, and where?", "Where?")):
    rng = np.random.default_rng(0)
    clips = [
        Clip(frames=rng.integers(0, 255, (t, 56, 56, 3), dtype=np.uint8), timestamps=np.arange(t) / 2.0, fps=2.0)
        for t in (4, 2)
    ]
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}] for q in questions]
    return msgs, clips, dict(encode(processor, msgs, clips))


def _stock(model, processor, msgs, clips, gc):
    copies = encode(processor, [m for m in msgs for _ in range(G)], [c for c in clips for _ in range(G)])
    return model.generate(**copies, generation_config=gc)


def test_greedy_equals_generate_with_early_stops_and_checks_every_k_steps(loaded):
    """An end-of-sequence token that some rows emit early and others later (or never): the loop,
    checking the host only every 4 steps, returns generate's ids, pads and length."""
    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        free = _stock(
            model,
            processor,
            msgs,
            clips,
            GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=None),
        )
        L = inputs["input_ids"].shape[1]
        # the first group stops at its third token, the second at its sixth (or earlier where these recur)
        eos = [int(free[0, L + 2]), int(free[G, L + 5])]
        gc = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=pad, eos_token_id=eos)
        stock = _stock(model, processor, msgs, clips, gc)
        assert stock.shape[1] <= L + 6 and (stock[:G, L + 3 :] == pad).all()  # stopped early, padded
        s = graph_decode.sampling_of(model, gc)
        cache, last = _prefill(model, inputs, G)
        cache = static_copy(model, cache, L + 12)
        ids = inputs["input_ids"].repeat_interleave(G, 0)
        out = graph_decode.decode(
            model, cache, ids, inputs["attention_mask"].repeat_interleave(G, 0), last, s, check_every=4
        )
    assert torch.equal(out, stock)
    assert int(cache.get_seq_length()) == stock.shape[1] - 1  # every fed token written, as generate leaves it


def test_greedy_with_min_new_tokens_and_suppressed_tokens(loaded):
    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    pad = processor.tokenizer.pad_token_id
    with torch.no_grad():
        free = _stock(
            model,
            processor,
            msgs,
            clips,
            GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=pad, eos_token_id=None),
        )
        L = inputs["input_ids"].shape[1]
        first = free[:, L].unique().tolist()
        # the first greedy tokens become end-of-sequence (masked for 3 steps) or suppressed
        gc = GenerationConfig(
            max_new_tokens=6,
            min_new_tokens=3,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=first[:1],
            suppress_tokens=first[1:] + [int(free[0, L + 1])],
        )
        stock = _stock(model, processor, msgs, clips, gc)
        ours = group_generate(model, inputs, G, gc, static_cache=True)
    assert not torch.equal(stock[:, L : L + 1], free[:, L : L + 1])  # the settings changed the tokens
    assert torch.equal(ours, stock)


def test_settings_it_does_not_implement_fall_back_to_generate(loaded):
    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    gc = GenerationConfig(
        max_new_tokens=5, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id, repetition_penalty=1.3
    )
    assert graph_decode.sampling_of(model, gc) is None
    assert graph_decode.sampling_of(model, GenerationConfig(max_new_tokens=5, do_sample=True, min_p=0.1)) is None
    with torch.no_grad():
        assert torch.equal(
            group_generate(model, inputs, G, gc, static_cache=True), _stock(model, processor, msgs, clips, gc)
        )


def _reference_token(scores64: np.ndarray, u: float) -> tuple[int, float]:
    """Inverse CDF in float64 of softmax(scores): the token, and how far u*total lies from the
    nearest bucket edge (float32 sums move edges by about 1e-6 relative)."""
    p = np.exp(scores64 - scores64.max())
    cdf = np.cumsum(p)
    x = u * cdf[-1]
    tok = int(np.searchsorted(cdf, x, side="right"))
    return tok, float(np.min(np.abs(cdf - x)) / cdf[-1])


def test_sampled_tokens_follow_transformers_processors_under_the_same_uniforms():
    """Temperature, top-k, top-p, suppressed tokens and min_new_tokens: transformers' processors
    give the distribution; the loop's token for each uniform is that distribution's inverse CDF."""
    V, rows = 300, 64
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, V, generator=g) * 3
    eos, suppress = (7, 11), (3, 5, 200)
    for step, (temp, top_k, top_p) in enumerate([(0.7, 20, 0.9), (1.3, 0, 0.5), (1.0, 5, 1.0), (0.5, 0, 1.0)]):
        s = graph_decode.Sampling(
            max_new=8,
            greedy=False,
            temperature=temp,
            top_k=top_k,
            top_p=top_p,
            min_new=2,
            suppress=suppress,
            eos=eos,
            pad=0,
        )
        procs = LogitsProcessorList(
            [
                MinNewTokensLengthLogitsProcessor(prompt_length_to_skip=4, min_new_tokens=2, eos_token_id=list(eos)),
                SuppressTokensLogitsProcessor(list(suppress)),
            ]
        )
        if temp != 1.0:
            procs.append(TemperatureLogitsWarper(temp))
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
        ids_so_far = torch.zeros(rows, 4 + step % 3, dtype=torch.long)  # 0, 1, 2, 0 new tokens
        ref = procs(ids_so_far, logits.clone()).double().numpy()
        u = torch.rand(rows, generator=g)
        ours = graph_decode.choose(graph_decode.process(logits, torch.tensor([step % 3]), s), u, s)
        checked = 0
        for r in range(rows):
            tok, margin = _reference_token(ref[r], float(u[r]))
            if margin > 1e-4:
                assert int(ours[r]) == tok, (step, r)
                checked += 1
            assert np.isfinite(ref[r][int(ours[r])])  # never a filtered token
        assert checked > rows // 2


def test_sampled_decode_first_tokens_from_the_stock_models_distribution(loaded):
    """End to end: each row's first sampled token is the inverse CDF, under the uniform the loop
    drew, of transformers' processed distribution at the stock model's last prompt position."""
    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    gc = GenerationConfig(
        max_new_tokens=4,
        do_sample=True,
        temperature=0.8,
        top_k=50,
        top_p=0.95,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.no_grad():
        out = group_generate(model, inputs, G, gc, static_cache=True)
        copies = encode(processor, [m for m in msgs for _ in range(G)], [c for c in clips for _ in range(G)])
        logits = model(**copies).logits[:, -1]
    u = model._ego_graph_decode[2].u[0]
    procs = LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(50), TopPLogitsWarper(0.95)])
    ref = procs(copies["input_ids"], logits.clone()).double().numpy()
    L = inputs["input_ids"].shape[1]
    for r in range(out.shape[0]):
        tok, margin = _reference_token(ref[r], float(u[r]))
        if margin > 1e-3:  # prefix-shared and stock logits agree to float32 rounding
            assert int(out[r, L]) == tok


def test_the_compiled_step_is_one_graph_with_packed_attention(loaded, monkeypatch):
    """The step `graph-compiled` compiles traces as one graph (no breaks: nothing in it syncs with
    the host, so CUDA can capture it) compiled once for every step and decodes generate's greedy
    tokens; the decode steps' attention takes the packed grouped-query path."""
    from torch._dynamo.utils import counters

    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    gc = GenerationConfig(max_new_tokens=5, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        stock = _stock(model, processor, msgs, clips, gc)
    monkeypatch.setitem(
        graph_decode._COMPILED,
        "step",
        torch.compile(graph_decode._step, backend="eager", fullgraph=True, dynamic=False),
    )
    graph_decode._register()
    torch._dynamo.reset()
    counters.clear()
    try:
        with torch.no_grad():
            compiled = group_generate(model, inputs, G, gc, static_cache=True, decoder="graph-compiled")
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert torch.equal(compiled, stock)
    assert graphs == 1
    assert model.config.get_text_config()._attn_implementation == "sdpa"  # restored after the loop

    calls = []
    real = graph_decode._packed_gqa_sdpa

    def counting(*a, **k):
        calls.append(a[1].shape[2])  # query tokens
        return real(*a, **k)

    monkeypatch.setattr(graph_decode, "_packed_gqa_sdpa", counting)
    with torch.no_grad():  # the eager step: every call is seen
        eager = group_generate(model, inputs, G, gc, static_cache=True, decoder="graph")
    assert torch.equal(eager, stock)
    layers = model.config.get_text_config().num_hidden_layers
    assert calls == [1] * (layers * 5)  # every decode step's attention went through it, prompts did not


def test_padded_evaluation_batch_through_the_loop_answers_as_one_at_a_time(loaded):
    """Direct-answer evaluation with `static_cache`: a left-padded batch decoded by the loop gives
    each question the greedy answer it gets alone through plain `generate`."""
    from ego3s.models.generation import generate_batch

    model, processor = loaded
    msgs, clips, _ = _inputs(processor)
    enc = encode(processor, msgs, clips)
    assert (enc["attention_mask"] == 0).any()  # one row is left-padded
    batched, _ = generate_batch(model, processor, enc, [6, 4], static_cache=True)
    alone = [
        generate_batch(model, processor, encode(processor, [m], [c]), [b])[0][0] for m, c, b in zip(msgs, clips, [6, 4])
    ]
    assert batched == alone and all(alone)
    assert model._ego_graph_decode[2].rows == 2  # the loop decoded the batch


def test_fused_projections_follow_weight_updates_and_are_undone_after_the_loop(loaded):
    """The loop's one-product query/key/value projections: after an in-place update of the
    weights (what an optimizer step does between rollouts) the loop decodes with the new weights,
    as stock `generate` does; outside the loop the projections are the model's own again."""
    model, processor = loaded
    msgs, clips, inputs = _inputs(processor)
    gc = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    attn = model.model.language_model.layers[0].self_attn
    with torch.no_grad():
        group_generate(model, inputs, G, gc, static_cache=True, decoder="graph")
        assert graph_decode.FUSE_QKV and model._ego_fused_qkv.layers  # the loop fused them
        assert all("forward" not in p.__dict__ for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        old = [p.weight.clone() for p in (attn.k_proj, attn.v_proj)]
        try:
            attn.k_proj.weight.mul_(-1.5)
            attn.v_proj.weight.add_(0.5)
            stock = _stock(model, processor, msgs, clips, gc)
            loop = group_generate(model, inputs, G, gc, static_cache=True, decoder="graph")
        finally:
            attn.k_proj.weight.copy_(old[0])
            attn.v_proj.weight.copy_(old[1])
        before = _stock(model, processor, msgs, clips, gc)
    assert torch.equal(loop, stock) and not torch.equal(stock, before)


def test_fused_projections_keep_lora_terms(tiny_model_dir):
    """Under LoRA the loop fuses the base layers' products and the wrappers add their own terms:
    greedy tokens equal stock `generate` through the same PEFT model (adapters non-zero)."""
    from peft import LoraConfig, get_peft_model

    model, processor = load_model(tiny_model_dir, dtype="float32", device="cpu")
    targets = ["q_proj", "k_proj", "v_proj"]
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    msgs, clips, inputs = _inputs(processor)
    gc = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id)
    with torch.no_grad():
        stock = _stock(model, processor, msgs, clips, gc)
        loop = group_generate(model, inputs, G, gc, static_cache=True, decoder="graph")
    base = model.get_base_model()
    assert len(base._ego_fused_qkv.layers) == base.config.get_text_config().num_hidden_layers
    assert torch.equal(loop, stock)
