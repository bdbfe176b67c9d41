"""ECR end to end on the tiny model: a forced stagnation triggers a refresh, later batches come
from the new pool, and a resume after the refresh continues with the same pool."""

import json

import pytest

from ego3s.curriculum.ecr import Curriculum, PoolSampler
from ego3s.curriculum.monitor import ECRConfig
from ego3s.data import Sample, write_jsonl
from ego3s.files import read_log
from helpers import tiny_grpo_config, write_video


def _samples(tmp_path, prefix, n, typical):
    out = []
    for i in range(n):
        out.append(
            Sample(
                id=f"{prefix}{i}",
                question="What did I pick up?",
                answer="A",
                task="closeqa",
                options=["cup", "knife"],
                video=write_video(tmp_path / f"{prefix}{i}.mp4", n=4, seed=i),
                meta={"typical": typical},
                interaction={
                    "objects": [{"name": "cup"}],
                    "action": "pick up",
                    "boxes": [{"t": 0.0, "label": "cup", "box": [0.2, 0.2, 0.6, 0.6]}],
                },
            )
        )
    return out


def always_right(completions, **kw):  # every rollout correct: zero variance, every group mastered
    return [1.0] * len(completions)


always_right.__name__ = "accuracy_reward"


def _cfg(tiny_model_dir, tmp_path, max_steps):
    from ego3s.select.csm import CSMThresholds

    return tiny_grpo_config(
        tiny_model_dir,
        tmp_path / "selected.jsonl",
        tmp_path / "run",
        batch=8,
        candidates=str(tmp_path / "pool.jsonl"),
        max_steps=max_steps,
        ecr=ECRConfig(
            monitoring_interval=2, monitoring_unit="steps", probing_set_size=4, mastered_window=2, min_pool_size=1
        ),
        csm=CSMThresholds(lambda_c=-2.0, lambda_f=-1e9, lambda_o=-2.0),
    )  # every probed sample is high-value


def test_forced_stagnation_refreshes_and_resume_keeps_the_pool(tiny_model_dir, tmp_path, monkeypatch):
    import ego3s.rl.run as T

    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_right])
    selected = _samples(tmp_path, "sel", 4, True)
    fresh = _samples(tmp_path, "new", 8, False)
    write_jsonl(tmp_path / "selected.jsonl", selected)
    write_jsonl(tmp_path / "pool.jsonl", selected + fresh)
    cfg = _cfg(tiny_model_dir, tmp_path, 5)
    trainer = T.run_training(cfg)
    run = tmp_path / "run"
    events = read_log(run / "ecr_events.jsonl")
    assert len(events) >= 1
    ev = events[0]
    # windows of 2 steps: reference = steps 0-1 (variance 0), steps 2-3 also 0 -> stagnation at step 3
    assert ev["step"] == 3 and ev["ratio"] == 0.0 and ev["pool_before"] == 4
    assert set(ev["removed"]) == {s.id for s in selected}  # all mastered
    assert ev["added"] and ev["atypical_share_before"] == 0.0
    # every probed sample passes these thresholds: CSM's share of atypical ones equals the probe's
    assert ev["high_value"] == ev["probed"] == 4
    assert ev["atypical_share_high_value"] == ev["atypical_share_probed"] > 0
    assert ev["atypical_share_after"] == 1.0  # the typical ones were retired as mastered
    # the batches after the refresh come from the new pool only
    log = read_log(run / "rewards.jsonl")
    before = {r["sample_id"] for r in log if r["step"] <= 3}
    after = {r["sample_id"] for r in log if r["step"] == 4}
    assert before <= {s.id for s in selected}
    assert after and after <= set(ev["added"])
    saved = json.loads((run / "checkpoint-5" / "ecr_state.json").read_text())
    assert saved["refreshes"] == len(events) and saved["active"] == trainer.curriculum.active
    # usage, counted independently from the reward log: the batch generated at step 4 is trained in
    # optimizer step 5, the last of 5; the added samples drawn are those the log shows at step 4
    drawn = [r["sample_id"] for r in log if r["step"] > 3 and r["sample_id"] in set(ev["added"])]
    u = saved["refresh_usage"][0]
    assert u["step"] == 3 and u["steps_after"] == 5 - 3 - 1 and u["used"]
    assert u["added_drawn"] == len(set(drawn)) > 0 and u["added_draws"] == len(drawn)
    assert saved["refreshes_used"] == 1
    # windows of 2 steps over 5 planned steps: comparisons at steps 3 (batch 4 follows) -> one usable refresh
    assert saved["schedule"]["first_possible_refresh_step"] == 3 and saved["schedule"]["refreshes_possible"] == 1
    assert (run / "ecr_timeline.png").stat().st_size > 1000

    # resume from checkpoint-5 and train 2 more steps: the restored pool is the one saved
    cfg.max_steps = 7
    trainer2 = T.run_training(cfg, resume=True)
    log2 = read_log(run / "rewards.jsonl")
    later = {r["sample_id"] for r in log2 if r["step"] >= 5}
    assert later and later <= set(saved["active"]) | set(trainer2.curriculum.active)
    assert trainer2.curriculum.refreshes >= saved["refreshes"]
    assert trainer2.state.global_step == 7


