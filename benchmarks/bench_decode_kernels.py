"""The decode step's two largest parts in isolation, at the 7B rollout's shapes (G = 8 rows,
2,560-position static cache filled to the mean length 2,087 + 128): attention of one query token
(SDPA as the loop ran it before, against ego3s's split-KV kernel, with its split count swept) and
the query/key/value and gate/up projections (three or two products against one over the
concatenated weights). Each variant runs over 28 layers' worth of distinct tensors inside one
CUDA graph, so every layer reads its tensors from memory, not from the L2 cache, as in a step;
times are per layer (median of graph replays), with the bytes each must read and the bandwidth
that makes. The split-KV output is first checked against float64 attention.

    python benchmarks/bench_decode_kernels.py --out kernels.json    # CUDA only
"""

import argparse
import sys

import _common as C
import torch
import torch.nn.functional as F

from ego3s.models import split_kv

LAYERS, ROWS, HQ, HK, D, HIDDEN, INTER = 28, 8, 28, 4, 128, 3584, 18944


def per_layer_ms(fns, reps: int = 20) -> float:
    """Median time of one replay of a CUDA graph running every callable in `fns` once, over its length."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for f in fns:
            f()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return C.median(times) / len(fns)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=int, default=2560, help="static cache positions")
    ap.add_argument("--length", type=int, default=2215, help="positions written (mean over a rollout)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    dev, bf = "cuda", torch.bfloat16
    torch.manual_seed(0)
    res: dict = {"layers": LAYERS, "rows": ROWS, "cache": a.cache, "length": a.length}

    # attention: correctness first, then times
    q = [torch.randn(ROWS, HQ, 1, D, device=dev, dtype=bf) for _ in range(LAYERS)]
    kv = [torch.randn(2, ROWS, HK, a.cache, D, device=dev, dtype=bf) for _ in range(LAYERS)]
    mask = torch.zeros(ROWS, 1, 1, a.cache, dtype=torch.bool, device=dev)
    mask[..., : a.length] = True
    mask[1, ..., :100] = False  # a left-padded row
    k, v = kv[0]
    want = F.scaled_dot_product_attention(
        q[0].double(),
        k.double().repeat_interleave(HQ // HK, 1),
        v.double().repeat_interleave(HQ // HK, 1),
        attn_mask=mask,
    ).transpose(1, 2)
    got = split_kv.attention(q[0], k, v, mask).double()
    res["split_kv_rel_err_vs_float64"] = float((got - want).norm() / want.norm())
    packed = (
        F.scaled_dot_product_attention(q[0].reshape(ROWS, HK, HQ // HK, D), k, v, attn_mask=mask)
        .reshape(ROWS, HQ, 1, D)
        .transpose(1, 2)
        .double()
    )
    res["sdpa_rel_err_vs_float64"] = float((packed - want).norm() / want.norm())
    print(
        f"split-KV relative error {res['split_kv_rel_err_vs_float64']:.2e}, SDPA {res['sdpa_rel_err_vs_float64']:.2e}"
    )
    read = 2 * ROWS * HK * a.length * D * 2  # keys and values up to the written length, bf16
    rows = []

    def sdpa(i):
        return lambda: F.scaled_dot_product_attention(q[i].reshape(ROWS, HK, HQ // HK, D), *kv[i], attn_mask=mask)

    t = per_layer_ms([sdpa(i) for i in range(LAYERS)])
    rows.append(["attention: SDPA, packed heads (before)", t, read / t / 1e9])
    res["attention_ms"] = {"sdpa_packed": t}
    for per_sm in (1, 2, 4, 8, 16):
        split_kv.PROGRAMS_PER_SM = per_sm
        t = per_layer_ms([lambda i=i: split_kv.attention(q[i], *kv[i], mask) for i in range(LAYERS)])
        n = split_kv.splits(ROWS, HK, a.cache, dev)[0]
        rows.append([f"attention: split-KV, {per_sm} programs/SM ({n} splits)", t, read / t / 1e9])
        res["attention_ms"][f"split_kv_{per_sm}_per_sm"] = t
    split_kv.PROGRAMS_PER_SM = 4

    # projections
    x = torch.randn(ROWS, 1, HIDDEN, device=dev, dtype=bf)
    for name, outs, bias in (("qkv", (HQ * D, HK * D, HK * D), True), ("gate_up", (INTER, INTER), False)):
        ws = [[torch.randn(o, HIDDEN, device=dev, dtype=bf) * 0.02 for o in outs] for _ in range(LAYERS)]
        bs = [[torch.randn(o, device=dev, dtype=bf) if bias else None for o in outs] for _ in range(LAYERS)]
        nbytes = sum(outs) * HIDDEN * 2
        t = per_layer_ms(
            [
                lambda i=i, j=j, ws=ws, bs=bs: F.linear(x, ws[i][j], bs[i][j])
                for i in range(LAYERS)
                for j in range(len(outs))
            ]
        )
        t *= len(outs)  # per layer, all the products
        rows.append([f"{name}: {len(outs)} products (before)", t, nbytes / t / 1e9])
        fw = [torch.cat(w) for w in ws]
        fb = [torch.cat(b) if bias else None for b in bs]
        tf = per_layer_ms([lambda i=i, fw=fw, fb=fb: F.linear(x, fw[i], fb[i]) for i in range(LAYERS)])
        rows.append([f"{name}: one product over concatenated weights", tf, nbytes / tf / 1e9])
        res[f"{name}_ms"] = {"separate": t, "fused": tf, "mb": nbytes / 1e6}
        del ws, bs, fw, fb
        torch.cuda.empty_cache()
    res["table"] = rows
    print(f"device: {C.device_name()}; per layer, {LAYERS} layers in one CUDA graph")
    print(C.table(["kernel", "ms per layer", "TB/s"], rows))
    C.write_result(a.out, "decode_kernels", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
