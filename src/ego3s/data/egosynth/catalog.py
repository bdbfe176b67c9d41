"""EgoSynth's catalog without its objects (`objects`): scenes and their destinations (fixtures), use
motions, hands, question templates (docs/egosynth.md, Catalog and Questions).
"""

from __future__ import annotations

from dataclasses import dataclass

from ego3s.data.egosynth_render import (
    E,
    P,
    R,
)

VERSION = 1
OBJ_SCALE = 1.3  # objects are drawn at this multiple of their catalog size
HAND_SCALE = 1.25  # likewise hands
GRIP_OFFSET = 0.02  # the hand's grip point is this far (hand units) below the held object's centre

# =============================================================================================
# Catalog: scenes, their destinations (fixtures), objects, use motions
#
# Every object is typical for exactly one scene and carries the priors a typical interaction
# obeys: the activity it suggests, its usual use motion and its usual destination. Names and
# synonyms are unique across objects (checked at import). Parts are in local units (fractions of
# the frame width, y down, centred on the anchor); see `egosynth_render` for the tuples.


@dataclass(frozen=True)
class SynthObject:
    name: str
    synonyms: tuple[str, ...]
    scene: str
    activity: str  # "I was {activity} in the {scene}" suggests this object
    verb: str  # usual use motion (key of VERBS)
    dest: str  # usual destination (a destination of `scene`)
    size: str  # small / medium / large (for the docs)
    colour: str  # main colour (for the docs)
    parts: tuple

    def names(self) -> list[str]:
        return [self.name, *self.synonyms]


@dataclass(frozen=True)
class Destination:
    name: str
    prep: str  # "in" or "on"
    wall: bool  # mounted on the wall (upper row) or standing on the surface
    parts: tuple
    zone: tuple[float, float, float, float]  # local x0, y0, x1, y1 where a put-down object's centre lands

    @property
    def phrase(self) -> str:
        return f"{self.prep} the {self.name}"


@dataclass(frozen=True)
class SynthScene:
    name: str
    look: str
    destinations: tuple[str, ...]


# Use motions: what the hand does with the object between grasp and put-down.
VERBS: dict[str, str] = {
    "swipe": "moved it side to side",
    "tap": "tapped it up and down",
    "stir": "moved it in circles",
    "tip": "tipped it over to pour",
}

HAND_OPTIONS = ("left hand", "right hand", "both hands", "neither hand")

GREY, DARK, WHITE = (175, 178, 186), (28, 28, 32), (246, 246, 242)

