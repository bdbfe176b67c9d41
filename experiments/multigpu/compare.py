"""Compare two `ego3s train` runs made at the same global batch on different layouts (1 GPU vs
N GPUs, DDP vs ZeRO-3): rollouts' rewards, ECR decisions, losses, gradient norms, final weights.

    python experiments/multigpu/compare.py RUN_A RUN_B [--json out.json]
"""

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ego3s.files import read_log


def history(run: Path, key: str) -> list[float]:
    return [h[key] for h in json.loads((run / "log_history.json").read_text()) if key in h]


def weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run / "final").glob("*.safetensors")):
        out.update(load_file(f))
    return out


def compare(a: Path, b: Path) -> dict:
    ra, rb = read_log(a / "rewards.jsonl"), read_log(b / "rewards.jsonl")
    key = lambda r: (r["step"], r["sample_id"], json.dumps(r["rewards"], sort_keys=True))  # noqa: E731 - a one-line key
    same_rollouts = sum(key(x) == key(y) for x, y in zip(ra, rb))
    ea = read_log(a / "ecr_events.jsonl") if (a / "ecr_events.jsonl").exists() else []
    eb = read_log(b / "ecr_events.jsonl") if (b / "ecr_events.jsonl").exists() else []
    fields = ("step", "added", "removed", "pool_after")
    same_events = len(ea) == len(eb) and all(
        {k: x[k] for k in fields} == {k: y[k] for k in fields} for x, y in zip(ea, eb)
    )
    la, lb = history(a, "loss"), history(b, "loss")
    ga, gb = history(a, "grad_norm"), history(b, "grad_norm")
    wa, wb = weights(a), weights(b)
    common = sorted(set(wa) & set(wb))
    wdiff = max(((wa[k].float() - wb[k].float()).abs().max().item() for k in common), default=float("nan"))
    return {
        "reward_records": [len(ra), len(rb)],
        "identical_reward_records": same_rollouts,
        "ecr_events": [len(ea), len(eb)],
        "identical_ecr_events": same_events,
        "loss": [la, lb],
        "max_abs_loss_diff": max((abs(x - y) for x, y in zip(la, lb)), default=None),
        "grad_norm": [ga, gb],
        "max_rel_grad_norm_diff": max((abs(x - y) / max(abs(x), 1e-12) for x, y in zip(ga, gb)), default=None),
        "weights_compared": len(common),
        "max_abs_weight_diff": wdiff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = compare(args.a, args.b)
    for k, v in res.items():
        print(f"{k:28s} {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
