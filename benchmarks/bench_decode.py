"""Video decoding: frames for a long clip (3 minutes at 30 fps by default, written locally with
PyAV, or OpenCV where PyAV is missing) sampled to 16 and 64 frames and resized to the model's
grid: ego3s's loader (`ego3s.data.video.load_clip`, each installed backend) against Qwen2.5-VL's
own utilities (`qwen_vl_utils.fetch_video`, decord backend), with the same frame indices asserted.

    python benchmarks/bench_decode.py --out decode.json        # CPU
    python benchmarks/bench_decode.py --smoke                  # a 10-second clip
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FORCE_QWENVL_VIDEO_READER", "decord")  # read by qwen_vl_utils at import

import _common as C
import numpy as np

from ego3s.data.video import default_decode_threads, load_clip


def write_long_clip(path: Path, seconds: float, fps: int, width: int, height: int, gop: int) -> float:
    """An H.264 mp4 with smooth moving content (realistic bitrate, unlike noise); seconds taken."""
    t = time.perf_counter()
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    base = base.astype(np.uint8)
    n = int(seconds * fps)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8)

    def frame(i):
        f = np.roll(base, i * 3, axis=1) + np.roll(noise, i, axis=0)
        x = (i * 5) % (width - width // 6)
        f[height // 3 : height // 2, x : x + width // 6] = (255, 40 + i % 200, 40)
        return f

    try:
        import av

        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = width, height, "yuv420p"
            s.options = {"preset": "veryfast", "g": str(gop)}
            for i in range(n):
                for p in s.encode(av.VideoFrame.from_ndarray(frame(i), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    except ImportError:
        import cv2

        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        for i in range(n):
            w.write(frame(i)[:, :, ::-1])
        w.release()
    return time.perf_counter() - t


def backends() -> list[str]:
    out = []
    for name, module in (("pyav", "av"), ("decord", "decord"), ("opencv", "cv2")):
        try:
            __import__(module)
            out.append(name)
        except ImportError:
            pass
    return out


def qwen_fetch(path: str, nframes: int, max_pixels: int):
    """Qwen's utilities: (frames tensor, frame indices)."""
    from qwen_vl_utils import fetch_video

    video, meta = fetch_video({"video": path, "nframes": nframes, "max_pixels": max_pixels}, return_video_metadata=True)
    return video, [int(i) for i in meta["frames_indices"]]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--gop", type=int, default=60, help="keyframe interval of the written clip (frames)")
    ap.add_argument("--frames", default="16,64", help="sampled frame counts")
    ap.add_argument("--max-pixels", type=int, default=448 * 448)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--video", default=None, help="time an existing video instead of writing one")
    ap.add_argument(
        "--loaders",
        default="pyav:1,pyav,decord,opencv",
        help="ego3s backends to time (installed ones only); pyav:N decodes with N threads, "
        "pyav with the default (min(8, 2 x CPUs))",
    )
    ap.add_argument("--smoke", action="store_true", help="a 10-second 320x180 clip, one repeat")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.smoke:
        a.seconds, a.width, a.height, a.reps = 10.0, 320, 180, 1
    path, write_s = a.video, None
    if path is None:
        path = str(Path(tempfile.mkdtemp(prefix="bench_decode_")) / "long.mp4")
        write_s = write_long_clip(Path(path), a.seconds, a.fps, a.width, a.height, a.gop)
    try:
        import qwen_vl_utils  # noqa: F401 - only checks that it imports

        have_qwen = True
    except ImportError:
        have_qwen = False
    rows = []
    for n in [int(x) for x in a.frames.split(",")]:
        qwen_idx, qwen_times, shape = None, [], None
        if have_qwen:
            for _ in range(a.reps):
                t, (video, qwen_idx) = C.timed(qwen_fetch, path, n, a.max_pixels)
                qwen_times.append(t)
            shape = list(video.shape)
            rows.append(
                {
                    "loader": "qwen_vl_utils (decord)",
                    "frames": n,
                    "s_median": C.median(qwen_times),
                    "s_all": qwen_times,
                    "indices_match": True,
                    "shape_tchw": shape,
                }
            )
        for loader in a.loaders.split(","):
            b, _, threads = loader.partition(":")
            if b not in backends():
                continue
            kw = {"decode_threads": int(threads) if threads else None} if b == "pyav" else {}
            times = []
            for _ in range(a.reps):
                t, clip = C.timed(load_clip, path, nframes=n, max_pixels=a.max_pixels, backend=b, **kw)
                times.append(t)
            if b == "pyav":
                k = kw["decode_threads"] or default_decode_threads()
                b = f"{b}, {k} thread{'s' if k > 1 else ''}"
            same = qwen_idx is None or [int(i) for i in clip.indices] == qwen_idx
            if not same:
                raise AssertionError(f"{b}, {n} frames: ego3s indices {clip.indices.tolist()} != Qwen's {qwen_idx}")
            t_, h, w, _ = clip.frames.shape
            if shape is not None and [t_, h, w] != [shape[0], shape[2], shape[3]]:
                raise AssertionError(f"{b}, {n} frames: ego3s frames {clip.frames.shape} vs Qwen's {shape}")
            rows.append(
                {
                    "loader": f"ego3s ({b})",
                    "frames": n,
                    "s_median": C.median(times),
                    "s_all": times,
                    "indices_match": same,
                    "shape_tchw": [t_, 3, h, w],
                }
            )
    for r in rows:
        q = next((x for x in rows if x["frames"] == r["frames"] and x["loader"].startswith("qwen")), None)
        r["speedup_vs_qwen"] = q["s_median"] / r["s_median"] if q else None
    print(
        f"device: {C.device_name()}, {os.cpu_count()} CPUs; {a.seconds:g} s at {a.fps} fps, {a.width}x{a.height}, GOP {a.gop}; "
        f"max_pixels {a.max_pixels}; median of {a.reps}"
    )
    print(
        C.table(
            ["loader", "frames", "s (median)", "frames/s", "vs Qwen utils", "same indices"],
            [
                [
                    r["loader"],
                    r["frames"],
                    r["s_median"],
                    r["frames"] / r["s_median"],
                    f"{r['speedup_vs_qwen']:.2f}x" if r["speedup_vs_qwen"] else "-",
                    r["indices_match"],
                ]
                for r in rows
            ],
        )
    )
    C.write_result(
        a.out,
        "decode",
        {
            "seconds": a.seconds,
            "fps": a.fps,
            "width": a.width,
            "height": a.height,
            "gop": a.gop,
            "max_pixels": a.max_pixels,
            "reps": a.reps,
            "write_s": write_s,
            "qwen_vl_utils": have_qwen,
            "cpus": os.cpu_count(),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
