"""One EgoSynth clip from its config and seed: the plan (scene, interaction, layout, timeline,
egomotion), the frame geometry and its boxes, the question and its options, and the pixels.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from ego3s.config import ConfigError, check_fields
from ego3s.data.egosynth_render import (
    MARGIN,
    background,
    draw,
    encode_mp4,
    place,
    prim_mask,
    to_image,
    to_packed,
    to_rgb,
    union_extent,
    visible_extent,
    warp,
)
from ego3s.data.schema import LETTERS, Interaction, InteractionObject, Sample, TimedBox
from ego3s.files import atomic_open

from .catalog import (
    DESTINATIONS,
    GRIP_OFFSET,
    HAND_OPTIONS,
    HAND_SCALE,
    KIND_WEIGHTS,
    OBJ_SCALE,
    SCENES,
    SKIN_TONES,
    SLEEVES,
    SPLITS,
    TEMPLATES,
    VERB_BASE,
    VERBS,
    VERSION,
    hand_parts,
)
from .objects import OBJECTS, SCENE_NAMES, SCENE_OBJECTS

# =============================================================================================
# Configuration

X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


# the keys that shrink the world (docs/egosynth.md, "Smaller worlds"); a sample records those not at default
WORLD_KEYS = ("scenes", "objects_per_scene", "object_scale", "max_distractors")


@dataclass(frozen=True)
class EgoSynthConfig:
    """What a dataset is generated from. Same config -> same JSONL bytes and same frames."""

    seed: int = field(
        default=0, metadata={"help": "master seed; sample i of split s uses SeedSequence([seed, crc32(s), i])"}
    )
    train: int = field(default=12000, metadata={"help": "training pool size (p_typical)"})
    test: int = field(
        default=1000, metadata={"help": "size of each test split: test_id (p_typical) and test_atypical (0.0)"}
    )
    probe: int = field(default=1000, metadata={"help": "probe split for curriculum re-scoring (p_typical)"})
    p_typical: float = field(default=0.7, metadata={"help": "share of typical interactions in train, test_id, probe"})
    frames: int = field(default=12, metadata={"help": "frames per clip (>= 8)"})
    fps: float = field(default=4.0, metadata={"help": "frames per second of the clips"})
    size: int = field(default=168, metadata={"help": "frame side in pixels (even; multiples of 28 suit Qwen2.5-VL)"})
    closed_share: float = field(default=0.5, metadata={"help": "share of closed (4-option) questions"})
    use_share: float = field(
        default=0.35,
        metadata={
            "help": "share of clips where the object is used before it is put down "
            "(all clips asked 'what did I do with X')"
        },
    )
    scenes: int = field(
        default=6,
        metadata={
            "help": "scenes in use: the first N of the catalog (kitchen, workshop, garden, office, bathroom, living room)"
        },
    )
    objects_per_scene: int = field(
        default=5,
        metadata={
            "help": "objects in use per scene: each scene's first N typical objects (docs/egosynth.md, Catalog); an "
            "atypical object comes from another scene in use"
        },
    )
    object_scale: float = field(
        default=1.0,
        metadata={"help": "objects (held and lying) drawn at this multiple of their default size; boxes follow"},
    )
    max_distractors: int = field(
        default=4,
        metadata={"help": "most objects lying in the scene besides the theme's two copies (drawn from min(2, N) to N)"},
    )
    crf: int = field(default=26, metadata={"help": "x264 constant rate factor (quality of the mp4s)"})
    preset: str = field(default="superfast", metadata={"help": "x264 preset (speed / file size trade-off)"})

    def splits(self) -> list[tuple[str, int, float]]:
        return [
            ("train", self.train, self.p_typical),
            ("test_id", self.test, self.p_typical),
            ("test_atypical", self.test, 0.0),
            ("probe", self.probe, self.p_typical),
        ]

    def __post_init__(self):
        for name in ("train", "test", "probe"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not an integer >= 0")
        check_fields(
            self,
            choices={"preset": X264_PRESETS},
            ranges={
                "train": "[0, inf)",
                "test": "[0, inf)",
                "probe": "[0, inf)",
                "p_typical": "[0, 1]",
                "closed_share": "[0, 1]",
                "use_share": "[0, 1]",
                "frames": "[8, 64]",
                "fps": "(0, inf)",
                "size": "[56, inf)",
                "crf": "[0, 51]",
                "seed": "[0, inf)",
                "scenes": f"[2, {len(SCENE_NAMES)}]",
                "objects_per_scene": "[2, 5]",
                "object_scale": "(0, 3]",
                "max_distractors": "[0, 4]",
            },
        )
        for name in ("scenes", "objects_per_scene", "max_distractors"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not an integer")
        if self.size % 2:
            raise ConfigError(f"size: {self.size!r} is not even")

    def catalog(self) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
        """(scenes in use, {scene: its objects in use}): the world this config draws from."""
        return catalog_of(self.scenes, self.objects_per_scene)

    def world(self) -> dict:
        """The world keys that differ from the full catalog's defaults (recorded in each sample's
        `meta.generator`, so that the oracles and the checker know the catalog in use)."""
        defaults = {f.name: f.default for f in fields(self) if f.name in WORLD_KEYS}
        return {k: getattr(self, k) for k in WORLD_KEYS if getattr(self, k) != defaults[k]}

    def p_of(self, split: str) -> float:
        for name, _, p in self.splits():
            if name == split:
                return p
        raise ValueError(f"unknown EgoSynth split {split!r}; splits are {SPLITS}")


# =============================================================================================
# Planning: everything a clip is, drawn from the sample's own RNG (no pixels yet)


@dataclass
class _Plan:
    split: str
    index: int
    p_typical: float
    scene: str
    typical: bool
    kind: str
    closed: bool
    obj: str
    theme: str
    hand: str
    idle: bool
    dest: str
    action: str
    verb: str | None
    dests: list  # [(name, x, y)] in world units
    distractors: list  # [(name, x, y, angle_rad)]
    c0: int
    c1: int
    use_frames: list
    cam: np.ndarray  # (T, 4): cx, cy, roll, zoom
    attach: np.ndarray  # (T, 2): the hand's grip point in world units
    alpha: np.ndarray  # (T,): hand direction (0 = fingers up, clockwise)
    obj_pose: np.ndarray  # (T, 3): object x, y (world), angle (rad, world)
    idle_bob: np.ndarray  # (T,)
    variant: int
    flip: bool
    gain: tuple
    skin: tuple
    sleeve: tuple
    hscale: float
    obj_scale: float = 1.0  # EgoSynthConfig.object_scale


@cache
def catalog_of(scenes: int = 6, objects_per_scene: int = 5) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The first `scenes` scenes and each one's first `objects_per_scene` typical objects."""
    names = SCENE_NAMES[:scenes]
    return names, {sc: SCENE_OBJECTS[sc][:objects_per_scene] for sc in names}


