"""One table from the JSON files the benchmarks wrote (what run_gpu.sh prints at the end).

python benchmarks/summary.py /tmp/bench
"""

import json
import sys
from pathlib import Path

import _common as C


def rows_for(r: dict) -> list[list]:
    """(workload, what, figure, ratio) rows of one benchmark's JSON."""
    name = r.get("benchmark")
    if name == "rollout":
        ratio = {}  # against stock, where the run timed it
        if "speedup" in r:
            ratio["shared"] = f"{r['speedup']:.2f}x shared/stock; greedy identical: {r.get('greedy_identical')}"
        if "speedup_static" in r:
            ratio["shared+static"] = f"{r['speedup_static']:.2f}x static/stock"
        return [
            [
                "rollout",
                f"G={r['group']}, {r['new_tokens']} tokens, {path}",
                f"{r['tokens_per_s'][path]:.0f} tok/s"
                + (f", {r['decode_step_ms'][path]:.2f} ms/step" if path in r.get("decode_step_ms", {}) else ""),
                ratio.get(path, ""),
            ]
            for path in r["tokens_per_s"]
        ]
    if name == "select":
        out = [
            ["selection", f"{x['estimator']} {','.join(x['views'])}", f"{x['samples_per_s']:.3g} samples/s", ""]
            for x in r["results"]
        ]
        m = r["mfu"]
        out.append(
            [
                "selection",
                "full view forward",
                f"{m['forward_tflops']:.0f} TFLOP/s",
                f"MFU {m['forward_mfu']:.1%} of {m['peak_tflops']:.0f}",
            ]
        )
        out.append(
            [
                "selection",
                "full view end to end",
                f"{m['pipeline_tflops']:.0f} TFLOP/s",
                f"MFU {m['pipeline_mfu']:.1%}; likelihood/sampling {r['likelihood_over_sampling']:.1f}x",
            ]
        )
        return out
    if name == "eval":
        static = ", static cache" if r.get("static_cache") else ""
        return [
            [
                "evaluation",
                f"{x['mode']} (batch {x['batch_size']}){static}",
                f"{x['samples_per_s']:.3g} samples/s",
                f"{r['batched_over_single']:.2f}x batched/single" if x["batch_size"] > 1 else "",
            ]
            for x in r["runs"]
        ]
    if name == "train_step":
        return [
            [
                "GRPO step",
                f"{x['arch']} {x['mode']}, grad ckpt {'on' if x['gradient_checkpointing'] else 'off'}"
                + (", static cache" if x.get("static_cache") else ""),
                f"{x['step_s_median']:.2f} s/step" if not x.get("error") else x["error"][:40],
                f"{x['tokens_per_s']:.0f} tok/s" if not x.get("error") else "",
            ]
            for x in r["results"]
        ]
    if name == "vision":
        return [
            [
                "vision tower",
                f"{r['frames']} frames x {r['side']} px, window attention {m}",
                f"{x['s_median'] * 1e3:.0f} ms ({x['tflops']:.0f} TFLOP/s)",
                f"{r['speedup']:.2f}x grouped/loop" if m == "grouped" else "",
            ]
            for m, x in r["results"].items()
        ]
    if name == "decode_kernels":
        return [
            ["decode step, per layer", what, f"{ms * 1e3:.1f} us", f"{tbs:.2f} TB/s"] for what, ms, tbs in r["table"]
        ]
    if name == "decode":
        return [
            [
                "decoding",
                f"{x['loader']}, {x['frames']} frames",
                f"{x['s_median']:.2f} s",
                f"{x['speedup_vs_qwen']:.2f}x vs Qwen utils" if x.get("speedup_vs_qwen") else "",
            ]
            for x in r["rows"]
        ]
    return []


def main(argv=None):
    folder = Path((argv or sys.argv[1:] or ["/tmp/bench"])[0])
    rows, devices = [], set()
    for f in sorted(folder.glob("*.json")):
        r = json.loads(f.read_text())
        devices.add(
            f"{r.get('device')} | torch {r.get('torch')} | transformers {r.get('transformers')} | "
            f"commit {r.get('git_commit')} (code {r.get('code_hash', '?')}) | {r.get('date', '')[:10]}"
        )
        rows += rows_for(r)
    for d in sorted(devices):
        print(d)
    print(C.table(["workload", "what", "figure", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
