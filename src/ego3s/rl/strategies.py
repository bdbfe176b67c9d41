"""RL strategies behind one `strategy:` key, as GRPOConfig settings plus what TRL lacks.

| strategy | advantage | loss normalisation | extras |
| --- | --- | --- | --- |
| `grpo` | (r - mean_group) / std_group | per sequence, then batch mean | KL to the reference (`beta`) |
| `rloo` | r - mean of the other G-1 rewards = G/(G-1) (r - mean_group) | per sequence | applied by the trainer |
| `dapo` | (r - mean_group) / std_group | token level over the batch | clip-higher 0.2/0.28, soft overlong penalty, no KL, dynamic sampling (zero-variance groups refilled with fresh prompts, `dynamic_sampling_rounds`; one process) |
| `dr_grpo` | r - mean_group (no std) | constant (max completion length) | |
"""

from __future__ import annotations

STRATEGIES: dict[str, dict] = {
    "grpo": {"loss_type": "grpo", "scale_rewards": "group"},
    "rloo": {"loss_type": "grpo", "scale_rewards": "none"},
    "dapo": {"loss_type": "dapo", "scale_rewards": "group", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
}


def grpo_config_kwargs(strategy: str) -> dict:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    return dict(STRATEGIES[strategy])

