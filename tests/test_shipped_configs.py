"""Every YAML under configs/ loads into the config class of the command its first line names, so
a renamed or misspelt key fails here and not at the start of a user's long job."""

from __future__ import annotations

import pytest

from ego3s.config import load_config
from ego3s.data.ego4d import Ego4DConfig
from ego3s.data.egosynth import EgoSynthConfig
from ego3s.eval.run import EvalConfig
from ego3s.pipeline import RunConfig
from ego3s.rl.run import TrainingConfig
from ego3s.select.run import SelectionConfig
from ego3s.train.sft import SFTRunConfig
from helpers import REPO

CONFIGS = REPO / "configs"
CLASSES = {
    "demo.yaml": RunConfig,
    "ego3s.yaml": RunConfig,
    "egosynth_gpu.yaml": RunConfig,
    "egosynth_repro.yaml": RunConfig,
    "selection_config.yaml": SelectionConfig,
    "training_config.yaml": TrainingConfig,
    "sft_config.yaml": SFTRunConfig,
    "evaluation_config.yaml": EvalConfig,
    "egosynth_config.yaml": EgoSynthConfig,
    "ego4d_config.yaml": Ego4DConfig,
}


def test_every_shipped_config_is_listed():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_shipped_config_loads(name):
    cfg = load_config(CLASSES[name], CONFIGS / name)
    assert isinstance(cfg, CLASSES[name])


# a stage's shipped config (configs/<stage>_config.yaml) and the command that reads it
STAGE_COMMANDS = {
    "egosynth_config.yaml": "synth",
    "ego4d_config.yaml": "build-ego4d",
    "selection_config.yaml": "select",
    "training_config.yaml": "train",
    "sft_config.yaml": "sft",
    "evaluation_config.yaml": "eval",
}


@pytest.mark.parametrize("name", sorted(STAGE_COMMANDS))
def test_a_stage_config_opens_with_its_command(name):
    assert set(STAGE_COMMANDS) == {n for n in CLASSES if n.endswith("_config.yaml")}
    first = (CONFIGS / name).read_text().splitlines()[0]
    assert first.startswith(f"# ego3s {STAGE_COMMANDS[name]} --config configs/{name}")
