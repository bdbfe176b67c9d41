"""Vision tower alone: transformers' per-window SDPA loop vs ego3s's grouped window attention.

    python benchmarks/bench_vision.py --arch 7b --frames 16 --side 448 --out vision.json
    python benchmarks/bench_vision.py --smoke --out /tmp/vision.json       # tiny model on the CPU

The tower is run on a random 16-frame 448 px clip (what selection, evaluation and every training
forward encode) with `ego3s.models.vision_attention` off and on; both outputs are compared, the
FLOPs counted once (torch.utils.flop_counter), and medians, TFLOP/s and the ratio printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402 - after sys.path reaches the helpers


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="7b")
    ap.add_argument("--model", help="a local model folder instead of the random-weight reference build")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.smoke:
        a.frames, a.side, a.reps = 4, 112, 2
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoProcessor

    from ego3s.models.inputs import encode
    from ego3s.models.loading import load_model

    path = C.model_folder(a.arch, a.model, a.smoke)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    gpu = torch.cuda.is_available() and not a.smoke
    dev, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    clip = C.random_clip(a.frames, a.side)
    msgs = [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]]
    enc = encode(processor, msgs, [clip])
    pix = enc["pixel_values_videos"].to(dev, dtype)
    grid = enc["video_grid_thw"].to(dev)
    results, outputs = {}, {}
    for mode in ("loop", "grouped"):
        if gpu:
            torch.cuda.empty_cache()
        m, _ = load_model(
            path,
            dtype=str(dtype).replace("torch.", ""),
            device=dev,
            attn_implementation="sdpa",
            grouped_vision_attention=mode == "grouped",
        )
        tower = m.model.visual
        with torch.inference_mode():
            tower(pix, grid_thw=grid)  # warm-up
            times = []
            for _ in range(a.reps):
                s, out = C.timed(tower, pix, grid_thw=grid)
                times.append(s)
            if mode == "loop":
                with FlopCounterMode(display=False) as counter:
                    tower(pix, grid_thw=grid)
                flops = float(counter.get_total_flops())
        outputs[mode] = out.pooler_output.float().cpu()
        results[mode] = {"s_median": C.median(times), "s_all": times}
        del m, tower
    for mode in results:
        results[mode]["tflops"] = flops / results[mode]["s_median"] / 1e12
    diff = float((outputs["grouped"] - outputs["loop"]).abs().max())
    scale = float(outputs["loop"].abs().max())
    windows = int(grid.prod()) // 64  # 8 x 8-patch windows (Qwen2.5-VL's 112 px) in the windowed blocks
    res = {
        "arch": "tiny" if a.smoke and not a.model else (a.model or a.arch),
        "frames": a.frames,
        "side": a.side,
        "patches": int(grid.prod()),
        "windows_approx": windows,
        "flops": flops,
        "results": results,
        "speedup": results["loop"]["s_median"] / results["grouped"]["s_median"],
        "max_abs_diff": diff,
        "max_abs_value": scale,
    }
    print(
        f"device: {C.device_name()}; {a.frames} frames x {a.side} px = {int(grid.prod())} patches; "
        f"{flops / 1e12:.3g} TFLOP per clip"
    )
    print(
        C.table(
            ["window attention", "s (median)", "TFLOP/s"], [[m, r["s_median"], r["tflops"]] for m, r in results.items()]
        )
    )
    print(f"grouped / loop speed-up: {res['speedup']:.2f}x; max |diff| {diff:.3g} (outputs up to {scale:.3g})")
    C.write_result(a.out, "vision", res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
