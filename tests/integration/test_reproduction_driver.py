"""Issue #9's driver (experiments/egosynth/run.py) in its --smoke mode: the tiny model on the CPU.

A subset of the rows (the two headline rows with two seeds each and LIMR, which needs the full-data
run) runs end to end; the table must list every row of every section (those not run marked),
give every column of the rows that ran with numbers in range, and a rerun must skip finished rows.
The pack of small results must restore finished rows into a fresh folder. `egosynth.json` must hold
the study's schema (docs/egosynth_study.md); rows made from another base model must be left out
and said so; two preps of one config must build the same base model. The real config's estimate
must spread over device calls and sessions as docs/egosynth_study.md sizes it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tarfile
import warnings
from types import SimpleNamespace

import pytest

from helpers import REPO as ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROWS = ["full", "ego3s", "limr", "full_limr"]  # full_limr: a trained-only row


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
            if not cfg["rows"][name].get("eval", True):  # trained only: no evaluation, no curve
                assert r["eval"] is None and r["curve"] == [] and r["gpu_s"] >= r["train_s"] > 0
                continue
            for k in ("test_id", "test_atypical"):
                for m in ("accuracy", "em", "rouge_l"):
                    assert 0.0 <= r["eval"][k][m] <= 100.0
            for k in ("second_test_id", "second_test_atypical"):
                assert k in json.loads((out / "egosynth.json").read_text())["test"]
            assert 0 < r["trained_on"] <= r["selected"] + cfg["data"]["train"] and 0 <= r["atypical_share"] <= 100
            assert r["versions"]["rouge-score"] and r["versions"]["nltk"] and r["versions"]["trl"]
            spec = cfg["rows"][name]
            max_steps = (spec.get("train") or {}).get("max_steps", cfg["train"]["max_steps"])
            assert r["gpu_s"] >= r["train_s"] > 0 and r["steps"] == max_steps
            steps = [p["step"] for p in r["curve"]]
            assert steps == list(range(0, max_steps + 1, spec.get("eval_every", cfg["eval_every"])))
            assert all(0.0 <= p["accuracy"] <= 100.0 for p in r["curve"])
            assert [p["gpu_s"] for p in r["curve"]] == sorted(p["gpu_s"] for p in r["curve"])
            assert not list((out / "rows" / f"{name}_s{r['seed']}" / "train").glob("checkpoint-*"))
        assert e["values"]["id_acc"]["n"] == (len(e["runs"]) if cfg["rows"][name].get("eval", True) else 0)
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
    assert len(est["rows_s"]) == len(drv.plan(cfg))
    # every row with its own selection fits one device call (the driver's box is call_s - 30), else
    # the driver could never start it; prep takes at most two
    box = cfg["sizing"]["call_s"] - 30
    for run, seconds in est["rows_s"].items():
        method = cfg["rows"][run.rsplit("_s", 1)[0]]["select"]
        assert seconds + est["selection_s"].get(method, 0) < box, run
    assert est["prep_s"] < 2 * box
    # at the rates measured on the H200 (docs/egosynth_study.md, "How it is sized"): the headline rows
    # (3 seeds each) fit 4 machines of 30 device-minutes, the whole table 7; machines after the first
    # take the base evaluation from the pack
    head = drv.estimate(cfg, ["full", "ego3s", "csm_grpo", "random"])
    assert head["sessions"] <= 4 and head["device_min"] <= 4 * 30 and est["sessions"] <= 7
    base_eval = est["prep_parts_s"]["base_eval"]
    assert base_eval > 0 and abs(est["later_prep_s"] - (est["prep_s"] - base_eval)) <= 1
    order = [n for n, _ in drv.plan(cfg)]
    assert order.index(drv.limr_source(cfg)) < order.index("limr")
    # ECR can refresh early enough for training to draw what it added
    sched = est["ecr_schedule"]["ego3s"]
    assert sched["refreshes_possible"] >= 1 and sched["first_possible_refresh_step"] <= cfg["train"]["max_steps"] // 2
    # the study's rows, at least 3 seeds for the headline ones, test sets that can tell
    assert {
        "full",
        "random",
        "s1",
        "limo",
        "limr",
        "csm_grpo",
        "csm_rloo",
        "csm_dapo",
        "csm_dr_grpo",
        "csm_irl",
        "ego3s",
    } <= set(cfg["rows"])
    assert all(len(drv.seeds_of(cfg, n)) >= 3 for n in ("full", "random", "csm_grpo", "ego3s"))
    assert cfg["data"]["test"] >= 600 and 2 * cfg["curve_questions"] >= 200


def test_rows_run_in_the_order_given_with_limr_after_full():
    drv = _driver()
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml")
    assert drv.plan(cfg, ["ego3s:0", "csm_irl", "full:0"]) == [("ego3s", 0), ("csm_irl", 0), ("full", 0)]
    assert drv.plan(cfg, ["limr", "ego3s:1"]) == [("full_limr", 0), ("limr", 0), ("ego3s", 1)]
    assert drv.plan(cfg, ["csm_irl", "limr", "full_limr:0"]) == [("csm_irl", 0), ("full_limr", 0), ("limr", 0)]
    assert drv.plan(cfg, ["full", "ego3s:0", "limr"]) == [
        ("full", 0),
        ("full", 1),
        ("full", 2),
        ("ego3s", 0),
        ("full_limr", 0),
        ("limr", 0),
    ]
    with pytest.raises(SystemExit, match="seeds"):
        drv.plan(cfg, ["csm_irl:5"])
    with pytest.raises(SystemExit, match="unknown row"):
        drv.plan(cfg, ["nope"])


def test_results_json_has_the_study_schema(smoke):
    drv, out, _ = smoke
    d = json.loads((out / "egosynth.json").read_text())
    assert {"device", "config", "commands", "test", "rows", "time_ratio", "base", "excluded", "ablations"} <= set(d)
    assert d["ablations"] == []  # the smoke table runs full and ego3s only: no pair differs in one part
    assert d["commands"] and d["commands"][0]["argv"][0] == "run.py"
    # every row names the driver call that ran it, and the published commands start at the first of them
    ran = [json.loads(p.read_text())["command"] for p in (out / "rows").glob("*/row.json")]
    assert ran and all(c["argv"][0] == "run.py" for c in ran)
    assert d["commands"][0]["time"] == min(c["time"] for c in ran)
    assert set(d["test"]) == {"test_id", "test_atypical", "second_test_id", "second_test_atypical"}
    assert d["excluded"] == [] and d["base"]["fingerprint"]
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True)
    assert set(d["rows"]) == {"full", "ego3s", "limr"}  # the trained-only LIMR log has no row of its own
    for name, r in d["rows"].items():
        assert r["seeds"] == drv.seeds_of(cfg, name) and r["base_fingerprint"] == d["base"]["fingerprint"]
        assert {"kept", "share_atypical"} <= set(r["selection"])
        for split in ("test_id", "test_atypical"):
            for m in ("accuracy", "em"):
                e = r[split][m]
                assert e["n"] > 0 and e["ci95"][0] <= e["mean"] <= e["ci95"][1]
                assert [x["seed"] for x in e["per_seed"]] == r["seeds"]
        assert (r["paired_vs_full"] is None) == (name == "full")
        assert r["paired_vs_base"]["test_atypical"]["accuracy"]["n"] > 0
        assert len(r["ecr_refreshes"]) == len(r["ecr_refreshes_used"]) == len(r["seeds"])
        assert r["gpu_s"]["mean"] > 0 and len(r["time_to_target_s"]["per_seed"]) == len(r["seeds"])
        assert all(p["ci95"][0] is not None for p in r["curve"])
    assert all(x is not None for x in d["rows"]["ego3s"]["ecr_refreshes"])
    assert d["time_ratio"]["target"] is not None and len(d["time_ratio"]["others"]) == 2


def test_rows_of_another_base_model_are_left_out(smoke, tmp_path):
    drv, out, _ = smoke
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True, out=str(tmp_path / "run"))
    shutil.copytree(out, tmp_path / "run")
    root = tmp_path / "run"
    path = root / "rows" / "ego3s_s1" / "row.json"
    row = json.loads(path.read_text())
    row["base_fingerprint"] = "0" * 20
    path.write_text(json.dumps(row))
    said = []
    fp = json.loads((root / "prep" / "manifest.json").read_text())["stages"]["warmup"]["outputs"]["fingerprint"]
    assert drv.check_base(fp, root, said.append) == [f"ego3s_s1 ({'0' * 20})"]
    assert "DOES NOT MATCH" in said[0]
    t = drv.write_table(cfg, root)
    assert t["excluded"] == [{"row": "ego3s", "seed": 1, "base_fingerprint": "0" * 20}]
    assert t["rows"]["ego3s"]["seeds"] == [0]
    assert "Left out: rows made from another base model" in (root / "table.md").read_text()
    assert json.loads((root / "egosynth.json").read_text())["excluded"] == t["excluded"]


def test_two_preps_of_one_config_build_the_same_base(tmp_path):
    """`deterministic: true`: a new session's rebuilt base model has the fingerprint of the last
    session's (same config, same run folder path: the warm-up's saved arguments hold it)."""
    drv = _driver()
    root = tmp_path / "run"
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True, out=str(root))
    assert cfg["deterministic"]
    fps = []
    for i in range(2):
        fps.append(drv.prepare(cfg, root, echo=lambda m: None)["fingerprint"])
        shutil.move(str(root), str(tmp_path / f"session{i}"))
    assert fps[0] == fps[1]


def test_a_later_session_reuses_the_evaluation_of_the_same_base(smoke, tmp_path):
    """A new machine rebuilds the base model; when the restored pack's base has its fingerprint and
    was evaluated with the same inputs, the base evaluation is taken from the pack, not redone."""
    drv, out, pack = smoke
    root = tmp_path / "later"
    cfg = drv.load_table_config(ROOT / "experiments/egosynth/table.yaml", smoke=True, out=str(root))
    drv.restore(pack, root)
    said = []
    prep = drv.prepare(cfg, root, echo=said.append)
    assert any("reused from the restored pack" in m for m in said) and "[base_eval] running" not in said
    earlier = json.loads((out / "prep" / "manifest.json").read_text())["stages"]["base_eval"]["outputs"]
    assert prep["base_eval"] == earlier and prep["fingerprint"] in said[-2]
    assert (root / "prep" / "base_eval" / "egosynth" / "per_sample.jsonl").read_text() == (
        out / "prep" / "base_eval" / "egosynth" / "per_sample.jsonl"
    ).read_text()

    inputs = json.loads((root / "prep" / "manifest.json").read_text())["stages"]["base_eval"]["input_fingerprint"]
    fresh = SimpleNamespace(fingerprints={"base_eval": inputs}, manifest={"stages": {}}, save=lambda: None)
    said.clear()
    assert not drv.reuse_base_eval(fresh, root, "0" * 20, said.append)  # another base model
    assert "is not this one" in said[0]
    fresh.fingerprints = {"base_eval": "other inputs"}
    assert not drv.reuse_base_eval(fresh, root, prep["fingerprint"], said.append)


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
    cfg["vision_data"] = {"seed": 4, "train": 6, "test": 0, "probe": 0, "p_typical": 0.2, "frames": 8, "size": 56}
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert drv.main(["--smoke", "--config", str(path), "--out", str(out), "--select-only", "csm"]) == 0
    stats = json.loads((out / "prep" / "warmup" / "vision_pretrain.json").read_text())
    assert stats["data"] == str(out / "prep" / "vision_data" / "train.jsonl") and stats["samples"] == 6


def test_published_commands_leave_out_calls_whose_rows_are_gone():
    drv = _driver()
    old = {"time": "2026-01-01T10:00:00Z", "argv": ["run.py", "--rows", "withdrawn:0"]}
    new = {"time": "2026-01-02T10:00:00Z", "argv": ["run.py", "--rows", "full:0"]}
    publish = {"time": "2026-01-02T11:00:00Z", "argv": ["run.py", "--table-only"]}
    log = [old, new, publish]
    assert drv.producing_commands(log, [{"row": "full", "command": new}]) == [new, publish]
    # a run from before rows named their command
    assert drv.producing_commands(log, [{"row": "full", "command": new}, {"row": "ego3s"}]) == log


def test_a_table_with_no_rows_yet_is_written_without_warnings(tmp_path):
    drv = _driver()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "No artists with labels" on empty plots
        assert drv.main(["--table-only", "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "egosynth.json").read_text())["rows"] == {}
    assert (tmp_path / "t" / "accuracy_vs_time.png").exists()