_D = [
    # kitchen
    Destination(
        "sink",
        "in",
        False,
        zone=(-0.06, -0.02, 0.06, 0.03),
        parts=(
            R(0, 0, 0.24, 0.11, (172, 176, 182)),
            R(0, 0.006, 0.2, 0.08, (112, 118, 126)),
            R(0, -0.07, 0.016, 0.05, (196, 198, 206)),
            R(0.018, -0.092, 0.05, 0.014, (196, 198, 206)),
        ),
    ),
    Destination(
        "dish rack",
        "on",
        False,
        zone=(-0.07, -0.02, 0.07, 0.02),
        parts=(
            R(0, 0.045, 0.24, 0.02, (200, 200, 212)),
            R(-0.1, 0, 0.01, 0.08, (150, 150, 165)),
            R(-0.06, 0, 0.01, 0.08, (150, 150, 165)),
            R(-0.02, 0, 0.01, 0.08, (150, 150, 165)),
            R(0.02, 0, 0.01, 0.08, (150, 150, 165)),
            R(0.06, 0, 0.01, 0.08, (150, 150, 165)),
            R(0.1, 0, 0.01, 0.08, (150, 150, 165)),
        ),
    ),
    Destination(
        "cutting board",
        "on",
        False,
        zone=(-0.05, -0.025, 0.07, 0.025),
        parts=(
            R(0, 0, 0.22, 0.1, (196, 146, 86)),
            E(-0.085, 0, 0.018, 0.018, (120, 80, 40)),
        ),
    ),
    # workshop
    Destination(
        "toolbox",
        "in",
        False,
        zone=(-0.07, -0.02, 0.07, 0.03),
        parts=(
            R(0, 0.012, 0.22, 0.09, (205, 40, 40)),
            R(0, -0.04, 0.22, 0.02, (150, 28, 28)),
            R(0, -0.06, 0.07, 0.014, (40, 40, 40)),
        ),
    ),
    Destination(
        "bucket",
        "in",
        False,
        zone=(-0.04, -0.03, 0.04, 0.03),
        parts=(
            P([(-0.08, -0.05), (0.08, -0.05), (0.06, 0.065), (-0.06, 0.065)], (128, 132, 146)),
            E(0, -0.05, 0.17, 0.035, (90, 92, 104)),
        ),
    ),
    Destination(
        "pegboard",
        "on",
        True,
        zone=(-0.07, -0.04, 0.07, 0.04),
        parts=(
            R(0, 0, 0.24, 0.15, (222, 196, 150)),
            E(-0.09, -0.05, 0.012, 0.012, (120, 95, 60)),
            E(-0.09, 0.05, 0.012, 0.012, (120, 95, 60)),
            E(-0.03, -0.05, 0.012, 0.012, (120, 95, 60)),
            E(-0.03, 0.05, 0.012, 0.012, (120, 95, 60)),
            E(0.03, -0.05, 0.012, 0.012, (120, 95, 60)),
            E(0.03, 0.05, 0.012, 0.012, (120, 95, 60)),
            E(0.09, -0.05, 0.012, 0.012, (120, 95, 60)),
            E(0.09, 0.05, 0.012, 0.012, (120, 95, 60)),
        ),
    ),
    # garden
    Destination(
        "wheelbarrow",
        "in",
        False,
        zone=(-0.07, -0.03, 0.07, 0.02),
        parts=(
            P([(-0.12, -0.04), (0.12, -0.04), (0.08, 0.05), (-0.08, 0.05)], (40, 112, 64)),
            E(0, 0.065, 0.05, 0.05, (30, 30, 30)),
            R(-0.13, 0.02, 0.08, 0.012, (120, 90, 60), 20),
        ),
    ),
    Destination(
        "crate",
        "in",
        False,
        zone=(-0.06, -0.03, 0.06, 0.03),
        parts=(
            R(0, 0, 0.19, 0.11, (186, 136, 74)),
            R(0, -0.028, 0.19, 0.012, (132, 92, 44)),
            R(0, 0.028, 0.19, 0.012, (132, 92, 44)),
        ),
    ),
    Destination(
        "flower bed",
        "in",
        False,
        zone=(-0.06, -0.025, 0.06, 0.03),
        parts=(
            E(0, 0, 0.26, 0.11, (104, 64, 34)),
            E(-0.09, -0.03, 0.03, 0.03, (230, 70, 90)),
            E(0.09, -0.03, 0.03, 0.03, (250, 210, 60)),
        ),
    ),
    # office
    Destination(
        "drawer",
        "in",
        False,
        zone=(-0.07, -0.02, 0.07, 0.03),
        parts=(
            R(0, 0, 0.22, 0.1, (150, 108, 68)),
            R(0, 0.008, 0.19, 0.07, (88, 60, 36)),
            R(0, 0.055, 0.05, 0.012, (200, 200, 205)),
        ),
    ),
    Destination(
        "in-tray",
        "in",
        False,
        zone=(-0.06, -0.02, 0.06, 0.02),
        parts=(
            R(0, 0.012, 0.2, 0.06, (60, 62, 72)),
            R(0, -0.006, 0.16, 0.04, (248, 248, 248)),
        ),
    ),
    Destination(
        "bookshelf",
        "on",
        True,
        zone=(-0.05, -0.01, 0.07, 0.03),
        parts=(
            R(0, 0.06, 0.26, 0.022, (120, 80, 48)),
            R(-0.11, 0.02, 0.022, 0.06, (180, 40, 40)),
            R(-0.085, 0.02, 0.022, 0.06, (40, 90, 170)),
            R(0.105, 0.02, 0.022, 0.06, (60, 140, 70)),
        ),
    ),
    # bathroom
    Destination(
        "washbasin",
        "in",
        False,
        zone=(-0.06, -0.02, 0.06, 0.025),
        parts=(
            E(0, 0, 0.24, 0.11, (252, 252, 254)),
            E(0, 0.006, 0.19, 0.075, (196, 212, 224)),
            R(0, -0.07, 0.016, 0.045, (190, 192, 200)),
        ),
    ),
    Destination(
        "glass shelf",
        "on",
        True,
        zone=(-0.07, -0.01, 0.07, 0.03),
        parts=(
            R(0, 0.05, 0.24, 0.016, (150, 210, 222)),
            R(-0.1, 0.065, 0.014, 0.03, GREY),
            R(0.1, 0.065, 0.014, 0.03, GREY),
        ),
    ),
    Destination(
        "laundry basket",
        "in",
        False,
        zone=(-0.05, -0.03, 0.05, 0.03),
        parts=(
            R(0, 0.01, 0.18, 0.12, (206, 172, 112)),
            R(0, -0.05, 0.19, 0.02, (160, 124, 70)),
            R(0, -0.01, 0.18, 0.006, (170, 134, 80)),
            R(0, 0.02, 0.18, 0.006, (170, 134, 80)),
            R(0, 0.05, 0.18, 0.006, (170, 134, 80)),
        ),
    ),
    # living room
    Destination(
        "sofa",
        "on",
        False,
        zone=(-0.08, -0.03, 0.08, 0.03),
        parts=(
            R(0, -0.03, 0.28, 0.08, (62, 92, 152)),
            R(0, 0.035, 0.28, 0.05, (74, 104, 168)),
            R(-0.14, 0, 0.03, 0.11, (50, 76, 130)),
            R(0.14, 0, 0.03, 0.11, (50, 76, 130)),
        ),
    ),
    Destination(
        "side table",
        "on",
        False,
        zone=(-0.05, -0.04, 0.05, 0),
        parts=(
            R(0, 0, 0.18, 0.025, (134, 88, 52)),
            R(-0.065, 0.05, 0.016, 0.08, (110, 70, 40)),
            R(0.065, 0.05, 0.016, 0.08, (110, 70, 40)),
        ),
    ),
    Destination(
        "toy box",
        "in",
        False,
        zone=(-0.05, -0.02, 0.05, 0.03),
        parts=(
            R(0, 0, 0.18, 0.1, (232, 182, 44)),
            R(0, -0.042, 0.18, 0.02, (204, 62, 62)),
        ),
    ),
]
DESTINATIONS: dict[str, Destination] = {d.name: d for d in _D}