def test_a_refresh_at_the_last_step_is_counted_unused(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """4 steps, windows of 2: the only comparison is at step 3, the last batch. The schedule check
    warns before training, and the refresh that happens anyway is recorded as unused."""
    import logging

    import ego3s.rl.run as T

    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_right])
    selected = _samples(tmp_path, "sel", 4, True)
    write_jsonl(tmp_path / "selected.jsonl", selected)
    write_jsonl(tmp_path / "pool.jsonl", selected + _samples(tmp_path, "new", 8, False))
    with caplog.at_level(logging.WARNING, logger="ego3s.curriculum.ecr"):
        T.run_training(_cfg(tiny_model_dir, tmp_path, 4))
    assert any(
        "ECR cannot change this run" in r.getMessage() and "first possible refresh at step 3" in r.getMessage()
        for r in caplog.records
    )
    state = json.loads((tmp_path / "run" / "ecr_state.json").read_text())
    assert state["refreshes"] == 1 and state["refreshes_used"] == 0
    assert state["refresh_usage"][0] == {
        **state["refresh_usage"][0],
        "step": 3,
        "steps_after": 0,
        "added_drawn": 0,
        "used": False,
    }
    assert state["schedule"]["refreshes_possible"] == 0


def test_usage_counts_only_draws_after_the_refresh():
    cur = Curriculum(ECRConfig(min_pool_size=1, mastered_window=1), ["a", "b", "c", "d"], ["a", "b"])

    def recs(ids):
        return [{"sample_id": i, "rewards": {"total": [1.0, 1.0], "accuracy": [1.0, 1.0]}} for i in ids]

    cur.observe_step(0, recs(["a", "b", "c"]))  # "c" drawn before it is added: not a use of the refresh
    cur.apply_refresh(0, {"ratio": 0.0, "window_mean": 0.0, "reference": 0.0}, ["c", "d"])
    cur.observe_step(1, recs(["c", "c"]))
    cur.observe_step(2, recs(["c"]))
    cur.trained_steps = 3
    s = cur.usage_summary()
    # a and b mastered (window 1) and retired; c, d added; c drawn 3 times after, d never
    assert s["per_refresh"] == [
        {"step": 0, "added": 2, "removed": 2, "steps_after": 3 - 1, "added_drawn": 1, "added_draws": 3, "used": True}
    ]
    restored = Curriculum(ECRConfig(), cur.all_ids, ["a"])
    restored.load_state_dict(cur.state_dict())
    assert restored.usage_summary() == s


