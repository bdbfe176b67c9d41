"""EgoSynth's thirty objects: each one's look (parts in local units), synonyms, scene, and the
priors a typical interaction obeys (activity, usual use motion, usual destination), with the maps
derived from them. Names and synonyms are unique across objects (checked at import).
"""

from __future__ import annotations

from ego3s.data.egosynth.catalog import DARK, SCENES, VERBS, WHITE, SynthObject
from ego3s.data.egosynth_render import E, G, P, R

_O = [
    # ---- kitchen
    SynthObject(
        "mug",
        ("cup", "coffee cup"),
        "kitchen",
        "making coffee",
        verb="tip",
        dest="dish rack",
        size="small",
        colour="red",
        parts=(
            G(0.045, 0, 0.045, 0.055, (196, 36, 36), 0.45),
            R(0, 0, 0.075, 0.09, (206, 40, 40)),
            E(0, -0.045, 0.075, 0.02, (96, 52, 24)),
        ),
    ),
    SynthObject(
        "knife",
        ("kitchen knife", "blade"),
        "kitchen",
        "chopping vegetables",
        verb="swipe",
        dest="cutting board",
        size="medium",
        colour="silver",
        parts=(
            R(0.03, 0, 0.13, 0.026, (212, 214, 222)),
            P([(0.095, -0.013), (0.13, 0.013), (0.095, 0.013)], (212, 214, 222)),
            R(-0.075, 0, 0.07, 0.03, DARK),
        ),
    ),
    SynthObject(
        "plate",
        ("dish", "dinner plate"),
        "kitchen",
        "washing up",
        verb="tip",
        dest="sink",
        size="large",
        colour="white",
        parts=(
            E(0, 0, 0.16, 0.11, (60, 92, 200)),
            E(0, 0, 0.13, 0.085, WHITE),
        ),
    ),
    SynthObject(
        "frying pan",
        ("pan", "skillet"),
        "kitchen",
        "cooking breakfast",
        verb="stir",
        dest="sink",
        size="large",
        colour="black",
        parts=(
            R(0.12, 0, 0.11, 0.024, (96, 62, 32)),
            E(0, 0, 0.13, 0.12, (40, 40, 46)),
            E(0, 0, 0.1, 0.09, (74, 74, 82)),
        ),
    ),
    SynthObject(
        "sponge",
        ("dish sponge", "scrubber"),
        "kitchen",
        "cleaning the counter",
        verb="stir",
        dest="sink",
        size="small",
        colour="yellow",
        parts=(
            R(0, 0.01, 0.09, 0.04, (242, 212, 52)),
            R(0, -0.02, 0.09, 0.022, (40, 150, 62)),
        ),
    ),
    # ---- workshop
    SynthObject(
        "hammer",
        ("mallet", "claw hammer"),
        "workshop",
        "building a birdhouse",
        verb="tap",
        dest="pegboard",
        size="medium",
        colour="brown",
        parts=(
            R(0, 0.03, 0.026, 0.16, (164, 112, 60)),
            R(0, -0.055, 0.095, 0.036, (104, 106, 116)),
        ),
    ),
    SynthObject(
        "screwdriver",
        ("flathead", "screw driver"),
        "workshop",
        "assembling a cabinet",
        verb="stir",
        dest="toolbox",
        size="small",
        colour="yellow",
        parts=(
            R(0, 0.04, 0.036, 0.07, (244, 204, 0)),
            R(0, 0.04, 0.036, 0.012, DARK),
            R(0, -0.04, 0.014, 0.09, (184, 186, 196)),
        ),
    ),
    SynthObject(
        "wrench",
        ("spanner", "adjustable wrench"),
        "workshop",
        "fixing a bike",
        verb="stir",
        dest="toolbox",
        size="medium",
        colour="steel",
        parts=(
            R(0, 0, 0.026, 0.15, (166, 172, 184)),
            G(0, -0.085, 0.055, 0.055, (166, 172, 184), 0.5),
            G(0, 0.085, 0.045, 0.045, (166, 172, 184), 0.45),
        ),
    ),
    SynthObject(
        "paint can",
        ("paint tin", "tin of paint"),
        "workshop",
        "painting a chair",
        verb="tip",
        dest="bucket",
        size="medium",
        colour="blue",
        parts=(
            R(0, 0, 0.09, 0.1, (40, 80, 204)),
            R(0, 0.006, 0.09, 0.04, WHITE),
            E(0, -0.05, 0.09, 0.022, (150, 150, 160)),
        ),
    ),
    SynthObject(
        "tape measure",
        ("measuring tape", "tape"),
        "workshop",
        "measuring a board",
        verb="swipe",
        dest="pegboard",
        size="small",
        colour="yellow-black",
        parts=(
            R(0, 0, 0.085, 0.08, (252, 196, 0)),
            E(0, 0, 0.036, 0.036, DARK),
            R(0.05, 0.03, 0.03, 0.012, (60, 60, 60)),
        ),
    ),
    # ---- garden
    SynthObject(
        "watering can",
        ("sprinkling can", "watering pot"),
        "garden",
        "watering the plants",
        verb="tip",
        dest="flower bed",
        size="large",
        colour="green",
        parts=(
            P([(0.03, 0), (0.11, -0.07), (0.125, -0.058), (0.045, 0.03)], (36, 150, 80)),
            G(-0.005, -0.055, 0.065, 0.045, (30, 128, 66), 0.55),
            R(0, 0, 0.095, 0.085, (40, 160, 86)),
        ),
    ),
    SynthObject(
        "trowel",
        ("hand shovel", "garden trowel"),
        "garden",
        "digging a hole",
        verb="tap",
        dest="wheelbarrow",
        size="small",
        colour="grey-green",
        parts=(
            P([(-0.035, -0.02), (0.035, -0.02), (0, -0.11)], (150, 152, 160)),
            R(0, 0.03, 0.022, 0.07, (28, 120, 60)),
        ),
    ),
    SynthObject(
        "flower pot",
        ("plant pot", "planter"),
        "garden",
        "repotting a plant",
        verb="tip",
        dest="crate",
        size="medium",
        colour="terracotta",
        parts=(
            E(0, -0.05, 0.085, 0.065, (40, 140, 44)),
            E(0, -0.075, 0.026, 0.026, (232, 60, 150)),
            P([(-0.05, -0.02), (0.05, -0.02), (0.035, 0.06), (-0.035, 0.06)], (192, 92, 50)),
        ),
    ),
    SynthObject(
        "pruning shears",
        ("secateurs", "clippers"),
        "garden",
        "pruning the roses",
        verb="tap",
        dest="wheelbarrow",
        size="small",
        colour="red",
        parts=(
            R(-0.006, -0.04, 0.018, 0.075, (176, 178, 188), 12),
            R(0.006, -0.04, 0.018, 0.075, (176, 178, 188), -12),
            R(-0.022, 0.03, 0.022, 0.075, (214, 30, 30), 15),
            R(0.022, 0.03, 0.022, 0.075, (214, 30, 30), -15),
        ),
    ),
    SynthObject(
        "seed packet",
        ("packet of seeds", "seeds"),
        "garden",
        "sowing seeds",
        verb="swipe",
        dest="crate",
        size="small",
        colour="orange",
        parts=(
            R(0, 0, 0.07, 0.1, (246, 132, 30)),
            E(0, 0.01, 0.046, 0.046, (252, 232, 80)),
            R(0, -0.04, 0.07, 0.016, WHITE),
        ),
    ),
    # ---- office
    SynthObject(
        "stapler",
        ("desk stapler", "staple gun"),
        "office",
        "filing paperwork",
        verb="tap",
        dest="in-tray",
        size="medium",
        colour="black",
        parts=(
            R(0, 0.016, 0.14, 0.022, (70, 70, 76)),
            R(-0.006, -0.008, 0.13, 0.03, (22, 22, 26)),
        ),
    ),
    SynthObject(
        "pen",
        ("ballpoint", "biro"),
        "office",
        "signing a form",
        verb="swipe",
        dest="drawer",
        size="small",
        colour="blue",
        parts=(
            R(0.01, 0, 0.13, 0.02, (32, 64, 204)),
            R(-0.06, 0, 0.04, 0.024, (20, 24, 120)),
            P([(0.075, -0.01), (0.095, 0), (0.075, 0.01)], (200, 200, 200)),
        ),
    ),
    SynthObject(
        "notebook",
        ("notepad", "jotter"),
        "office",
        "taking notes",
        verb="swipe",
        dest="bookshelf",
        size="medium",
        colour="purple",
        parts=(
            R(0, 0, 0.11, 0.14, (122, 50, 162)),
            R(0.05, 0, 0.012, 0.13, (250, 250, 240)),
            R(0, -0.03, 0.06, 0.026, WHITE),
        ),
    ),
    SynthObject(
        "scissors",
        ("pair of scissors", "snips"),
        "office",
        "wrapping a parcel",
        verb="tap",
        dest="drawer",
        size="small",
        colour="orange",
        parts=(
            R(-0.008, -0.035, 0.015, 0.09, (192, 194, 204), 6),
            R(0.008, -0.035, 0.015, 0.09, (192, 194, 204), -6),
            G(-0.022, 0.04, 0.036, 0.036, (242, 122, 20), 0.5),
            G(0.022, 0.04, 0.036, 0.036, (242, 122, 20), 0.5),
        ),
    ),
    SynthObject(
        "computer mouse",
        ("mouse", "wireless mouse"),
        "office",
        "editing a spreadsheet",
        verb="swipe",
        dest="in-tray",
        size="small",
        colour="grey",
        parts=(
            E(0, 0, 0.062, 0.092, (194, 194, 200)),
            R(0, -0.025, 0.006, 0.04, (90, 90, 96)),
            E(0, -0.02, 0.014, 0.02, (60, 60, 64)),
        ),
    ),
    # ---- bathroom
    SynthObject(
        "toothbrush",
        ("tooth brush", "brush"),
        "bathroom",
        "brushing my teeth",
        verb="swipe",
        dest="glass shelf",
        size="small",
        colour="cyan",
        parts=(
            R(0, 0.02, 0.018, 0.14, (40, 200, 222)),
            R(0, -0.06, 0.028, 0.036, (252, 252, 252)),
        ),
    ),
    SynthObject(
        "soap bar",
        ("bar of soap", "soap"),
        "bathroom",
        "washing my hands",
        verb="stir",
        dest="washbasin",
        size="small",
        colour="pink",
        parts=(
            E(0, 0, 0.09, 0.055, (250, 150, 182)),
            E(-0.01, -0.008, 0.05, 0.022, (252, 196, 214)),
        ),
    ),
    SynthObject(
        "towel",
        ("hand towel", "bath towel"),
        "bathroom",
        "drying my face",
        verb="stir",
        dest="laundry basket",
        size="large",
        colour="teal",
        parts=(
            R(0, 0, 0.16, 0.11, (30, 150, 152)),
            R(0, -0.034, 0.16, 0.014, WHITE),
            R(0, 0.034, 0.16, 0.014, WHITE),
        ),
    ),
    SynthObject(
        "shampoo bottle",
        ("shampoo", "bottle of shampoo"),
        "bathroom",
        "getting ready for a shower",
        verb="tip",
        dest="glass shelf",
        size="medium",
        colour="orange",
        parts=(
            R(0, 0.012, 0.06, 0.12, (252, 142, 30)),
            E(0, -0.045, 0.06, 0.03, (252, 142, 30)),
            R(0, -0.064, 0.03, 0.022, WHITE),
            R(0, 0.02, 0.04, 0.03, WHITE),
        ),
    ),
    SynthObject(
        "comb",
        ("hair comb", "pocket comb"),
        "bathroom",
        "fixing my hair",
        verb="swipe",
        dest="glass shelf",
        size="small",
        colour="black",
        parts=(
            R(0, -0.016, 0.14, 0.022, DARK),
            R(-0.06, 0.006, 0.009, 0.026, DARK),
            R(-0.036, 0.006, 0.009, 0.026, DARK),
            R(-0.012, 0.006, 0.009, 0.026, DARK),
            R(0.012, 0.006, 0.009, 0.026, DARK),
            R(0.036, 0.006, 0.009, 0.026, DARK),
            R(0.06, 0.006, 0.009, 0.026, DARK),
        ),
    ),
    # ---- living room
    SynthObject(
        "remote control",
        ("remote", "tv remote"),
        "living room",
        "watching tv",
        verb="tap",
        dest="sofa",
        size="small",
        colour="black",
        parts=(
            R(0, 0, 0.046, 0.13, (26, 26, 32)),
            E(0, -0.045, 0.02, 0.02, (224, 30, 30)),
            R(0, 0.022, 0.026, 0.04, (112, 112, 124)),
        ),
    ),
    SynthObject(
        "book",
        ("novel", "paperback"),
        "living room",
        "reading",
        verb="swipe",
        dest="side table",
        size="medium",
        colour="green",
        parts=(
            R(0, 0, 0.12, 0.15, (40, 122, 62)),
            R(-0.055, 0, 0.016, 0.15, (20, 72, 32)),
            R(0.058, 0, 0.008, 0.14, (246, 240, 220)),
            R(0.005, -0.04, 0.07, 0.016, (232, 202, 60)),
        ),
    ),
    SynthObject(
        "cushion",
        ("pillow", "throw pillow"),
        "living room",
        "tidying the sofa",
        verb="tap",
        dest="sofa",
        size="large",
        colour="violet",
        parts=(
            R(0, 0, 0.15, 0.13, (142, 62, 172)),
            E(0, 0, 0.022, 0.022, (92, 32, 122)),
        ),
    ),
    SynthObject(
        "game controller",
        ("gamepad", "joypad"),
        "living room",
        "playing a video game",
        verb="swipe",
        dest="toy box",
        size="medium",
        colour="dark grey",
        parts=(
            E(-0.04, 0.012, 0.05, 0.065, (72, 72, 84)),
            E(0.04, 0.012, 0.05, 0.065, (72, 72, 84)),
            R(0, -0.006, 0.08, 0.046, (72, 72, 84)),
            E(0.04, -0.01, 0.014, 0.014, (52, 204, 84)),
            E(-0.04, -0.01, 0.014, 0.014, (210, 210, 210)),
        ),
    ),
    SynthObject(
        "candle",
        ("wax candle", "pillar candle"),
        "living room",
        "relaxing in the evening",
        verb="tip",
        dest="side table",
        size="small",
        colour="ivory",
        parts=(
            R(0, 0.012, 0.046, 0.09, (250, 244, 222)),
            R(0, -0.04, 0.004, 0.012, DARK),
            E(0, -0.056, 0.018, 0.03, (255, 170, 30)),
        ),
    ),
]
OBJECTS: dict[str, SynthObject] = {o.name: o for o in _O}
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)
SCENE_OBJECTS: dict[str, tuple[str, ...]] = {s: tuple(o.name for o in _O if o.scene == s) for s in SCENES}
ACTIVITY_OBJECT: dict[str, str] = {o.activity: o.name for o in _O}


def _check_catalog() -> None:
    seen: dict[str, str] = {}
    for o in _O:
        assert o.dest in SCENES[o.scene].destinations, o.name
        assert o.verb in VERBS, o.name
        for n in o.names():
            assert n == n.lower() and n not in seen, (n, seen.get(n))
            seen[n] = o.name
    assert len(ACTIVITY_OBJECT) == len(_O)
    assert all(len(v) >= 4 for v in SCENE_OBJECTS.values())


_check_catalog()


def object_vocabulary() -> list[str]:
    """Every object name and synonym (the vocabulary the interaction reward counts mentions of)."""
    return [n for o in _O for n in o.names()]
