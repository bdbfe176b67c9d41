"""Issue #9's driver (experiments/egosynth/run.py) in its --smoke mode: the tiny model on the CPU.

A subset of the rows (the two headline rows with two seeds each and LIMR, which needs the full-data
run) runs end to end; the table must list every row of every section (those not run marked),
give every column of the rows that ran with numbers in range, and a rerun must skip finished rows.
The pack of small results must restore finished rows into a fresh folder. The real config must fit
the issue's budget of about 50 GPU-minutes by the driver's own estimate.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tarfile

import pytest

from helpers import REPO as ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = ["full", "ego3s", "limr"]


def _driver():
    spec = importlib.util.spec_from_file_location("egosynth_table_driver", ROOT / "experiments/egosynth/run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    drv = _driver()
    out = tmp_path_factory.mktemp("table") / "run"
    pack = out.parent / "pack.tgz"
    assert drv.main(["--smoke", "--out", str(out), "--rows", ",".join(ROWS), "--pack", str(pack)]) == 0
    return drv, out, pack


def test_table_has_every_row_and_column(smoke):
    drv, out, _ = smoke
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True)
    t = json.loads((out / "table.json").read_text())
    md = (out / "table.md").read_text()
    for sec in drv.SECTIONS:
        for _name, label in t["sections"][sec]:
            assert f"| {label} |" in md
    assert set(t["rows"]) == set(ROWS) | {drv.limr_source(cfg)}  # LIMR brings in its full-data run
    for name, e in t["rows"].items():
        seeds = cfg["headline_seeds"] if name in cfg["headline"] else cfg["seeds"]
        assert e["seeds"] == seeds
        for r in e["runs"]:
            for k in ("test_id", "test_atypical"):
                for m in ("accuracy", "em", "rouge_l"):
                    assert 0.0 <= r["eval"][k][m] <= 100.0
            assert 0.0 <= r["eval"]["icu_attention"] <= 100.0 and 0.0 < r["eval"]["icu_area"] < 100.0
            assert 0 < r["trained_on"] <= r["selected"] + cfg["data"]["train"] and 0 <= r["atypical_share"] <= 100
            spec = cfg["rows"][name]
            max_steps = (spec.get("train") or {}).get("max_steps", cfg["train"]["max_steps"])
            assert r["gpu_s"] >= r["train_s"] > 0 and r["steps"] == max_steps
            steps = [p["step"] for p in r["curve"]]
            assert steps == list(range(0, max_steps + 1, spec.get("eval_every", cfg["eval_every"])))
            assert all(0.0 <= p["accuracy"] <= 100.0 for p in r["curve"])
            assert [p["gpu_s"] for p in r["curve"]] == sorted(p["gpu_s"] for p in r["curve"])
            assert not list((out / "rows" / f"{name}_s{r['seed']}" / "train").glob("checkpoint-*"))
        assert e["values"]["id_acc"]["n"] == len(e["runs"])
    limr = t["rows"]["limr"]["runs"][0]
    assert limr["prereq_s"] == t["rows"][drv.limr_source(cfg)]["runs"][0]["train_s"] > 0  # LIMR pays for its log
    assert t["rows"]["ego3s"]["values"]["id_acc"]["std"] is not None  # spread over seeds
    assert "GPU-time(Ego3S to reach the target)" in md and "not run" in md
    for png in ("accuracy_vs_time.png", "reward_variance.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_rows(smoke):
    drv, out, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")}
    assert drv.main(["--smoke", "--out", str(out), "--rows", ",".join(ROWS)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")} == before
    assert (out / "run.log").read_text().splitlines()[-2].endswith("rows to run: none")


def test_pack_restores_finished_rows(smoke, tmp_path):
    drv, out, pack = smoke
    assert pack.stat().st_size < 16 << 20
    fresh = tmp_path / "fresh"
    assert drv.restore(pack, fresh) > 0
    with tarfile.open(pack) as tar:  # per-question answers travel, so rows can be compared question by question
        assert any(n.startswith("rows/") and "/eval/" in n and "/predictions.rank" in n for n in tar.getnames())
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True, out=str(fresh))
    assert all((drv.row_dir(fresh, n, s) / "row.json").exists() for n, s in drv.plan(cfg, ROWS))
    assert not (fresh / "prep").exists() and not (fresh / "select").exists()  # this session warms up anew
    assert json.loads((fresh / "table.json").read_text())["rows"].keys() == set(ROWS)


def test_real_config_fits_the_budget():
    drv = _driver()
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml")
    est = drv.estimate(cfg)
    # about 50 GPU-minutes: 48 for the table, plus about 4 for LIMR's 2-epoch full-data log (full_limr)
    assert est["total_min"] <= 55 and len(est["rows_s"]) == len(drv.plan(cfg))
    order = [n for n, _ in drv.plan(cfg)]
    assert order.index(drv.limr_source(cfg)) < order.index("limr")
    # a row's own `train`/`eval_every` override the common keys (the long Ego3S run of issues #5 and #6)
    assert cfg["rows"]["ego3s_long"]["train"]["max_steps"] > cfg["train"]["max_steps"]
    assert est["rows_s"]["ego3s_long_s0"] > 3 * est["rows_s"]["ego3s_s0"]
    assert drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True)["rows"]["ego3s_long"][
        "train"
    ] == {"max_steps": 3}


def test_rows_run_in_the_order_given_with_limr_after_full():
    drv = _driver()
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml")
    assert drv.plan(cfg, ["ego3s:0", "csm", "full:0"]) == [("ego3s", 0), ("csm", 0), ("full", 0)]
    assert drv.plan(cfg, ["limr", "ego3s:1"]) == [("full_limr", 0), ("limr", 0), ("ego3s", 1)]
    assert drv.plan(cfg, ["csm", "limr", "full_limr:0"]) == [("csm", 0), ("full_limr", 0), ("limr", 0)]
    assert drv.plan(cfg, ["full", "ego3s:0", "limr"]) == [
        ("full", 0),
        ("full", 1),
        ("full", 2),
        ("ego3s", 0),
        ("full_limr", 0),
        ("limr", 0),
    ]
    with pytest.raises(SystemExit, match="seeds"):
        drv.plan(cfg, ["csm:5"])
    with pytest.raises(SystemExit, match="unknown row"):
        drv.plan(cfg, ["nope"])


def test_select_only_prepares_and_selects_without_rows(smoke):
    """--select-only: the quick loop for iterating on the base model."""
    drv, out, _ = smoke
    before = sorted(p.name for p in (out / "rows").iterdir())
    assert drv.main(["--smoke", "--out", str(out), "--select-only", "csm,s1"]) == 0
    log = (out / "run.log").read_text().splitlines()
    kept = [line for line in log if "] kept " in line]
    assert [line.split("[select ")[1].split("]")[0] for line in kept[-2:]] == ["csm", "s1"]
    assert "atypical" in kept[-1] and "(pool " in kept[-1]
    assert (out / "select" / "s1" / "done.json").exists()
    assert sorted(p.name for p in (out / "rows").iterdir()) == before  # no row ran


def test_vision_pretraining_gets_its_own_pool(tmp_path):
    """`vision_data:` (optional): an EgoSynth pool of its own for vision pretraining, so that the QA
    warm-up can keep another mix of typical and atypical clips."""
    import yaml

    drv = _driver()
    cfg = yaml.safe_load((ROOT / "experiments/egosynth/table.yaml").read_text())
    cfg["vision_data"] = {"seed": 2, "train": 6, "test": 0, "probe": 0, "p_typical": 0.2, "frames": 8, "size": 56}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert drv.main(["--smoke", "--config", str(path), "--out", str(out), "--select-only", "csm"]) == 0
    stats = json.loads((out / "prep" / "warmup" / "vision_pretrain.json").read_text())
    assert stats["data"] == str(out / "prep" / "vision_data" / "train.jsonl") and stats["samples"] == 6
