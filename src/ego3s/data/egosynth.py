"""EgoSynth: the built-in, procedurally generated egocentric benchmark with shortcuts by construction.

Each sample is a short first-person clip (default 12 frames at 4 fps, 168 x 168 px): a scene with
its own look and its typical objects lying around, camera egomotion (shift, roll, zoom), a hand
entering from the bottom, grasping one object, optionally using it (a motion: side to side, up and
down, circles, tipping), and putting it down somewhere (a container, a shelf, the sink...). One
question per clip, closed (4 options) or open, about what was picked up / put down / held, where
it went, which hand, or what was done with it.

The shortcut structure is a single per-sample flag, `typical` (probability `p_typical`): a typical
interaction follows every prior at once - the object is one of the scene's typical objects, it
goes to its usual destination, is used with its usual motion, by the right hand - and the scene
is set around it (two more of the same object lie in view). An atypical interaction breaks every
prior. Closed questions always hold exactly one option the priors point to. So a model that
answers from the question text and the scene (`audit`'s prior-only oracle) or from the visible
context without the hand-object region (context-only oracle) scores about `p_typical` in
distribution and about 0 on `test_atypical`; only looking at the interaction solves both.

Public API: `EgoSynthConfig`, `generate`, `generate_samples` (metadata only, no video),
`render_clip`, `audit`, `audit_samples`, `prior_answer`, `context_answer`, `check_answerable`,
`preview`, `write_card`, `synth_summary`, and the catalog (`SCENES`, `OBJECTS`, `DESTINATIONS`, `VERBS`, `TEMPLATES`, `object_vocabulary`).
See docs/egosynth.md.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ego3s.config import ConfigError, check_fields
from ego3s.data.egosynth_render import (
    MARGIN,
    E,
    G,
    P,
    R,
    background,
    decode_mp4,
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
from ego3s.data.io import read_jsonl, write_jsonl
from ego3s.data.schema import LETTERS, Interaction, InteractionObject, Sample, TimedBox
from ego3s.files import atomic_open, write_json, write_text

VERSION = 1
OBJ_SCALE = 1.3    # objects are drawn at this multiple of their catalog size
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
    activity: str          # "I was {activity} in the {scene}" suggests this object
    verb: str              # usual use motion (key of VERBS)
    dest: str              # usual destination (a destination of `scene`)
    size: str              # small / medium / large (for the docs)
    colour: str            # main colour (for the docs)
    parts: tuple

    def names(self) -> list[str]:
        return [self.name, *self.synonyms]


@dataclass(frozen=True)
class Destination:
    name: str
    prep: str              # "in" or "on"
    wall: bool             # mounted on the wall (upper row) or standing on the surface
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
    Destination("sink", "in", False, zone=(-0.06, -0.02, 0.06, 0.03), parts=(
        R(0, 0, 0.24, 0.11, (172, 176, 182)),
        R(0, 0.006, 0.2, 0.08, (112, 118, 126)),
        R(0, -0.07, 0.016, 0.05, (196, 198, 206)),
        R(0.018, -0.092, 0.05, 0.014, (196, 198, 206)),
    )),
    Destination("dish rack", "on", False, zone=(-0.07, -0.02, 0.07, 0.02), parts=(
        R(0, 0.045, 0.24, 0.02, (200, 200, 212)),
        R(-0.1, 0, 0.01, 0.08, (150, 150, 165)),
        R(-0.06, 0, 0.01, 0.08, (150, 150, 165)),
        R(-0.02, 0, 0.01, 0.08, (150, 150, 165)),
        R(0.02, 0, 0.01, 0.08, (150, 150, 165)),
        R(0.06, 0, 0.01, 0.08, (150, 150, 165)),
        R(0.1, 0, 0.01, 0.08, (150, 150, 165)),
    )),
    Destination("cutting board", "on", False, zone=(-0.05, -0.025, 0.07, 0.025), parts=(
        R(0, 0, 0.22, 0.1, (196, 146, 86)),
        E(-0.085, 0, 0.018, 0.018, (120, 80, 40)),
    )),
    # workshop
    Destination("toolbox", "in", False, zone=(-0.07, -0.02, 0.07, 0.03), parts=(
        R(0, 0.012, 0.22, 0.09, (205, 40, 40)),
        R(0, -0.04, 0.22, 0.02, (150, 28, 28)),
        R(0, -0.06, 0.07, 0.014, (40, 40, 40)),
    )),
    Destination("bucket", "in", False, zone=(-0.04, -0.03, 0.04, 0.03), parts=(
        P([(-0.08, -0.05), (0.08, -0.05), (0.06, 0.065), (-0.06, 0.065)], (128, 132, 146)),
        E(0, -0.05, 0.17, 0.035, (90, 92, 104)),
    )),
    Destination("pegboard", "on", True, zone=(-0.07, -0.04, 0.07, 0.04), parts=(
        R(0, 0, 0.24, 0.15, (222, 196, 150)),
        E(-0.09, -0.05, 0.012, 0.012, (120, 95, 60)),
        E(-0.09, 0.05, 0.012, 0.012, (120, 95, 60)),
        E(-0.03, -0.05, 0.012, 0.012, (120, 95, 60)),
        E(-0.03, 0.05, 0.012, 0.012, (120, 95, 60)),
        E(0.03, -0.05, 0.012, 0.012, (120, 95, 60)),
        E(0.03, 0.05, 0.012, 0.012, (120, 95, 60)),
        E(0.09, -0.05, 0.012, 0.012, (120, 95, 60)),
        E(0.09, 0.05, 0.012, 0.012, (120, 95, 60)),
    )),
    # garden
    Destination("wheelbarrow", "in", False, zone=(-0.07, -0.03, 0.07, 0.02), parts=(
        P([(-0.12, -0.04), (0.12, -0.04), (0.08, 0.05), (-0.08, 0.05)], (40, 112, 64)),
        E(0, 0.065, 0.05, 0.05, (30, 30, 30)),
        R(-0.13, 0.02, 0.08, 0.012, (120, 90, 60), 20),
    )),
    Destination("crate", "in", False, zone=(-0.06, -0.03, 0.06, 0.03), parts=(
        R(0, 0, 0.19, 0.11, (186, 136, 74)),
        R(0, -0.028, 0.19, 0.012, (132, 92, 44)),
        R(0, 0.028, 0.19, 0.012, (132, 92, 44)),
    )),
    Destination("flower bed", "in", False, zone=(-0.06, -0.025, 0.06, 0.03), parts=(
        E(0, 0, 0.26, 0.11, (104, 64, 34)),
        E(-0.09, -0.03, 0.03, 0.03, (230, 70, 90)),
        E(0.09, -0.03, 0.03, 0.03, (250, 210, 60)),
    )),
    # office
    Destination("drawer", "in", False, zone=(-0.07, -0.02, 0.07, 0.03), parts=(
        R(0, 0, 0.22, 0.1, (150, 108, 68)),
        R(0, 0.008, 0.19, 0.07, (88, 60, 36)),
        R(0, 0.055, 0.05, 0.012, (200, 200, 205)),
    )),
    Destination("in-tray", "in", False, zone=(-0.06, -0.02, 0.06, 0.02), parts=(
        R(0, 0.012, 0.2, 0.06, (60, 62, 72)),
        R(0, -0.006, 0.16, 0.04, (248, 248, 248)),
    )),
    Destination("bookshelf", "on", True, zone=(-0.05, -0.01, 0.07, 0.03), parts=(
        R(0, 0.06, 0.26, 0.022, (120, 80, 48)),
        R(-0.11, 0.02, 0.022, 0.06, (180, 40, 40)),
        R(-0.085, 0.02, 0.022, 0.06, (40, 90, 170)),
        R(0.105, 0.02, 0.022, 0.06, (60, 140, 70)),
    )),
    # bathroom
    Destination("washbasin", "in", False, zone=(-0.06, -0.02, 0.06, 0.025), parts=(
        E(0, 0, 0.24, 0.11, (252, 252, 254)),
        E(0, 0.006, 0.19, 0.075, (196, 212, 224)),
        R(0, -0.07, 0.016, 0.045, (190, 192, 200)),
    )),
    Destination("glass shelf", "on", True, zone=(-0.07, -0.01, 0.07, 0.03), parts=(
        R(0, 0.05, 0.24, 0.016, (150, 210, 222)),
        R(-0.1, 0.065, 0.014, 0.03, GREY),
        R(0.1, 0.065, 0.014, 0.03, GREY),
    )),
    Destination("laundry basket", "in", False, zone=(-0.05, -0.03, 0.05, 0.03), parts=(
        R(0, 0.01, 0.18, 0.12, (206, 172, 112)),
        R(0, -0.05, 0.19, 0.02, (160, 124, 70)),
        R(0, -0.01, 0.18, 0.006, (170, 134, 80)),
        R(0, 0.02, 0.18, 0.006, (170, 134, 80)),
        R(0, 0.05, 0.18, 0.006, (170, 134, 80)),
    )),
    # living room
    Destination("sofa", "on", False, zone=(-0.08, -0.03, 0.08, 0.03), parts=(
        R(0, -0.03, 0.28, 0.08, (62, 92, 152)),
        R(0, 0.035, 0.28, 0.05, (74, 104, 168)),
        R(-0.14, 0, 0.03, 0.11, (50, 76, 130)),
        R(0.14, 0, 0.03, 0.11, (50, 76, 130)),
    )),
    Destination("side table", "on", False, zone=(-0.05, -0.04, 0.05, 0), parts=(
        R(0, 0, 0.18, 0.025, (134, 88, 52)),
        R(-0.065, 0.05, 0.016, 0.08, (110, 70, 40)),
        R(0.065, 0.05, 0.016, 0.08, (110, 70, 40)),
    )),
    Destination("toy box", "in", False, zone=(-0.05, -0.02, 0.05, 0.03), parts=(
        R(0, 0, 0.18, 0.1, (232, 182, 44)),
        R(0, -0.042, 0.18, 0.02, (204, 62, 62)),
    )),
]
DESTINATIONS: dict[str, Destination] = {d.name: d for d in _D}

SCENES: dict[str, SynthScene] = {s.name: s for s in [
    SynthScene("kitchen", "cream tiled wall under wooden cabinets, slate granite counter",
               ("sink", "dish rack", "cutting board")),
    SynthScene("workshop", "concrete wall with a pegboard panel, plywood workbench",
               ("toolbox", "bucket", "pegboard")),
    SynthScene("garden", "blue sky over a wooden fence, lawn with a soil strip",
               ("wheelbarrow", "crate", "flower bed")),
    SynthScene("office", "pale blue wall with a window blind and a monitor, light wooden desk",
               ("drawer", "in-tray", "bookshelf")),
    SynthScene("bathroom", "small aqua tiles with a mirror, white marble vanity",
               ("washbasin", "glass shelf", "laundry basket")),
    SynthScene("living room", "warm wall with a picture, red patterned carpet",
               ("sofa", "side table", "toy box")),
]}

_O = [
    # ---- kitchen
    SynthObject("mug", ("cup", "coffee cup"), "kitchen", "making coffee",
                verb="tip", dest="dish rack", size="small", colour="red", parts=(
        G(0.045, 0, 0.045, 0.055, (196, 36, 36), 0.45),
        R(0, 0, 0.075, 0.09, (206, 40, 40)),
        E(0, -0.045, 0.075, 0.02, (96, 52, 24)),
    )),
    SynthObject("knife", ("kitchen knife", "blade"), "kitchen", "chopping vegetables",
                verb="swipe", dest="cutting board", size="medium", colour="silver", parts=(
        R(0.03, 0, 0.13, 0.026, (212, 214, 222)),
        P([(0.095, -0.013), (0.13, 0.013), (0.095, 0.013)], (212, 214, 222)),
        R(-0.075, 0, 0.07, 0.03, DARK),
    )),
    SynthObject("plate", ("dish", "dinner plate"), "kitchen", "washing up",
                verb="tip", dest="sink", size="large", colour="white", parts=(
        E(0, 0, 0.16, 0.11, (60, 92, 200)),
        E(0, 0, 0.13, 0.085, WHITE),
    )),
    SynthObject("frying pan", ("pan", "skillet"), "kitchen", "cooking breakfast",
                verb="stir", dest="sink", size="large", colour="black", parts=(
        R(0.12, 0, 0.11, 0.024, (96, 62, 32)),
        E(0, 0, 0.13, 0.12, (40, 40, 46)),
        E(0, 0, 0.1, 0.09, (74, 74, 82)),
    )),
    SynthObject("sponge", ("dish sponge", "scrubber"), "kitchen", "cleaning the counter",
                verb="stir", dest="sink", size="small", colour="yellow", parts=(
        R(0, 0.01, 0.09, 0.04, (242, 212, 52)),
        R(0, -0.02, 0.09, 0.022, (40, 150, 62)),
    )),
    # ---- workshop
    SynthObject("hammer", ("mallet", "claw hammer"), "workshop", "building a birdhouse",
                verb="tap", dest="pegboard", size="medium", colour="brown", parts=(
        R(0, 0.03, 0.026, 0.16, (164, 112, 60)),
        R(0, -0.055, 0.095, 0.036, (104, 106, 116)),
    )),
    SynthObject("screwdriver", ("flathead", "screw driver"), "workshop", "assembling a cabinet",
                verb="stir", dest="toolbox", size="small", colour="yellow", parts=(
        R(0, 0.04, 0.036, 0.07, (244, 204, 0)),
        R(0, 0.04, 0.036, 0.012, DARK),
        R(0, -0.04, 0.014, 0.09, (184, 186, 196)),
    )),
    SynthObject("wrench", ("spanner", "adjustable wrench"), "workshop", "fixing a bike",
                verb="stir", dest="toolbox", size="medium", colour="steel", parts=(
        R(0, 0, 0.026, 0.15, (166, 172, 184)),
        G(0, -0.085, 0.055, 0.055, (166, 172, 184), 0.5),
        G(0, 0.085, 0.045, 0.045, (166, 172, 184), 0.45),
    )),
    SynthObject("paint can", ("paint tin", "tin of paint"), "workshop", "painting a chair",
                verb="tip", dest="bucket", size="medium", colour="blue", parts=(
        R(0, 0, 0.09, 0.1, (40, 80, 204)),
        R(0, 0.006, 0.09, 0.04, WHITE),
        E(0, -0.05, 0.09, 0.022, (150, 150, 160)),
    )),
    SynthObject("tape measure", ("measuring tape", "tape"), "workshop", "measuring a board",
                verb="swipe", dest="pegboard", size="small", colour="yellow-black", parts=(
        R(0, 0, 0.085, 0.08, (252, 196, 0)),
        E(0, 0, 0.036, 0.036, DARK),
        R(0.05, 0.03, 0.03, 0.012, (60, 60, 60)),
    )),
    # ---- garden
    SynthObject("watering can", ("sprinkling can", "watering pot"), "garden", "watering the plants",
                verb="tip", dest="flower bed", size="large", colour="green", parts=(
        P([(0.03, 0), (0.11, -0.07), (0.125, -0.058), (0.045, 0.03)], (36, 150, 80)),
        G(-0.005, -0.055, 0.065, 0.045, (30, 128, 66), 0.55),
        R(0, 0, 0.095, 0.085, (40, 160, 86)),
    )),
    SynthObject("trowel", ("hand shovel", "garden trowel"), "garden", "digging a hole",
                verb="tap", dest="wheelbarrow", size="small", colour="grey-green", parts=(
        P([(-0.035, -0.02), (0.035, -0.02), (0, -0.11)], (150, 152, 160)),
        R(0, 0.03, 0.022, 0.07, (28, 120, 60)),
    )),
    SynthObject("flower pot", ("plant pot", "planter"), "garden", "repotting a plant",
                verb="tip", dest="crate", size="medium", colour="terracotta", parts=(
        E(0, -0.05, 0.085, 0.065, (40, 140, 44)),
        E(0, -0.075, 0.026, 0.026, (232, 60, 150)),
        P([(-0.05, -0.02), (0.05, -0.02), (0.035, 0.06), (-0.035, 0.06)], (192, 92, 50)),
    )),
    SynthObject("pruning shears", ("secateurs", "clippers"), "garden", "pruning the roses",
                verb="tap", dest="wheelbarrow", size="small", colour="red", parts=(
        R(-0.006, -0.04, 0.018, 0.075, (176, 178, 188), 12),
        R(0.006, -0.04, 0.018, 0.075, (176, 178, 188), -12),
        R(-0.022, 0.03, 0.022, 0.075, (214, 30, 30), 15),
        R(0.022, 0.03, 0.022, 0.075, (214, 30, 30), -15),
    )),
    SynthObject("seed packet", ("packet of seeds", "seeds"), "garden", "sowing seeds",
                verb="swipe", dest="crate", size="small", colour="orange", parts=(
        R(0, 0, 0.07, 0.1, (246, 132, 30)),
        E(0, 0.01, 0.046, 0.046, (252, 232, 80)),
        R(0, -0.04, 0.07, 0.016, WHITE),
    )),
    # ---- office
    SynthObject("stapler", ("desk stapler", "staple gun"), "office", "filing paperwork",
                verb="tap", dest="in-tray", size="medium", colour="black", parts=(
        R(0, 0.016, 0.14, 0.022, (70, 70, 76)),
        R(-0.006, -0.008, 0.13, 0.03, (22, 22, 26)),
    )),
    SynthObject("pen", ("ballpoint", "biro"), "office", "signing a form",
                verb="swipe", dest="drawer", size="small", colour="blue", parts=(
        R(0.01, 0, 0.13, 0.02, (32, 64, 204)),
        R(-0.06, 0, 0.04, 0.024, (20, 24, 120)),
        P([(0.075, -0.01), (0.095, 0), (0.075, 0.01)], (200, 200, 200)),
    )),
    SynthObject("notebook", ("notepad", "jotter"), "office", "taking notes",
                verb="swipe", dest="bookshelf", size="medium", colour="purple", parts=(
        R(0, 0, 0.11, 0.14, (122, 50, 162)),
        R(0.05, 0, 0.012, 0.13, (250, 250, 240)),
        R(0, -0.03, 0.06, 0.026, WHITE),
    )),
    SynthObject("scissors", ("pair of scissors", "snips"), "office", "wrapping a parcel",
                verb="tap", dest="drawer", size="small", colour="orange", parts=(
        R(-0.008, -0.035, 0.015, 0.09, (192, 194, 204), 6),
        R(0.008, -0.035, 0.015, 0.09, (192, 194, 204), -6),
        G(-0.022, 0.04, 0.036, 0.036, (242, 122, 20), 0.5),
        G(0.022, 0.04, 0.036, 0.036, (242, 122, 20), 0.5),
    )),
    SynthObject("computer mouse", ("mouse", "wireless mouse"), "office", "editing a spreadsheet",
                verb="swipe", dest="in-tray", size="small", colour="grey", parts=(
        E(0, 0, 0.062, 0.092, (194, 194, 200)),
        R(0, -0.025, 0.006, 0.04, (90, 90, 96)),
        E(0, -0.02, 0.014, 0.02, (60, 60, 64)),
    )),
    # ---- bathroom
    SynthObject("toothbrush", ("tooth brush", "brush"), "bathroom", "brushing my teeth",
                verb="swipe", dest="glass shelf", size="small", colour="cyan", parts=(
        R(0, 0.02, 0.018, 0.14, (40, 200, 222)),
        R(0, -0.06, 0.028, 0.036, (252, 252, 252)),
    )),
    SynthObject("soap bar", ("bar of soap", "soap"), "bathroom", "washing my hands",
                verb="stir", dest="washbasin", size="small", colour="pink", parts=(
        E(0, 0, 0.09, 0.055, (250, 150, 182)),
        E(-0.01, -0.008, 0.05, 0.022, (252, 196, 214)),
    )),
    SynthObject("towel", ("hand towel", "bath towel"), "bathroom", "drying my face",
                verb="stir", dest="laundry basket", size="large", colour="teal", parts=(
        R(0, 0, 0.16, 0.11, (30, 150, 152)),
        R(0, -0.034, 0.16, 0.014, WHITE),
        R(0, 0.034, 0.16, 0.014, WHITE),
    )),
    SynthObject("shampoo bottle", ("shampoo", "bottle of shampoo"), "bathroom", "getting ready for a shower",
                verb="tip", dest="glass shelf", size="medium", colour="orange", parts=(
        R(0, 0.012, 0.06, 0.12, (252, 142, 30)),
        E(0, -0.045, 0.06, 0.03, (252, 142, 30)),
        R(0, -0.064, 0.03, 0.022, WHITE),
        R(0, 0.02, 0.04, 0.03, WHITE),
    )),
    SynthObject("comb", ("hair comb", "pocket comb"), "bathroom", "fixing my hair",
                verb="swipe", dest="glass shelf", size="small", colour="black", parts=(
        R(0, -0.016, 0.14, 0.022, DARK),
        R(-0.06, 0.006, 0.009, 0.026, DARK),
        R(-0.036, 0.006, 0.009, 0.026, DARK),
        R(-0.012, 0.006, 0.009, 0.026, DARK),
        R(0.012, 0.006, 0.009, 0.026, DARK),
        R(0.036, 0.006, 0.009, 0.026, DARK),
        R(0.06, 0.006, 0.009, 0.026, DARK),
    )),
    # ---- living room
    SynthObject("remote control", ("remote", "tv remote"), "living room", "watching tv",
                verb="tap", dest="sofa", size="small", colour="black", parts=(
        R(0, 0, 0.046, 0.13, (26, 26, 32)),
        E(0, -0.045, 0.02, 0.02, (224, 30, 30)),
        R(0, 0.022, 0.026, 0.04, (112, 112, 124)),
    )),
    SynthObject("book", ("novel", "paperback"), "living room", "reading",
                verb="swipe", dest="side table", size="medium", colour="green", parts=(
        R(0, 0, 0.12, 0.15, (40, 122, 62)),
        R(-0.055, 0, 0.016, 0.15, (20, 72, 32)),
        R(0.058, 0, 0.008, 0.14, (246, 240, 220)),
        R(0.005, -0.04, 0.07, 0.016, (232, 202, 60)),
    )),
    SynthObject("cushion", ("pillow", "throw pillow"), "living room", "tidying the sofa",
                verb="tap", dest="sofa", size="large", colour="violet", parts=(
        R(0, 0, 0.15, 0.13, (142, 62, 172)),
        E(0, 0, 0.022, 0.022, (92, 32, 122)),
    )),
    SynthObject("game controller", ("gamepad", "joypad"), "living room", "playing a video game",
                verb="swipe", dest="toy box", size="medium", colour="dark grey", parts=(
        E(-0.04, 0.012, 0.05, 0.065, (72, 72, 84)),
        E(0.04, 0.012, 0.05, 0.065, (72, 72, 84)),
        R(0, -0.006, 0.08, 0.046, (72, 72, 84)),
        E(0.04, -0.01, 0.014, 0.014, (52, 204, 84)),
        E(-0.04, -0.01, 0.014, 0.014, (210, 210, 210)),
    )),
    SynthObject("candle", ("wax candle", "pillar candle"), "living room", "relaxing in the evening",
                verb="tip", dest="side table", size="small", colour="ivory", parts=(
        R(0, 0.012, 0.046, 0.09, (250, 244, 222)),
        R(0, -0.04, 0.004, 0.012, DARK),
        E(0, -0.056, 0.018, 0.03, (255, 170, 30)),
    )),
]
OBJECTS: dict[str, SynthObject] = {o.name: o for o in _O}
SCENE_NAMES: tuple[str, ...] = tuple(SCENES)
SCENE_OBJECTS: dict[str, tuple[str, ...]] = {s: tuple(o.name for o in _O if o.scene == s) for s in SCENES}
ACTIVITY_OBJECT: dict[str, str] = {o.activity: o.name for o in _O}

# Hands, in local units around the grip point (where a held object's centre is); the fingers
# point up (-y). The right hand is seen from above: thumb on the left. The left hand mirrors it.
SKIN_TONES = ((241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (96, 58, 36), (255, 214, 170))
SLEEVES = ((40, 60, 110), (140, 30, 40), (60, 60, 64), (30, 110, 90), (200, 200, 196), (110, 80, 150), (210, 140, 40))


def hand_parts(skin, sleeve, grip: bool) -> tuple[tuple, tuple]:
    """(skin parts, sleeve parts) of a right hand."""
    lf = 0.042 if grip else 0.07
    fingers = tuple(R(x, -0.005 - lf / 2 + 0.03 + dy, 0.019, lf, skin)
                    for x, dy in ((-0.033, 0.006), (-0.011, -0.004), (0.011, -0.002), (0.033, 0.01)))
    skin_parts = (R(0, 0.125, 0.072, 0.06, skin), E(0, 0.06, 0.1, 0.105, skin),
                  R(-0.056, 0.045, 0.022, 0.06, skin, -35), *fingers)
    sleeve_parts = (R(0, 0.6, 0.11, 0.92, sleeve),)
    return skin_parts, sleeve_parts


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


VERB_BASE = {"swipe": "move side to side", "tap": "tap up and down", "stir": "move in circles",
             "tip": "tip over to pour"}

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


# =============================================================================================
# Configuration

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


@dataclass(frozen=True)
class EgoSynthConfig:
    """What a dataset is generated from. Same config -> same JSONL bytes and same frames."""

    seed: int = field(default=0,
                      metadata={"help": "master seed; sample i of split s uses SeedSequence([seed, crc32(s), i])"})
    train: int = field(default=12000, metadata={"help": "training pool size (p_typical)"})
    test: int = field(default=1000,
                      metadata={"help": "size of each test split: test_id (p_typical) and test_atypical (0.0)"})
    probe: int = field(default=1000, metadata={"help": "probe split for curriculum re-scoring (p_typical)"})
    p_typical: float = field(default=0.7, metadata={"help": "share of typical interactions in train, test_id, probe"})
    frames: int = field(default=12, metadata={"help": "frames per clip (>= 8)"})
    fps: float = field(default=4.0, metadata={"help": "frames per second of the clips"})
    size: int = field(default=168, metadata={"help": "frame side in pixels (even; multiples of 28 suit Qwen2.5-VL)"})
    closed_share: float = field(default=0.5, metadata={"help": "share of closed (4-option) questions"})
    use_share: float = field(default=0.35,
                             metadata={"help": "share of clips where the object is used before it is put down "
                                                              "(all clips asked 'what did I do with X')"})
    scenes: int = field(default=6, metadata={
        "help": "scenes in use: the first N of the catalog (kitchen, workshop, garden, office, bathroom, living room)"})
    objects_per_scene: int = field(default=5, metadata={
        "help": "objects in use per scene: each scene's first N typical objects (docs/egosynth.md, Catalog); an "
                "atypical object comes from another scene in use"})
    object_scale: float = field(default=1.0, metadata={
        "help": "objects (held and lying) drawn at this multiple of their default size; boxes follow"})
    max_distractors: int = field(default=4, metadata={
        "help": "most objects lying in the scene besides the theme's two copies (drawn from min(2, N) to N)"})
    crf: int = field(default=26, metadata={"help": "x264 constant rate factor (quality of the mp4s)"})
    preset: str = field(default="superfast", metadata={"help": "x264 preset (speed / file size trade-off)"})

    def splits(self) -> list[tuple[str, int, float]]:
        return [("train", self.train, self.p_typical), ("test_id", self.test, self.p_typical),
                ("test_atypical", self.test, 0.0), ("probe", self.probe, self.p_typical)]

    def __post_init__(self):
        for name in ("train", "test", "probe"):
            if not isinstance(getattr(self, name), int):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not an integer >= 0")
        check_fields(self, choices={"preset": X264_PRESETS},
                     ranges={"train": "[0, inf)", "test": "[0, inf)", "probe": "[0, inf)", "p_typical": "[0, 1]",
                             "closed_share": "[0, 1]", "use_share": "[0, 1]", "frames": "[8, 64]", "fps": "(0, inf)",
                             "size": "[56, inf)", "crf": "[0, 51]", "seed": "[0, inf)",
                             "scenes": f"[2, {len(SCENE_NAMES)}]", "objects_per_scene": "[2, 5]",
                             "object_scale": "(0, 3]", "max_distractors": "[0, 4]"})
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
        out = {}
        for name, default in (("scenes", len(SCENE_NAMES)), ("objects_per_scene", 5), ("object_scale", 1.0),
                              ("max_distractors", 4)):
            if getattr(self, name) != default:
                out[name] = getattr(self, name)
        return out

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
    dests: list                       # [(name, x, y)] in world units
    distractors: list                 # [(name, x, y, angle_rad)]
    c0: int
    c1: int
    use_frames: list
    cam: np.ndarray                   # (T, 4): cx, cy, roll, zoom
    attach: np.ndarray                # (T, 2): the hand's grip point in world units
    alpha: np.ndarray                 # (T,): hand direction (0 = fingers up, clockwise)
    obj_pose: np.ndarray              # (T, 3): object x, y (world), angle (rad, world)
    idle_bob: np.ndarray              # (T,)
    variant: int
    flip: bool
    gain: tuple
    skin: tuple
    sleeve: tuple
    hscale: float
    obj_scale: float = 1.0            # EgoSynthConfig.object_scale


@cache
def catalog_of(scenes: int = 6, objects_per_scene: int = 5) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The first `scenes` scenes and each one's first `objects_per_scene` typical objects."""
    names = SCENE_NAMES[:scenes]
    return names, {sc: SCENE_OBJECTS[sc][:objects_per_scene] for sc in names}


