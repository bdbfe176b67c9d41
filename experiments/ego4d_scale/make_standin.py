"""An Ego4D stand-in: annotation files in Ego4D v2's published layout and H.264 videos at real
resolution, so the README's "At scale" commands can run end to end without the licensed data.

    python experiments/ego4d_scale/make_standin.py --out /data/ego4d_standin \
        [--videos 24] [--minutes 3] [--width 1920 --height 1080] [--fps 30] [--workers N]

writes

    <out>/v2/ego4d.json                         scenarios, durations, fps (the metadata file)
    <out>/v2/annotations/nlq_train.json         NLQ language queries (templates, slots, answer windows)
    <out>/v2/annotations/fho_main.json          FHO narrated actions (critical frames, hand/object boxes)
    <out>/v2/annotations/narration.json         narrations near each action
    <out>/v2/full_scale/<video_uid>.mp4         30 fps H.264 (yuv420p, 2 s GOP) videos

which `ego3s build-ego4d --annotations <out>/v2/annotations --video-root <out>/v2/full_scale`
reads like the real thing. Each video is a slowly panning textured scene (a kitchen counter, as
far as pixels go) in which the annotated actions happen: at each action the two hands (skin
coloured boxes) reach for the object of change (a coloured box of the object's own colour) and
move it where the FHO boxes say. Queries use the usable NLQ templates (what did I put in X,
what X did I Y, where did I put X, where is object X) plus a share of unusable ones (counts,
people), so the builder's report has drops like a real build. Deterministic by --seed; the
videos are encoded in parallel (one process per video).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

# FHO structured nouns (the taxonomy's "noun_(synonym,_...)" spelling), their category (for "What X
# did I Y?") and a colour the renderer paints them in.
OBJECTS = [
    ("cup_(mug)", "container", (200, 40, 40)),
    ("knife", "utensil", (190, 190, 200)),
    ("onion", "vegetable", (170, 120, 200)),
    ("plate_(dish)", "dish", (240, 240, 230)),
    ("bowl", "container", (60, 120, 220)),
    ("spoon", "utensil", (150, 150, 160)),
    ("carrot", "vegetable", (250, 130, 20)),
    ("tomato", "vegetable", (230, 30, 30)),
    ("sponge", "cleaning tool", (240, 220, 40)),
    ("bottle", "container", (40, 160, 80)),
    ("pan_(frying_pan,_skillet)", "cookware", (40, 40, 40)),
    ("lid", "cookware", (110, 110, 120)),
    ("screwdriver", "tool", (220, 60, 160)),
    ("phone_(cellphone,_smartphone)", "device", (20, 20, 60)),
    ("towel_(cloth)", "cloth", (80, 200, 220)),
    ("apple", "fruit", (180, 20, 40)),
    ("egg", "food", (250, 240, 210)),
    ("jar", "container", (200, 160, 90)),
]
CONTAINERS = ["fridge", "drawer", "sink", "basket", "cupboard", "bag"]
VERBS = [
    ("put_(place,_leave,_drop)", "put"),
    ("take_(pick,_grab,_get)", "take"),
    ("cut_(slice,_chop)", "cut"),
    ("wash_(clean,_rinse)", "wash"),
    ("move_(transfer,_pass)", "move"),
    ("open_(unscrew,_unlock)", "open"),
]
SCENARIOS = ["Cooking", "Cleaning / laundry", "Carpenter", "Household management - caring for kids"]
FRAME_OFFSETS = {
    "pre_45": -1.5,
    "pre_30": -1.0,
    "pre_15": -0.5,
    "pre_frame": -0.5,
    "contact_frame": 0.0,
    "pnr_frame": 0.5,
    "post_frame": 1.0,
}
BOXED_FRAMES = ("pre_frame", "contact_frame", "pnr_frame", "post_frame")


def _noun(raw: str) -> str:
    return raw.split("_(")[0].replace("_", " ")


def plan_video(
    i: int, rng: random.Random, minutes: float, width: int, height: int, fps: int, actions_per_minute: float
) -> dict:
    """One video: its uid, scenario and timed actions (object, verb, boxes per critical frame)."""
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    duration = round(minutes * 60.0, 3)
    n = max(1, int(round(minutes * actions_per_minute)))
    slot = (duration - 10.0) / n
    actions = []
    for k in range(n):
        t = round(5.0 + slot * (k + rng.uniform(0.3, 0.7)), 3)
        raw, category, colour = OBJECTS[rng.randrange(len(OBJECTS))]
        vraw, verb = VERBS[rng.randrange(len(VERBS))]
        ow, oh = rng.uniform(0.08, 0.16), rng.uniform(0.10, 0.22)
        x0, y0 = rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.55)
        dx, dy = rng.uniform(-0.15, 0.15), rng.uniform(-0.1, 0.1)
        frames = {}
        for ft, off in FRAME_OFFSETS.items():
            a = min(1.0, max(0.0, (off + 0.5) / 1.5))  # the object moves between contact and post
            ox, oy = x0 + a * dx, y0 + a * dy
            frames[ft] = {
                "t": t + off,
                "object": [ox, oy, ox + ow, oy + oh],
                "left_hand": [ox - 0.10, oy + 0.10, ox - 0.01, oy + 0.28],
                "right_hand": [ox + ow + 0.01, oy + 0.08, ox + ow + 0.10, oy + 0.26],
            }
        actions.append(
            {
                "uid": f"{uid[:8]}-act{k}",
                "t": t,
                "object": raw,
                "category": category,
                "colour": colour,
                "verb_raw": vraw,
                "verb": verb,
                "container": CONTAINERS[rng.randrange(len(CONTAINERS))],
                "frames": frames,
            }
        )
    return {
        "video_uid": uid,
        "index": i,
        "duration": duration,
        "fps": fps,
        "width": width,
        "height": height,
        "scenario": SCENARIOS[i % len(SCENARIOS)],
        "actions": actions,
    }


def _px(box: list[float], w: int, h: int) -> dict:
    x0, y0, x1, y1 = box
    return {
        "x": round(x0 * w, 1),
        "y": round(y0 * h, 1),
        "width": round((x1 - x0) * w, 1),
        "height": round((y1 - y0) * h, 1),
    }


def fho_record(v: dict) -> dict:
    fps, w, h = v["fps"], v["width"], v["height"]
    acts = []
    for a in v["actions"]:
        crit = {ft: int(round(f["t"] * fps)) for ft, f in a["frames"].items()}
        frames = []
        for ft in BOXED_FRAMES:
            f = a["frames"][ft]
            boxes = [
                {"object_type": hand, "structured_noun": None, "instance_number": None, "bbox": _px(f[hand], w, h)}
                for hand in ("left_hand", "right_hand")
            ]
            boxes.append(
                {
                    "object_type": "object_of_change",
                    "structured_noun": a["object"],
                    "instance_number": 1,
                    "bbox": _px(f["object"], w, h),
                }
            )
            frames.append({"frame_type": ft, "frame_number": crit[ft], "clip_frame_number": crit[ft], "boxes": boxes})
        s, e = a["t"] - 4.0, a["t"] + 4.0
        acts.append(
            {
                "warnings": [],
                "uid": a["uid"],
                "start_sec": s,
                "end_sec": e,
                "start_frame": int(s * fps),
                "end_frame": int(e * fps),
                "is_valid_action": True,
                "is_partial": False,
                "clip_start_sec": s,
                "clip_end_sec": e,
                "clip_start_frame": int(s * fps),
                "clip_end_frame": int(e * fps),
                "narration_timestamp_sec": a["t"],
                "clip_narration_timestamp_sec": a["t"],
                "narration_text": f"#C C {a['verb']}s the {_noun(a['object'])}",
                "narration_annotation_uid": a["uid"] + "-narr",
                "structured_verb": a["verb_raw"],
                "freeform_verb": None,
                "state_transition": None,
                "critical_frames": crit,
                "clip_critical_frames": crit,
                "frames": frames,
                "is_rejected": False,
                "is_invalid_annotation": False,
                "reject_reason": None,
                "stage": None,
            }
        )
    d = v["duration"]
    return {
        "video_uid": v["video_uid"],
        "video_metadata": {
            "video_start_pts": 0,
            "video_base_numerator": 1,
            "video_base_denominator": 15360,
            "duration_sec": d,
            "num_frames": int(d * fps),
            "fps": fps,
            "width": w,
            "height": h,
            "rotation": None,
        },
        "annotated_intervals": [
            {
                "clip_id": "0",
                "clip_uid": None,
                "start_sec": 0.0,
                "end_sec": d,
                "clip_parent_start_sec": 0.0,
                "clip_parent_end_sec": d,
                "narrated_actions": acts,
            }
        ],
    }


def _lq(template: str, query: str, slot_x, verb_x, t0: float, t1: float, fps: int) -> dict:
    return {
        "clip_start_sec": t0,
        "clip_end_sec": t1,
        "video_start_sec": t0,
        "video_end_sec": t1,
        "video_start_frame": int(t0 * fps),
        "video_end_frame": int(t1 * fps),
        "template": template,
        "query": query,
        "slot_x": slot_x,
        "verb_x": verb_x,
        "raw_tags": [template, query, slot_x, verb_x],
    }


def nlq_record(v: dict, rng: random.Random) -> dict:
    """One query per action, cycling through the usable templates; every fifth is a template the
    builder must drop (a count or a person), as in the real NLQ mix."""
    fps, queries = v["fps"], []
    for k, a in enumerate(v["actions"]):
        noun = _noun(a["object"])
        t0 = round(a["t"] - rng.uniform(0.8, 1.6), 3)
        t1 = round(a["t"] + rng.uniform(0.8, 1.6), 3)
        kind = (k + v["index"]) % 5
        if kind == 0:
            lq = (
                _lq(
                    "Objects: What did I put in X?",
                    f"What did I put in the {a['container']}?",
                    a["container"],
                    "put",
                    t0,
                    t1,
                    fps,
                )
                if a["verb"] == "put"
                else _lq(
                    "Objects: What X did I Y?",
                    f"what {a['category']} did I {a['verb']}",
                    a["category"],
                    a["verb"],
                    t0,
                    t1,
                    fps,
                )
            )
        elif kind == 1:
            lq = _lq(
                "Objects: What X did I Y?",
                f"what {a['category']} did I {a['verb']}",
                a["category"],
                a["verb"],
                t0,
                t1,
                fps,
            )
        elif kind == 2:
            lq = _lq("Place: Where did I put X?", f"Where did I put the {noun}?", f"the {noun}", a["verb"], t0, t1, fps)
        elif kind == 3:
            lq = _lq("Objects: Where is object X?", f"Where is the {noun}?", noun, "[VERB NOT APPLICABLE]", t0, t1, fps)
        else:
            lq = _lq(
                "Objects: How many X’s? (quantity question)", f"How many {noun}s did I see?", noun, None, t0, t1, fps
            )
        queries.append(lq)
    d = v["duration"]
    clip = {
        "clip_uid": v["video_uid"][:8] + "-clip0",
        "video_start_sec": 0.0,
        "video_end_sec": d,
        "video_start_frame": 0,
        "video_end_frame": int(d * fps),
        "clip_start_sec": 0.0,
        "clip_end_sec": d,
        "clip_start_frame": 0,
        "clip_end_frame": int(d * fps),
        "source_clip_uid": v["video_uid"][:8] + "-src",
        "annotations": [{"annotation_uid": v["video_uid"][:8] + "-ann0", "language_queries": queries}],
    }
    return {"video_uid": v["video_uid"], "split": "train", "clips": [clip]}


def render_video(
    v: dict, path: str, gop_sec: float = 2.0, crf: int = 23, preset: str = "veryfast", threads: int = 1
) -> dict:
    """Encode the video with PyAV's libx264: a panning texture, the objects at rest, and the
    hands moving each object through its action's critical-frame boxes."""
    import av

    w, h, fps = v["width"], v["height"], v["fps"]
    rng = np.random.default_rng(v["index"])
    # low-frequency texture, twice the frame, panned slowly (head motion)
    small = rng.integers(60, 200, (h // 16 + 2, w // 8 + 2, 3), dtype=np.uint8)
    tex = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)[: 2 * h, : 2 * w]
    tex = np.ascontiguousarray(
        np.pad(tex, ((0, max(0, 2 * h - tex.shape[0])), (0, max(0, 2 * w - tex.shape[1])), (0, 0)), mode="wrap")[
            : 2 * h, : 2 * w
        ]
    )
    noise = rng.integers(0, 24, (h, w, 3), dtype=np.uint8)
    acts = v["actions"]
    skin = np.array([224, 172, 140], np.uint8)
    n = int(round(v["duration"] * fps))
    t_start = time.perf_counter()
    out = av.open(path, "w")
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    s.options = {"crf": str(crf), "preset": preset, "g": str(int(gop_sec * fps)), "bf": "2"}
    s.thread_count = threads
    frame = np.empty((h, w, 3), np.uint8)

    def paint(box, colour):
        x0, y0, x1, y1 = (int(round(c * d)) for c, d in zip(box, (w, h, w, h)))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] = colour

    for i in range(n):
        t = i / fps
        ox = int((w / 2) * (1 + np.sin(t / 23.0)) / 2)
        oy = int((h / 2) * (1 + np.cos(t / 31.0)) / 2)
        np.copyto(frame, tex[oy : oy + h, ox : ox + w])
        frame[:h:2] ^= noise[:h:2]  # a little texture that the encoder has to spend bits on
        for a in acts:
            dt = t - a["t"]
            if -6.0 <= dt <= 6.0:
                fr = a["frames"]
                keys = sorted(fr, key=lambda k: fr[k]["t"])
                ts = [fr[k]["t"] for k in keys]
                j = int(np.clip(np.searchsorted(ts, t), 1, len(ts) - 1))
                k0, k1 = keys[j - 1], keys[j]
                u = float(np.clip((t - ts[j - 1]) / max(1e-6, ts[j] - ts[j - 1]), 0.0, 1.0))

                def lerp(name):
                    return [p + u * (q - p) for p, q in zip(fr[k0][name], fr[k1][name])]  # noqa: B023 - called in this iteration

                paint(lerp("object"), a["colour"])
                if -1.5 <= dt <= 1.0:
                    paint(lerp("left_hand"), skin)
                    paint(lerp("right_hand"), skin)
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        for pkt in s.encode(vf):
            out.mux(pkt)
    for pkt in s.encode():
        out.mux(pkt)
    out.close()
    return {
        "video_uid": v["video_uid"],
        "frames": n,
        "seconds": time.perf_counter() - t_start,
        "bytes": os.path.getsize(path),
    }


