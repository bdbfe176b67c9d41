"""Group rollouts: G completions of one video prompt, TRL's way (G copies prefilled) against
ego3s's shared prefix (one vision encoding and one prefill, KV cache repeated G times).

Greedy outputs are compared first (they must be identical; the JSON is written either way, and
the script exits 1 when they differ), then sampled rollouts as TRL draws them are timed.
`--static-cache` adds a third path, "shared+static": the shared prefix decoded against a
StaticCache with transformers' auto-compiled decode step (CUDA graphs; compiled during the greedy
warm-up, whose time is reported apart), with its own greedy check against stock.

    python benchmarks/bench_rollout.py --arch 7b --out rollout.json      # GPU: 16 x 448 px, G=8, 256 tokens
    python benchmarks/bench_rollout.py --arch 7b --static-cache          # the same, plus shared+static
    python benchmarks/bench_rollout.py --arch 7b --static-cache --graph  # + ego3s's CUDA-graph decode loop
    python benchmarks/bench_rollout.py --smoke                           # CPU, tiny model

`--graph` adds "shared+graph" (ego3s's decode loop, the eager step captured as one CUDA graph)
and "shared+graph-compiled" (the step compiled by inductor, then captured); `--profile DIR`
writes torch-profiler tables of a short rollout per static path and a breakdown of one decode
step's kernel time (matmul, attention, sampling, other) against its wall time. `--paths`
picks the paths by name.
"""

import argparse
import sys

import _common as C
import torch
from transformers import GenerationConfig

from ego3s.models import graph_decode
from ego3s.models.generation import _cache_kwarg, _prefill, group_generate, prefill, static_copy
from ego3s.models.inputs import encode, vision_token_ids


def generation_config(processor, model, new_tokens: int, greedy: bool) -> GenerationConfig:
    """TRL's sampling settings (temperature 1, no top-k/top-p, vision tokens suppressed), with
    every completion forced to `new_tokens` (random weights would stop at random places)."""
    tok = processor.tokenizer
    return GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=not greedy,
        temperature=None if greedy else 1.0,
        top_p=None if greedy else 1.0,
        top_k=None if greedy else 0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=model.generation_config.eos_token_id,
        suppress_tokens=vision_token_ids(tok),
        disable_compile=True,
    )


def first_mismatch(a: torch.Tensor, b: torch.Tensor, prompt_tokens: int) -> int | None:
    """Completion position of the first column where two outputs differ; None when identical."""
    diff = (a != b).any(0).nonzero()
    return None if torch.equal(a, b) else int(diff[0]) - prompt_tokens


def compile_counters() -> dict:
    """What dynamo and inductor did: graphs compiled, graph breaks, steps CUDA graphs skipped."""
    from torch._dynamo.utils import counters

    return {
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
    }


