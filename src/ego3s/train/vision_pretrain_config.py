"""The settings of the vision tower's pretraining (`ego3s.train.vision_pretrain`), in a module of
their own so that the warm-up's config, the pipeline's config and `--help` load without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from ego3s.config import check_fields


@dataclass
class VisionPretrainConfig:
    """The vision tower alone on the interaction annotations before the QA warm-up
    (ego3s.train.vision_pretrain); frames as the warm-up samples them."""

    steps: int = field(default=0, metadata={"help": "optimizer steps (0: no vision pretraining)"})
    batch_size: int = field(default=16, metadata={"help": "clips per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate (tower and heads)"})
    box_weight: float = field(default=1.0, metadata={"help": "weight of the dense box loss against the object loss"})
    held_out: int = field(
        default=200,
        metadata={"help": "clips kept out of training to measure object accuracy under the full and context views"},
    )
    workers: int = field(default=4, metadata={"help": "processes that decode the clips (0: in the main process)"})
    data: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of the clips to pretrain on (default: the warm-up's own data); a pool with more atypical "
            "clips teaches the tower the hand while the QA warm-up keeps its data's priors"
        },
    )
    lm_align: float = field(
        default=0.0,
        metadata={
            "help": "weight of the name alignment: merged tokens on the object's box trained towards the object "
            "name's input embedding in the language model (0: off)"
        },
    )
    context_share: float = field(
        default=0.0,
        metadata={
            "help": "share of the typical clips (meta `typical`: the scene shows the object) trained in the context "
            "view, interaction masked, on the object loss alone: the tower learns to find the object in the "
            "scene too, which CSM's fine filter needs the base to do (docs/notes/gpu_studies_2026-11.md, the 2026-11-26 scene-fallback study)"
        },
    )
    scene_align: float = field(
        default=0.0,
        metadata={
            "help": "weight of the name alignment of the objects lying in the scene: merged tokens on their boxes "
            "(meta gt.scene_objects, EgoSynth) trained towards their names' input embeddings, as lm_align "
            "does for the grasped object (0: off)"
        },
    )

    def __post_init__(self):
        check_fields(
            self,
            ranges={
                "steps": "[0, inf)",
                "batch_size": "[1, inf)",
                "learning_rate": "(0, inf)",
                "box_weight": "[0, inf)",
                "held_out": "[0, inf)",
                "workers": "[0, inf)",
                "lm_align": "[0, inf)",
                "context_share": "[0, 1]",
                "scene_align": "[0, inf)",
            },
        )
