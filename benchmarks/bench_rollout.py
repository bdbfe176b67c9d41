"""Group rollouts: G completions of one video prompt, TRL's way (G copies prefilled) against
ego3s's shared prefix (one vision encoding and one prefill, KV cache repeated G times).

Greedy outputs are compared first (they must be identical; the JSON is written either way, and
the script exits 1 when they differ), then sampled rollouts as TRL draws them are timed.
`--static-cache` adds a third path, "shared+static": the shared prefix decoded against a
StaticCache with transformers' auto-compiled decode step (CUDA graphs; compiled during the greedy
warm-up, whose time is reported apart), with its own greedy check against stock.

    python benchmarks/bench_rollout.py --arch 7b --out rollout.json      # GPU: 16 x 448 px, G=8, 256 tokens
    python benchmarks/bench_rollout.py --arch 7b --static-cache          # the same, plus shared+static
    python benchmarks/bench_rollout.py --smoke                           # CPU, tiny model
"""

import argparse
import sys

import torch
from transformers import GenerationConfig

import _common as C
from ego3s.models.inputs import encode, vision_token_ids
from ego3s.rl.rollout import group_generate, prefill, static_copy


def generation_config(processor, model, new_tokens: int, greedy: bool) -> GenerationConfig:
    """TRL's sampling settings (temperature 1, no top-k/top-p, vision tokens suppressed), with
    every completion forced to `new_tokens` (random weights would stop at random places)."""
    tok = processor.tokenizer
    return GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=not greedy,
                            temperature=None if greedy else 1.0, top_p=None if greedy else 1.0,
                            top_k=None if greedy else 0, pad_token_id=tok.pad_token_id,
                            eos_token_id=model.generation_config.eos_token_id,
                            suppress_tokens=vision_token_ids(tok), disable_compile=True)


def first_mismatch(a: torch.Tensor, b: torch.Tensor, prompt_tokens: int) -> int | None:
    """Completion position of the first column where two outputs differ; None when identical."""
    diff = (a != b).any(0).nonzero()
    return None if torch.equal(a, b) else int(diff[0]) - prompt_tokens


def compile_counters() -> dict:
    """What dynamo and inductor did: graphs compiled, graph breaks, steps CUDA graphs skipped."""
    from torch._dynamo.utils import counters

    return {"graphs": counters["stats"]["unique_graphs"], "graph_breaks": sum(counters["graph_break"].values()),
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"]}


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
    ap.add_argument("--static-cache", action="store_true",
                    help="also time shared+static: StaticCache and transformers' compiled decode step")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.frames, a.side, a.group, a.new_tokens, a.reps = 4, 56, 3, 8, 1
    model, processor = C.load(C.model_folder(a.arch, a.model, a.smoke), a.smoke)
    dev = next(model.parameters()).device
    msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What did I pick up? Think first."}]}]
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

    paths = {"stock": stock, "shared": shared}
    if a.static_cache:
        paths["shared+static"] = shared_static
    res = {"arch": a.arch if not (a.model or a.smoke) else str(a.model or "tiny"), "frames": a.frames,
           "side": a.side, "group": G, "new_tokens": N, "prompt_tokens": prompt_tokens, "reps": a.reps}
    with torch.inference_mode():
        # 1. identical greedy outputs (also the warm-up, which compiles the static path's decode step)
        greedy, warmup = {}, {}
        for k, f in paths.items():
            warmup[k], greedy[k] = C.timed(f, generation_config(processor, model, N, True))
        res["greedy_first_mismatch"] = first_mismatch(greedy["stock"], greedy["shared"], prompt_tokens)
        res["greedy_identical"] = same = res["greedy_first_mismatch"] is None
        res["warmup_s"] = warmup
        if a.static_cache:
            vs_stock = first_mismatch(greedy["stock"], greedy["shared+static"], prompt_tokens)
            res["greedy_static"] = {
                "identical_to_stock": vs_stock is None, "first_mismatch_vs_stock": vs_stock,
                "first_mismatch_vs_shared": first_mismatch(greedy["shared"], greedy["shared+static"], prompt_tokens)}
        # 2. prefill alone: G copies vs one shared prefill (+ cache expansion, + copy into the static cache)
        n = max(a.reps, 2)
        res["prefill_s"] = {
            "stock": C.median([C.timed(model, **copies, logits_to_keep=1)[0] for _ in range(n)]),
            "shared": C.median([C.timed(prefill, model, one, G)[0] for _ in range(n)])}
        if a.static_cache:
            res["prefill_s"]["shared+static"] = C.median([C.timed(static_prefill)[0] for _ in range(n)])
        # 3. sampled rollouts as TRL draws them
        gc = generation_config(processor, model, N, False)
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
    res["speedup"] = res["rollout_s"]["stock"] / res["rollout_s"]["shared"]
    if a.static_cache:
        res["speedup_static"] = res["rollout_s"]["stock"] / res["rollout_s"]["shared+static"]
        res["compile"] = compile_counters()  # after the timed rollouts: recompiles would show here
    res["peak_mem_gib"] = peak
    print(f"device: {C.device_name()}; prompt {prompt_tokens} tokens ({a.frames} frames x {a.side} px), "
          f"G={G}, {N} new tokens; greedy outputs identical: {same}")
    print(C.table(["path", "rollout s (median)", "completion tokens/s", "prefill s", "peak GiB"],
                  [[k, res["rollout_s"][k], res["tokens_per_s"][k], res["prefill_s"][k], peak[k] or "-"]
                   for k in paths]))
    print(f"shared / stock throughput: {res['speedup']:.2f}x")
    if a.static_cache:
        print(f"shared+static / stock throughput: {res['speedup_static']:.2f}x; "
              f"greedy identical to stock: {res['greedy_static']['identical_to_stock']}; "
              f"warm-up (compile) {warmup['shared+static']:.1f} s; dynamo/inductor: {res['compile']}")
    C.write_result(a.out, "rollout", res)
    ok = same
    if not same:
        print(f"greedy outputs differ from completion token {res['greedy_first_mismatch']}", file=sys.stderr)
    if a.static_cache and not res["greedy_static"]["identical_to_stock"]:
        ok = False
        print(f"shared+static greedy outputs differ from stock from completion token "
              f"{res['greedy_static']['first_mismatch_vs_stock']}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