def decode_floor(model, rows: int, prompt_tokens: int, new_tokens: int, bandwidth_tbs: float = 4.8) -> dict:
    """Bytes one decode step must read (the language model's weights and the embedding row
    aside, plus every row's KV cache at the rollout's mean length) and the time that takes at
    `bandwidth_tbs` (the H200's HBM3e peak; an H100 SXM's is 3.35)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.get_text_config()
    lm = sum(
        p.numel() * p.element_size()
        for n, p in base.named_parameters()
        if "visual" not in n and "embed_tokens" not in n
    )
    if getattr(text, "tie_word_embeddings", False) or getattr(base.config, "tie_word_embeddings", False):
        lm += base.get_input_embeddings().weight.numel() * base.get_input_embeddings().weight.element_size()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = (
        rows
        * text.num_hidden_layers
        * 2
        * text.num_key_value_heads
        * head_dim
        * (prompt_tokens + new_tokens / 2)
        * next(base.parameters()).element_size()
    )
    shared_kv = kv * prompt_tokens / rows / (prompt_tokens + new_tokens / 2)  # the prompt's KV read once
    return {
        "weights_gb": lm / 1e9,
        "kv_gb": kv / 1e9,
        "bandwidth_tbs": bandwidth_tbs,
        "floor_ms": (lm + kv) / bandwidth_tbs / 1e9,
        "floor_ms_prompt_kv_read_once": (lm + kv - kv * prompt_tokens / (prompt_tokens + new_tokens / 2) + shared_kv)
        / bandwidth_tbs
        / 1e9,
    }


KERNEL_KINDS = (
    ("attention", ("flash", "fmha", "attention", "efficient_attention", "sdpa")),
    ("matmul", ("gemm", "gemv", "cutlass", "nvjet", "sm90_", "sm80_", "cublas", "matmul", "mm_")),
    (
        "sampling",
        ("sort", "topk", "cumsum", "scan", "softmax", "argmax", "searchsorted", "radix", "isin", "index_fill"),
    ),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "other (norms, rotary, element-wise, copies)"


def profile_paths(
    model, one: dict, G: int, gc, prompt_tokens: int, folder: str, paths: list[str], steps: int = 24
) -> dict:
    """Per static path, `steps` decode steps profiled after an unprofiled prefill: wall time per
    step, GPU kernel time per step by kind, and the tables (`folder/profile_<path>.txt`); plus
    ego3s's loop without the graph (eager), whose kernels show what one step is made of."""
    import copy
    from pathlib import Path

    from torch.profiler import ProfilerActivity, profile

    out = {}
    Path(folder).mkdir(parents=True, exist_ok=True)
    short = copy_gc(gc, steps)
    s = graph_decode.sampling_of(model, short)

    def prepared():
        cache, last = _prefill(model, one, G)
        cache = static_copy(model, cache, prompt_tokens + steps)
        return (cache, one["input_ids"].repeat_interleave(G, 0), one["attention_mask"].repeat_interleave(G, 0), last)

    def generate(cache, ids, mask, last):
        g = copy.deepcopy(short)
        g.disable_compile = False
        return model.generate(input_ids=ids, attention_mask=mask, generation_config=g, **{_cache_kwarg(model): cache})

    runs = {
        "shared+static": generate,
        "shared+graph": lambda *x: graph_decode.decode(model, *x, s),
        "shared+graph-compiled": lambda *x: graph_decode.decode(model, *x, s, compile_step=True),
    }
    runs = {k: v for k, v in runs.items() if k in paths}
    runs["eager loop (no graph)"] = lambda *x: graph_decode.decode(model, *x, s, graph=False)
    for k, f in runs.items():
        f(*prepared())  # warm: same shapes as profiled
        x = prepared()
        C.sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall = C.timed(f, *x)[0]
        kinds: dict = {}
        total = 0.0
        for e in prof.key_averages():
            t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
            if str(getattr(e, "device_type", "")).endswith("CUDA") and t:
                kinds[kernel_kind(e.key)] = kinds.get(kernel_kind(e.key), 0.0) + t
                total += t
        name = k.replace("+", "_").replace(" ", "_").replace("(", "").replace(")", "")
        Path(folder, f"profile_{name}.txt").write_text(
            prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=45)
        )
        out[k] = {
            "steps": steps,
            "wall_ms_per_step": 1e3 * wall / steps,
            "kernel_ms_per_step": total / 1e3 / steps,
            "kernel_ms_by_kind_per_step": {kk: v / 1e3 / steps for kk, v in kinds.items()},
        }
        print(k, out[k], flush=True)
    return out


