import random

import pytest

from ego3s.curriculum.monitor import ECRConfig, group_stats, mark_refresh, new_state, observe

CFG = ECRConfig(monitoring_interval=10, lambda_s=0.6)


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
