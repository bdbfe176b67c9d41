"""Evaluation throughput: EgoSchema-style 5-way multiple-choice questions on synthetic clips,
batched against one at a time, through ego3s's evaluation runner (`generate_shard`: decode,
view, encode, greedy generate with the benchmark's answer budget, extract).

    python benchmarks/bench_eval.py --arch 7b --out eval.json    # GPU: 16 x 448 px clips
    python benchmarks/bench_eval.py --smoke                      # CPU, tiny model
"""

import argparse
import sys
import tempfile
from pathlib import Path

import _common as C

from ego3s.data import Sample
from ego3s.eval.benchmarks import get_benchmark
from ego3s.eval.run import EvalConfig, generate_shard
from ego3s.files import read_log


def samples(folder: Path, n: int, frames: int, side: int) -> list[Sample]:
    """EgoSchema-like questions: one question, five long options, answer letter."""
    out = []
    for i in range(n):
        p = folder / f"q{i}.mp4"
        C.write_clip(p, frames, side, i)
        opts = [
            f"C {verb} the {obj} {'several times ' * (i % 3)}before putting it back on the shelf"
            for verb, obj in [
                ("washes", "cup"),
                ("cuts", "onion"),
                ("opens", "drawer"),
                ("folds", "towel"),
                ("moves", "chair"),
            ]
        ]
        out.append(
            Sample(
                id=f"q{i}",
                question="What is the overarching goal of C's actions in this video?",
                answer="ABCDE"[i % 5],
                task="closeqa",
                options=opts,
                video=str(p),
            )
        )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="7b")
    ap.add_argument("--model", default=None, help="a local model folder instead")
    ap.add_argument("--n", type=int, default=16, help="questions per run")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--backend", default=C.default_backend())
    ap.add_argument(
        "--static-cache",
        action="store_true",
        help="decode against a compiled static cache "
        "(EvalConfig.static_cache); both batch sizes are warmed up (compiled) before timing",
    )
    ap.add_argument(
        "--fmt",
        default="direct",
        choices=["direct", "reasoning"],
        help="prompt format: direct (EgoSchema's 16-token answer) or reasoning (<think> first, as an "
        "RL-trained model answers; random weights never stop early, so every answer takes the budget)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=None, help="answer budget (default: the format's)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU, small sizes")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.n, a.batch_size, a.frames, a.side = 4, 4, 4, 56
    model, processor = C.load(C.model_folder(a.arch, a.model, a.smoke), a.smoke)
    folder = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    ss = samples(folder, a.n, a.frames, a.side)
    bench = get_benchmark("egoschema")
    pix = a.side * a.side
    runs = []
    warm = [("warm-up", a.batch_size)] + ([("warm-up 1", 1)] if a.static_cache else [])
    for tag, bs in (*warm, ("one at a time", 1), ("batched", a.batch_size)):
        cfg = EvalConfig(
            nframes=a.frames,
            max_pixels=pix,
            min_pixels=pix,
            backend=a.backend,
            batch_size=bs,
            progress=False,
            out=str(folder),
            static_cache=a.static_cache,
            fmt=a.fmt,
            max_new_tokens=a.max_new_tokens,
        )
        pred = folder / f"pred-{tag.replace(' ', '_')}.jsonl"
        todo = ss[:bs] if tag.startswith("warm-up") else ss
        seconds, _ = C.timed(generate_shard, model, processor, bench, todo, cfg, pred, done=set(), rank=0)
        if tag.startswith("warm-up"):
            continue
        recs = read_log(pred)
        runs.append(
            {
                "mode": tag,
                "batch_size": bs,
                "samples": len(todo),
                "seconds": seconds,
                "samples_per_s": len(todo) / seconds,
                "load_s": sum(r.get("t_load", 0.0) for r in recs),
                "generate_s": sum(r.get("t_generate", 0.0) / r.get("batch_size", 1) for r in recs),
                "new_tokens_mean": sum(r.get("new_tokens", 0) for r in recs) / max(len(recs), 1),
                "prompt_tokens_mean": sum(r.get("prompt_tokens", 0) for r in recs) / max(len(recs), 1),
            }
        )
    ratio = runs[1]["samples_per_s"] / runs[0]["samples_per_s"]
    print(
        f"device: {C.device_name()}; EgoSchema-style 5-way, {a.frames} frames x {a.side} px, "
        f"{a.n} questions, decoder {a.backend}, static cache {a.static_cache}, format {a.fmt}, "
        f"{runs[0]['new_tokens_mean']:.0f} answer tokens on average"
    )
    print(
        C.table(
            ["mode", "batch", "samples/s", "s", "decode+view s", "generate s", "prompt tokens"],
            [
                [
                    r["mode"],
                    r["batch_size"],
                    r["samples_per_s"],
                    r["seconds"],
                    r["load_s"],
                    r["generate_s"],
                    r["prompt_tokens_mean"],
                ]
                for r in runs
            ],
        )
    )
    print(f"batched / one at a time: {ratio:.2f}x")
    C.write_result(
        a.out,
        "eval",
        {
            "frames": a.frames,
            "side": a.side,
            "n": a.n,
            "backend": a.backend,
            "static_cache": a.static_cache,
            "fmt": a.fmt,
            "max_new_tokens": a.max_new_tokens,
            "runs": runs,
            "batched_over_single": ratio,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
