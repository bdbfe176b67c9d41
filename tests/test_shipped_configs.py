"""Every YAML under configs/ loads into the config class of the command its first line names, so
a renamed or misspelt key fails here and not at the start of a user's long job."""

from __future__ import annotations

import pytest

from ego3s.config import load_config
from ego3s.pipeline import RunConfig
from ego3s.rl.train import TrainingConfig
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
}


def test_every_shipped_config_is_listed():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_shipped_config_loads(name):
    cfg = load_config(CLASSES[name], CONFIGS / name)
    assert isinstance(cfg, CLASSES[name])
