"""Ego4D builder: the OpenQA + CloseQA training subset, from Ego4D's published annotation files.

Inputs (the `annotations/` folder the `ego4d` CLI downloads; see docs/ego4d.md):
- `nlq_<split>.json`  Natural Language Queries: the questions and their answer windows;
- `fho_main.json`     Forecasting Hands & Objects (v2): hand / object boxes on the critical frames
                      of narrated actions (v1 `fho_scod_<split>.json` is read when it is absent);
- `narration.json`    optional: the narration nearest the answer window, and a verb fallback;
- `ego4d.json`        optional (in the folder or beside it): scenarios, durations, frame rates.

How a sample is made from one NLQ language query (the rules are the constants below):
1. The template decides where the answer comes from. NLQ gives a question and a time window,
   never the answer itself, so only templates whose answer is an *object the hands handle*
   are usable:
   - `interaction` templates ("What did I put in X?", "What X did I Y?"): the question is the
     query text; the answer is the object of change of the FHO action nearest the window whose
     verb matches the query's verb (X itself, the container or category, is excluded);
   - `slot` templates ("Where did I put X?", "Where is object X?", ...): X names the object but
     the query asks for a place, so the query is re-asked as "Which object did I <verb>?" and X
     is the answer; an FHO action near the window must involve X (name, synonym or head noun).
   The other templates (counts, states, attributes, people) have no annotated answer: dropped.
2. The interaction (objects, action, boxes, contact span) is that FHO action's: pixel boxes are
   normalised by the video's width/height and clipped to [0, 1]; frames become seconds with
   the video's fps.
3. The clip window is the answer window united with the action's span, padded by
   `context_sec` and clamped to the video (or to the NLQ clip with the `clips` layout).
4. Closed questions get `num_options - 1` distractors: other objects of the same video, then of
   videos of the same scenario, then of the whole vocabulary; never a name equal to the answer
   (or its synonyms, or the question's own object) after normalising case, articles and plurals.

Malformed files raise `Ego4DFormatError` naming the file, the record path
(`videos[3].clips[0].annotations[1].language_queries[2]`) and the field. Records that are
legitimately unusable are dropped and counted by reason in the report.
"""

from __future__ import annotations

from ego3s.data.ego4d.annotations import load_fho_main, load_fho_scod, load_metadata, load_narrations, load_nlq
from ego3s.data.ego4d.build import build_ego4d, summary
from ego3s.data.ego4d.config import (
    CANONICAL_FPS,
    DROP_REASONS,
    FRAME_TYPES,
    HAND_TYPES,
    LAYOUTS,
    OBJECT_TYPES,
    TEMPLATE_ANSWERS,
    Ego4DConfig,
    Ego4DFormatError,
)
from ego3s.data.ego4d.names import clean_name, same_name

__all__ = [
    "CANONICAL_FPS",
    "DROP_REASONS",
    "FRAME_TYPES",
    "HAND_TYPES",
    "LAYOUTS",
    "OBJECT_TYPES",
    "TEMPLATE_ANSWERS",
    "Ego4DConfig",
    "Ego4DFormatError",
    "build_ego4d",
    "clean_name",
    "load_fho_main",
    "load_fho_scod",
    "load_metadata",
    "load_narrations",
    "load_nlq",
    "same_name",
    "summary",
]