def test_pool_sampler_follows_the_live_pool():
    cur = Curriculum(ECRConfig(), [f"s{i}" for i in range(10)], ["s0", "s1", "s2", "s3"], seed=0)
    it = iter(PoolSampler(cur, mini_repeat_count=2, batch_size=2, repeat_count=1, seed=0))
    first = [next(it) for _ in range(4)]
    assert first[0] == first[1] and first[2] == first[3] and set(first) <= {0, 1, 2, 3}
    cur.active = ["s8", "s9"]
    nxt = [next(it) for _ in range(4)]
    assert set(nxt) == {8, 9}


def test_an_epoch_keeps_its_length_when_the_pool_shrinks():
    """The Trainer plans its epochs from the sampler's length at the start; a shorter epoch after a
    refresh would end training before max_steps."""
    cur = Curriculum(ECRConfig(), [f"s{i}" for i in range(10)], [f"s{i}" for i in range(8)], seed=0)
    sampler = PoolSampler(cur, mini_repeat_count=2, batch_size=2, repeat_count=1, seed=0)
    n = len(sampler)
    assert n == 8 * 2
    cur.active = ["s9"]
    epoch = list(sampler)
    assert len(sampler) == n and len(epoch) == n and set(epoch) == {9}
    restored = Curriculum(ECRConfig(), cur.all_ids, ["s9"])
    restored.load_state_dict(cur.state_dict())
    assert restored.epoch_size == 8  # a resumed run keeps the first pool's epoch length


def test_training_reaches_max_steps_after_the_pool_shrinks(tiny_model_dir, tmp_path, monkeypatch):
    import ego3s.rl.run as T

    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_right])
    selected = _samples(tmp_path, "sel", 8, True)  # two generation batches of 4 prompts per epoch
    fresh = _samples(tmp_path, "new", 1, False)
    write_jsonl(tmp_path / "selected.jsonl", selected)
    write_jsonl(tmp_path / "pool.jsonl", selected + fresh)
    cfg = _cfg(tiny_model_dir, tmp_path, 8)
    cfg.save_steps = 100
    trainer = T.run_training(cfg)
    events = read_log(tmp_path / "run" / "ecr_events.jsonl")
    assert events and events[0]["pool_after"] < events[0]["pool_before"]  # 8 mastered out, at most 1 in
    assert trainer.state.global_step == 8
    assert max(r["step"] for r in read_log(tmp_path / "run" / "rewards.jsonl")) == 7


def test_unknown_active_ids_are_an_error():
    with pytest.raises(ValueError, match="not in the training dataset"):
        Curriculum(ECRConfig(), ["a"], ["b"])


def _csm_row(sid, coarse, fine, rel_ok, lam_c=0.0, lam_f=0.2):
    return {
        "id": sid,
        "coarse": coarse,
        "fine": fine,
        "pass_coarse": coarse > lam_c,
        "pass_fine": fine >= lam_f,
        "pass_relevance": rel_ok,
        "kept": coarse > lam_c and fine >= lam_f and rel_ok,
        "invalid": False,
    }


def test_closest_misses_rank_by_filters_passed_then_reliance():
    from ego3s.select.csm import closest_misses

    rows = [
        _csm_row("kept", 0.5, 0.5, True),
        _csm_row("one_pass", -0.1, 0.05, True),  # relevance only
        _csm_row("two_pass_low", 0.2, 0.1, True),  # coarse + relevance, reliance 0.1
        _csm_row("two_pass_high", 0.1, 0.15, True),  # coarse + relevance, reliance 0.15
        {**_csm_row("bad", 0.0, 0.0, False), "invalid": True},
    ]
    assert [r["id"] for r in closest_misses(rows)] == ["two_pass_high", "two_pass_low", "one_pass"]
    assert [r["id"] for r in closest_misses(rows, exclude={"two_pass_high"})] == ["two_pass_low", "one_pass"]


