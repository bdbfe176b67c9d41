"""Selection scoring throughput: samples/s per view for the likelihood and sampling estimators.

Builds (or reuses) a model, writes N synthetic clips, and scores them with ego3s's own scorer
(decode + views + encode + forward), one view set per estimator. For the full view it also counts
the forward pass's FLOPs (torch.utils.flop_counter, one batch) and times the forward alone on an
encoded batch, giving achieved TFLOP/s end to end and for the forward, and MFU against a bf16
matmul peak measured in the same run. Prints a table, writes JSON.

    python benchmarks/bench_select.py --arch 7b --n 32 --frames 16 --side 448 --out select.json
    python benchmarks/bench_select.py --model /path/to/smol --n 64
    python benchmarks/bench_select.py --smoke                  # CPU, tiny model
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import _common as C
import torch

from ego3s.data import Sample
from ego3s.models.inputs import encode
from ego3s.select.cache import ScoreCache
from ego3s.select.scoring import ScoringConfig, score_all


def samples(folder: Path, n: int, frames: int, side: int) -> list[Sample]:
    out = []
    for i in range(n):
        p = folder / f"c{i}.mp4"
        C.write_clip(p, frames, side, i)
        closed = i % 2 == 0
        out.append(
            Sample(
                id=f"s{i}",
                question="What did I pick up from the counter?",
                answer="B" if closed else "the red cup",
                task="closeqa" if closed else "openqa",
                options=["a knife", "a red cup", "a sponge", "a plate"] if closed else None,
                video=str(p),
                interaction={
                    "objects": [{"name": "cup"}],
                    "action": "pick up",
                    "boxes": [
                        {"t": 0.0, "label": "cup", "box": [0.1, 0.33, 0.3, 0.5]},
                        {"t": frames / 2.0, "label": "cup", "box": [0.4, 0.33, 0.6, 0.5]},
                    ],
                },
            )
        )
    return out


def run(model, processor, ss, cfg: ScoringConfig, folder: Path, tag: str) -> dict:
    cache = ScoreCache(folder / f"cache-{tag}", run=time.time(), **cfg.__dict__)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    stats = score_all(model, processor, ss, cfg, cache, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {
        "estimator": cfg.estimator,
        "views": cfg.views,
        "samples": len(ss),
        "seconds": dt,
        "samples_per_s": len(ss) / dt,
        "sample_views_per_s": len(ss) * len(cfg.views) / dt,
        "skipped": stats["skipped_unreadable"],
    }


def matmul_peak(dtype: torch.dtype, n: int, iters: int = 20) -> float:
    """Measured dense matmul throughput (TFLOP/s) of this device at `dtype`: the MFU denominator."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    t, _ = C.timed(lambda: [a @ b for _ in range(iters)])
    return 2 * n**3 * iters / t / 1e12