SCENES: dict[str, SynthScene] = {
    s.name: s
    for s in [
        SynthScene(
            "kitchen",
            "cream tiled wall under wooden cabinets, slate granite counter",
            ("sink", "dish rack", "cutting board"),
        ),
        SynthScene(
            "workshop", "concrete wall with a pegboard panel, plywood workbench", ("toolbox", "bucket", "pegboard")
        ),
        SynthScene(
            "garden", "blue sky over a wooden fence, lawn with a soil strip", ("wheelbarrow", "crate", "flower bed")
        ),
        SynthScene(
            "office",
            "pale blue wall with a window blind and a monitor, light wooden desk",
            ("drawer", "in-tray", "bookshelf"),
        ),
        SynthScene(
            "bathroom",
            "small aqua tiles with a mirror, white marble vanity",
            ("washbasin", "glass shelf", "laundry basket"),
        ),
        SynthScene("living room", "warm wall with a picture, red patterned carpet", ("sofa", "side table", "toy box")),
    ]
}


# Hands, in local units around the grip point (where a held object's centre is); the fingers
# point up (-y). The right hand is seen from above: thumb on the left. The left hand mirrors it.
SKIN_TONES = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (96, 58, 36), (255, 214, 170))
SLEEVES = ((40, 60, 110), (140, 30, 40), (60, 60, 64), (30, 110, 90), (200, 200, 196), (110, 80, 150), (210, 140, 40))


def hand_parts(skin, sleeve, grip: bool) -> tuple[tuple, tuple]:
    """(skin parts, sleeve parts) of a right hand."""
    lf = 0.042 if grip else 0.07
    fingers = tuple(
        R(x, -0.005 - lf / 2 + 0.03 + dy, 0.019, lf, skin)
        for x, dy in ((-0.033, 0.006), (-0.011, -0.004), (0.011, -0.002), (0.033, 0.01))
    )
    skin_parts = (
        R(0, 0.125, 0.072, 0.06, skin),
        E(0, 0.06, 0.1, 0.105, skin),
        R(-0.056, 0.045, 0.022, 0.06, skin, -35),
        *fingers,
    )
    sleeve_parts = (R(0, 0.6, 0.11, 0.92, sleeve),)
    return skin_parts, sleeve_parts


VERB_BASE = {
    "swipe": "move side to side",
    "tap": "tap up and down",
    "stir": "move in circles",
    "tip": "tip over to pour",
}

# =============================================================================================
# Question templates: id -> (kind, text, weight within its kind). Slots: {scene}, {activity},
# {dest} / {prep}, {obj} (a name or synonym of the object), {hand}, {t}.
TEMPLATES: dict[str, tuple[str, str, float]] = {
    "pick_plain": ("object", "What did I pick up?", 1.0),
    "pick_scene": ("object", "What did I pick up in the {scene}?", 1.0),
    "pick_activity": ("object", "I was {activity} in the {scene}. What did I pick up?", 2.0),
    "put_dest": ("object", "What did I put {prep} the {dest}?", 1.0),
    "putdown_scene": ("object", "What did I put down in the {scene}?", 1.0),
    "hold_when": ("object", "What was I holding when my hand reached the {dest}?", 1.0),
    "hold_time": ("object", "What was in my {hand} hand at {t} seconds?", 1.0),
    "hold_activity": ("object", "While {activity}, what did I carry across the {scene}?", 2.0),
    "where_plain": ("where", "Where did I put the {obj}?", 1.0),
    "where_scene": ("where", "In the {scene}, where did I put the {obj} after picking it up?", 1.0),
    "hand_plain": ("hand", "Which hand did I pick up the {obj} with?", 1.0),
    "hand_scene": ("hand", "Which hand did I use to move the {obj} in the {scene}?", 1.0),
    "action_plain": ("action", "What did I do with the {obj} before putting it down?", 1.0),
    "action_scene": ("action", "What did I do with the {obj} in the {scene} before putting it down?", 1.0),
}
KIND_WEIGHTS: dict[str, float] = {"object": 0.55, "where": 0.2, "hand": 0.1, "action": 0.15}
SPLITS = ("train", "test_id", "test_atypical", "probe")
