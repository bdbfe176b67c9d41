"""Forward pass of the Qwen2.5-VL-7B architecture (random bf16 weights) on a 16-frame 448x448 clip,
loaded through ego3s's own loading path. Prints a table and writes JSON.

    python benchmarks/bench_forward.py --arch 7b --out results.json
"""

import argparse
import json
import time

import numpy as np
import torch

from ego3s.data.video import Clip
from ego3s.models.inputs import encode
from ego3s.models.loading import load_model
from ego3s.models.reference import build_reference


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="7b")
    ap.add_argument("--model-dir", default="/tmp/ego3s_ref")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t = time.perf_counter()
    path = build_reference(f"{a.model_dir}_{a.arch}", a.arch)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    model, processor = load_model(path, dtype="bfloat16", device="cuda", attn_implementation=a.attn)
    t_load = time.perf_counter() - t
    rng = np.random.default_rng(0)
    clip = Clip(
        frames=rng.integers(0, 255, (a.frames, a.side, a.side, 3), dtype=np.uint8),
        timestamps=np.arange(a.frames) / 2.0,
        fps=2.0,
        source="random",
    )
    msgs = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": "What did I pick up? Answer briefly."}],
        }
    ]
    enc = encode(processor, [msgs], [clip]).to("cuda")
    n_tokens = int(enc["input_ids"].shape[1])
    n_video = int((enc["input_ids"] == model.config.video_token_id).sum())
    torch.cuda.reset_peak_memory_stats()
    times, vis_times = [], []
    with torch.inference_mode():
        for i in range(a.reps + 2):
            torch.cuda.synchronize()
            t = time.perf_counter()
            model(**enc, logits_to_keep=1)
            torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t)
            t = time.perf_counter()
            model.model.get_video_features(enc["pixel_values_videos"], enc["video_grid_thw"])
            torch.cuda.synchronize()
            if i >= 2:
                vis_times.append(time.perf_counter() - t)
    res = {
        "device": torch.cuda.get_device_name(0),
        "arch": a.arch,
        "frames": a.frames,
        "side": a.side,
        "prompt_tokens": n_tokens,
        "video_tokens": n_video,
        "attn": a.attn,
        "build_s": round(t_build, 1),
        "load_s": round(t_load, 1),
        "prefill_s_median": float(np.median(times)),
        "vision_s_median": float(np.median(vis_times)),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    print("| arch | frames | tokens (video) | prefill s | vision s | peak GiB | load s |")
    print(
        f"| {a.arch} | {a.frames}x{a.side}² | {n_tokens} ({n_video}) | {res['prefill_s_median']:.3f} | "
        f"{res['vision_s_median']:.3f} | {res['peak_mem_gib']:.1f} | {t_load:.1f} |"
    )
    print(json.dumps(res))
    if a.out:
        json.dump(res, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