def _meta_catalog(m: dict) -> dict[str, tuple[str, ...]]:
    """{scene: objects in use} of the world a sample was generated in (its `meta.generator`)."""
    gen = m.get("generator") or {}
    full = EgoSynthConfig()
    return catalog_of(int(gen.get("scenes", full.scenes)), int(gen.get("objects_per_scene", full.objects_per_scene)))[1]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _weighted(rng, items: Sequence, weights: Sequence[float]):
    w = np.asarray(weights, dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


@cache
def _local_extent(kind: str, name: str, scale: float = 1.0) -> tuple[float, float, float, float]:
    if kind == "obj":
        return union_extent(place(OBJECTS[name].parts, 0.0, 0.0, 0.0, OBJ_SCALE * scale))
    return union_extent(place(DESTINATIONS[name].parts, 0.0, 0.0, 0.0, 1.0))


def _radius(name: str, scale: float = 1.0) -> float:
    x0, y0, x1, y1 = _local_extent("obj", name, scale)
    return 0.5 * max(x1 - x0, y1 - y0)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index]))


def _plan(cfg: EgoSynthConfig, split: str, index: int, p_typical: float) -> tuple[_Plan, np.random.Generator]:
    rng = _rng(cfg.seed, split, index)
    T = cfg.frames
    scene_names, in_use = cfg.catalog()
    scene = _pick(rng, scene_names)
    typical = bool(rng.random() < p_typical)
    kind = _weighted(rng, list(KIND_WEIGHTS), list(KIND_WEIGHTS.values()))
    closed = bool(rng.random() < cfg.closed_share)
    action = "use" if kind == "action" or rng.random() < cfg.use_share else "move"
    typ = in_use[scene]
    others = [o for sc in scene_names if sc != scene for o in in_use[sc]]
    obj = _pick(rng, typ) if typical else _pick(rng, others)
    theme = obj if typical else _pick(rng, typ)
    hand = "right" if typical else "left"
    sc = SCENES[scene]
    dest = OBJECTS[obj].dest if typical else _pick(rng, sc.destinations)
    usual = OBJECTS[obj].verb
    verb = None
    if action == "use":
        verb = usual if typical else _pick(rng, [v for v in VERBS if v != usual])

    # ---- layout (world units; the frame at rest spans [0, 1]^2)
    slots = [0.17, 0.5, 0.83]
    perm = rng.permutation(3)
    dests, obstacles = [], []
    for k, name in enumerate(sc.destinations):
        d = DESTINATIONS[name]
        x = slots[int(perm[k])] + rng.uniform(-0.03, 0.03)
        y = (0.25 if d.wall else 0.585) + rng.uniform(-0.02, 0.02)
        dests.append((name, float(x), float(y)))
        if not d.wall:
            x0, y0, x1, y1 = _local_extent("dest", name)
            obstacles.append((x + x0, y + y0, x + x1, y + y1))
    tx, ty = next((x, y) for n, x, y in dests if n == dest)
    for _ in range(100):
        sx, sy = rng.uniform(0.16, 0.84), rng.uniform(0.74, 0.85)
        if abs(sx - tx) >= 0.22:
            break
    z = DESTINATIONS[dest].zone
    fx = tx + rng.uniform(z[0], z[2]) * 0.8 + (z[0] + z[2]) * 0.1
    fy = ty + rng.uniform(z[1], z[3]) * 0.8 + (z[1] + z[3]) * 0.1
    ang0 = math.radians(rng.uniform(-25, 25))

    circles = [(sx, sy, _radius(obj, cfg.object_scale) * 0.9)]
    k_other = int(rng.integers(min(2, cfg.max_distractors), cfg.max_distractors + 1))
    pool_t = [o for o in typ if o not in (theme, obj)]
    pool_a = [o for o in others if o not in (theme, obj)]
    wanted = [theme, theme]
    for _ in range(k_other):
        use_t = rng.random() < 0.75
        pool = [o for o in (pool_t if use_t else pool_a) if o not in wanted] or [
            o for o in pool_t + pool_a if o not in wanted
        ]
        wanted.append(_pick(rng, pool))
    distractors = []
    for j, name in enumerate(wanted):
        r = _radius(name, cfg.object_scale) * 0.85
        tries = 200 if j < 2 else 60
        for t in range(tries):
            x, y = rng.uniform(0.1, 0.9), rng.uniform(0.5, 0.88)
            ok = all((x - cx) ** 2 + (y - cy) ** 2 >= (r + cr) ** 2 for cx, cy, cr in circles)
            ok = ok and all(_circle_rect_gap(x, y, b) >= r * 0.7 for b in obstacles)
            if ok or (j < 2 and t == tries - 1):
                distractors.append((name, float(x), float(y), math.radians(rng.uniform(-30, 30))))
                circles.append((x, y, r))
                break

    # ---- timeline
    nu = max(3, int(round(T / 4))) if action == "use" else 0
    c0 = int(round(0.28 * (T - 1))) + int(rng.integers(-1, 2))
    c0 = max(2, min(c0, T - 4 - nu))
    c1 = T - 1 - int(round(0.25 * (T - 1))) + int(rng.integers(-1, 1))
    c1 = min(T - 2, max(c1, c0 + nu + (1 if nu else 2)))
    use_frames = list(range(c0 + 1, c0 + 1 + nu))

    side = -1.0 if hand == "left" else 1.0
    keys = {0: (sx + side * 0.2, 1.18), c0: (sx, sy), c1: (fx, fy), T - 1: (fx + side * 0.2, 1.18)}
    ux, uy = float(np.clip(0.5 + rng.uniform(-0.12, 0.12), 0.3, 0.7)), 0.42 + rng.uniform(-0.04, 0.04)
    tilt = np.zeros(T)
    if nu:
        amp = 0.075
        if verb == "stir":
            th0 = rng.uniform(0, 2 * math.pi)
        tip_sign = 1.0 if rng.random() < 0.5 else -1.0
        for j, f in enumerate(use_frames):
            if verb == "swipe":
                off = (amp * (1 if j % 2 == 0 else -1), 0.0)
            elif verb == "tap":
                off = (0.0, -amp * (1 if j % 2 == 0 else -1))
            elif verb == "stir":
                a = th0 + 2 * math.pi * j / nu
                off = (amp * math.cos(a), amp * math.sin(a))
            else:  # tip
                off = (0.0, 0.0)
                tilt[f] = tip_sign * math.radians(85) * math.sin(math.pi * (j + 1) / (nu + 1))
            keys[f] = (ux + off[0], uy + off[1])
    kf = sorted(keys)
    attach = np.zeros((T, 2))
    for f in range(T):
        if f in keys:
            attach[f] = keys[f]
            continue
        a = max(k for k in kf if k < f)
        b = min(k for k in kf if k > f)
        w = (f - a) / (b - a)
        attach[f] = (1 - w) * np.array(keys[a]) + w * np.array(keys[b])
    attach += rng.normal(0, 0.004, (T, 2)) * (np.arange(T) != c0)[:, None] * (np.arange(T) != c1)[:, None]
    shoulder = np.array([0.5 + side * 0.32, 1.9])
    d = attach - shoulder
    alpha = np.arctan2(d[:, 0], -d[:, 1])
    obj_pose = np.zeros((T, 3))
    for f in range(T):
        if f < c0:
            obj_pose[f] = (sx, sy, ang0)
        elif f <= c1:
            obj_pose[f] = (attach[f, 0], attach[f, 1], ang0 + tilt[f])
        else:
            obj_pose[f] = (attach[c1, 0], attach[c1, 1], ang0)

    # ---- camera egomotion: a slow sway, a drift, a roll and a zoom ramp, plus head jitter
    u = np.linspace(0.0, 1.0, T)
    ph = rng.uniform(0, 2 * math.pi, 3)
    cx = (
        0.5
        + rng.uniform(0.005, 0.022) * np.sin(2 * math.pi * rng.uniform(0.3, 0.8) * u + ph[0])
        + rng.uniform(-0.03, 0.03) * (u - 0.5)
        + rng.normal(0, 0.003, T)
    )
    cy = (
        0.5
        + rng.uniform(0.005, 0.022) * np.sin(2 * math.pi * rng.uniform(0.3, 0.8) * u + ph[1])
        + rng.uniform(-0.03, 0.03) * (u - 0.5)
        + rng.normal(0, 0.003, T)
    )
    roll = np.radians(rng.uniform(-2, 2) + rng.uniform(-2, 2) * np.sin(math.pi * u + ph[2]))
    zoom = rng.uniform(0.97, 1.03) + rng.uniform(-0.04, 0.04) * u
    cam = np.stack([cx, cy, roll, zoom], axis=1)

    pl = _Plan(
        split=split,
        index=index,
        p_typical=p_typical,
        scene=scene,
        typical=typical,
        kind=kind,
        closed=closed,
        obj=obj,
        theme=theme,
        hand=hand,
        idle=bool(rng.random() < 0.4),
        dest=dest,
        action=action,
        verb=verb,
        dests=dests,
        distractors=distractors,
        c0=c0,
        c1=c1,
        use_frames=use_frames,
        cam=cam,
        attach=attach,
        alpha=alpha,
        obj_pose=obj_pose,
        idle_bob=0.012 * np.sin(2 * math.pi * u + rng.uniform(0, 6.3)),
        variant=int(rng.integers(3)),
        flip=bool(rng.random() < 0.5),
        gain=tuple(float(v) for v in rng.uniform(0.88, 1.08) * rng.uniform(0.96, 1.04, 3)),
        skin=_pick(rng, SKIN_TONES),
        sleeve=_pick(rng, SLEEVES),
        hscale=float(rng.uniform(0.9, 1.1)),
        obj_scale=cfg.object_scale,
    )
    return pl, rng


