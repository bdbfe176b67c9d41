"""Static-cache decoding in a loop of our own: one decode step (forward, logits processing,
sampling, bookkeeping) that reads and writes only fixed buffers, so on CUDA the whole step is
captured once in a CUDA graph and replayed per token with no host work and no host syncs.

Why: `generate` spends most of a 7B decode step on the host. Each token it runs Python for
input preparation, logits processors and stopping criteria, and the stopping check
(`unfinished_sequences.max() == 0`) syncs the host with the GPU, so the GPU idles while Python
prepares the next step. Here the host only replays a graph; it checks for end of sequence every
`check_every` tokens, so the GPU runs the steps back to back.

What it draws is what `generate` draws, for the settings TRL and ego3s's evaluation use:
- the logits processors of `generate` (suppressed tokens, `min_new_tokens`, temperature, top-k,
  top-p, in that order and with transformers' tie rules), applied to float32 logits;
- greedy: the argmax, so greedy tokens equal `generate`'s (tests/models/test_graph_decode.py);
- sampling: inverse-CDF sampling of the processed distribution with uniforms drawn up front
  from the default generator (`torch.multinomial` draws from the same distribution with its own
  random stream, so seeds give different but identically distributed tokens);
- after a row's end-of-sequence token it emits the pad token; the output ends at the step where
  every row had finished (or at `max_new_tokens`), as `generate`'s does.
Any other setting (repetition penalty, min-p, beams, stop strings, logits processors passed by
the caller, ...) returns None from `sampling_of`, and the caller falls back to `generate`.

Positions: the caller passes the 4 position rows (text, then Qwen2.5-VL's t/h/w) of the last
prompt token; each step adds one to all four, as `generate` does. The static cache tracks its own
write position (`cumulative_length`, advanced in place by every layer), so the same captured
graph serves every step. The graph is kept on the model for the next call with the same cache,
rows, budget and settings, and captured again when any weight tensor has moved (ZeRO-3 and FSDP
gather the weights afresh for each generation); where capture fails the step runs eagerly.

Inside the step, two parts that ran far below memory bandwidth at 8 rows are replaced (H200,
7B: 8.95 -> 7.31 ms per step, 5.47 ms with the compiled step; docs/PERFORMANCE.md): the
attention of the one query token by a split-KV kernel (`ego3s.models.split_kv`), and the query,
key and value projections by one product over concatenated weight copies (`_FusedQKV`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ego3s.models import split_kv

# the decode step's attention: "split-kv" (default, where Triton runs) or "sdpa"; read once
SPLIT_KV = os.environ.get("EGO3S_DECODE_ATTENTION", "split-kv") == "split-kv"
# the query, key and value projections as one product per layer in the loop (`_FusedQKV`); "0": three
FUSE_QKV = os.environ.get("EGO3S_DECODE_FUSED_QKV", "1") != "0"

# GenerationConfig fields whose non-neutral values change the tokens in ways this loop does not
# implement; any of them set sends the call back to `generate`.
_NEUTRAL = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "sequence_bias": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "exponential_decay_length_penalty": (None,),
    "min_p": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "guidance_scale": (None, 1.0),
    "num_beams": (None, 1),
    "num_return_sequences": (None, 1),
    "num_beam_groups": (None, 1),
    "diversity_penalty": (None, 0.0),
    "penalty_alpha": (None,),
    "stop_strings": (None,),
    "max_time": (None,),
    "watermarking_config": (None,),
    "renormalize_logits": (None, False),
    "output_scores": (None, False),
    "output_logits": (None, False),
    "output_attentions": (None, False),
    "output_hidden_states": (None, False),
    "return_dict_in_generate": (None, False),
    "min_length": (None, 0),
    "prompt_lookup_num_tokens": (None,),
    "assistant_early_exit": (None,),
}


@dataclass(frozen=True)
class Sampling:
    """The token-choice settings of one decode (resolved from a GenerationConfig)."""

    max_new: int
    greedy: bool
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    min_tokens_to_keep: int = 1
    min_new: int = 0  # end-of-sequence tokens are masked for the first `min_new` steps
    suppress: tuple[int, ...] = ()
    eos: tuple[int, ...] = ()
    pad: int = 0


def sampling_of(model, generation_config=None, **generate_kwargs) -> Sampling | None:
    """The settings `generate` would resolve for this call, or None where this loop would not
    draw what `generate` draws (see the module docstring)."""
    if generate_kwargs.get("logits_processor") or generate_kwargs.get("stopping_criteria"):
        return None
    try:  # the merge `generate` does (model defaults under the caller's config and kwargs)
        gc, extra = model._prepare_generation_config(generation_config, **generate_kwargs)
    except Exception:  # a transformers without it: do not guess
        return None
    if extra or gc.max_new_tokens is None:
        return None
    for name, ok in _NEUTRAL.items():
        if getattr(gc, name, None) not in ok:
            return None
    eos = gc.eos_token_id
    eos = () if eos is None else tuple(int(e) for e in ([eos] if isinstance(eos, int) else eos))
    pad = gc.pad_token_id if gc.pad_token_id is not None else (eos[0] if eos else 0)
    sample = bool(gc.do_sample)
    return Sampling(
        max_new=int(gc.max_new_tokens),
        greedy=not sample,
        temperature=float(gc.temperature) if sample and gc.temperature is not None else 1.0,
        top_k=int(gc.top_k) if sample and gc.top_k else 0,
        top_p=float(gc.top_p) if sample and gc.top_p is not None else 1.0,
        min_tokens_to_keep=int(getattr(gc, "min_tokens_to_keep", None) or 1),
        min_new=int(gc.min_new_tokens or 0),
        suppress=tuple(int(t) for t in (gc.suppress_tokens or ())),
        eos=eos,
        pad=int(pad),
    )


_ID_TENSORS: dict = {}


def _ids(ids: tuple[int, ...], device) -> torch.Tensor:
    """A token-id tensor made once per device: a host-to-device copy cannot run inside a CUDA
    graph capture, so the capture must find it made by the warm-up."""
    key = (ids, str(device))
    if key not in _ID_TENSORS:
        _ID_TENSORS[key] = torch.tensor(ids, dtype=torch.long, device=device)
    return _ID_TENSORS[key]


def process(logits: torch.Tensor, step: torch.Tensor, s: Sampling) -> torch.Tensor:
    """`generate`'s processed scores (float32) for the step index `step` (a 1-element tensor)."""
    scores = logits.float()
    neg = -float("inf")  # transformers' filter value
    if s.suppress:
        scores = scores.index_fill(-1, _ids(s.suppress, scores.device), neg)
    if s.min_new > 0 and s.eos:
        early = (step < s.min_new).view(1, 1)
        scores = torch.where(early, scores.index_fill(-1, _ids(s.eos, scores.device), neg), scores)
    if s.greedy:
        return scores
    if s.temperature != 1.0:
        scores = scores / s.temperature
    if s.top_k:
        k = max(min(s.top_k, scores.shape[-1]), s.min_tokens_to_keep)
        kth = torch.topk(scores, k).values[..., -1:]
        scores = scores.masked_fill(scores < kth, neg)
    if s.top_p < 1.0:
        srt, idx = torch.sort(scores, descending=False)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum <= (1 - s.top_p)
        drop[..., -s.min_tokens_to_keep :] = False
        scores = scores.masked_fill(drop.scatter(1, idx, drop), neg)
    return scores


