"""The build: one NLQ query -> one sample (answer, interaction, clip window, distractors), and its report."""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ego3s.data.ego4d.annotations import (
    _BoxStats,
    load_fho_main,
    load_fho_scod,
    load_metadata,
    load_narrations,
    load_nlq,
)
from ego3s.data.ego4d.config import DROP_REASONS, TEMPLATE_ANSWERS, Ego4DConfig
from ego3s.data.ego4d.names import _display, _names_match, _narration_verb, _tokens, _verb_forms, _verb_head, same_name
from ego3s.data.ego4d.reader import _Action, _Query, _Video
from ego3s.data.io import write_jsonl
from ego3s.data.schema import LETTERS, Interaction, InteractionObject, Sample, TimedBox
from ego3s.files import write_json

# --------------------------------------------------------------------------------------------
# The build


@dataclass
class _Candidate:
    q: _Query
    question: str
    answer: InteractionObject
    action: _Action
    excluded: list[str]  # names that may not be options (the question's own object)
    video: str
    start: float
    end: float
    interaction: Interaction
    meta: dict
    sid: str = ""
    distractors: list[tuple[str, str]] | None = None  # (name, tier)


def _gap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, max(a[0], b[0]) - min(a[1], b[1]))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def _question_text(q: str) -> str:
    q = re.sub(r"\s+", " ", q).strip()
    q = q[0].upper() + q[1:]
    return q if q.endswith("?") else q.rstrip(".!") + "?"


def _pick(q: _Query, family: str, actions: list[_Action], cfg: Ego4DConfig):
    """The FHO action (and the answer object) for a query, or the drop reason."""
    window = (q.start, q.end)
    near = [a for a in actions if _gap(a.span, window) <= cfg.max_gap_sec]
    if not near:
        return "no_interaction_nearby"
    ranked = sorted(
        near,
        key=lambda a: (
            _gap(a.span, window),
            -_overlap(a.span, window),
            abs((a.span[0] + a.span[1]) - (q.start + q.end)),
            a.uid,
        ),
    )
    if family == "interaction":
        verbs = _verb_forms(q.verb_x) | _verb_forms(q.verb_y)
        excluded = [s for s in (q.slot_x, q.slot_y) if s and s.strip()]
        for a in ranked:
            if verbs and a.verbs and not (verbs & a.verbs):  # an action without a verb (v1 SCOD) may match
                continue
            for obj, otype in a.objects:
                if otype == "object_of_change" and not any(_names_match(s, obj) for s in excluded):
                    return a, obj, excluded
        return "no_matching_interaction"
    slot = q.slot_x or ""
    for a in ranked:
        for obj, _ in a.objects:
            if _names_match(slot, obj):
                name = _display(slot)
                answer = InteractionObject(name, [n for n in obj.names() if n != name])
                return a, answer, []
    return "no_matching_interaction"


def _nearest_narration(items: list[tuple[float, str]], start: float, end: float, gap: float) -> str:
    """The first narration inside [start, end], else the one nearest to it within `gap` seconds."""
    i = bisect.bisect_left(items, (start - gap,))
    best, best_d = "", math.inf
    while i < len(items) and items[i][0] <= end + gap:
        ts, text = items[i]
        d = max(0.0, start - ts, ts - end)
        if d < best_d:
            best, best_d = text, d
            if d == 0:
                break
        i += 1
    return best


