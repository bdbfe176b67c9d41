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
See docs/egosynth.md. Modules: `catalog` (what the world holds), `world` (one clip from its seed),
`dataset` (the folder), `audit` (oracles, answerability checker, preview, card).
"""

# ruff: noqa: F401  (the package's names, private ones included, stay importable from ego3s.data.egosynth)

from ego3s.data.egosynth_render import decode_mp4, to_rgb

from .audit import (
    _BOX_COLOURS,
    _audit_dataset,
    _centre,
    _closed_pick,
    _correct,
    _fmt,
    _inter,
    _norm,
    _preview_dataset,
    _wrap,
    audit,
    audit_samples,
    check_answerable,
    context_answer,
    preview,
    prior_answer,
    write_card,
)
from .catalog import (
    _D,
    DARK,
    DESTINATIONS,
    GREY,
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
    WHITE,
    Destination,
    SynthObject,
    SynthScene,
    hand_parts,
)
from .dataset import _IDENTITY_EXCLUDE, generate, synth_summary
from .objects import _O, ACTIVITY_OBJECT, OBJECTS, SCENE_NAMES, SCENE_OBJECTS, _check_catalog, object_vocabulary
from .world import (
    X264_PRESETS,
    EgoSynthConfig,
    _box,
    _circle_rect_gap,
    _fmt_t,
    _geometry,
    _local_extent,
    _meta_catalog,
    _parts,
    _pick,
    _Plan,
    _plan,
    _question,
    _radius,
    _render,
    _rng,
    _sample,
    _scene_boxes,
    _tint,
    _weighted,
    _work,
    _zone_box,
    catalog_of,
    generate_samples,
    render_clip,
)