def choose(scores: torch.Tensor, u: torch.Tensor, s: Sampling) -> torch.Tensor:
    """Token per row: the argmax (greedy), else the first token whose cumulative probability
    exceeds the row's uniform `u` (inverse-CDF sampling of softmax(scores))."""
    if s.greedy:
        return scores.argmax(-1)
    return _inverse_cdf(scores, u)


@torch.library.custom_op("ego3s::inverse_cdf", mutates_args=())
def _inverse_cdf(scores: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """An op of its own, opaque to torch.compile: inductor (torch 2.11) fails to generate its
    cumsum over a 152k vocabulary; as an op the compiled step keeps one graph (no break), and
    its eager kernels are captured in the CUDA graph all the same."""
    cdf = scores.softmax(-1).cumsum(-1)
    x = (u.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_(max=scores.shape[-1] - 1)


@_inverse_cdf.register_fake
def _(scores, u):
    return scores.new_empty(scores.shape[:-1], dtype=torch.long)


class _Buffers:
    """Everything one step reads and writes, at fixed addresses (what a CUDA graph needs)."""

    def __init__(self, rows: int, max_new: int, mask_len: int, device):
        z = dict(dtype=torch.long, device=device)
        self.tok = torch.zeros(rows, 1, **z)
        self.pos = torch.zeros(4, rows, 1, **z)
        self.step = torch.zeros(1, **z)
        self.mask = torch.ones(rows, mask_len, **z)
        self.u = torch.zeros(max_new, rows, dtype=torch.float32, device=device)
        self.out = torch.zeros(rows, max_new, **z)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.rows, self.max_new, self.mask_len = rows, max_new, mask_len


def _step(base, cache, b: _Buffers, s: Sampling, cache_kw: str) -> None:
    logits = base(
        input_ids=b.tok,
        attention_mask=b.mask,
        position_ids=b.pos,
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    ).logits[:, -1]
    nxt = choose(process(logits, b.step, s), b.u.index_select(0, b.step).squeeze(0), s)
    nxt = torch.where(b.done, torch.full_like(nxt, s.pad), nxt)
    b.out.index_copy_(1, b.step, nxt.unsqueeze(1))
    if s.eos:
        b.done |= torch.isin(nxt, _ids(s.eos, nxt.device))
    b.tok.copy_(nxt.unsqueeze(1))
    b.pos.add_(1)
    b.step.add_(1)


def _packed_gqa_sdpa(module, query, key, value, attention_mask, **kwargs):
    """SDPA for the decode step: with one query token, the query heads that share a key/value
    head become rows of one query, so the keys and values are read as stored. transformers'
    SDPA path with a mask repeats them per query head instead (`repeat_kv`, a copy of the whole
    cache per layer per step: 7x the cache's bytes for Qwen2.5-VL-7B's 28 query and 4 key/value
    heads) in 5.17, and under torch.compile in later versions too. Where Triton runs (CUDA), the
    step takes the split-KV kernel instead (`ego3s.models.split_kv`: the same packing, with the
    cached positions spread over the whole GPU); `EGO3S_DECODE_ATTENTION=sdpa` keeps SDPA. Prompts
    (more than one query token) go to transformers' SDPA unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if SPLIT_KV and split_kv.usable(query, key, value, attention_mask):
        return split_kv.attention(query, key, value, attention_mask, kwargs.get("scaling")), None
    groups = getattr(module, "num_key_value_groups", 1)
    if query.shape[2] != 1 or groups == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    b, h, _, d = query.shape
    q = query.reshape(b, h // groups, groups, d)
    out = torch.nn.functional.scaled_dot_product_attention(
        q, key, value, attn_mask=attention_mask, scale=kwargs.get("scaling")
    )
    return out.reshape(b, h, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


_ATTN = "ego3s_packed_gqa_sdpa"
_COMPILED: dict = {}
_REGISTERED: list = []


def _register() -> None:
    """`_ATTN` as an attention implementation, with SDPA's masks (the mask builder is looked up
    by the same name; an unknown name gets another kind of mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not _REGISTERED:
        AttentionInterface.register(_ATTN, lambda *a, **k: _packed_gqa_sdpa(*a, **k))
        AttentionMaskInterface.register(_ATTN, sdpa_mask)
        _REGISTERED.append(True)


def _compiled_step():
    """`_step` compiled once per process by inductor (no CUDA graphs of its own: the caller
    captures the compiled step in one)."""
    if "step" not in _COMPILED:
        _COMPILED["step"] = torch.compile(_step, dynamic=False)
    return _COMPILED["step"]


class _attention:
    """Temporarily route the text model's attention through `name`."""

    def __init__(self, base, name: str | None):
        self.cfg, self.name = base.config.get_text_config(), name

    def __enter__(self):
        self.old = self.cfg._attn_implementation
        if self.name and self.old == "sdpa":
            self.cfg._attn_implementation = self.name

    def __exit__(self, *exc):
        self.cfg._attn_implementation = self.old


def _linear(m):
    """The plain `nn.Linear` computing `m`'s base output (under a LoRA wrapper, its base layer)."""
    m = getattr(m, "base_layer", m)
    return m if type(m) is torch.nn.Linear else None


class _FusedQKV:
    """The text layers' query, key and value projections as one matrix product per layer while
    the loop decodes. Why: at 8 rows the three products are matrix-vector work bound by reading
    the weights, and the two small ones (512 outputs each for Qwen2.5-VL-7B) run far below
    bandwidth; one product over the concatenated weights reads the same bytes in one launch.

    The concatenated weights and biases are copies held with the loop's buffers (0.9 GB for the
    7B model), refreshed from the parameters at every call (training updates them between
    rollouts; a copy of 0.9 GB is well under a millisecond on a GPU). During the loop the query
    projection's `forward` computes all three and hands the key and value parts to the other two
    (which compute their own if called first); LoRA's own terms are added by its wrapper as
    before. Projections that are not plain linear layers of one dtype are left alone."""

    def __init__(self, base):
        self.layers = []
        for name, m in base.named_modules():
            if "visual" in name or not all(hasattr(m, p) for p in ("q_proj", "k_proj", "v_proj")):
                continue
            lins = [_linear(getattr(m, p)) for p in ("q_proj", "k_proj", "v_proj")]
            if (
                any(x is None for x in lins)
                or len({(x.weight.dtype, x.weight.device, x.in_features) for x in lins}) != 1
            ):
                continue
            if len({x.bias is None for x in lins}) != 1 or any(
                tuple(x.weight.shape) != (x.out_features, x.in_features) for x in lins
            ):  # mixed biases; or weights not held whole here (a sharded model outside its gather)
                continue
            w = lins[0].weight
            weight = torch.empty(sum(x.out_features for x in lins), w.shape[1], dtype=w.dtype, device=w.device)
            bias = None if lins[0].bias is None else weight.new_empty(weight.shape[0])
            self.layers.append((lins, weight, bias, self._forwards(lins, weight, bias)))
        # the same function objects at every call: a compiled step's guards see the same forwards
        self.key = self.key_of(base)

    @staticmethod
    def key_of(base) -> tuple:
        """What the held copies fit: the projections (which modules, their shapes, dtypes and
        devices) and inference mode (its tensors cannot be written outside it). Not where the
        parameters are: the copies are refreshed from wherever they are at every call, so
        parameters gathered afresh for each generation (ZeRO-3, FSDP) keep the same copies and
        the same forwards, which a compiled step's guards see unchanged."""
        names = ("q_proj", "k_proj", "v_proj")
        return (
            torch.is_inference_mode_enabled(),
            tuple(
                (id(x), tuple(x.weight.shape), x.weight.dtype, x.weight.device, x.bias is None)
                for n, m in base.named_modules()
                if "visual" not in n and all(hasattr(m, p) for p in names)
                for x in (_linear(getattr(m, p)) for p in names)
                if x is not None
            ),
        )

    @staticmethod
    def _forwards(lins, weight, bias):
        sizes = [x.out_features for x in lins]
        held: dict = {}

        def fused(x):
            out_q, held["k"], held["v"] = torch.nn.functional.linear(x, weight, bias).split(sizes, -1)
            return out_q

        def part(lin, name):
            def forward(x):
                out = held.pop(name, None)
                return torch.nn.functional.linear(x, lin.weight, lin.bias) if out is None else out

            return forward

        return fused, part(lins[1], "k"), part(lins[2], "v")

    @torch.no_grad()
    def refresh(self) -> None:
        for lins, weight, bias, _ in self.layers:
            torch.cat([x.weight for x in lins], out=weight)
            if bias is not None:
                torch.cat([x.bias for x in lins], out=bias)

    def __enter__(self):
        for lins, _, _, forwards in self.layers:
            for lin, f in zip(lins, forwards):
                lin.forward = f
        return self

    def __exit__(self, *exc):
        for lins, *_ in self.layers:
            for x in lins:
                x.__dict__.pop("forward", None)


def fused_qkv(base) -> _FusedQKV:
    """The model's `_FusedQKV` (kept on it while its projections keep their shapes), refreshed."""
    held = getattr(base, "_ego_fused_qkv", None)
    if held is None or held.key != _FusedQKV.key_of(base):
        base._ego_fused_qkv = None  # free the old copies first
        held = base._ego_fused_qkv = _FusedQKV(base)
    held.refresh()
    return held


def _capture(base, cache, b: _Buffers, s: Sampling, cache_kw: str, step, reset, dev):
    """The step captured as a CUDA graph after warm-up steps on a side stream (compilation,
    allocator, lazy initialisation), or None where capture fails (hooks that synchronise, such as
    a sharded model's parameter fetches): the loop then runs the step eagerly."""
    reset()
    stream = torch.cuda.Stream(device=dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream), _attention(base, _ATTN):
        for _ in range(3):
            step(base, cache, b, s, cache_kw)
    torch.cuda.current_stream(dev).wait_stream(stream)
    reset()
    g = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(g), _attention(base, _ATTN):
            step(base, cache, b, s, cache_kw)
    except RuntimeError as e:
        import logging

        logging.getLogger(__name__).warning("decode step not captured as a CUDA graph (%s); running it eagerly", e)
        return None
    return g


def _lengths(cache) -> list[torch.Tensor]:
    return [layer.cumulative_length for layer in cache.layers]


def _loop(base, cache, b: _Buffers, g, s: Sampling, cache_kw: str, step, reset, check_every: int) -> int:
    """The decode steps (graph replays, or eager steps), the host checking for the end of every row
    every `check_every` steps; returns the steps run."""
    reset()
    if not s.greedy:
        b.u.uniform_()  # from the default generator: seeded runs repeat
    n = 0
    with _attention(base, _ATTN):
        while n < s.max_new:
            for _ in range(min(check_every, s.max_new - n)):
                if g:
                    g.replay()
                else:
                    step(base, cache, b, s, cache_kw)
                n += 1
            if s.eos and bool(b.done.all()):
                break
    return n


def decode(
    model,
    cache,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    last_positions: torch.Tensor,
    s: Sampling,
    graph: bool | None = None,
    check_every: int | None = None,
    compile_step: bool = False,
) -> torch.Tensor:
    """`generate`'s output (prompt ids then completion ids, `(rows, L + n)`) continued from a
    StaticCache holding every prompt token but the last.

    `input_ids`/`attention_mask`: the `(rows, L)` left-padded prompts the cache was filled from;
    `last_positions`: `(4, rows)` position rows of the last prompt token. `graph`: capture the
    step in a CUDA graph (default: on CUDA); the graph and its buffers are kept on the model and
    replayed by later calls with the same cache, rows, token budget and settings. `compile_step`:
    compile the step with inductor first (fused element-wise kernels; the first call compiles)."""
    from ego3s.models.generation import _base, _cache_kwarg

    base = _base(model)
    rows, L = input_ids.shape
    dev = input_ids.device
    graph = dev.type == "cuda" if graph is None else graph
    check_every = check_every or (16 if graph else 1)  # host syncs: one per `check_every` steps
    mask_len = cache.layers[0].max_cache_len
    if L - 1 + s.max_new > mask_len:
        raise ValueError(f"static cache of {mask_len} positions is too short for {L - 1} + {s.max_new}")
    # a graph reads the weights where they were at capture: any moved tensor (ZeRO-3 or FSDP
    # gathering them afresh for each generation, a reload) means a new capture
    weights = tuple(t.data_ptr() for t in (*base.parameters(), *base.buffers())) if graph else ()
    fused = fused_qkv(base) if FUSE_QKV else None
    key = (rows, s.max_new, mask_len, s, torch.is_inference_mode_enabled(), graph, compile_step, weights, id(fused))
    held = getattr(base, "_ego_graph_decode", None)
    if held is not None and held[0] == key and held[1] is cache:
        b, g = held[2], held[3]
    else:
        base._ego_graph_decode = None
        b, g = _Buffers(rows, s.max_new, mask_len, dev), None
    start = L - 1  # prompt tokens already in the cache

    def reset():
        b.tok.copy_(input_ids[:, -1:])
        b.pos.copy_(last_positions.unsqueeze(-1))
        b.step.zero_()
        b.mask.fill_(1)
        b.mask[:, :L].copy_(attention_mask)
        b.done.zero_()
        b.out.fill_(s.pad)
        for n in _lengths(cache):
            n.fill_(start)

    cache_kw = _cache_kwarg(base)
    _register()
    step = _compiled_step() if compile_step else _step
    _ids(s.suppress, dev), _ids(s.eos, dev)  # made before any step (a compiled step would recompile)
    with fused or contextlib.nullcontext():
        if graph and g is None:
            try:
                g = _capture(base, cache, b, s, cache_kw, step, reset, dev) or False  # False: failed, not retried
            except Exception as e:  # noqa: BLE001 - a compiler failure must not stop a rollout
                if not compile_step:
                    raise
                import logging

                logging.getLogger(__name__).warning("decode step not compiled (%s); capturing the eager step", e)
                step = _step
                g = _capture(base, cache, b, s, cache_kw, step, reset, dev) or False
        base._ego_graph_decode = (key, cache, b, g)
        n = _loop(base, cache, b, g, s, cache_kw, step, reset, check_every)
    out = b.out[:, :n]
    if s.eos and n > 1:  # trim the steps run after every row had finished (all pad)
        first = torch.where(torch.isin(out, _ids(s.eos, dev)), torch.arange(n, device=dev), n).min(1).values
        n = int(first.max().clamp(max=n - 1)) + 1 if bool(b.done.all()) else n
        out = out[:, :n]
    for x in _lengths(cache):  # what generate leaves: every fed token written
        x.fill_(start + n)
    return torch.cat([input_ids, out.clone()], dim=1)