def _make_candidate(
    q: _Query,
    family: str,
    v: _Video,
    picked,
    cfg: Ego4DConfig,
    video_root: Path,
    narrations: dict,
    scenarios: list[str],
    box_stats: Counter,
):
    action, answer, excluded = picked
    # time base: video seconds (full_scale) or seconds of the NLQ clip (clips)
    if cfg.layout == "clips":
        off, lo, hi = q.clip_start, 0.0, q.clip_end - q.clip_start
        video = video_root / f"{q.clip_uid}.mp4"
    else:
        off, lo = 0.0, 0.0
        hi = v.duration if v.duration is not None else q.clip_end
        video = video_root / f"{q.video_uid}.mp4"
    a0, a1 = q.start - off, q.end - off
    if a1 <= lo or a0 >= hi:
        return "window_outside_video"
    start = max(lo, min(a0, action.span[0] - off) - cfg.context_sec)
    end = min(hi, max(a1, action.span[1] - off) + cfg.context_sec)
    boxes = []
    for b in action.boxes:
        t = b.t - off
        if start <= t <= end:
            boxes.append(TimedBox(round(t, 4), b.label, list(b.box)))
        else:
            box_stats["outside_window"] += 1
    if not boxes:
        return "no_boxes_in_window"
    objects = [answer] + [
        o for o, _ in action.objects if not any(same_name(n, m) for n in o.names() for m in answer.names())
    ]
    verb = action.verb
    narr = _nearest_narration(narrations.get(q.video_uid, []), q.start, q.end, cfg.max_gap_sec)
    if not verb:
        verb = _narration_verb(action.narration or narr) or _verb_head(q.verb_x)
    contact = None
    if action.contact is not None:
        c0, c1 = (min(end, max(start, c - off)) for c in action.contact)
        contact = [round(c0, 4), round(c1, 4)]
    if family == "interaction":
        question = _question_text(q.query or "")
    else:
        qverb = _verb_head(q.verb_x) or verb or "interact with"
        question = f"Which object did I {qverb}?"
    inter = Interaction(objects=objects, action=verb, boxes=boxes, contact=contact)
    meta = {
        "source": "ego4d",
        "split": q.split,
        "video_uid": q.video_uid,
        "clip_uid": q.clip_uid,
        "annotation_uid": q.annotation_uid,
        "query_index": q.index,
        "record": q.path,
        "template": q.template,
        "nlq_query": q.query,
        "slot_x": q.slot_x,
        "verb_x": q.verb_x,
        "answer_source": "fho_object" if family == "interaction" else "nlq_slot",
        "answer_window": [round(a0, 4), round(a1, 4)],
        "fho_action": action.uid,
        "fho_narration": action.narration,
        "gap_sec": round(_gap(action.span, (q.start, q.end)), 4),
        "layout": cfg.layout,
        "scenarios": scenarios,
    }
    if narr:
        meta["narration"] = narr
    return _Candidate(
        q=q,
        question=question,
        answer=answer,
        action=action,
        excluded=excluded,
        video=str(video),
        start=round(start, 4),
        end=round(end, 4),
        interaction=inter,
        meta=meta,
    )


def _head(name: str) -> str:
    t = _tokens(name)
    return t[-1] if t else ""


def _distractors(c: _Candidate, k: int, tiers: list[tuple[str, list[str]]], rng: random.Random):
    """k names, tier by tier, none naming the answer (or its synonyms, or the question's object):
    not the same name, nor the same head noun ("coffee cup" is no distractor for "cup")."""
    banned = list(c.answer.names()) + c.excluded
    banned_heads = [_head(b) for b in banned]
    chosen: list[tuple[str, str]] = []

    def ok(n: str) -> bool:
        if any(same_name(n, b) for b in banned) or any(same_name(_head(n), h) for h in banned_heads if h):
            return False
        return not any(same_name(n, x) for x, _ in chosen)

    for tier, pool in tiers:  # pools are sorted lists; draw a few at random first, the rest if needed
        head = rng.sample(pool, min(len(pool), 4 * k + 8))
        for n in head:
            if ok(n):
                chosen.append((n, tier))
                if len(chosen) == k:
                    return chosen
        if len(head) < len(pool):
            picked = set(head)
            rest = [n for n in pool if n not in picked]
            rng.shuffle(rest)
            for n in rest:
                if ok(n):
                    chosen.append((n, tier))
                    if len(chosen) == k:
                        return chosen
    return None


