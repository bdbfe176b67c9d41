"""Generation that RL, selection and evaluation share. `group_generate`: group rollouts that share
their prompt: encode the video and prefill each distinct prompt once, then decode its G
completions from G copies of one KV cache (GRPO's rollouts, CSM's sampling estimator).
`generate_batch`: the evaluation's batched greedy answers, each cut to its own budget.

Why: GRPO samples G completions of one prompt. TRL (without vLLM) hands `generate` the G copies,
and `generate` runs the vision tower and the prompt prefill once per copy; with a 2,000-token
video prompt that is a large share of a rollout. Here each group's prompt is prefilled once, the
cache is repeated G times (`Cache.batch_repeat_interleave`) and `generate` continues from it with
the caller's generation config: same positions, masks, logits processors and sampling, so greedy
outputs equal the stock path's.

How the continuation lines up with the stock path:
- the prefill covers every prompt token but the last; `generate` then gets the full prompts and the
  cache, feeds only the last prompt token (it skips cached tokens) and samples the first completion
  token over all G x B rows, as the stock path does;
- Qwen2.5-VL's 3-D M-RoPE: the prefill gets the positions `generate` would build (a text row for
  the mask, then t/h/w rows from the model's rope index), and the model's `rope_deltas` (the offset
  of decode positions, per row) are repeated G times, so decode positions match the stock path's.

Static decode (`group_generate(..., static_cache=True)`, off by default): after the same one-row
prefill, the repeated keys/values are copied into a `StaticCache` of B x G rows and at least
L + max_new_tokens positions (kept on the model and reused, growing only, by later calls with as many rows).
By default ego3s's own loop decodes from it (`ego3s.models.graph_decode`: the whole step, sampling
included, captured once as a CUDA graph and replayed per token); with `decoder="generate"`, or
settings that loop does not implement, `generate` continues from it with compilation allowed. Why: a decode step against a dynamic cache
is bound by Python and kernel launches (about 20-27 ms per step for the 7B model on an H100,
against a bandwidth floor near 5 ms); against a fixed-shape cache, transformers' auto-compile
(`torch.compile` of the forward, by default with CUDA graphs, `mode="reduce-overhead"`; CUDA only,
see `CompileConfig`) runs the decode steps. The prefill stays eager. Greedy tokens equal the
dynamic path's (float32, CPU, tests/models/test_static_decode.py). On an H200 (7B architecture, G = 8,
256 tokens) the decode step fell from about 18 to 11 ms: 1.77x stock TRL's rollout throughput.

Only models whose 3-D positions ego3s computes itself (Qwen2.5-VL with the reference rope index
installed by `patch_qwen25_rope_index`) take this path: `supported` says which.
"""

from __future__ import annotations

import copy
import inspect
import time

import torch

from ego3s.models.inputs import VISUAL_KEYS


def _base(model):
    """The transformers model under a PEFT wrapper (LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supported(model) -> bool:
    """True for models whose prompt positions ego3s builds (patched Qwen2.5-VL)."""
    from ego3s.models.loading import qwen25_rope_index

    inner = getattr(_base(model), "model", None)
    fn = getattr(inner, "get_rope_index", None)
    return getattr(fn, "__func__", None) is qwen25_rope_index


def _cache_kwarg(model) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); use the name this version takes."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prompt_positions(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids `(4, B, L)`, rope_deltas `(B, 1)`) of left-padded prompts: the text row that
    `generate` puts first (for the attention mask), then the 3-D t/h/w rows."""
    inner = _base(model).model
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    grids = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")}
    pos3d, deltas = inner.get_rope_index(
        ids, mm_token_type_ids=inputs.get("mm_token_type_ids"), attention_mask=mask, **grids
    )
    return torch.cat([text[None], pos3d.to(text.device)]), deltas