def _circle_rect_gap(x, y, b) -> float:
    dx = max(b[0] - x, 0.0, x - b[2])
    dy = max(b[1] - y, 0.0, y - b[3])
    return math.hypot(dx, dy)


# =============================================================================================
# Geometry of a frame (primitives in image pixels) and the boxes that come from it


def _tint(parts, gain) -> tuple:
    out = []
    for p in parts:
        i = 3 if p[0] == "p" else 6
        col = tuple(int(min(255, c * g)) for c, g in zip(p[i], gain))
        out.append(p[:i] + (col,) + p[i + 1 :])
    return tuple(out)


@lru_cache(maxsize=4096)
def _parts(kind: str, name, gain) -> tuple:
    if kind == "obj":
        return _tint(OBJECTS[name].parts, gain)
    if kind == "dest":
        return _tint(DESTINATIONS[name].parts, gain)
    skin, sleeve, grip = name
    sk, sl = hand_parts(skin, sleeve, grip)
    return _tint(sk, gain), _tint(sl, gain)


def _geometry(pl: _Plan, f: int, size: int) -> list[tuple[str | None, list, bool]]:
    """Draw order for the dynamic layer of frame f: [(box label or None, primitives, outline)]."""
    cam = pl.cam[f]
    roll, zoom = float(cam[2]), float(cam[3])
    out = []
    ox, oy, oa = pl.obj_pose[f]
    ix, iy = to_image(ox, oy, cam)
    out.append(
        (
            pl.obj,
            place(
                _parts("obj", pl.obj, pl.gain), ix * size, iy * size, oa - roll, zoom * size * OBJ_SCALE * pl.obj_scale
            ),
            True,
        )
    )
    grip = pl.c0 <= f <= pl.c1
    skin, sleeve = _parts("hand", (pl.skin, pl.sleeve, grip), pl.gain)
    hs = zoom * size * pl.hscale * HAND_SCALE
    flip = pl.hand == "left"
    a = float(pl.alpha[f]) - roll
    # the grip point sits a little below the held object's centre, so the fingers cover only
    # the object's lower part
    hx, hy = to_image(pl.attach[f, 0], pl.attach[f, 1], cam)
    hx, hy = hx * size - math.sin(a) * GRIP_OFFSET * hs, hy * size + math.cos(a) * GRIP_OFFSET * hs
    out.append((None, place(sleeve, hx, hy, a, hs, flip), False))
    out.append((f"{pl.hand}_hand", place(skin, hx, hy, a, hs, flip), True))
    if pl.idle:
        other = "left" if pl.hand == "right" else "right"
        s = -1.0 if other == "left" else 1.0
        skin, sleeve = _parts("hand", (pl.skin, pl.sleeve, False), pl.gain)
        x, y, a = (0.5 + s * 0.36) * size, (0.94 + pl.idle_bob[f]) * size, -s * math.radians(22)
        hs = size * pl.hscale * HAND_SCALE
        out.append((None, place(sleeve, x, y, a, hs, other == "left"), False))
        out.append((f"{other}_hand", place(skin, x, y, a, hs, other == "left"), True))
    return out


