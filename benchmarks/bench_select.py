"""Selection scoring throughput: samples/s per view for the likelihood and sampling estimators.

Builds (or reuses) a model, writes N synthetic clips, and scores them with ego3s's own scorer
(decode + views + encode + forward), one view set per estimator. Prints a table, writes JSON.

    python benchmarks/bench_select.py --arch 7b --n 32 --frames 16 --side 448 --out select.json
    python benchmarks/bench_select.py --model /path/to/smol --n 64
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ego3s.data import Sample, write_jsonl
from ego3s.models.loading import load_model
from ego3s.select.cache import ScoreCache
from ego3s.select.scoring import ScoringConfig, score_all


def write_clip(path: Path, frames: int, side: int, seed: int) -> None:
    """A synthetic mp4 (PyAV if installed, else OpenCV): noise frames with a moving bright box."""
    rng = np.random.default_rng(seed)
    imgs = []
    for i in range(frames):
        f = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        x = int(side * 0.1 + i * side * 0.02)
        f[side // 3: side // 2, x: x + side // 6] = 255
        imgs.append(f)
    try:
        import av

        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=2)
            s.width = s.height = side
            s.pix_fmt = "yuv420p"
            for f in imgs:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    except ImportError:
        import cv2

        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (side, side))
        for f in imgs:
            w.write(f[:, :, ::-1])
        w.release()


def samples(folder: Path, n: int, frames: int, side: int) -> list[Sample]:
    out = []
    for i in range(n):
        p = folder / f"c{i}.mp4"
        write_clip(p, frames, side, i)
        closed = i % 2 == 0
        out.append(Sample(id=f"s{i}", question="What did I pick up from the counter?",
                          answer="B" if closed else "the red cup", task="closeqa" if closed else "openqa",
                          options=["a knife", "a red cup", "a sponge", "a plate"] if closed else None, video=str(p),
                          interaction={"objects": [{"name": "cup"}], "action": "pick up",
                                       "boxes": [{"t": 0.0, "label": "cup", "box": [0.1, 0.33, 0.3, 0.5]},
                                                 {"t": frames / 2.0, "label": "cup", "box": [0.4, 0.33, 0.6, 0.5]}]}))
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
    return {"estimator": cfg.estimator, "views": cfg.views, "samples": len(ss), "seconds": dt,
            "samples_per_s": len(ss) / dt, "sample_views_per_s": len(ss) * len(cfg.views) / dt,
            "skipped": stats["skipped_unreadable"]}


def main():
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
    ap.add_argument("--backend", default="pyav")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    path = a.model
    if a.arch:
        from ego3s.models.reference import build_reference

        path = build_reference(f"/tmp/ego3s_ref_{a.arch}", a.arch) if not Path(f"/tmp/ego3s_ref_{a.arch}/config.json").exists() \
            else Path(f"/tmp/ego3s_ref_{a.arch}")
    model, processor = load_model(path, dtype="auto")
    folder = Path(tempfile.mkdtemp(prefix="bench_select_"))
    ss = samples(folder, a.n, a.frames, a.side)
    pix = a.side * a.side
    common = dict(nframes=a.frames, max_pixels=pix, min_pixels=pix, backend=a.backend, batch_size=a.batch_size)
    results = []
    # warm-up
    run(model, processor, ss[: a.batch_size], ScoringConfig(views=["full"], **common), folder, "warm")
    for views in (["full"], ["blind"], ["context"], ["full", "blind", "context"]):
        results.append(run(model, processor, ss, ScoringConfig(views=views, **common), folder, "lik-" + "-".join(views)))
    sm = ScoringConfig(views=["full"], estimator="sampling", num_samples=a.k, max_new_tokens=a.max_new_tokens,
                       **{**common, "batch_size": 1})
    results.append(run(model, processor, ss[: a.sampling_n], sm, folder, "samp"))
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"device: {dev}; model: {path}; {a.frames} frames at {a.side}px; batch {a.batch_size}")
    print("| estimator | views | samples | s | samples/s | sample-views/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['estimator']} | {','.join(r['views'])} | {r['samples']} | {r['seconds']:.2f} | "
              f"{r['samples_per_s']:.2f} | {r['sample_views_per_s']:.2f} |")
    lik = next(r for r in results if r["views"] == ["full"])
    samp = results[-1]
    print(f"likelihood / sampling (full view, samples/s): {lik['samples_per_s'] / samp['samples_per_s']:.1f}x")
    out = {"device": dev, "model": str(path), "frames": a.frames, "side": a.side, "k": a.k,
           "max_new_tokens": a.max_new_tokens, "results": results}
    print(json.dumps(out))
    if a.out:
        json.dump(out, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