def test_refresh_fills_the_floor_with_closest_misses_before_mastered_samples():
    """Pool a, b, c, d with a and b mastered; the probe keeps only c (already active), so nothing is
    newly high-value. The floor of 4 is filled with the best two misses not in the pool (e, then f),
    not with the mastered a and b, whose all-correct groups carry no GRPO advantage."""
    cur = Curriculum(ECRConfig(min_pool_size=4, mastered_window=1), list("abcdefg"), list("abcd"))
    cur.observe_step(0, [{"sample_id": i, "rewards": {"total": [2.0, 2.0], "accuracy": [1.0, 1.0]}} for i in "ab"])
    assert sorted(cur.mastered()) == ["a", "b"]
    rows = [
        _csm_row("c", 0.5, 0.5, True),
        _csm_row("a", 0.3, 0.1, True),  # a miss, but retired as mastered
        _csm_row("f", 0.1, 0.1, True),
        _csm_row("e", 0.1, 0.15, True),
        _csm_row("g", -0.2, 0.0, False),
    ]
    from ego3s.curriculum.ecr import refresh_with_csm

    cur.probe_ids = lambda: [r["id"] for r in rows]
    from ego3s.select.csm import closest_misses

    event = refresh_with_csm(
        cur, 5, {"ratio": 0.1, "window_mean": 0.0, "reference": 1.0}, lambda ids: rows, rank_misses=closest_misses
    )
    assert cur.active == ["c", "d", "e", "f"]
    assert event["added"] == ["e", "f"] and event["topped_up"] == 2 and event["removed"] == ["a", "b"]
    assert cur.usage[-1]["added"] == ["e", "f"]


def test_mastered_samples_come_back_only_when_the_probe_has_no_misses_left():
    cur = Curriculum(ECRConfig(min_pool_size=3, mastered_window=1), list("abcd"), list("abc"))
    cur.observe_step(0, [{"sample_id": i, "rewards": {"total": [2.0, 2.0], "accuracy": [1.0, 1.0]}} for i in "ab"])
    event = cur.apply_refresh(1, {"ratio": 0.1, "window_mean": 0.0, "reference": 1.0}, [], fill=["d"])
    assert event["added"] == ["d"] and event["topped_up"] == 1
    assert cur.active == ["c", "a", "d"]  # c kept, then a back in pool order, then the refill
    assert event["pool_after"] == 3


def test_the_demo_config_refreshes_and_trains_on_the_refreshed_samples(tiny_model_dir, tmp_path, monkeypatch):
    """configs/demo.yaml's ECR block and batch shape (4 prompts x 4 completions, windows of 5 steps)
    on the tiny model, with a 16-sample pool that every rollout answers right: the reward variance
    is flat, so the first comparison (after two windows, at step 9) finds stagnation; all 16 are
    mastered and retired, and the pool floor is refilled from the probe's closest CSM misses (the
    tiny model passes none of CSM's filters). The steps after it must draw those samples. The
    demo's own 100-step schedule must leave room for refreshes."""
    import yaml

    import ego3s.rl.run as T
    from ego3s.curriculum.monitor import plan
    from helpers import REPO

    full = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    demo = full["training"]
    ecr = ECRConfig(**demo["ecr"])
    assert ecr.ecr and ecr.min_pool_size == full["selection"]["min_kept"]  # the floor keeps the selection's size
    schedule = plan(ecr, demo["max_steps"], 1.0, demo["batch_size"] // demo["num_generations"])
    assert schedule["first_possible_refresh_step"] == 2 * ecr.monitoring_interval - 1
    assert schedule["refreshes_possible"] >= 1

    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_right])
    selected = _samples(tmp_path, "sel", 16, True)
    fresh = _samples(tmp_path, "new", 24, False)
    write_jsonl(tmp_path / "selected.jsonl", selected)
    write_jsonl(tmp_path / "pool.jsonl", selected + fresh)
    cfg = tiny_grpo_config(
        tiny_model_dir,
        tmp_path / "selected.jsonl",
        tmp_path / "run",
        batch=demo["batch_size"],
        num_generations=demo["num_generations"],
        candidates=str(tmp_path / "pool.jsonl"),
        max_steps=12,
        save_steps=12,
        ecr=ecr,
    )
    T.run_training(cfg)
    run = tmp_path / "run"
    ev = read_log(run / "ecr_events.jsonl")[0]
    assert ev["step"] == 2 * ecr.monitoring_interval - 1
    assert ev["pool_before"] == 16 and ev["pool_after"] == 16
    assert ev["high_value"] == 0 and ev["topped_up"] == 16 and set(ev["added"]) <= {s.id for s in fresh}
    log = read_log(run / "rewards.jsonl")
    # accelerate's loader reads one batch ahead: the batch of step 10 was drawn before the refresh
    # (from the old pool); every later batch comes from the refill only
    drawn_later = {r["sample_id"] for r in log if r["step"] > ev["step"] + 1}
    assert drawn_later and drawn_later <= set(ev["added"])
    state = json.loads((run / "ecr_state.json").read_text())
    assert state["refreshes_used"] >= 1
    assert state["usage_totals"]["added_drawn"] == len(
        {r["sample_id"] for r in log if r["sample_id"] in set(ev["added"])}
    )