def prefill(model, inputs: dict, group: int):
    """KV cache of every prompt token but the last, computed once per row and repeated `group`
    times (rows i*group .. i*group + group-1 are copies of row i). Sets the model's rope_deltas
    for the repeated rows."""
    return _prefill(model, inputs, group)[0]


def _prefill(model, inputs: dict, group: int):
    """`prefill`'s cache and the `(4, B * group)` positions of each repeated row's last prompt token."""
    from transformers import DynamicCache

    base = _base(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if ids.shape[1] < 2:
        raise ValueError("shared-prefix prefill needs prompts of at least two tokens")
    positions, deltas = prompt_positions(base, inputs)
    cache = DynamicCache(config=base.config.get_text_config())
    kw = {k: inputs[k] for k in VISUAL_KEYS if inputs.get(k) is not None}
    if inputs.get("mm_token_type_ids") is not None:
        kw["mm_token_type_ids"] = inputs["mm_token_type_ids"][:, :-1]
    base(
        input_ids=ids[:, :-1],
        attention_mask=mask[:, :-1],
        position_ids=positions[..., :-1],
        use_cache=True,
        logits_to_keep=1,
        **{_cache_kwarg(base): cache},
        **kw,
    )
    cache.batch_repeat_interleave(group)
    base.model.rope_deltas = deltas.repeat_interleave(group, dim=0)
    return cache, positions[..., -1].repeat_interleave(group, dim=1)


STATIC_BUCKET = 256  # static cache lengths are rounded up to a multiple of this


def static_copy(model, cache, max_len: int):
    """A `StaticCache` holding `cache`'s keys and values, with room for at least `max_len` positions.

    `generate` compiles its decode step only against a compileable (fixed-shape) cache, never a
    DynamicCache. Filling it through `update` allocates it at the right batch size and marks its
    tensors static. The cache is kept on the model and refilled in place by later calls with the
    same rows, dtype, device and inference mode (whose tensors cannot be updated outside it),
    and it only grows: a shorter prompt reuses the longer cache (the positions past it are masked)
    instead of allocating a shorter one. CUDA graphs read the cache at fixed addresses and shapes;
    a new cache per call, or one whose length follows the prompt across a `STATIC_BUCKET` boundary,
    made the compiled step re-record or recompile, which is what made padded evaluation batches
    (16-token answers, lengths around 2,300) six times slower than one question at a time (H200,
    the 2026-11-26 scene-fallback study)."""
    from transformers import StaticCache

    base = _base(model)
    k = cache.layers[0].keys
    key = (k.shape[0], k.dtype, k.device, torch.is_inference_mode_enabled())
    need = -(-max_len // STATIC_BUCKET) * STATIC_BUCKET
    held = getattr(base, "_ego_static_cache", None)
    if held is not None and held[0] == key and held[1].layers[0].max_cache_len >= need:
        static = held[1]
        static.reset()
    else:
        if held is not None and held[0] == key:
            need = max(need, held[1].layers[0].max_cache_len)
        base._ego_static_cache = None  # free the old one before allocating
        static = StaticCache(config=base.config.get_text_config(), max_cache_len=need)
        base._ego_static_cache = (key, static)
    for i, layer in enumerate(cache.layers):
        static.update(layer.keys, layer.values, i)
    return static


def _max_length(prompt_len: int, gc, generate_kwargs: dict) -> int:
    """The longest sequence `generate` may produce (what the static cache must hold)."""
    new = generate_kwargs.get("max_new_tokens", gc.max_new_tokens)
    return prompt_len + new if new is not None else generate_kwargs.get("max_length", gc.max_length)


def group_generate(
    model,
    inputs: dict,
    group: int,
    generation_config=None,
    static_cache: bool = False,
    decoder: str = "graph",
    **generate_kwargs,
) -> torch.Tensor:
    """What `model.generate` returns for the batch in which each row of `inputs` appears `group`
    times in a row (`(B * group, L + new)` token ids), with one vision encoding and one prefill per
    row instead of `group`.

    `inputs`: left-padded `input_ids`, `attention_mask`, `mm_token_type_ids` and the visual
    tensors of the B distinct prompts. Call under `torch.no_grad()`.
    `static_cache`: decode against a StaticCache with compilation allowed (the caller's
    `disable_compile` is overridden; `generation_config.compile_config` picks how), see the module
    docstring. `decoder` (static cache only): "graph", ego3s's decode loop whose step is one CUDA
    graph on CUDA (`ego3s.models.graph_decode`; settings it does not implement fall back to
    `generate`); "graph-compiled", the same with the step compiled by inductor before capture
    (about 35 s once per setting, then 5.5 against 7.3 ms per step for the 7B model; training's
    static-cache rollouts use it on CUDA);
    "generate", transformers' `generate` with its auto-compiled step. Left-padded batches take it too: with the grow-only cache (`static_copy`), padded
    evaluation batches of 8 ran 1.36x faster than through the dynamic cache (H200, 7B architecture,
    16-token answers, the 2026-11-26 scene-fallback study; docs/PERFORMANCE.md)."""
    from ego3s.models import graph_decode

    cache, last_positions = _prefill(model, inputs, group)
    ids = inputs["input_ids"].repeat_interleave(group, dim=0)
    mask = inputs["attention_mask"].repeat_interleave(group, dim=0)
    if static_cache:
        if decoder not in ("graph", "graph-compiled", "generate"):
            raise ValueError(f"decoder must be graph, graph-compiled or generate, not {decoder!r}")
        fast = (
            graph_decode.sampling_of(_base(model), generation_config, **generate_kwargs)
            if decoder != "generate"
            else None
        )
        generation_config = copy.deepcopy(generation_config or _base(model).generation_config)
        generation_config.disable_compile = False
        cache = static_copy(model, cache, _max_length(ids.shape[1], generation_config, generate_kwargs))
        if fast is not None:  # ego3s's own decode loop (one CUDA graph per step), see graph_decode
            return graph_decode.decode(
                model, cache, ids, mask, last_positions, fast, compile_step=decoder == "graph-compiled"
            )
    # through the caller's model (a PEFT wrapper, or a model whose generate was wrapped), as TRL calls it
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        generation_config=generation_config,
        **{_cache_kwarg(_base(model)): cache},
        **generate_kwargs,
    )


def stop_ids(model, tokenizer) -> set[int]:
    ids = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in eos if isinstance(eos, (list, tuple)) else [eos]:
        if v is not None:
            ids.add(int(v))
    for v in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if v is not None:
            ids.add(int(v))
    return ids


def generate_batch(
    model, processor, enc, budgets: list[int], static_cache: bool = False
) -> tuple[list[list[int]], dict]:
    """Greedy answers (token ids up to the first stop token, each cut to its own budget) for one
    encoded batch (`ego3s.models.inputs.encode`), and the batch's statistics. `static_cache`: decode
    through `group_generate` (one copy per prompt) against a compiled static cache,
    where the model supports it."""
    import torch

    tok = processor.tokenizer
    prompt_tokens = enc["attention_mask"].sum(1).tolist()
    enc = enc.to(model.device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    t0 = time.perf_counter()
    kw = dict(do_sample=False, max_new_tokens=max(budgets), pad_token_id=pad, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        if static_cache and supported(model) and enc["input_ids"].shape[1] > 1:
            out = group_generate(model, dict(enc), 1, static_cache=True, **kw)
        else:
            out = model.generate(**enc, **kw)
    if torch.cuda.is_available() and model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    seconds = time.perf_counter() - t0
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    stop = stop_ids(model, tok)
    answers = []
    for row, budget in zip(new, budgets):
        ids = []
        for t in row[:budget]:
            if t in stop:
                break
            ids.append(int(t))
        answers.append(ids)
    return answers, {"prompt_tokens": prompt_tokens, "seconds": seconds, "batch_size": len(budgets)}
