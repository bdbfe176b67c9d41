"""The EgoSynth reproduction's time-to-target and time ratio (experiments/egosynth/run.py) on
hand-made accuracy curves: the ratio is like for like, Ego3S's time to a target over the
full-data run's time to the same target, at the chosen target and two lower ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import REPO as ROOT


@pytest.fixture(scope="module")
def drv():
    spec = importlib.util.spec_from_file_location("egosynth_table_driver", ROOT / "experiments/egosynth/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(root: Path, name: str, seed: int, curve: list[tuple[float, float]]) -> None:
    d = root / "rows" / f"{name}_s{seed}"
    d.mkdir(parents=True)
    (d / "row.json").write_text(
        json.dumps(
            {
                "row": name,
                "seed": seed,
                "eval": {},
                "selected": 10,
                "trained_on": 10,
                "atypical_share": 0.5,
                "gpu_s": curve[-1][0],
                "base_fingerprint": "b",
                "device": "cpu",
                "curve": [{"step": i, "gpu_s": t, "accuracy": a} for i, (t, a) in enumerate(curve)],
            }
        )
    )


def test_time_to_is_the_first_checkpoint_at_or_above_the_target(drv):
    curve = [
        {"gpu_s": 0, "accuracy": 40},
        {"gpu_s": 100, "accuracy": 55},
        {"gpu_s": 200, "accuracy": None},
        {"gpu_s": 300, "accuracy": 62},
    ]
    assert drv.time_to(curve, 55) == 100 and drv.time_to(curve, 56) == 300
    assert drv.time_to(curve, 63) is None and drv.time_to(curve, None) is None


def test_ratio_is_time_to_the_same_target(drv, tmp_path):
    # full data, two seeds: final 58 and 62 (mean 60), step 0 at 40 -> targets 60, 55, 50
    _row(tmp_path, "full", 0, [(0, 40), (100, 50), (200, 60), (300, 58)])
    _row(tmp_path, "full", 1, [(0, 40), (100, 55), (200, 62), (300, 62)])
    # Ego3S, two seeds (selection cost shifts its curve by 30 s); seed 1 never reaches 55
    _row(tmp_path, "ego3s", 0, [(30, 40), (80, 52), (130, 61), (180, 59)])
    _row(tmp_path, "ego3s", 1, [(30, 40), (80, 45), (130, 50), (180, 52)])
    t = drv.collect({"rows": {"full": {}, "ego3s": {}}}, tmp_path)
    got = {r["share"]: r for r in t["ratios"]}
    assert [r["accuracy"] for r in t["ratios"]] == pytest.approx([60, 55, 50])
    # target 60: full reaches it at 200 (both seeds), Ego3S at 130 (seed 0 only)
    assert (got[1.0]["full_s"], got[1.0]["ego3s_s"], got[1.0]["ratio"]) == (200, 130, 0.65)
    assert (got[1.0]["ego3s_reached"], got[1.0]["full_reached"]) == (1, 2)
    # target 55: full at 200 and 100 (mean 150); Ego3S at 130 -> 130 / 150
    assert got[0.75]["full_s"] == 150 and got[0.75]["ratio"] == round(130 / 150, 3)
    # target 50: full at 100 and 100; Ego3S at 80 and 130 (mean 105)
    assert got[0.5]["ratio"] == 1.05 and got[0.5]["ego3s_reached"] == 2
    # the headline ratio is the chosen target's, not Ego3S's time over the full run's total (130 / 300)
    assert t["ratio"] == 0.65 and t["target_accuracy"] == 60
    md = drv.table_markdown(t, {"rows": {}})
    assert "| 100% | 60.0 | 130.0 (1/2) | 200.0 (2/2) | **0.650** |" in md
    assert "| 50% | 50.0 | 105.0 (2/2) | 100.0 (2/2) | 1.050 |" in md