def copy_gc(gc, new_tokens: int):
    import copy

    g = copy.deepcopy(gc)
    g.max_new_tokens = g.min_new_tokens = new_tokens
    return g


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="7b", help="7b or 3b reference architecture (random bf16 weights)")
    ap.add_argument("--model", default=None, help="a local model folder instead")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--group", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3, help="timed sampled rollouts per path")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, small sizes")
    ap.add_argument(
        "--static-cache",
        action="store_true",
        help="also time shared+static: StaticCache and transformers' compiled decode step",
    )
    ap.add_argument(
        "--graph",
        action="store_true",
        help="also time shared+graph and shared+graph-compiled (ego3s's decode loop in a CUDA graph)",
    )
    ap.add_argument(
        "--paths",
        default=None,
        help="comma-separated paths to time instead (stock, shared, shared+static, shared+graph, "
        "shared+graph-compiled)",
    )
    ap.add_argument("--profile", default=None, help="folder for profiler tables (static paths)")
    ap.add_argument(
        "--no-greedy",
        action="store_true",
        help="skip the greedy comparison (a compiled path then compiles once, for sampling: half the warm-up)",
    )
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.frames, a.side, a.group, a.new_tokens, a.reps = 4, 56, 3, 8, 1
    model, processor = C.load(C.model_folder(a.arch, a.model, a.smoke), a.smoke)
    dev = next(model.parameters()).device
    msgs = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What did I pick up? Think first."}]}
    ]
    clip = C.random_clip(a.frames, a.side)
    one = {k: v.to(dev) for k, v in encode(processor, [msgs], [clip]).items()}
    copies = {k: v.to(dev) for k, v in encode(processor, [msgs] * a.group, [clip] * a.group).items()}
    prompt_tokens = int(one["input_ids"].shape[1])
    G, N = a.group, a.new_tokens

    def stock(gc):
        return model.generate(**copies, generation_config=gc)

    def shared(gc):
        return group_generate(model, one, G, gc)

    def shared_static(gc):
        return group_generate(model, one, G, gc, static_cache=True)

    def static_prefill():
        return static_copy(model, prefill(model, one, G), prompt_tokens + N)

    def graph(gc):
        return group_generate(model, one, G, gc, static_cache=True, decoder="graph")

    def graph_compiled(gc):
        return group_generate(model, one, G, gc, static_cache=True, decoder="graph-compiled")

    every = {
        "stock": stock,
        "shared": shared,
        "shared+static": lambda gc: group_generate(model, one, G, gc, static_cache=True, decoder="generate"),
        "shared+graph": graph,
        "shared+graph-compiled": graph_compiled,
    }
    names = (
        ["stock", "shared"] + ["shared+static"] * a.static_cache + ["shared+graph", "shared+graph-compiled"] * a.graph
    )
    if a.paths:
        names = a.paths.split(",")
        if unknown := set(names) - set(every):
            ap.error(f"unknown paths {sorted(unknown)}; known: {list(every)}")
    paths = {k: every[k] for k in names}
    ref = "stock" if "stock" in paths else next(iter(paths))
    res = {
        "arch": a.arch if not (a.model or a.smoke) else str(a.model or "tiny"),
        "frames": a.frames,
        "side": a.side,
        "group": G,
        "new_tokens": N,
        "prompt_tokens": prompt_tokens,
        "reps": a.reps,
    }
    with torch.inference_mode():
        # 1. identical greedy outputs (also the warm-up, which compiles the static path's decode step)
        greedy, warmup = {}, {}
        for k, f in paths.items() if not a.no_greedy else ():
            warmup[k], greedy[k] = C.timed(f, generation_config(processor, model, N, True))
        same = True
        if "shared" in greedy and "stock" in greedy:
            res["greedy_first_mismatch"] = first_mismatch(greedy["stock"], greedy["shared"], prompt_tokens)
            res["greedy_identical"] = same = res["greedy_first_mismatch"] is None
        res["warmup_s"] = warmup
        # bf16 greedy decoding through other kernels may part ways after a near tie: reported, and
        # only the stock-vs-shared comparison (same kernels) decides the exit status
        res["greedy_first_mismatch_vs_" + ref] = {
            k: first_mismatch(greedy[ref], greedy[k], prompt_tokens) for k in greedy if k != ref
        }
        if "shared+static" in greedy and "stock" in greedy:
            vs_stock = first_mismatch(greedy["stock"], greedy["shared+static"], prompt_tokens)
            res["greedy_static"] = {
                "identical_to_stock": vs_stock is None,
                "first_mismatch_vs_stock": vs_stock,
                "first_mismatch_vs_shared": first_mismatch(greedy["shared"], greedy["shared+static"], prompt_tokens),
            }
        # 2. prefill alone: G copies vs one shared prefill (+ cache expansion, + copy into the static cache)
        n = max(a.reps, 2)
        res["prefill_s"] = {"shared": C.median([C.timed(prefill, model, one, G)[0] for _ in range(n)])}
        if "stock" in paths:
            res["prefill_s"]["stock"] = C.median([C.timed(model, **copies, logits_to_keep=1)[0] for _ in range(n)])
        if any("+" in k for k in paths):
            static = C.median([C.timed(static_prefill)[0] for _ in range(n)])
            for k in paths:
                if "+" in k:
                    res["prefill_s"][k] = static
        # 3. sampled rollouts as TRL draws them (the static paths warmed with them first: sampling
        # settings are part of what a captured or compiled step holds)
        gc = generation_config(processor, model, N, False)
        for k, f in paths.items():
            if "+" in k:
                res.setdefault("warmup_sampled_s", {})[k] = C.timed(f, gc)[0]
        times = {k: [] for k in paths}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        peak = {}
        for k, f in paths.items():
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            for _ in range(a.reps):
                times[k].append(C.timed(f, gc)[0])
            peak[k] = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    res["rollout_s"] = {k: C.median(v) for k, v in times.items()}
    res["rollout_s_all"] = times
    res["tokens_per_s"] = {k: G * N / res["rollout_s"][k] for k in paths}
    # one decode step (all G rows): the rollout less its prefill, over the new tokens
    res["decode_step_ms"] = {
        k: 1e3 * (res["rollout_s"][k] - res["prefill_s"].get(k, res["prefill_s"]["shared"])) / N
        for k in paths
        if k != "stock"
    }
    res["floor"] = decode_floor(model, G, prompt_tokens, N)
    if "stock" in paths:
        if "shared" in paths:
            res["speedup"] = res["rollout_s"]["stock"] / res["rollout_s"]["shared"]
        if "shared+static" in paths:
            res["speedup_static"] = res["rollout_s"]["stock"] / res["rollout_s"]["shared+static"]
        for k in ("shared+graph", "shared+graph-compiled"):
            if k in paths:
                res["speedup_" + k.split("+")[1].replace("-", "_")] = res["rollout_s"]["stock"] / res["rollout_s"][k]
    if any("+" in k for k in paths):
        res["compile"] = compile_counters()  # after the timed rollouts: recompiles would show here
    res["peak_mem_gib"] = peak
    print(
        f"device: {C.device_name()}; prompt {prompt_tokens} tokens ({a.frames} frames x {a.side} px), "
        f"G={G}, {N} new tokens; greedy outputs identical: {same}"
    )
    print(
        C.table(
            ["path", "rollout s (median)", "completion tokens/s", "decode step ms", "prefill s", "peak GiB"],
            [
                [
                    k,
                    res["rollout_s"][k],
                    res["tokens_per_s"][k],
                    res["decode_step_ms"].get(k, "-"),
                    res["prefill_s"][k],
                    peak[k] or "-",
                ]
                for k in paths
            ],
        )
    )
    print(f"floor: {res['floor']}")
    if "speedup" in res:
        print(f"shared / stock throughput: {res['speedup']:.2f}x")
    if "shared+static" in greedy and "stock" in greedy:
        print(
            f"shared+static / stock throughput: {res['speedup_static']:.2f}x; "
            f"greedy identical to stock: {res['greedy_static']['identical_to_stock']}; "
            f"warm-up (compile) {warmup['shared+static']:.1f} s; dynamo/inductor: {res['compile']}"
        )
    C.write_result(a.out, "rollout", res)
    if a.profile:  # after the timings are safe on disk
        try:
            with torch.inference_mode():
                res["profile"] = profile_paths(
                    model, one, G, gc, prompt_tokens, a.profile, [k for k in paths if "+" in k]
                )
        except Exception as e:  # noqa: BLE001 - a profiler failure must not lose the timings
            res["profile"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"profile failed: {res['profile']['error']}", file=sys.stderr)
        C.write_result(a.out, "rollout", res)
    ok = same
    if not same:
        print(f"greedy outputs differ from completion token {res['greedy_first_mismatch']}", file=sys.stderr)
    if "shared+static" in greedy and "stock" in greedy and not res["greedy_static"]["identical_to_stock"]:
        ok = False
        print(
            f"shared+static greedy outputs differ from stock from completion token "
            f"{res['greedy_static']['first_mismatch_vs_stock']}",
            file=sys.stderr,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