def _scene_boxes(pl: _Plan, cfg: EgoSynthConfig) -> list[dict]:
    """Per-frame boxes of the objects lying in the scene (`distractors`, in draw order): what a
    tower must find to answer from the scene when the hand is hidden (vision pretraining's
    `scene_align`). Each is {"name", "boxes": [[t, x1, y1, x2, y2], ...]} in frame units, for the
    frames where some of it is in view; the hand or the held object may cover part of a box."""
    out = []
    for name, x, y, a in pl.distractors:
        track = []
        for f in range(cfg.frames):
            cam = pl.cam[f]
            ix, iy = to_image(x, y, cam)
            prims = place(
                _parts("obj", name, pl.gain),
                ix * cfg.size,
                iy * cfg.size,
                a - float(cam[2]),
                float(cam[3]) * cfg.size * OBJ_SCALE * pl.obj_scale,
            )
            b = _box(prims, cfg.size)
            if b is not None:
                track.append([round(f / cfg.fps, 4), *b])
        if track:
            out.append({"name": OBJECTS[name].name, "boxes": track})
    return out


def _box(prims, size: int) -> list[float] | None:
    """Normalised box of the pixels the primitives can cover inside the frame: their visible
    extent snapped outwards to whole pixels (pixel j is covered when its centre j + 0.5 is inside
    a shape). None when no pixel can be covered."""
    ext = [e for e in (visible_extent(p, size, size) for p in prims) if e is not None]
    if not ext:
        return None
    eps = 1e-6  # clipping arithmetic may land a hair inside a pixel centre on the border
    j0 = max(0, math.ceil(min(e[0] for e in ext) - 0.5 - eps))
    i0 = max(0, math.ceil(min(e[1] for e in ext) - 0.5 - eps))
    j1 = min(size, math.floor(max(e[2] for e in ext) - 0.5 + eps) + 1)
    i1 = min(size, math.floor(max(e[3] for e in ext) - 0.5 + eps) + 1)
    if j1 <= j0 or i1 <= i0:
        return None
    return [round(j0 / size, 6), round(i0 / size, 6), round(j1 / size, 6), round(i1 / size, 6)]