def test_ecr_can_rescore_by_sampling_the_policy(tiny_model_dir, tmp_path, monkeypatch):
    """`ecr_scoring: {estimator: sampling}`: the refresh samples the policy being trained (in its
    own format) instead of scoring the direct answer's likelihood, with the training clips."""
    import ego3s.rl.run as T
    import ego3s.select.scoring as S

    seen = []
    real = S.score_all

    def spy(model, processor, samples, cfg, *a, **kw):
        seen.append((cfg.estimator, cfg.num_samples, cfg.max_new_tokens, cfg.nframes, len(samples)))
        return real(model, processor, samples, cfg, *a, **kw)

    monkeypatch.setattr(S, "score_all", spy)
    monkeypatch.setattr(T, "reward_functions", lambda cfg, vocab: [always_right])
    selected = _samples(tmp_path, "sel", 8, True)
    write_jsonl(tmp_path / "selected.jsonl", selected)
    write_jsonl(tmp_path / "pool.jsonl", selected + _samples(tmp_path, "new", 8, False))
    ecr = ECRConfig(ecr=True, monitoring_unit="steps", monitoring_interval=2, probing_set_size=6, min_pool_size=4)
    cfg = tiny_grpo_config(
        tiny_model_dir,
        tmp_path / "selected.jsonl",
        tmp_path / "run",
        candidates=str(tmp_path / "pool.jsonl"),
        max_steps=4,
        save_steps=4,
        ecr=ecr,
        ecr_scoring={"estimator": "sampling", "num_samples": 2, "max_new_tokens": 4},
    )
    T.run_training(cfg)
    assert read_log(tmp_path / "run" / "ecr_events.jsonl"), "no refresh happened"
    assert seen and all(s[:4] == ("sampling", 2, 4, cfg.nframes) for s in seen)


def test_ecr_scoring_keys_are_checked_when_the_config_is_built(tmp_path):
    from ego3s.config import ConfigError
    from ego3s.rl.run import TrainingConfig

    base = dict(model="m", data="d", out=str(tmp_path))
    assert TrainingConfig(**base).ecr_scoring_config().estimator == "likelihood"  # selection's estimator
    got = TrainingConfig(**base, nframes=6, ecr_batch_size=3, ecr_scoring={"estimator": "sampling"})
    sc = got.ecr_scoring_config()
    assert (sc.estimator, sc.nframes, sc.batch_size) == ("sampling", 6, 3)
    with pytest.raises(ConfigError, match="ecr_scoring.*estimater.*did you mean 'estimator'"):
        TrainingConfig(**base, ecr_scoring={"estimater": "sampling"})
    with pytest.raises(ConfigError, match="ecr_scoring"):
        TrainingConfig(**base, ecr_scoring={"estimator": "rollouts"})
    with pytest.raises(ConfigError, match="training clips"):
        TrainingConfig(**base, ecr_scoring={"nframes": 2})