def _meta_catalog(m: dict) -> dict[str, tuple[str, ...]]:
    """{scene: objects in use} of the world a sample was generated in (its `meta.generator`)."""
    gen = m.get("generator") or {}
    return catalog_of(int(gen.get("scenes", len(SCENE_NAMES))), int(gen.get("objects_per_scene", 5)))[1]


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
        pool = [o for o in (pool_t if use_t else pool_a) if o not in wanted] or \
               [o for o in pool_t + pool_a if o not in wanted]
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
    cx = 0.5 + rng.uniform(0.005, 0.022) * np.sin(2 * math.pi * rng.uniform(0.3, 0.8) * u + ph[0]) \
        + rng.uniform(-0.03, 0.03) * (u - 0.5) + rng.normal(0, 0.003, T)
    cy = 0.5 + rng.uniform(0.005, 0.022) * np.sin(2 * math.pi * rng.uniform(0.3, 0.8) * u + ph[1]) \
        + rng.uniform(-0.03, 0.03) * (u - 0.5) + rng.normal(0, 0.003, T)
    roll = np.radians(rng.uniform(-2, 2) + rng.uniform(-2, 2) * np.sin(math.pi * u + ph[2]))
    zoom = rng.uniform(0.97, 1.03) + rng.uniform(-0.04, 0.04) * u
    cam = np.stack([cx, cy, roll, zoom], axis=1)

    pl = _Plan(split=split, index=index, p_typical=p_typical, scene=scene, typical=typical, kind=kind, closed=closed,
               obj=obj, theme=theme, hand=hand, idle=bool(rng.random() < 0.4), dest=dest, action=action, verb=verb,
               dests=dests, distractors=distractors, c0=c0, c1=c1, use_frames=use_frames, cam=cam, attach=attach,
               alpha=alpha, obj_pose=obj_pose, idle_bob=0.012 * np.sin(2 * math.pi * u + rng.uniform(0, 6.3)),
               variant=int(rng.integers(3)), flip=bool(rng.random() < 0.5),
               gain=tuple(float(v) for v in rng.uniform(0.88, 1.08) * rng.uniform(0.96, 1.04, 3)),
               skin=_pick(rng, SKIN_TONES), sleeve=_pick(rng, SLEEVES), hscale=float(rng.uniform(0.9, 1.1)),
               obj_scale=cfg.object_scale)
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
        out.append(p[:i] + (col,) + p[i + 1:])
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
    out.append((pl.obj, place(_parts("obj", pl.obj, pl.gain), ix * size, iy * size, oa - roll,
                                                                zoom * size * OBJ_SCALE * pl.obj_scale),
                True))
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
            prims = place(_parts("obj", name, pl.gain), ix * cfg.size, iy * cfg.size, a - float(cam[2]),
                          float(cam[3]) * cfg.size * OBJ_SCALE * pl.obj_scale)
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
    q = text.format(scene=pl.scene, activity=activity, dest=d.name, prep=d.prep, obj=obj_name, hand=pl.hand,
                    t=_fmt_t(hold_t) if hold_t is not None else "")
    cues = {"scene": "{scene}" in text, "activity": activity,
            "destination": d.name if "{dest}" in text else None,
            "object": pl.obj if "{obj}" in text else None, "hand": pl.hand if "{hand}" in text else None}

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
    return dict(template=template, question=q, task="closeqa", options=options, answer=LETTERS[gold], cues=cues,
                hold_t=hold_t)


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
        "source": "egosynth", "split": pl.split, "scene": pl.scene, "typical": pl.typical, "template": qa["template"],
        "kind": pl.kind, "object": pl.obj, "hand": pl.hand, "destination": pl.dest, "action": pl.action,
        "verb": pl.verb, "theme": pl.theme, "distractors": [n for n, *_ in pl.distractors],
        "cues": qa["cues"],
        "gt": {"contact_frames": [pl.c0, pl.c1], "use_frames": pl.use_frames,
               "object_angles": [round(math.degrees(a), 2) for a in pl.obj_pose[:, 2]],
               "dest_box": _zone_box(pl, pl.c1),
               "release_xy": [round(v, 4) for v in to_image(*pl.obj_pose[pl.c1, :2], pl.cam[pl.c1])],
               "hold_t": qa["hold_t"], "idle_hand": pl.idle, "scene_objects": _scene_boxes(pl, cfg)},
        "generator": {"name": "egosynth", "version": VERSION, "seed": cfg.seed, "index": pl.index,
                      "p_typical": pl.p_typical, "frames": T, "fps": cfg.fps, "size": size, **cfg.world()},
    }
    inter = Interaction(objects=[InteractionObject(o.name, list(o.synonyms))], action=action, boxes=boxes,
                        contact=[round(pl.c0 / cfg.fps, 4), round(pl.c1 / cfg.fps, 4)])
    return Sample(id=f"egosynth-{pl.split}-{pl.index:05d}", question=qa["question"], answer=qa["answer"],
                  task=qa["task"], options=qa["options"], video=f"videos/{pl.split}_{pl.index:05d}.mp4",
                  start=0.0, end=round(T / cfg.fps, 4), interaction=inter, meta=meta)


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
        draw(canvas, place(_parts("obj", name, pl.gain), (x + MARGIN) * size, (y + MARGIN) * size, a,
                                size * OBJ_SCALE * pl.obj_scale))
    packed = np.empty((T, size, size), np.uint32)
    all_masks = []
    for f in range(T):
        img = warp(canvas, size, *(float(v) for v in pl.cam[f]))
        fm = {}
        for label, prims, outline in (geos[f] if geos else _geometry(pl, f, size)):
            draw(img, prims, outline)
            if masks and label is not None:
                m = np.zeros((size, size), bool)
                for p in prims:
                    r = prim_mask(p, size, size)
                    if r is not None:
                        i0, j0, mk = r
                        m[i0:i0 + mk.shape[0], j0:j0 + mk.shape[1]] |= mk
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