def forward_flops(model, processor, frames: int, side: int, batch: int) -> tuple[float, float, int]:
    """(FLOPs of one teacher-forced full-view forward over `batch` samples, its median seconds,
    tokens per sample), on an encoded batch: the model alone, no decoding."""
    from torch.utils.flop_counter import FlopCounterMode

    msgs = [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {
                    "type": "text",
                    "text": "What did I pick up from the counter?\nA. a knife\nB. a red cup\nC. a sponge\nD. a plate\n"
                    "Answer with the option's letter.",
                },
            ],
        }
    ]
    enc = encode(
        processor,
        [msgs] * batch,
        [C.random_clip(frames, side, i) for i in range(batch)],
        answers=["B<|im_end|>"] * batch,
    )
    enc = {k: v.to(model.device) for k, v in enc.items() if k != "labels"}
    with torch.inference_mode():
        # counted with eager attention: torch's counter rejects SDPA's grouped-query shapes (the
        # 7B's 28 query / 4 key-value heads); eager attention does the same matmuls explicitly
        impl = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            with FlopCounterMode(display=False) as counter:
                model(**enc)
        finally:
            model.set_attn_implementation(impl)
        flops = float(counter.get_total_flops())
        model(**enc)
        times = [C.timed(model, **enc)[0] for _ in range(3)]
    return flops, C.median(times), int(enc["input_ids"].shape[1])


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default=None, help="7b or 3b: random reference weights")
    ap.add_argument("--model", default=None, help="a local model folder instead")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--sampling-n", type=int, default=8, help="samples for the (slow) sampling estimator")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--backend", default=C.default_backend())
    ap.add_argument("--peak-n", type=int, default=8192, help="matmul side for the measured peak")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, small sizes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.n, a.frames, a.side, a.batch_size, a.k, a.sampling_n, a.max_new_tokens, a.peak_n = 4, 4, 56, 2, 2, 2, 4, 512
    if not (a.arch or a.model or a.smoke):
        ap.error("give --arch, --model or --smoke")
    path = C.model_folder(a.arch, a.model, a.smoke)
    model, processor = C.load(path, a.smoke, attn=None)
    folder = Path(tempfile.mkdtemp(prefix="bench_select_"))
    ss = samples(folder, a.n, a.frames, a.side)
    pix = a.side * a.side
    common = dict(nframes=a.frames, max_pixels=pix, min_pixels=pix, backend=a.backend, batch_size=a.batch_size)
    results = []
    # warm-up
    run(model, processor, ss[: a.batch_size], ScoringConfig(views=["full"], **common), folder, "warm")
    for views in (["full"], ["blind"], ["context"], ["full", "blind", "context"]):
        results.append(
            run(model, processor, ss, ScoringConfig(views=views, **common), folder, "lik-" + "-".join(views))
        )
    r = run(model, processor, ss, ScoringConfig(views=["blind"], blind_mode="none", **common), folder, "lik-blind-none")
    r["views"] = ["blind (no video)"]
    results.append(r)
    sm = ScoringConfig(
        views=["full"],
        estimator="sampling",
        num_samples=a.k,
        max_new_tokens=a.max_new_tokens,
        **{**common, "batch_size": 1},
    )
    results.append(run(model, processor, ss[: a.sampling_n], sm, folder, "samp"))
    dtype = next(model.parameters()).dtype
    peak = matmul_peak(dtype, a.peak_n)
    flops, fwd_s, tokens = forward_flops(model, processor, a.frames, a.side, a.batch_size)
    lik = next(r for r in results if r["views"] == ["full"])
    samp = results[-1]
    per_sample = flops / a.batch_size
    mfu = {
        "flops_per_sample": per_sample,
        "tokens_per_sample": tokens,
        "peak_tflops": peak,
        "peak_dtype": str(dtype).replace("torch.", ""),
        "forward_s": fwd_s,
        "forward_tflops": flops / fwd_s / 1e12,
        "forward_mfu": flops / fwd_s / 1e12 / peak,
        "pipeline_tflops": per_sample * lik["samples_per_s"] / 1e12,
        "pipeline_mfu": per_sample * lik["samples_per_s"] / 1e12 / peak,
    }
    print(f"device: {C.device_name()}; model: {path}; {a.frames} frames at {a.side}px; batch {a.batch_size}")
    print(
        C.table(
            ["estimator", "views", "samples", "s", "samples/s", "sample-views/s"],
            [
                [
                    r["estimator"],
                    ",".join(r["views"]),
                    r["samples"],
                    r["seconds"],
                    r["samples_per_s"],
                    r["sample_views_per_s"],
                ]
                for r in results
            ],
        )
    )
    ratio = lik["samples_per_s"] / samp["samples_per_s"]
    print(f"likelihood / sampling (full view, samples/s): {ratio:.1f}x")
    print(
        C.table(
            ["full view", "TFLOP/s", "MFU"],
            [
                ["forward alone (encoded batch)", mfu["forward_tflops"], f"{mfu['forward_mfu']:.1%}"],
                ["end to end (decode, views, encode, forward)", mfu["pipeline_tflops"], f"{mfu['pipeline_mfu']:.1%}"],
            ],
        )
    )
    print(
        f"{per_sample / 1e12:.3g} TFLOP per sample ({tokens} tokens); measured {mfu['peak_dtype']} matmul peak "
        f"{peak:.3g} TFLOP/s"
    )
    C.write_result(
        a.out,
        "select",
        {
            "model": str(path),
            "frames": a.frames,
            "side": a.side,
            "k": a.k,
            "batch_size": a.batch_size,
            "max_new_tokens": a.max_new_tokens,
            "backend": a.backend,
            "results": results,
            "likelihood_over_sampling": ratio,
            "mfu": mfu,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
