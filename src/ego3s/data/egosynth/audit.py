"""What checks and shows an EgoSynth dataset: the shortcut audit (prior-only and context-only
oracles), the answerability checker, the preview contact sheet and the dataset card.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ego3s.data.egosynth_render import (
    decode_mp4,
)
from ego3s.data.io import read_jsonl
from ego3s.data.schema import LETTERS, Sample
from ego3s.files import atomic_open, write_json, write_text

from .catalog import DESTINATIONS, KIND_WEIGHTS, SPLITS, TEMPLATES, VERBS, VERSION
from .objects import ACTIVITY_OBJECT, OBJECTS
from .world import _meta_catalog

# =============================================================================================
# Shortcut audit: oracles that never look at the interaction


def _norm(s: str | None) -> str:
    return " ".join((s or "").lower().strip().rstrip(".").split())


def _closed_pick(s: Sample, cand: str, fallback: Sequence[str] = ()) -> str:
    opts = s.options or []
    for c in [cand, *fallback]:
        if c in opts:
            return c
    return opts[0]


def prior_answer(s: Sample) -> str:
    """The prior-only oracle: knows the question text and the scene (named or shown), never the
    clip's contents. Object questions: the object an activity in the question suggests, else the
    scene's typical object usually put at a named destination, else the scene's first typical
    object (closed: the option that is typical for the scene). Where / action: the named object's
    usual destination / use. Hand: the right hand. Returns the answer text."""
    m = s.meta
    scene, cues, kind = m["scene"], m.get("cues") or {}, m["kind"]
    typ = _meta_catalog(m)[scene]
    if kind == "object":
        if cues.get("activity"):
            cand = ACTIVITY_OBJECT[cues["activity"]]
        elif cues.get("destination"):
            cand = next((o for o in typ if OBJECTS[o].dest == cues["destination"]), typ[0])
        else:
            cand = typ[0]
        if s.task == "closeqa":
            return _closed_pick(s, cand, [o for o in (s.options or []) if o in typ])
        return cand
    if kind == "where":
        cand = DESTINATIONS[OBJECTS[cues["object"]].dest].phrase
    elif kind == "hand":
        cand = "right hand"
    elif kind == "action":
        cand = VERBS[OBJECTS[cues["object"]].verb]
    else:
        raise ValueError(f"sample {s.id}: unknown EgoSynth question kind {kind!r} (field meta.kind)")
    return _closed_pick(s, cand) if s.task == "closeqa" else cand


def context_answer(s: Sample) -> str:
    """The context-only oracle: sees the scene and the objects lying in it, not the interaction
    (what the `context` view leaves). Object questions: the most frequent scene-typical object
    among the visible distractors (closed: that option if offered, else the option seen most
    often); other questions, and scenes with no typical distractor: the prior-only answer."""
    m = s.meta
    if m["kind"] != "object":
        return prior_answer(s)
    typ = _meta_catalog(m)[m["scene"]]
    counts = Counter(m.get("distractors") or [])
    ranked = sorted((o for o in counts if o in typ), key=lambda o: (-counts[o], typ.index(o)))
    if s.task == "closeqa":
        seen = sorted((o for o in (s.options or []) if counts[o]), key=lambda o: -counts[o])
        if ranked and ranked[0] in (s.options or []):
            return ranked[0]
        return seen[0] if seen else prior_answer(s)
    return ranked[0] if ranked else prior_answer(s)


def _correct(s: Sample, pred: str) -> bool:
    return _norm(pred) == _norm(s.answer_text)


def audit_samples(samples: Sequence[Sample]) -> dict:
    """Per-sample-set shortcut numbers: typical share, task / kind / template mix and the accuracy
    of the prior-only and context-only oracles (overall, per task, per kind, per template)."""
    n = len(samples)
    res: dict[str, Any] = {"n": n}
    if not n:
        return res
    res["typical_share"] = round(sum(bool(s.meta.get("typical")) for s in samples) / n, 4)
    res["closeqa_share"] = round(sum(s.task == "closeqa" for s in samples) / n, 4)
    res["kinds"] = dict(sorted(Counter(s.meta["kind"] for s in samples).items()))
    res["scenes"] = dict(sorted(Counter(s.meta["scene"] for s in samples).items()))
    for oracle, fn in (("prior_only", prior_answer), ("context_only", context_answer)):
        hits = [(s, _correct(s, fn(s))) for s in samples]

        def acc(pred, hits=hits):
            sel = [h for s, h in hits if pred(s)]
            return round(sum(sel) / len(sel), 4) if sel else None

        res[oracle] = {
            "all": acc(lambda s: True),
            "closeqa": acc(lambda s: s.task == "closeqa"),
            "openqa": acc(lambda s: s.task == "openqa"),
            "by_kind": {k: acc(lambda s, k=k: s.meta["kind"] == k) for k in KIND_WEIGHTS},
            "by_template": {t: acc(lambda s, t=t: s.meta["template"] == t) for t in TEMPLATES},
        }
    res["chance_closeqa"] = 0.25
    return res


def audit(dataset_dir: str | os.PathLike, *, write: bool = True) -> dict:
    """Audit every split of a dataset folder; writes `audit.json` and rewrites `card.md`."""
    d = Path(dataset_dir)
    splits = {}
    for name in [*SPLITS, *sorted(p.stem for p in d.glob("*.jsonl") if p.stem not in SPLITS)]:
        path = d / f"{name}.jsonl"
        if path.exists():
            splits[name] = audit_samples(read_jsonl(path))
    if not splits:
        raise FileNotFoundError(f"{d}: no <split>.jsonl files to audit")
    result = {"generator": "egosynth", "version": VERSION, "splits": splits}
    if write:
        write_json(d / "audit.json", result)
        write_card(d, result)
    return result


# =============================================================================================
# Answerability: the answer follows from what is rendered (rules over the generator's truth)


def _inter(a, b) -> bool:
    return a is not None and b is not None and min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _centre(b):
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2


def check_answerable(sample: Sample) -> list[str]:
    """Rule-based check that the answer follows from what is rendered, reading the generator's
    ground truth in `meta` (no model). Returns the problems found; [] means answerable.

    Checks: the annotated object is the one in meta and in the box labels; at contact start and
    throughout the contact span the acting hand's box overlaps the object's box; when the hand
    lets go the object's anchor (inside its box) lies in the destination zone; the use motion shows in the
    object's track (side to side, up and down, circles, or a tilt of >= 40 degrees); the answer is
    the truth for the question kind (object, destination, hand, motion), cues in the question
    (destination, hand, time) match the truth, a closed answer occurs exactly once among the
    options and no other option names the same object."""
    p: list[str] = []
    m = sample.meta or {}
    gt = m.get("gt") or {}
    it = sample.interaction
    if m.get("source") != "egosynth" or it is None or not gt:
        return ["not an EgoSynth sample (meta.source / interaction / meta.gt missing)"]
    gen = m["generator"]
    fps, T = gen["fps"], gen["frames"]
    obj, hand, kind = m["object"], f"{m['hand']}_hand", m["kind"]
    if obj not in OBJECTS:
        return [f"unknown object {obj!r}"]
    if [o.name for o in it.objects] != [obj]:
        p.append(f"interaction objects {[o.name for o in it.objects]} != meta.object {obj!r}")
    if bool(m["typical"]) != (obj in _meta_catalog(m).get(m["scene"], ())):
        p.append("meta.typical disagrees with the catalog")
    boxes: dict[tuple[int, str], list[float]] = {}
    for b in it.boxes:
        f = int(round(b.t * fps))
        if abs(f / fps - b.t) > 1e-3 or not 0 <= f < T:
            p.append(f"box at t={b.t} is not on a frame")
        boxes[(f, b.label)] = b.box
    labels = {lab for _, lab in boxes}
    if not labels <= {obj, "left_hand", "right_hand"}:
        p.append(f"unexpected box labels {sorted(labels - {obj, 'left_hand', 'right_hand'})}")
    c0, c1 = gt["contact_frames"]
    if it.contact is None or abs(it.contact[0] - c0 / fps) > 1e-3 or abs(it.contact[1] - c1 / fps) > 1e-3:
        p.append(f"contact {it.contact} != frames {c0}..{c1}")
    for f in range(c0, c1 + 1):
        if not _inter(boxes.get((f, obj)), boxes.get((f, hand))):
            p.append(f"frame {f}: the {hand} does not touch the {obj} during contact")
            break
    ob, z, (ax, ay) = boxes.get((c1, obj)), gt["dest_box"], gt["release_xy"]
    inside = ob is not None and ob[0] <= ax <= ob[2] and ob[1] <= ay <= ob[3]
    if not inside or not (z[0] <= ax <= z[2] and z[1] <= ay <= z[3]):
        p.append(f"the {obj} does not end in the {m['destination']} (frame {c1})")
    if m["action"] == "use":
        uf = gt["use_frames"]
        cs = [_centre(boxes[(f, obj)]) for f in uf if (f, obj) in boxes]
        if len(cs) < 3 or len(uf) < 3:
            p.append("use motion: fewer than 3 frames with the object visible")
        else:
            xr = max(c[0] for c in cs) - min(c[0] for c in cs)
            yr = max(c[1] for c in cs) - min(c[1] for c in cs)
            ang = gt["object_angles"]
            tilt = max(abs(ang[f] - ang[c0]) for f in uf)
            v = m["verb"]
            ok = {
                "swipe": xr >= 0.08 and yr < 0.4 * xr,
                "tap": yr >= 0.08 and xr < 0.4 * yr,
                "stir": min(xr, yr) >= 0.06 and min(xr, yr) >= 0.5 * max(xr, yr),
                "tip": tilt >= 40 and max(xr, yr) < 0.12,
            }.get(v, False)
            if not ok:
                p.append(
                    f"use motion {v!r} not visible in the object's track (x range {xr:.3f}, y range {yr:.3f}, "
                    f"tilt {tilt:.0f} deg)"
                )
    cues = m.get("cues") or {}
    if cues.get("destination") not in (None, m["destination"]):
        p.append(f"question names destination {cues['destination']!r}, truth {m['destination']!r}")
    if cues.get("hand") not in (None, m["hand"]):
        p.append(f"question names the {cues['hand']} hand, truth {m['hand']}")
    if cues.get("object") not in (None, obj):
        p.append(f"question names {cues['object']!r}, truth {obj!r}")
    if gt.get("hold_t") is not None:
        f = int(round(gt["hold_t"] * fps))
        if not c0 <= f <= c1 or not _inter(boxes.get((f, obj)), boxes.get((f, hand))):
            p.append(f"at {gt['hold_t']} s the {hand} is not holding the {obj}")
    if kind == "object":
        truth = obj
    elif kind == "where":
        truth = DESTINATIONS[m["destination"]].phrase
    elif kind == "hand":
        truth = f"{m['hand']} hand"
        if (c0, hand) not in boxes:
            p.append(f"the {hand} is not visible at contact")
    elif kind == "action":
        truth = VERBS.get(m["verb"] or "", "")
        if m["action"] != "use":
            p.append("action question on a clip without a use motion")
    else:
        return p + [f"unknown question kind {kind!r}"]
    if sample.task == "closeqa":
        opts = [_norm(o) for o in sample.options or []]
        if opts.count(_norm(truth)) != 1:
            p.append(f"the true answer {truth!r} occurs {opts.count(_norm(truth))} times among the options")
        if _norm(sample.answer_text) != _norm(truth):
            p.append(f"gold option {sample.answer_text!r} != truth {truth!r}")
        if kind == "object":
            names = {_norm(n) for n in OBJECTS[obj].names()}
            if sum(o in names for o in opts) != 1:
                p.append("another option names the same object")
    elif _norm(sample.answer) != _norm(truth):
        p.append(f"answer {sample.answer!r} != truth {truth!r}")
    return p


# =============================================================================================
# Preview contact sheet and dataset card

_BOX_COLOURS = {"left_hand": (255, 40, 200), "right_hand": (0, 170, 255)}


def preview(
    dataset_dir: str | os.PathLike,
    out_png: str | os.PathLike,
    n: int = 6,
    *,
    splits: Sequence[str] = ("test_id", "test_atypical", "train", "probe"),
) -> Path:
    """Contact sheet PNG: `n` clips (one per scene first, typical and atypical alternating), four
    decoded frames each (approach, grasp, carry or use, put-down) with their boxes (object yellow,
    right hand blue, left hand magenta), and the question, options, answer and truth beside them."""
    from PIL import Image, ImageDraw, ImageFont

    d = Path(dataset_dir)
    pools = [read_jsonl(d / f"{s}.jsonl") for s in splits if (d / f"{s}.jsonl").exists()]
    if not pools:
        raise FileNotFoundError(f"{d}: none of {list(splits)} .jsonl found")
    pool = [s for group in zip(*pools) for s in group] or pools[0]
    chosen, scenes = [], set()
    want_typical = True
    for s in pool:
        if len(chosen) >= n:
            break
        if s.meta["scene"] not in scenes and bool(s.meta["typical"]) == want_typical:
            chosen.append(s)
            scenes.add(s.meta["scene"])
            want_typical = not want_typical
    for s in pool:
        if len(chosen) >= n:
            break
        if s not in chosen:
            chosen.append(s)
    try:
        font = ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    rows = []
    for s in chosen:
        frames = decode_mp4(s.video)
        fps = s.meta["generator"]["fps"]
        c0, c1 = s.meta["gt"]["contact_frames"]
        uf = s.meta["gt"]["use_frames"]
        mid = uf[len(uf) // 2] if uf else (c0 + c1) // 2
        idx = [max(0, c0 - 2), c0, mid, c1]
        h, w = frames.shape[1:3]
        text_w = 380
        row = Image.new("RGB", (4 * w + 3 * 2 + text_w, h), (255, 255, 255))
        for k, f in enumerate(idx):
            im = Image.fromarray(frames[f])
            dr = ImageDraw.Draw(im)
            for b in s.interaction.boxes:
                if abs(b.t - f / fps) < 1e-3:
                    x0, y0, x1, y1 = b.box
                    dr.rectangle(
                        [x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1)],
                        outline=_BOX_COLOURS.get(b.label, (255, 230, 0)),
                        width=2,
                    )
            dr.text((3, 2), f"t={f / fps:.2f}s", fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
            row.paste(im, (k * (w + 2), 0))
        m = s.meta
        lines = [
            f"{s.id}",
            f"{m['scene']} | {'typical' if m['typical'] else 'ATYPICAL'} | {m['template']} | {s.task}",
            *_wrap("Q: " + s.question, 58),
        ]
        if s.options:
            lines += [f"  {'*' if LETTERS[i] == s.answer else ' '}{LETTERS[i]}. {o}" for i, o in enumerate(s.options)]
        lines.append(f"A: {s.answer_text}" + (f" ({s.answer})" if s.task == "closeqa" else ""))
        lines.append(
            f"truth: {m['hand']} hand, {m['object']} -> {DESTINATIONS[m['destination']].phrase}"
            + (f", {m['verb']}" if m.get("verb") else "")
        )
        dr = ImageDraw.Draw(row)
        for k, line in enumerate(lines):
            dr.text((4 * (w + 2) + 6, 4 + 14 * k), line, fill=(0, 0, 0) if k else (90, 90, 90), font=font)
        rows.append(row)
    sheet = Image.new("RGB", (rows[0].width, sum(r.height for r in rows) + 4 * (len(rows) - 1)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 4
    out_png = Path(out_png)
    with atomic_open(out_png, "wb", encoding=None) as fh:
        sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            fh, format="PNG", optimize=True
        )
    return out_png


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = "   " + word
        else:
            line = f"{line} {word}" if line else word
    return out + [line] if line else out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def write_card(dataset_dir: str | os.PathLike, audit_result: dict | None) -> Path:
    """Write `card.md`: what the dataset is, how it was made, and the shortcut audit."""
    d = Path(dataset_dir)
    cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))["config"] if (d / "config.json").exists() else {}
    gen = json.loads((d / "generation.json").read_text(encoding="utf-8")) if (d / "generation.json").exists() else {}
    L = [
        "# EgoSynth dataset card",
        "",
        "Procedurally generated egocentric clips (ego3s EgoSynth, generator version "
        f"{VERSION}): a scene with its typical objects, camera egomotion, a hand that grasps one object, "
        "optionally uses it, and puts it somewhere; one question per clip (closed, 4 options, or open).",
        "Shortcuts exist by construction: a *typical* sample follows every prior (object typical for the "
        "scene, usual destination, usual use, right hand; two more of the object lie in view), an atypical "
        "one breaks them all. See docs/egosynth.md in ego3s.",
        "",
        "## Generation",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    L += [f"| {k} | {v} |" for k, v in cfg.items()]
    if gen:
        L += [
            "",
            f"Written with {gen.get('workers')} worker(s) in {gen.get('seconds')} s "
            f"({gen.get('videos_written')} videos written, {gen.get('videos_skipped')} kept"
            + (f", {gen['clips_per_s']} clips/s" if gen.get("clips_per_s") else "")
            + ").",
        ]
    L += [
        "",
        "## Files",
        "",
        "- `videos/<split>_<index>.mp4`: H.264, yuv420p; frame i is at i / fps seconds.",
        "- `<split>.jsonl`: ego3s samples (`ego3s.data.read_jsonl`); `interaction` has the object with its "
        "synonyms, the action, per-frame boxes of the object and visible hands, and the contact span; `meta` "
        "has scene, typical, split, template, kind, hand, destination, action, verb, the visible distractors "
        "and the generator's ground truth (`gt`).",
        "- `audit.json`: the shortcut audit below; `config.json`: the generation settings.",
    ]
    if audit_result:
        L += [
            "",
            "## Shortcut audit",
            "",
            "Accuracy of two oracles that never look at the hand-object interaction. *Prior-only*: the "
            "question text and the scene (the activity's object, the scene's typical option, the named "
            "object's usual destination / use, the right hand). *Context-only*: the scene and the objects "
            "lying in it (the most frequent scene-typical distractor). Closed-question chance is 0.25.",
            "",
            "| split | n | typical share | prior-only | (closed / open) | context-only | (closed / open) |",
            "|---|---|---|---|---|---|---|",
        ]
        for split, r in audit_result["splits"].items():
            if not r.get("n"):
                continue
            po, co = r["prior_only"], r["context_only"]
            L.append(
                f"| {split} | {r['n']} | {_fmt(r['typical_share'])} | {_fmt(po['all'])} | {_fmt(po['closeqa'])} / "
                f"{_fmt(po['openqa'])} | {_fmt(co['all'])} | {_fmt(co['closeqa'])} / {_fmt(co['openqa'])} |"
            )
        first = next((r for r in audit_result["splits"].values() if r.get("n")), None)
        if first:
            L += [
                "",
                "By question kind (prior-only / context-only):",
                "",
                "| split | " + " | ".join(KIND_WEIGHTS) + " |",
                "|---|" + "---|" * len(KIND_WEIGHTS),
            ]
            for split, r in audit_result["splits"].items():
                if r.get("n"):
                    L.append(
                        f"| {split} | "
                        + " | ".join(
                            f"{_fmt(r['prior_only']['by_kind'][k])} / {_fmt(r['context_only']['by_kind'][k])}"
                            for k in KIND_WEIGHTS
                        )
                        + " |"
                    )
    path = d / "card.md"
    write_text(path, "\n".join(L) + "\n")
    return path


_audit_dataset, _preview_dataset = audit, preview