# =============================================================================================
# The dataset folder

_IDENTITY_EXCLUDE = ("train", "test", "probe")  # growing a split keeps every existing sample


def generate(out: str | os.PathLike, config: EgoSynthConfig | None = None, *, workers: int | None = None,
             audit: bool = True, preview: bool = False, render: bool = True,
             log: Callable[[str], None] | None = print) -> dict:
    """Write an EgoSynth dataset folder: `videos/*.mp4`, `<split>.jsonl` for train, test_id,
    test_atypical and probe, `config.json`, `audit.json` and `card.md` (and `preview.png` with
    `preview`). Deterministic by `config.seed`; resumable: videos already present are kept (each
    mp4 is written atomically), so an interrupted run continues where it stopped. A folder made
    with different settings (other than the split sizes) is refused. Returns a summary dict."""
    cfg = config or EgoSynthConfig()
    out = Path(out)
    vdir = out / "videos"
    vdir.mkdir(parents=True, exist_ok=True)
    ident = {"generator": "egosynth", "version": VERSION,
             **{k: v for k, v in asdict(cfg).items() if k not in _IDENTITY_EXCLUDE}}
    cfg_path = out / "config.json"
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text(encoding="utf-8")).get("identity", {})
        except (json.JSONDecodeError, AttributeError):
            old = {}
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            raise ValueError(f"{cfg_path}: this folder holds an EgoSynth dataset made with other settings "
                             f"({', '.join(f'{k}: {old.get(k)!r} -> {ident.get(k)!r}' for k in diff)}); "
                             f"write to a new folder")
    write_json(cfg_path, {"identity": ident, "config": asdict(cfg)})
    for stale in vdir.glob(".*.tmp"):  # temp files of an interrupted run
        stale.unlink(missing_ok=True)

    tasks = [(cfg, split, i, p, str(out), render) for split, n, p in cfg.splits() for i in range(n)]
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    by_split: dict[str, list[Sample]] = {name: [] for name, _, _ in cfg.splits()}
    written = 0
    t0 = time.perf_counter()
    step = max(1, len(tasks) // 10)

    def _collect(results):
        nonlocal written
        for k, (s, wrote) in enumerate(results, start=1):
            by_split[s.meta["split"]].append(s)
            written += wrote
            if log and (k % step == 0 or k == len(tasks)):
                dt = time.perf_counter() - t0
                log(f"egosynth: {k}/{len(tasks)} samples, {written} videos written, {dt:.0f} s")

    if workers == 1 or len(tasks) < 2 * workers:
        _collect(map(_work, tasks))
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(workers) as pool:
            _collect(pool.imap(_work, tasks, chunksize=max(1, min(32, len(tasks) // (workers * 8) or 1))))
    seconds = time.perf_counter() - t0
    for split, samples in by_split.items():
        write_jsonl(out / f"{split}.jsonl", samples)
    summary = {"out": str(out), "samples": {k: len(v) for k, v in by_split.items()}, "videos_written": written,
               "videos_skipped": (len(tasks) - written) if render else 0, "seconds": round(seconds, 1),
               "clips_per_s": round(written / seconds, 1) if written and seconds > 0 else None, "workers": workers}
    write_json(out / "generation.json", summary)
    result = None
    if audit:  # the parameters shadow the module's audit() and preview()
        result = _audit_dataset(out)
    else:
        write_card(out, None)
    if preview:
        _preview_dataset(out, out / "preview.png")
        summary["preview"] = str(out / "preview.png")
    summary["audit"] = result
    return summary


def synth_summary(summary: dict) -> str:
    """The lines `ego3s synth` prints."""
    lines = [f"EgoSynth dataset in {summary['out']}"]
    lines.append("  " + ", ".join(f"{k}: {v}" for k, v in summary["samples"].items()))
    speed = f", {summary['clips_per_s']} clips/s" if summary.get("clips_per_s") else ""
    lines.append(f"  videos written: {summary['videos_written']} "
                 f"(kept from an earlier run: {summary['videos_skipped']}) "
                 f"in {summary['seconds']} s with {summary['workers']} worker(s){speed}")
    a = summary.get("audit")
    if a:
        lines.append("  shortcut audit (accuracy of oracles that never see the interaction):")
        for split, r in a["splits"].items():
            if r.get("n"):
                lines.append(f"    {split:<14} typical {r['typical_share']:.3f}   "
                             f"prior-only {r['prior_only']['all']:.3f}   "
                             f"context-only {r['context_only']['all']:.3f}   (closed questions: "
                             f"{_fmt(r['prior_only']['closeqa'])} / {_fmt(r['context_only']['closeqa'])}, chance 0.25)")
    if summary.get("preview"):
        lines.append(f"  preview: {summary['preview']}")
    return "\n".join(lines)


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
            "all": acc(lambda s: True), "closeqa": acc(lambda s: s.task == "closeqa"),
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
            ok = {"swipe": xr >= 0.08 and yr < 0.4 * xr, "tap": yr >= 0.08 and xr < 0.4 * yr,
                  "stir": min(xr, yr) >= 0.06 and min(xr, yr) >= 0.5 * max(xr, yr),
                  "tip": tilt >= 40 and max(xr, yr) < 0.12}.get(v, False)
            if not ok:
                p.append(f"use motion {v!r} not visible in the object's track (x range {xr:.3f}, y range {yr:.3f}, "
                         f"tilt {tilt:.0f} deg)")
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


def preview(dataset_dir: str | os.PathLike, out_png: str | os.PathLike, n: int = 6, *,
            splits: Sequence[str] = ("test_id", "test_atypical", "train", "probe")) -> Path:
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
                    dr.rectangle([x0 * w, y0 * h, max(x0 * w, x1 * w - 1), max(y0 * h, y1 * h - 1)],
                                 outline=_BOX_COLOURS.get(b.label, (255, 230, 0)), width=2)
            dr.text((3, 2), f"t={f / fps:.2f}s", fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
            row.paste(im, (k * (w + 2), 0))
        m = s.meta
        lines = [f"{s.id}", f"{m['scene']} | {'typical' if m['typical'] else 'ATYPICAL'} | {m['template']} | {s.task}",
                 *_wrap("Q: " + s.question, 58)]
        if s.options:
            lines += [f"  {'*' if LETTERS[i] == s.answer else ' '}{LETTERS[i]}. {o}" for i, o in enumerate(s.options)]
        lines.append(f"A: {s.answer_text}" + (f" ({s.answer})" if s.task == "closeqa" else ""))
        lines.append(f"truth: {m['hand']} hand, {m['object']} -> {DESTINATIONS[m['destination']].phrase}"
                     + (f", {m['verb']}" if m.get("verb") else ""))
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
        sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(fh, format="PNG",
                                                                                                   optimize=True)
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
    L = ["# EgoSynth dataset card", "",
         "Procedurally generated egocentric clips (ego3s EgoSynth, generator version "
         f"{VERSION}): a scene with its typical objects, camera egomotion, a hand that grasps one object, "
         "optionally uses it, and puts it somewhere; one question per clip (closed, 4 options, or open).",
         "Shortcuts exist by construction: a *typical* sample follows every prior (object typical for the "
         "scene, usual destination, usual use, right hand; two more of the object lie in view), an atypical "
         "one breaks them all. See docs/egosynth.md in ego3s.", "",
         "## Generation", "", "| setting | value |", "|---|---|"]
    L += [f"| {k} | {v} |" for k, v in cfg.items()]
    if gen:
        L += ["", f"Written with {gen.get('workers')} worker(s) in {gen.get('seconds')} s "
                  f"({gen.get('videos_written')} videos written, {gen.get('videos_skipped')} kept"
                  + (f", {gen['clips_per_s']} clips/s" if gen.get("clips_per_s") else "") + ")."]
    L += ["", "## Files", "",
          "- `videos/<split>_<index>.mp4`: H.264, yuv420p; frame i is at i / fps seconds.",
          "- `<split>.jsonl`: ego3s samples (`ego3s.data.read_jsonl`); `interaction` has the object with its "
          "synonyms, the action, per-frame boxes of the object and visible hands, and the contact span; `meta` "
          "has scene, typical, split, template, kind, hand, destination, action, verb, the visible distractors "
          "and the generator's ground truth (`gt`).",
          "- `audit.json`: the shortcut audit below; `config.json`: the generation settings."]
    if audit_result:
        L += ["", "## Shortcut audit", "",
              "Accuracy of two oracles that never look at the hand-object interaction. *Prior-only*: the "
              "question text and the scene (the activity's object, the scene's typical option, the named "
              "object's usual destination / use, the right hand). *Context-only*: the scene and the objects "
              "lying in it (the most frequent scene-typical distractor). Closed-question chance is 0.25.", "",
              "| split | n | typical share | prior-only | (closed / open) | context-only | (closed / open) |",
              "|---|---|---|---|---|---|---|"]
        for split, r in audit_result["splits"].items():
            if not r.get("n"):
                continue
            po, co = r["prior_only"], r["context_only"]
            L.append(f"| {split} | {r['n']} | {_fmt(r['typical_share'])} | {_fmt(po['all'])} | {_fmt(po['closeqa'])} / "
                     f"{_fmt(po['openqa'])} | {_fmt(co['all'])} | {_fmt(co['closeqa'])} / {_fmt(co['openqa'])} |")
        first = next((r for r in audit_result["splits"].values() if r.get("n")), None)
        if first:
            L += ["", "By question kind (prior-only / context-only):", "",
                  "| split | " + " | ".join(KIND_WEIGHTS) + " |", "|---|" + "---|" * len(KIND_WEIGHTS)]
            for split, r in audit_result["splits"].items():
                if r.get("n"):
                    L.append(f"| {split} | " + " | ".join(
                        f"{_fmt(r['prior_only']['by_kind'][k])} / {_fmt(r['context_only']['by_kind'][k])}"
                        for k in KIND_WEIGHTS) + " |")
    path = d / "card.md"
    write_text(path, "\n".join(L) + "\n")
    return path


_audit_dataset, _preview_dataset = audit, preview
