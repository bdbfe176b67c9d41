"""Every benchmark script runs end to end in its `--smoke` mode (tiny model, CPU) and writes the
JSON keys docs/PERFORMANCE.md and benchmarks/summary.py read. Timings are not checked."""

import importlib
import json
import sys
import tempfile

import pytest

from helpers import REPO

BENCH = REPO / "benchmarks"
COMMON = {"benchmark", "device", "torch", "transformers", "date", "git_commit", "code_hash"}


@pytest.fixture(autouse=True)
def _temp_here(tmp_path, monkeypatch):
    """The scripts' scratch folders (clips, checkpoints) go under pytest's tmp, not /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCH))


def _run(mod, args, tmp_path):
    out = tmp_path / "result.json"
    assert mod.main(["--smoke", *args, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert COMMON <= data.keys()
    return data


def test_rollout(bench_modules, tiny_model_dir, tmp_path):
    r = _run(bench_modules("bench_rollout"), ["--model", tiny_model_dir], tmp_path)
    assert {"greedy_identical", "prefill_s", "rollout_s", "tokens_per_s", "speedup", "prompt_tokens"} <= r.keys()
    assert r["greedy_identical"] is True
    assert set(r["tokens_per_s"]) == {"stock", "shared"}


def test_rollout_static_cache(bench_modules, tiny_model_dir, tmp_path):
    """The third path (StaticCache; not compiled on the CPU) beside the other two, with its own greedy check."""
    r = _run(bench_modules("bench_rollout"), ["--model", tiny_model_dir, "--static-cache"], tmp_path)
    assert set(r["tokens_per_s"]) == set(r["prefill_s"]) == set(r["warmup_s"]) == {"stock", "shared", "shared+static"}
    assert r["greedy_identical"] is True and r["greedy_static"]["identical_to_stock"] is True
    assert r["speedup_static"] > 0 and {"graphs", "graph_breaks", "cudagraph_skips"} <= r["compile"].keys()


def test_select(bench_modules, tiny_model_dir, tmp_path):
    r = _run(bench_modules("bench_select"), ["--model", tiny_model_dir], tmp_path)
    assert {"results", "likelihood_over_sampling", "mfu"} <= r.keys()
    assert {"flops_per_sample", "peak_tflops", "forward_tflops", "forward_mfu", "pipeline_mfu"} <= r["mfu"].keys()
    assert r["mfu"]["flops_per_sample"] > 0
    views = [",".join(x["views"]) for x in r["results"]]
    assert "full" in views and "blind (no video)" in views


def test_eval(bench_modules, tiny_model_dir, tmp_path):
    r = _run(bench_modules("bench_eval"), ["--model", tiny_model_dir], tmp_path)
    assert [x["mode"] for x in r["runs"]] == ["one at a time", "batched"]
    assert {"samples_per_s", "load_s", "generate_s"} <= r["runs"][0].keys() and "batched_over_single" in r
    assert r["static_cache"] is False
    r = _run(bench_modules("bench_eval"), ["--model", tiny_model_dir, "--static-cache"], tmp_path)
    assert r["static_cache"] is True and [x["mode"] for x in r["runs"]] == ["one at a time", "batched"]
    r = _run(
        bench_modules("bench_eval"),
        ["--model", tiny_model_dir, "--fmt", "reasoning", "--max-new-tokens", "6"],
        tmp_path,
    )
    assert r["fmt"] == "reasoning" and r["max_new_tokens"] == 6
    assert all(0 < x["new_tokens_mean"] <= 6 for x in r["runs"])


def test_train_step(bench_modules, tiny_model_dir, tmp_path):
    r = _run(bench_modules("bench_train_step"), ["--model", tiny_model_dir, "--checkpointing", "on"], tmp_path)
    assert [(x["mode"], x["gradient_checkpointing"]) for x in r["results"]] == [("lora", True), ("full", True)]
    for x in r["results"]:
        assert x["error"] is None and {"step_s_median", "tokens_per_s", "tokens_per_step"} <= x.keys()
    r = _run(
        bench_modules("bench_train_step"),
        ["--model", tiny_model_dir, "--modes", "lora", "--checkpointing", "off", "--static-cache", "on"],
        tmp_path,
    )
    assert [(x["mode"], x["static_cache"], x["error"]) for x in r["results"]] == [("lora", True, None)]


def test_decode(bench_modules, tmp_path):
    r = _run(bench_modules("bench_decode"), [], tmp_path)
    assert {"rows", "seconds", "fps", "qwen_vl_utils"} <= r.keys()
    assert all(x["indices_match"] for x in r["rows"])
    assert {x["frames"] for x in r["rows"]} == {16, 64}
    pyav = [x["loader"] for x in r["rows"] if x["loader"].startswith("ego3s (pyav")]
    from ego3s.data.video import default_decode_threads

    assert pyav[:2] == ["ego3s (pyav, 1 thread)", f"ego3s (pyav, {default_decode_threads()} threads)"]


def test_summary_reads_every_result(bench_modules, tmp_path, capsys):
    summary = bench_modules("summary")
    (tmp_path / "x.json").write_text(
        json.dumps(
            {
                "benchmark": "eval",
                "device": "cpu",
                "runs": [
                    {"mode": "one at a time", "batch_size": 1, "samples_per_s": 1.0},
                    {"mode": "batched", "batch_size": 4, "samples_per_s": 3.0},
                ],
                "batched_over_single": 3.0,
            }
        )
    )
    assert summary.main([str(tmp_path)]) == 0
    assert "3.00x batched/single" in capsys.readouterr().out


def test_vision(bench_modules, tmp_path):
    r = _run(bench_modules("bench_vision"), [], tmp_path)
    assert set(r["results"]) == {"loop", "grouped"} and r["flops"] > 0
    assert r["max_abs_diff"] <= 1e-4 * max(1.0, r["max_abs_value"])