def build_ego4d(
    annotations: str | Path,
    video_root: str | Path,
    out: str | Path | None = None,
    config: Ego4DConfig | None = None,
    **options,
) -> tuple[list[Sample], dict]:
    """Build the Ego4D OpenQA + CloseQA subset. Returns (samples, report); with `out`, also writes
    `<out>/train.jsonl` and `<out>/report.json` atomically. `options` override `config` fields."""
    cfg = dataclasses.replace(config or Ego4DConfig(), **options)  # checked again by __post_init__
    ann = Path(annotations)
    video_root = Path(video_root).expanduser().absolute()  # JSONL paths are relative to the file's folder
    if not ann.is_dir():
        raise FileNotFoundError(f"{ann}: annotations folder not found (expected <ego4d_data>/v2/annotations)")
    unknown: Counter = Counter()
    files: dict[str, Any] = {}

    # optional metadata
    meta_path = next((p for p in (ann / "ego4d.json", ann.parent / "ego4d.json") if p.exists()), None)
    metadata = load_metadata(meta_path) if meta_path else {}
    files["metadata"] = str(meta_path) if meta_path else None

    # NLQ
    queries: list[_Query] = []
    files["nlq"] = []
    for split in cfg.splits:
        p = ann / f"nlq_{split}.json"
        if not p.exists():
            raise FileNotFoundError(f"{p}: NLQ file for split {split!r} not found")
        files["nlq"].append(str(p))
        queries += load_nlq(p, split, strict=cfg.strict, unknown=unknown)

    # FHO
    fho_skipped: Counter = Counter()
    stats = _BoxStats()
    if (ann / "fho_main.json").exists():
        files["fho"] = [str(ann / "fho_main.json")]
        fho = load_fho_main(
            ann / "fho_main.json",
            strict=cfg.strict,
            unknown=unknown,
            skipped=fho_skipped,
            stats=stats,
            only={q.video_uid for q in queries},
        )
    else:
        scod = sorted(ann.glob("fho_scod_*.json"))
        if not scod:
            raise FileNotFoundError(
                f"{ann}: no hand-object annotations: expected fho_main.json (v2) or fho_scod_<split>.json (v1)"
            )
        files["fho"] = [str(p) for p in scod]
        fps_of = {u: m["fps"] for u, m in metadata.items() if m.get("fps")}
        fho = {}
        for p in scod:
            for uid, v in load_fho_scod(
                p, fps_of=fps_of, strict=cfg.strict, unknown=unknown, skipped=fho_skipped, stats=stats
            ).items():
                if uid in fho:
                    fho[uid].actions.extend(v.actions)
                else:
                    fho[uid] = v
    for uid, v in fho.items():
        m = metadata.get(uid) or {}
        if v.duration is None and m.get("duration_sec"):
            v.duration = m["duration_sec"]

    # narrations (optional)
    narr_path = next((p for p in (ann / "narration.json", ann / "narrations.json") if p.exists()), None)
    narrations = load_narrations(narr_path, only={q.video_uid for q in queries}) if narr_path else {}
    files["narration"] = str(narr_path) if narr_path else None

    # object vocabularies for distractors
    by_video: dict[str, set[str]] = defaultdict(set)
    for uid, v in fho.items():
        for a in v.actions:
            for o, _ in a.objects:
                by_video[uid].add(o.name)
    for q in queries:
        if q.template in TEMPLATE_ANSWERS and q.template and TEMPLATE_ANSWERS[q.template]:
            for s in (q.slot_x, q.slot_y):
                if s and s.strip() and _tokens(s):
                    by_video[q.video_uid].add(_display(s))
    by_scenario: dict[str, set[str]] = defaultdict(set)
    for uid, names in by_video.items():
        for s in (metadata.get(uid) or {}).get("scenarios", []):
            by_scenario[s] |= names
    video_pools = {uid: sorted(names) for uid, names in by_video.items()}
    scenario_pools: dict[tuple[str, ...], list[str]] = {}
    global_pool = sorted(set().union(*by_video.values())) if by_video else []

    # per-query decisions
    dropped: Counter = Counter()
    per_template: dict[str, dict] = {}
    box_stats: Counter = Counter()
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    for q in queries:
        tkey = q.template if q.template is not None else "(none)"
        pt = per_template.setdefault(tkey, {"read": 0, "built": 0, "closeqa": 0, "openqa": 0, "dropped": Counter()})
        pt["read"] += 1

        def drop(reason: str, pt=pt) -> None:
            dropped[reason] += 1
            pt["dropped"][reason] += 1

        sid = f"ego4d-{q.annotation_uid}-{q.index}"
        if q.video_uid in cfg.exclude_video_uids:
            drop("excluded_video")
            continue
        if not q.query or not q.query.strip():
            drop("empty_query")
            continue
        if q.template is None or not q.template.strip():
            drop("no_template")
            continue
        if q.template not in TEMPLATE_ANSWERS:
            drop("unsupported_template")
            continue
        family = TEMPLATE_ANSWERS[q.template]
        if family is None:
            drop("answer_not_an_object")
            continue
        if family == "slot" and (not q.slot_x or not _tokens(q.slot_x)):
            drop("no_answer_slot")
            continue
        if q.end - q.start < max(cfg.min_window_sec, 1e-9):
            drop("window_too_short")
            continue
        v = fho.get(q.video_uid)
        if v is None or not v.actions:
            drop("no_interaction_video")
            continue
        picked = _pick(q, family, v.actions, cfg)
        if isinstance(picked, str):
            drop(picked)
            continue
        scen = (metadata.get(q.video_uid) or {}).get("scenarios", [])
        c = _make_candidate(q, family, v, picked, cfg, video_root, narrations, scen, box_stats)
        if isinstance(c, str):
            drop(c)
            continue
        if sid in seen:
            drop("duplicate_id")
            continue
        seen.add(sid)
        c.sid = sid
        k = cfg.num_options - 1
        key = tuple(sorted(scen))
        if key not in scenario_pools:
            scenario_pools[key] = sorted(set().union(*(by_scenario[s] for s in key))) if key else []
        tiers = [
            ("video", video_pools.get(q.video_uid, [])),
            ("scenario", scenario_pools[key]),
            ("global", global_pool),
        ]
        c.distractors = _distractors(c, k, tiers, random.Random(f"{cfg.seed}/{sid}/options"))
        candidates.append(c)

    # the draw: a seeded shuffle, closed questions first from those with enough distractors
    rng = random.Random(cfg.seed)
    order = sorted(candidates, key=lambda c: c.sid)
    rng.shuffle(order)
    total = min(cfg.size, len(order))
    closable = [c for c in order if c.distractors is not None]
    n_closed = min(round(total * cfg.closed_fraction), len(closable))
    closed_ids = {c.sid for c in closable[:n_closed]}
    opened = [c for c in order if c.sid not in closed_ids][: total - n_closed]
    chosen = {c.sid: "closeqa" for c in closable[:n_closed]} | {c.sid: "openqa" for c in opened}

    samples: list[Sample] = []
    tier_counts: Counter = Counter()
    for c in order:
        task = chosen.get(c.sid)
        if task is None:
            continue
        meta = dict(c.meta)
        if task == "closeqa":
            r = random.Random(f"{cfg.seed}/{c.sid}/letter")
            opts = [n for n, _ in c.distractors]
            pos = r.randrange(cfg.num_options)
            opts.insert(pos, c.answer.name)
            answer = LETTERS[pos]
            meta["distractor_tiers"] = [t for _, t in c.distractors]
            tier_counts.update(meta["distractor_tiers"])
        else:
            opts, answer = None, c.answer.name
        s = Sample(
            id=c.sid,
            question=c.question,
            answer=answer,
            task=task,
            options=opts,
            video=c.video,
            start=c.start,
            end=c.end,
            interaction=c.interaction,
            meta=meta,
        )
        s.validate()
        samples.append(s)
        pt = per_template[c.q.template]
        pt["built"] += 1
        pt[task] += 1

    n_close = sum(s.task == "closeqa" for s in samples)
    report = {
        "source": "ego4d",
        "annotations": str(ann),
        "video_root": str(video_root),
        "options": {
            k: (sorted(v) if isinstance(v, (set, frozenset)) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(cfg).items()
        },
        "files": files,
        "read": len(queries),
        "built": len(samples),
        "closeqa": n_close,
        "openqa": len(samples) - n_close,
        "usable": len(candidates),
        "usable_open_only": sum(c.distractors is None for c in candidates),
        "not_selected": len(candidates) - len(samples),
        "shortfall": max(0, cfg.size - len(samples)),
        "dropped": dict(sorted(dropped.items())),
        "dropped_total": sum(dropped.values()),
        "per_template": {
            t: {**d, "dropped": dict(sorted(d["dropped"].items()))} for t, d in sorted(per_template.items())
        },
        "distractor_tiers": dict(sorted(tier_counts.items())),
        "fho": {
            "videos": len(fho),
            "videos_without_queries": stats.videos_without_queries,
            "actions": sum(len(v.actions) for v in fho.values()),
            "actions_skipped": dict(sorted(fho_skipped.items())),
            "boxes_kept": stats.kept,
            "boxes_clipped_to_frame": stats.clipped,
            "boxes_dropped": dict(sorted(stats.dropped.items())),
            "boxes_outside_clip_window": box_stats["outside_window"],
        },
        "unknown_keys": dict(sorted(unknown.items())),
        "drop_reasons": DROP_REASONS,
    }
    assert report["read"] == report["usable"] + report["dropped_total"]
    if out is not None:
        out = Path(out)
        write_jsonl(out / "train.jsonl", samples)
        write_json(out / "report.json", report)
    return samples, report


def summary(report: dict) -> str:
    """A few lines for the terminal."""
    lines = [
        f"read {report['read']} NLQ queries, built {report['built']} samples "
        f"({report['closeqa']} closeqa, {report['openqa']} openqa); usable {report['usable']}, "
        f"not selected {report['not_selected']}, shortfall {report['shortfall']}"
    ]
    if report["dropped"]:
        lines.append("dropped: " + ", ".join(f"{k} {v}" for k, v in report["dropped"].items()))
    f = report["fho"]
    lines.append(
        f"fho: {f['videos']} videos, {f['actions']} actions, skipped {f['actions_skipped'] or 0}; "
        f"boxes kept {f['boxes_kept']}, clipped {f['boxes_clipped_to_frame']}, "
        f"dropped {f['boxes_dropped'] or 0}"
    )
    if report["unknown_keys"]:
        lines.append(f"unknown keys (ignored): {report['unknown_keys']}")
    return "\n".join(lines)