def _render(args):
    v, path, threads = args
    return render_video(v, path, threads=threads)


def make_standin(
    out: str | Path,
    videos: int = 24,
    minutes: float = 3.0,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    actions_per_minute: float = 4.0,
    seed: int = 0,
    workers: int | None = None,
    render: bool = True,
) -> dict:
    """Write the stand-in under `<out>/v2`; returns a summary (counts, sizes, encode rate)."""
    root = Path(out) / "v2"
    ann, full = root / "annotations", root / "full_scale"
    ann.mkdir(parents=True, exist_ok=True)
    full.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plans = [plan_video(i, rng, minutes, width, height, fps, actions_per_minute) for i in range(videos)]
    qrng = random.Random(seed + 1)
    nlq = {
        "version": "v2",
        "date": "standin",
        "description": "ego3s Ego4D stand-in (experiments/ego4d_scale)",
        "manifest": "",
        "videos": [nlq_record(v, qrng) for v in plans],
    }
    fho = {
        "version": "v2",
        "date": "standin",
        "description": "ego3s Ego4D stand-in (experiments/ego4d_scale)",
        "metadata": "",
        "videos": [fho_record(v) for v in plans],
    }
    narr = {
        v["video_uid"]: {
            "narration_pass_1": {
                "narrations": [
                    {
                        "timestamp_sec": a["t"] + 0.2,
                        "timestamp_frame": int((a["t"] + 0.2) * fps),
                        "narration_text": f"#C C {a['verb']}s the {_noun(a['object'])}",
                        "annotation_uid": a["uid"] + "-n",
                    }
                    for a in v["actions"]
                ],
                "summaries": [],
            },
            "status": "complete",
        }
        for v in plans
    }
    meta = {
        "date": "standin",
        "version": "v2",
        "description": "ego3s Ego4D stand-in",
        "videos": [
            {
                "video_uid": v["video_uid"],
                "duration_sec": v["duration"],
                "scenarios": [v["scenario"]],
                "video_metadata": {
                    "fps": float(fps),
                    "num_frames": int(v["duration"] * fps),
                    "video_codec": "h264",
                    "display_resolution_width": width,
                    "display_resolution_height": height,
                },
                "split_em": "train",
                "split_fho": "train",
            }
            for v in plans
        ],
    }
    for name, obj in (
        ("annotations/nlq_train.json", nlq),
        ("annotations/fho_main.json", fho),
        ("annotations/narration.json", narr),
        ("ego4d.json", meta),
    ):
        (root / name).write_text(json.dumps(obj))
    summary = {
        "videos": videos,
        "minutes": minutes,
        "width": width,
        "height": height,
        "fps": fps,
        "queries": sum(len(v["actions"]) for v in plans),
        "root": str(root),
    }
    if render:
        workers = workers or os.cpu_count() or 1
        jobs = [
            (v, str(full / f"{v['video_uid']}.mp4"), 1) for v in plans if not (full / f"{v['video_uid']}.mp4").exists()
        ]
        t = time.perf_counter()
        with ProcessPoolExecutor(max_workers=min(workers, max(1, len(jobs)))) as ex:
            done = list(ex.map(_render, jobs))
        wall = time.perf_counter() - t
        frames = sum(d["frames"] for d in done)
        summary.update(
            rendered=len(done),
            render_wall_s=round(wall, 2),
            workers=workers,
            frames_per_s=round(frames / wall, 1) if wall > 0 and frames else None,
            video_bytes=sum(p.stat().st_size for p in full.glob("*.mp4")),
        )
    (Path(out) / "standin.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write <out>/v2/... into")
    p.add_argument("--videos", type=int, default=24)
    p.add_argument("--minutes", type=float, default=3.0, help="length of each video")
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--actions-per-minute", type=float, default=4.0, help="FHO actions (and NLQ queries) per minute")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: all CPUs)")
    p.add_argument("--no-video", action="store_true", help="annotation files only")
    a = p.parse_args(argv)
    s = make_standin(
        a.out,
        a.videos,
        a.minutes,
        a.width,
        a.height,
        a.fps,
        a.actions_per_minute,
        a.seed,
        a.workers,
        render=not a.no_video,
    )
    print(json.dumps(s))


if __name__ == "__main__":
    main()