def _zone_box(pl: _Plan, f: int) -> list[float]:
    """The destination zone (where the put-down object's centre lands) in frame f, normalised."""
    name, x, y = next(d for d in pl.dests if d[0] == pl.dest)
    z = DESTINATIONS[name].zone
    pts = [to_image(x + zx, y + zy, pl.cam[f]) for zx in (z[0], z[2]) for zy in (z[1], z[3])]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [round(min(xs), 4), round(min(ys), 4), round(max(xs), 4), round(max(ys), 4)]


# =============================================================================================
# Question, options, answer


def _fmt_t(t: float) -> str:
    return f"{t:.2f}".rstrip("0").rstrip(".")


def _question(pl: _Plan, rng: np.random.Generator, cfg: EgoSynthConfig) -> dict:
    ids = [k for k, v in TEMPLATES.items() if v[0] == pl.kind]
    if pl.kind == "action" and pl.action != "use":  # cannot happen (action questions force a use)
        raise AssertionError(pl)
    template = _weighted(rng, ids, [TEMPLATES[k][2] for k in ids])
    text = TEMPLATES[template][1]
    o, d = OBJECTS[pl.obj], DESTINATIONS[pl.dest]
    scene_names, in_use = cfg.catalog()
    activity = None
    if "{activity}" in text:
        activity = OBJECTS[pl.obj if pl.typical else pl.theme].activity
    hold_t = None
    if "{t}" in text:
        hold_t = round(int(rng.integers(pl.c0 + 1, pl.c1)) / cfg.fps, 4)
    obj_name = _pick(rng, o.names())
    q = text.format(
        scene=pl.scene,
        activity=activity,
        dest=d.name,
        prep=d.prep,
        obj=obj_name,
        hand=pl.hand,
        t=_fmt_t(hold_t) if hold_t is not None else "",
    )
    cues = {
        "scene": "{scene}" in text,
        "activity": activity,
        "destination": d.name if "{dest}" in text else None,
        "object": pl.obj if "{obj}" in text else None,
        "hand": pl.hand if "{hand}" in text else None,
    }

    if pl.kind == "object":
        answer = pl.obj
        visible = Counter(n for n, *_ in pl.distractors)
        pool = [x for sc in scene_names if sc != pl.scene for x in in_use[sc] if x != pl.obj]
        w = [3.0 if visible[x] else 1.0 for x in pool]
        n_a = 3 if pl.typical else 2
        idx = rng.choice(len(pool), n_a, replace=False, p=np.array(w) / sum(w))
        foils = [pool[int(i)] for i in idx] + ([] if pl.typical else [pl.theme])
    elif pl.kind == "where":
        answer = d.phrase
        usual = DESTINATIONS[o.dest].phrase
        in_scene = [DESTINATIONS[n].phrase for n in SCENES[pl.scene].destinations if n != pl.dest]
        if pl.typical:
            away = [DESTINATIONS[n].phrase for sc in scene_names if sc != pl.scene for n in SCENES[sc].destinations]
            foils = in_scene + [_pick(rng, away)]
        else:
            foils = in_scene + [usual]
    elif pl.kind == "hand":
        answer = f"{pl.hand} hand"
        foils = [h for h in HAND_OPTIONS if h != answer]
    else:
        answer = VERBS[pl.verb]
        foils = [VERBS[v] for v in VERBS if v != pl.verb]

    if not pl.closed:
        return dict(template=template, question=q, task="openqa", options=None, answer=answer, cues=cues, hold_t=hold_t)
    foils = [foils[int(i)] for i in rng.permutation(len(foils))][:3]
    gold = int(rng.integers(4))
    options = foils[:gold] + [answer] + foils[gold:]
    return dict(
        template=template, question=q, task="closeqa", options=options, answer=LETTERS[gold], cues=cues, hold_t=hold_t
    )


