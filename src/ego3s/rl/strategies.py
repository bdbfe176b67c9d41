"""RL strategies behind one `strategy:` key, as GRPOConfig settings plus what TRL lacks.

| strategy | advantage | loss normalisation | extras |
| --- | --- | --- | --- |
| `grpo` | (r - mean_group) / std_group | per sequence, then batch mean | KL to the reference (`beta`) |
| `rloo` | r - mean of the other G-1 rewards = G/(G-1) (r - mean_group) | per sequence | applied by the trainer |
| `dapo` | (r - mean_group) / std_group | token level over the batch | clip-higher 0.2/0.28, soft overlong penalty (L_cache = L_max / 5), no KL, up to 16 optimizer steps per generation, dynamic sampling (groups whose accuracy is all 0 or all 1 refilled with fresh prompts, `dynamic_sampling_rounds`) |
| `dr_grpo` | r - mean_group (no std) | constant (max completion length) | |

DAPO's numbers (Yu et al. 2025, arXiv:2503.14476, Sec. 3 and 4.1): eps_low 0.2, eps_high 0.28;
token-level policy-gradient loss; no KL term; a rollout of 512 prompts x 16 responses trained as
mini-batches of 512 responses, "16 gradient updates for each rollout step"; overlong reward
shaping with L_max = 20,480 and L_cache = 4,096 (a fifth); dynamic sampling keeps groups with
0 < #correct < G.
"""

from __future__ import annotations

STRATEGIES: dict[str, dict] = {
    "grpo": {"loss_type": "grpo", "scale_rewards": "group"},
    "rloo": {"loss_type": "grpo", "scale_rewards": "none"},
    "dapo": {"loss_type": "dapo", "scale_rewards": "group", "epsilon": 0.2, "epsilon_high": 0.28, "beta": 0.0},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
}

DAPO_STEPS_PER_GENERATION = 16  # rollout = 16 mini-batches (optimizer steps), each sample used once
DAPO_OVERLONG_CACHE_SHARE = 0.2  # L_cache / L_max = 4,096 / 20,480


def grpo_config_kwargs(strategy: str) -> dict:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {sorted(STRATEGIES)}")
    return dict(STRATEGIES[strategy])


def optimizer_steps_per_generation(
    strategy: str, configured: int | None, prompts_per_step: int | None = None, num_prompts: int | None = None
) -> int:
    """Optimizer steps trained on one generation batch: `configured` when given; otherwise 1
    (on-policy) and, for `dapo`, the paper's 16, lowered to what the data holds (a generation
    batch never asks for more distinct prompts than there are, else TRL's sampler yields none)."""
    if configured is not None:
        return int(configured)
    if strategy != "dapo":
        return 1
    k = DAPO_STEPS_PER_GENERATION
    if prompts_per_step and num_prompts is not None:
        k = min(k, max(1, num_prompts // prompts_per_step))
    return k


def overlong_cache(strategy: str, configured: int | None, max_completion_length: int) -> int | None:
    """DAPO's soft punish cache L_cache in tokens (None: no overlong penalty): `configured`, or a
    fifth of L_max = `max_completion_length` (the paper's 4,096 of 20,480), at least 1."""
    if strategy != "dapo":
        return None
    if configured is not None:
        return int(configured)
    return max(1, round(DAPO_OVERLONG_CACHE_SHARE * max_completion_length))


def overlong_penalty(length: int, l_max: int, l_cache: int) -> float:
    """DAPO's soft overlong punishment (Eq. 13): 0 up to L_max - L_cache tokens, then linear down
    to -1 at L_max, and -1 beyond."""
    if length <= l_max - l_cache:
        return 0.0
    if length <= l_max:
        return (l_max - l_cache - length) / l_cache
    return -1.0
