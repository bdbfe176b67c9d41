"""Ego4D's annotation files: NLQ queries, FHO actions (v2 main, v1 SCOD), narrations, metadata."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ego3s.data.ego4d.config import (
    _FHO_KEYS,
    _NLQ_KEYS,
    _SCOD_KEYS,
    CANONICAL_FPS,
    FRAME_TYPES,
    HAND_TYPES,
    OBJECT_TYPES,
)
from ego3s.data.ego4d.names import _verb_forms, _verb_head, clean_name
from ego3s.data.ego4d.reader import _Action, _Box, _load_json, _Query, _Reader, _Video
from ego3s.data.schema import InteractionObject

# --------------------------------------------------------------------------------------------
# NLQ


def load_nlq(path: str | Path, split: str, *, strict: bool = False, unknown: Counter | None = None) -> list[_Query]:
    """Every language query of an nlq_<split>.json, with its record path."""
    path = Path(path)
    r = _Reader(path, _NLQ_KEYS, strict, unknown if unknown is not None else Counter())
    root = r.record(_load_json(path), "", "root")
    out: list[_Query] = []
    for vi, video in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        video = r.record(video, vp, "video")
        vuid = r.str_(video, "video_uid", vp, nullable=False)
        for ci, clip in enumerate(r.list_(video, "clips", vp)):
            cp = f"{vp}.clips[{ci}]"
            clip = r.record(clip, cp, "clip")
            cuid = r.str_(clip, "clip_uid", cp, nullable=False)
            c0 = r.num(clip, "video_start_sec", cp)
            c1 = r.num(clip, "video_end_sec", cp)
            for ai, ann in enumerate(r.list_(clip, "annotations", cp)):
                ap = f"{cp}.annotations[{ai}]"
                ann = r.record(ann, ap, "annotation")
                auid = r.str_(ann, "annotation_uid", ap, nullable=False)
                for qi, lq in enumerate(r.list_(ann, "language_queries", ap)):
                    qp = f"{ap}.language_queries[{qi}]"
                    lq = r.record(lq, qp, "language_query")
                    s, e = r.num(lq, "video_start_sec", qp), r.num(lq, "video_end_sec", qp)
                    for key in ("clip_start_sec", "clip_end_sec"):  # checked: the clips layout's times
                        r.num(lq, key, qp)
                    out.append(
                        _Query(
                            split=split,
                            path=qp,
                            video_uid=vuid,
                            clip_uid=cuid,
                            clip_start=c0,
                            clip_end=c1,
                            annotation_uid=auid,
                            index=qi,
                            template=r.str_(lq, "template", qp, required=False),
                            query=r.str_(lq, "query", qp, required=False),
                            slot_x=r.str_(lq, "slot_x", qp, required=False),
                            verb_x=r.str_(lq, "verb_x", qp, required=False),
                            slot_y=r.str_(lq, "slot_y", qp, required=False),
                            verb_y=r.str_(lq, "verb_y", qp, required=False),
                            start=s,
                            end=e,
                        )
                    )
    return out


# --------------------------------------------------------------------------------------------
# FHO


class _BoxStats:
    def __init__(self) -> None:
        self.videos_without_queries = 0
        self.kept = 0
        self.clipped = 0
        self.dropped: Counter = Counter()


def _norm_box(r: _Reader, b: dict, path: str, w: float, h: float, stats: _BoxStats) -> list[float] | None:
    bb = r.record(r.get(b, "bbox", path), f"{path}.bbox", "bbox")
    x, y = r.num(bb, "x", f"{path}.bbox"), r.num(bb, "y", f"{path}.bbox")
    bw, bh = r.num(bb, "width", f"{path}.bbox"), r.num(bb, "height", f"{path}.bbox")
    if bw <= 0 or bh <= 0:
        stats.dropped["degenerate"] += 1
        return None
    raw = [x / w, y / h, (x + bw) / w, (y + bh) / h]
    box = [min(1.0, max(0.0, v)) for v in raw]
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        stats.dropped["outside_frame"] += 1
        return None
    if box != raw:
        stats.clipped += 1
    stats.kept += 1
    return [round(v, 6) for v in box]


def _parse_boxes(
    r: _Reader,
    boxes: list,
    path: str,
    t: float,
    w: float | None,
    h: float | None,
    stats: _BoxStats,
    counts: Counter,
    objects: dict[str, tuple[InteractionObject, str]],
    out: list[_Box],
) -> None:
    for bi, b in enumerate(boxes):
        bp = f"{path}[{bi}]"
        b = r.record(b, bp, "box")
        otype = r.str_(b, "object_type", bp, nullable=False)
        if otype not in OBJECT_TYPES:
            raise r.err(f"unknown object_type {otype!r} (expected one of {OBJECT_TYPES})", bp, "object_type")
        noun = r.str_(b, "structured_noun", bp, required=False)
        if w is None or h is None:
            raise r.err("boxes need the frame width and height", bp, "bbox")
        box = _norm_box(r, b, bp, w, h, stats)
        if box is None:
            continue
        label = otype
        if otype not in HAND_TYPES and noun and noun.strip():
            name, syn = clean_name(noun)
            if name:
                label = name
                if name not in objects:
                    objects[name] = (InteractionObject(name, syn), otype)
                counts[name] += 1
        out.append(_Box(t, label, box))


def _finish_action(
    uid: str,
    vuid: str,
    span: tuple[float, float],
    verb_raw: str | None,
    free_verb: str | None,
    objects: dict,
    counts: Counter,
    boxes: list[_Box],
    contact,
    narration: str,
) -> _Action:
    order = sorted(objects, key=lambda n: (objects[n][1] != "object_of_change", -counts[n], list(objects).index(n)))
    verbs = _verb_forms(verb_raw) | _verb_forms(free_verb)
    verb = _verb_head(verb_raw) or _verb_head(free_verb)
    return _Action(
        uid=uid,
        video_uid=vuid,
        span=span,
        verb=verb,
        verbs=verbs,
        objects=[objects[n] for n in order],
        boxes=boxes,
        contact=contact,
        narration=narration,
    )


def load_fho_main(
    path: str | Path,
    *,
    strict: bool = False,
    unknown: Counter | None = None,
    skipped: Counter | None = None,
    stats: _BoxStats | None = None,
    only: set[str] | None = None,
) -> dict[str, _Video]:
    """fho_main.json (v2): videos -> annotated_intervals -> narrated_actions -> frames -> boxes.
    With `only`, the actions of other videos are neither parsed nor checked (most FHO videos have
    no NLQ query; parsing their ~2M boxes is most of the load time)."""
    path = Path(path)
    r = _Reader(path, _FHO_KEYS, strict, unknown if unknown is not None else Counter())
    skipped = skipped if skipped is not None else Counter()
    stats = stats or _BoxStats()
    root = r.record(_load_json(path), "", "root")
    videos: dict[str, _Video] = {}
    for vi, video in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        video = r.record(video, vp, "video")
        vuid = r.str_(video, "video_uid", vp, nullable=False)
        if only is not None and vuid not in only:
            stats.videos_without_queries += 1
            continue
        meta = r.record(r.get(video, "video_metadata", vp), f"{vp}.video_metadata", "video_metadata")
        mp = f"{vp}.video_metadata"
        fps = r.num(meta, "fps", mp)
        if fps <= 0:
            raise r.err(f"fps must be > 0, got {fps}", mp, "fps")
        w, h = r.num(meta, "width", mp, nullable=True), r.num(meta, "height", mp, nullable=True)
        dur = r.num(meta, "duration_sec", mp, required=False, nullable=True)
        v = videos.setdefault(vuid, _Video(vuid, fps, w, h, dur))
        for ii, interval in enumerate(r.list_(video, "annotated_intervals", vp)):
            ip = f"{vp}.annotated_intervals[{ii}]"
            interval = r.record(interval, ip, "interval")
            redacted = r.bool_(interval, "redacted", ip)
            for ai, act in enumerate(r.list_(interval, "narrated_actions", ip)):
                ap = f"{ip}.narrated_actions[{ai}]"
                act = r.record(act, ap, "action")
                s0, s1 = r.num(act, "start_sec", ap), r.num(act, "end_sec", ap)
                frames = r.list_(act, "frames", ap, nullable=True)
                crit = r.get(act, "critical_frames", ap)
                if redacted:
                    skipped["redacted"] += 1
                    continue
                if r.bool_(act, "is_rejected", ap):
                    skipped["rejected"] += 1
                    continue
                if r.bool_(act, "is_invalid_annotation", ap):
                    skipped["invalid_annotation"] += 1
                    continue
                if "is_valid_action" in act and act["is_valid_action"] is False:
                    skipped["invalid_action"] += 1
                    continue
                crit_t: dict[str, float] = {}
                if crit is not None:
                    cp = f"{ap}.critical_frames"
                    if not isinstance(crit, dict):
                        raise r.err(f"expected an object or null, got {type(crit).__name__}", ap, "critical_frames")
                    for k, _fv in crit.items():
                        if k not in FRAME_TYPES:
                            raise r.err(f"unknown critical frame {k!r} (expected one of {FRAME_TYPES})", cp, k)
                        n = r.num(crit, k, cp, nullable=True)
                        if n is not None:
                            crit_t[k] = n / fps
                if not frames:
                    skipped["no_frames"] += 1
                    continue
                objects: dict[str, tuple[InteractionObject, str]] = {}
                counts: Counter = Counter()
                boxes: list[_Box] = []
                times = []
                for fi, fr in enumerate(frames):
                    fp = f"{ap}.frames[{fi}]"
                    fr = r.record(fr, fp, "frame")
                    ftype = r.str_(fr, "frame_type", fp, nullable=False)
                    if ftype not in FRAME_TYPES:
                        raise r.err(f"unknown frame_type {ftype!r} (expected one of {FRAME_TYPES})", fp, "frame_type")
                    t = r.num(fr, "frame_number", fp) / fps
                    times.append(t)
                    fw = r.num(fr, "width", fp, required=False) or w
                    fh = r.num(fr, "height", fp, required=False) or h
                    _parse_boxes(r, r.list_(fr, "boxes", fp), f"{fp}.boxes", t, fw, fh, stats, counts, objects, boxes)
                times += list(crit_t.values())
                span = (min(times), max(times)) if times else (s0, s1)
                c0 = crit_t.get("contact_frame", crit_t.get("pre_frame", crit_t.get("pnr_frame")))
                c1 = crit_t.get("post_frame", crit_t.get("pnr_frame"))
                contact = (c0, c1) if c0 is not None and c1 is not None and c1 >= c0 else None
                uid = r.str_(act, "uid", ap, required=False) or f"{vuid}:{ii}:{ai}"
                v.actions.append(
                    _finish_action(
                        uid,
                        vuid,
                        span,
                        r.str_(act, "structured_verb", ap, required=False),
                        r.str_(act, "freeform_verb", ap, required=False),
                        objects,
                        counts,
                        boxes,
                        contact,
                        r.str_(act, "narration_text", ap, required=False) or "",
                    )
                )
    return videos


def load_fho_scod(
    path: str | Path,
    *,
    fps_of: dict[str, float],
    strict: bool = False,
    unknown: Counter | None = None,
    skipped: Counter | None = None,
    stats: _BoxStats | None = None,
) -> dict[str, _Video]:
    """v1 fho_scod_<split>.json: clips with pre_frame / pnr_frame / post_frame boxes (no verbs)."""
    path = Path(path)
    r = _Reader(
        path,
        _SCOD_KEYS | {"box": _FHO_KEYS["box"], "bbox": _FHO_KEYS["bbox"]},
        strict,
        unknown if unknown is not None else Counter(),
    )
    skipped = skipped if skipped is not None else Counter()
    stats = stats or _BoxStats()
    root = r.record(_load_json(path), "", "root")
    videos: dict[str, _Video] = {}
    for ci, clip in enumerate(r.list_(root, "clips", "")):
        cp = f"clips[{ci}]"
        clip = r.record(clip, cp, "clip")
        vuid = r.str_(clip, "video_uid", cp, nullable=False)
        fps = fps_of.get(vuid, CANONICAL_FPS)
        v = videos.setdefault(vuid, _Video(vuid, fps, None, None, None))
        objects: dict[str, tuple[InteractionObject, str]] = {}
        counts: Counter = Counter()
        boxes: list[_Box] = []
        crit_t: dict[str, float] = {}
        for ftype in ("pre_frame", "pnr_frame", "post_frame"):
            fr = r.get(clip, ftype, cp, required=False)
            if fr is None:
                continue
            fp = f"{cp}.{ftype}"
            fr = r.record(fr, fp, "frame")
            t = r.num(fr, "frame_number", fp) / fps
            crit_t[ftype] = t
            _parse_boxes(
                r,
                r.list_(fr, "bbox", fp),
                f"{fp}.bbox",
                t,
                r.num(fr, "width", fp),
                r.num(fr, "height", fp),
                stats,
                counts,
                objects,
                boxes,
            )
        if not crit_t:
            skipped["no_frames"] += 1
            continue
        contact = (crit_t.get("pre_frame", crit_t.get("pnr_frame")), crit_t.get("post_frame", crit_t.get("pnr_frame")))
        contact = contact if None not in contact and contact[1] >= contact[0] else None
        uid = r.str_(clip, "clip_uid", cp, required=False) or str(clip.get("clip_id") or f"{vuid}:{ci}")
        v.actions.append(
            _finish_action(
                uid, vuid, (min(crit_t.values()), max(crit_t.values())), None, None, objects, counts, boxes, contact, ""
            )
        )
    return videos


# --------------------------------------------------------------------------------------------
# Optional files: narrations and the ego4d.json metadata


def load_narrations(path: str | Path, only: set[str] | None = None) -> dict[str, list[tuple[float, str]]]:
    """narration.json: {video_uid: {narration_pass_1: {narrations: [{timestamp_sec, narration_text}]}}}."""
    path = Path(path)
    r = _Reader(path, {}, False, Counter())
    root = r.record(_load_json(path), "", "root")
    out: dict[str, list[tuple[float, str]]] = {}
    for vuid, entry in root.items():
        if only is not None and vuid not in only:
            continue
        vp = vuid
        entry = r.record(entry, vp, "video")
        items = []
        for pass_name in sorted(k for k in entry if k.startswith("narration_pass")):
            pp = f"{vp}.{pass_name}"
            pas = r.record(entry[pass_name], pp, "pass")
            for ni, n in enumerate(r.list_(pas, "narrations", pp, required=False)):
                np_ = f"{pp}.narrations[{ni}]"
                n = r.record(n, np_, "narration")
                text = r.str_(n, "narration_text", np_, nullable=True)
                ts = r.num(n, "timestamp_sec", np_)
                if text:
                    items.append((ts, text))
        out[vuid] = sorted(items)
    return out


def load_metadata(path: str | Path) -> dict[str, dict]:
    """ego4d.json: video_uid -> {scenarios, duration_sec, fps}."""
    path = Path(path)
    r = _Reader(path, {}, False, Counter())
    root = r.record(_load_json(path), "", "root")
    out = {}
    for vi, v in enumerate(r.list_(root, "videos", "")):
        vp = f"videos[{vi}]"
        v = r.record(v, vp, "video")
        uid = r.str_(v, "video_uid", vp, nullable=False)
        scen = r.list_(v, "scenarios", vp, required=False, nullable=True)
        vm = v.get("video_metadata") or {}
        out[uid] = {
            "scenarios": [s for s in scen if isinstance(s, str)],
            "duration_sec": r.num(v, "duration_sec", vp, required=False, nullable=True),
            "fps": r.num(vm, "fps", f"{vp}.video_metadata", required=False, nullable=True)
            if isinstance(vm, dict)
            else None,
        }
    return out
