"""Why a left-padded batch decodes 10x slower through the compiled static-cache step (H200,
the 2026-11-26 complete-table study) while one prompt repeated G times gains 1.55x. Times `new` greedy tokens for a batch
of 8 prompts, unpadded (one prompt x 8) and padded (8 prompts of different lengths), three ways:
transformers' dynamic cache, transformers' own static cache (`cache_implementation="static"`),
and ego3s's shared-prefix static copy (`group_generate(..., static_cache=True)`). Run it with
TORCH_LOGS=recompiles,graph_breaks,cudagraphs to see what the compiled step does.

    python experiments/static_decode/padded_probe.py --arch 7b --new 64
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _common as C  # noqa: E402 - after sys.path reaches the helpers

from ego3s.models import generation  # noqa: E402 - after sys.path reaches the helpers
from ego3s.models.inputs import encode  # noqa: E402 - after sys.path reaches the helpers


def messages(i: int) -> list[dict]:
    words = "several times " * (i % 4)
    return [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": f"What does C do {words}with the cup? Answer."}],
        }
    ]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="7b")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--side", type=int, default=448)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    if a.smoke:
        a.frames, a.side, a.new = 4, 56, 4
    model, processor = C.load(C.model_folder(a.arch, None, a.smoke), a.smoke)
    clip = C.random_clip(a.frames, a.side)
    batches = {
        "unpadded": encode(processor, [messages(0)] * 8, [clip] * 8),
        "padded": encode(processor, [messages(i) for i in range(8)], [clip] * 8),
    }
    ways = {
        "dynamic": lambda enc: model.generate(**enc, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False),
        "hf static": lambda enc: model.generate(
            **enc, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, cache_implementation="static"
        ),
        "ego3s static": lambda enc: generation.group_generate(
            model, enc, 1, static_cache=True, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False
        ),
    }
    rows = []
    for bname, enc in batches.items():
        enc = {k: v.to(model.device) for k, v in enc.items()}
        pads = int((enc["attention_mask"] == 0).sum(1).max())
        ref = None
        for wname, fn in ways.items():
            times, out = [], None
            for _ in range(3):
                print(f"--- {bname} / {wname} run {len(times)}", flush=True)
                with torch.inference_mode():
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    try:
                        out = fn(enc)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        print(f"failed: {type(e).__name__}: {e}", flush=True)
                        times.append(float("nan"))
                        break
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            ref = out if ref is None else ref
            same = out is not None and out.shape == ref.shape and bool(torch.equal(out, ref))
            rows.append(
                [bname, pads, wname] + [round(t, 3) for t in times] + [round(times[-1] / a.new * 1000, 2), same]
            )
            print(rows[-1], flush=True)
    print(
        C.table(
            ["batch", "max pad", "decode", "run 1 s", "run 2 s", "run 3 s", "ms/token (run 3)", "tokens = dynamic's"],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
