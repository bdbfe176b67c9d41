import random

import pytest

from ego3s.curriculum.monitor import ECRConfig, group_stats, mark_refresh, new_state, observe
from helpers import REPO

CFG = ECRConfig(monitoring_interval=10, monitoring_unit="steps", lambda_s=0.6)


def run(trace, state=None, cfg=CFG, start=0):
    state = state or new_state()
    decisions = [d for i, v in enumerate(trace) if (d := observe(state, start + i, v, cfg))]
    return state, decisions


def test_group_stats():
    var, zero = group_stats([1, 1, 1, 1, 0, 1, 0, 1], 4)
    assert var == pytest.approx((0 + 0.25) / 2) and zero == 0.5
    with pytest.raises(ValueError, match="groups of 3"):
        group_stats([1, 0, 1, 1], 3)


def test_no_trigger_on_noise_around_flat_line():
    rng = random.Random(0)
    trace = [0.2 + rng.uniform(-0.05, 0.05) for _ in range(200)]
    _, decisions = run(trace)
    assert len(decisions) == 20 and not any(d["stagnant"] for d in decisions)


def test_trigger_on_drop_then_reference_reset():
    trace = [0.2] * 30 + [0.05] * 10
    state, decisions = run(trace)
    assert [d["stagnant"] for d in decisions] == [False, False, False, True]
    assert decisions[-1]["ratio"] == pytest.approx(0.25) and decisions[-1]["step"] == 39
    mark_refresh(state, 39, {"added": 5})
    assert state["reference"] is None and state["events"] == [{"step": 39, "added": 5}]
    # after the refresh the next full window is the new reference: a low but steady level is fine
    state, decisions = run([0.05] * 30, state, start=40)
    assert decisions[0]["reference"] == pytest.approx(0.05) and not any(d["stagnant"] for d in decisions)


def test_zero_variance_from_the_start_is_stagnation():
    # a pool the model always gets right: reference 0, next window 0 -> refresh
    _, decisions = run([0.0] * 20)
    assert [d["stagnant"] for d in decisions] == [False, True]


def test_nan_variance_does_not_poison():
    _, decisions = run([0.2] * 10 + [float("nan")] + [0.2] * 9)
    assert decisions[1]["ratio"] == pytest.approx(0.9)


def test_prompt_windows_close_when_enough_prompts_were_drawn():
    cfg = ECRConfig(monitoring_interval=10, monitoring_unit="prompts")
    state = new_state()
    # 4 prompts per generation batch: 4, 8, 12 >= 10 -> the third batch closes the window
    got = [observe(state, s, 0.2, cfg, units=4) for s in range(6)]
    assert [d is not None for d in got] == [False, False, True, False, False, True]
    assert got[5]["stagnant"] is False and got[5]["reference"] == pytest.approx(0.2)


def test_unknown_unit_is_refused():
    with pytest.raises(ValueError, match="monitoring_unit"):
        ECRConfig(monitoring_unit="epochs")


@pytest.mark.parametrize(
    "cfg, steps, per_batch, prompts, first, possible, refresh_steps",
    [
        # the paper-scale config read in optimizer steps: 50 steps, windows of 100 -> not one window
        (ECRConfig(monitoring_interval=100, monitoring_unit="steps"), 50, 1.0, 64, None, 0, []),
        # windows close at steps 9, 19, 29, 39, 49; comparisons (2nd, 4th) at 19 and 39, both with batches after
        (ECRConfig(monitoring_interval=10, monitoring_unit="steps"), 50, 1.0, 64, 19, 2, [19, 39]),
        # 40 steps: comparisons at 19 and 39, but 39 is the last batch: nothing trains after it
        (ECRConfig(monitoring_interval=10, monitoring_unit="steps"), 40, 1.0, 64, 19, 1, [19, 39]),
        # 800 prompts at 64 per batch: 13 batches per window (832 >= 800); windows at steps 12, 25, 38
        (ECRConfig(monitoring_interval=800, monitoring_unit="prompts"), 50, 1.0, 64, 25, 1, [25]),
        # two optimizer steps per generation batch (num_iterations 2): batches at steps 0, 2, ..., 18;
        # windows of 4 steps close at batches 1, 3, 5, 7, 9 (steps 2, 6, 10, 14, 18): comparisons at 6 and 14
        (ECRConfig(monitoring_interval=4, monitoring_unit="steps"), 20, 2.0, 8, 6, 2, [6, 14]),
    ],
)
def test_plan_counts_the_refreshes_a_schedule_allows(cfg, steps, per_batch, prompts, first, possible, refresh_steps):
    from ego3s.curriculum.monitor import plan, plan_message

    p = plan(cfg, steps, per_batch, prompts)
    assert p["first_possible_refresh_step"] == first
    assert p["refreshes_possible"] == possible and p["refresh_steps_possible"] == refresh_steps
    assert ("cannot change this run" in plan_message(p)) == (possible == 0)


@pytest.mark.parametrize("path, key", [("configs/training_config.yaml", None), ("configs/ego3s.yaml", "training")])
def test_the_paper_scale_configs_can_refresh(path, key):
    """One epoch of the paper's 3,180 samples at 64 prompts (512 completions) per step: the sampler
    plans 3180 // 64 = 49 steps. 800 prompts close windows at steps 12, 25, 38 (13 batches each);
    the comparison at step 25 can refresh. Read as 100 optimizer steps, not one window closes."""

    from ego3s.config import from_dict, read_yaml
    from ego3s.curriculum.monitor import plan
    from ego3s.rl.run import TrainingConfig

    raw = read_yaml(REPO / path)
    tc = from_dict(TrainingConfig, raw[key] if key else raw)
    steps, prompts = 3180 // (tc.batch_size // tc.num_generations), tc.batch_size // tc.num_generations
    assert (steps, prompts) == (49, 64)
    p = plan(tc.ecr, steps, 1.0, prompts)
    assert p["refresh_steps_possible"] == [25] and p["refreshes_possible"] == 1
    old = plan(ECRConfig(monitoring_interval=100, monitoring_unit="steps"), steps, 1.0, prompts)
    assert old["windows"] == 0 and old["refreshes_possible"] == 0