def _sample(pl: _Plan, rng: np.random.Generator, cfg: EgoSynthConfig, geos: list | None = None) -> Sample:
    T, size = cfg.frames, cfg.size
    qa = _question(pl, rng, cfg)
    geos = geos or [_geometry(pl, f, size) for f in range(T)]
    boxes = []
    for f in range(T):
        t = round(f / cfg.fps, 4)
        for label, prims, _ in geos[f]:
            if label is not None:
                b = _box(prims, size)
                if b is not None:
                    boxes.append(TimedBox(t, label, b))
    o, d = OBJECTS[pl.obj], DESTINATIONS[pl.dest]
    if pl.action == "use":
        action = f"pick up, {VERB_BASE[pl.verb]}, put {d.prep} the {d.name}"
    else:
        action = f"pick up and put {d.prep} the {d.name}"
    meta = {
        "source": "egosynth",
        "split": pl.split,
        "scene": pl.scene,
        "typical": pl.typical,
        "template": qa["template"],
        "kind": pl.kind,
        "object": pl.obj,
        "hand": pl.hand,
        "destination": pl.dest,
        "action": pl.action,
        "verb": pl.verb,
        "theme": pl.theme,
        "distractors": [n for n, *_ in pl.distractors],
        "cues": qa["cues"],
        "gt": {
            "contact_frames": [pl.c0, pl.c1],
            "use_frames": pl.use_frames,
            "object_angles": [round(math.degrees(a), 2) for a in pl.obj_pose[:, 2]],
            "dest_box": _zone_box(pl, pl.c1),
            "release_xy": [round(v, 4) for v in to_image(*pl.obj_pose[pl.c1, :2], pl.cam[pl.c1])],
            "hold_t": qa["hold_t"],
            "idle_hand": pl.idle,
            "scene_objects": _scene_boxes(pl, cfg),
        },
        "generator": {
            "name": "egosynth",
            "version": VERSION,
            "seed": cfg.seed,
            "index": pl.index,
            "p_typical": pl.p_typical,
            "frames": T,
            "fps": cfg.fps,
            "size": size,
            **cfg.world(),
        },
    }
    inter = Interaction(
        objects=[InteractionObject(o.name, list(o.synonyms))],
        action=action,
        boxes=boxes,
        contact=[round(pl.c0 / cfg.fps, 4), round(pl.c1 / cfg.fps, 4)],
    )
    return Sample(
        id=f"egosynth-{pl.split}-{pl.index:05d}",
        question=qa["question"],
        answer=qa["answer"],
        task=qa["task"],
        options=qa["options"],
        video=f"videos/{pl.split}_{pl.index:05d}.mp4",
        start=0.0,
        end=round(T / cfg.fps, 4),
        interaction=inter,
        meta=meta,
    )


# =============================================================================================
# Pixels


def _render(pl: _Plan, cfg: EgoSynthConfig, masks: bool = False, geos: list | None = None):
    """Packed (T, H, W) uint32 frames (see `egosynth_render.to_rgb`), and with `masks` the
    per-frame {label: bool mask} of the boxed shapes."""
    size, T = cfg.size, cfg.frames
    bg = background(pl.scene, pl.variant, size)
    if pl.flip:
        bg = bg[:, ::-1]
    canvas = to_packed(np.clip(bg * np.asarray(pl.gain, np.float32), 0, 255).astype(np.uint8))
    for name, x, y in pl.dests:
        draw(canvas, place(_parts("dest", name, pl.gain), (x + MARGIN) * size, (y + MARGIN) * size, 0.0, size))
    for name, x, y, a in pl.distractors:
        draw(
            canvas,
            place(
                _parts("obj", name, pl.gain),
                (x + MARGIN) * size,
                (y + MARGIN) * size,
                a,
                size * OBJ_SCALE * pl.obj_scale,
            ),
        )
    packed = np.empty((T, size, size), np.uint32)
    all_masks = []
    for f in range(T):
        img = warp(canvas, size, *(float(v) for v in pl.cam[f]))
        fm = {}
        for label, prims, outline in geos[f] if geos else _geometry(pl, f, size):
            draw(img, prims, outline)
            if masks and label is not None:
                m = np.zeros((size, size), bool)
                for p in prims:
                    r = prim_mask(p, size, size)
                    if r is not None:
                        i0, j0, mk = r
                        m[i0 : i0 + mk.shape[0], j0 : j0 + mk.shape[1]] |= mk
                fm[label] = m
        packed[f] = img
        all_masks.append(fm)
    return (packed, all_masks) if masks else packed


def render_clip(split: str, index: int, config: EgoSynthConfig | None = None, *, masks: bool = False):
    """Frames (T, H, W, 3) uint8 of sample `index` of `split`, exactly as encoded (before H.264).
    With `masks`, also a list (one per frame) of {box label: bool mask of the pixels that label's
    shapes cover} - the generator's own masks, for checking boxes."""
    cfg = config or EgoSynthConfig()
    pl, _ = _plan(cfg, split, index, cfg.p_of(split))
    packed, m = _render(pl, cfg, True) if masks else (_render(pl, cfg), None)
    frames = np.ascontiguousarray(to_rgb(packed))
    return (frames, m) if masks else frames


def generate_samples(split: str, n: int, config: EgoSynthConfig | None = None, *, start: int = 0) -> list[Sample]:
    """Metadata only (no pixels, no files): samples start..start+n-1 of `split`, identical to what
    `generate` writes. Fast (about a millisecond a sample): for audits and tests."""
    cfg = config or EgoSynthConfig()
    p = cfg.p_of(split)
    out = []
    for i in range(start, start + n):
        pl, rng = _plan(cfg, split, i, p)
        out.append(_sample(pl, rng, cfg))
    return out


def _work(args) -> tuple[Sample, bool]:
    cfg, split, index, p, out, render = args
    pl, rng = _plan(cfg, split, index, p)
    geos = [_geometry(pl, f, cfg.size) for f in range(cfg.frames)]
    s = _sample(pl, rng, cfg, geos)
    wrote = False
    if render:
        path = Path(out) / s.video
        if not path.exists():
            data = encode_mp4(_render(pl, cfg, geos=geos), cfg.fps, cfg.crf, cfg.preset)
            with atomic_open(path, "wb", encoding=None) as fh:
                fh.write(data)
            wrote = True
    return s, wrote
