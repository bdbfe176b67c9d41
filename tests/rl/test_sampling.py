"""Layout-invariant sampling: the keyed Gumbel-max draw is an exact sample of
softmax(logits / T), and does not depend on batch order, batch size or padding."""

import math

import pytest
import torch

from ego3s.rl.sampling import GumbelSampler, check_supported, row_key, uniform


def test_uniform_is_in_range_deterministic_and_flat():
    keys = torch.tensor([row_key(0, 1, "a", 0), row_key(0, 1, "a", 1)])
    u = uniform(keys, 3, 50_000)
    assert u.shape == (2, 50_000) and float(u.min()) > 0 and float(u.max()) < 1
    assert torch.equal(u, uniform(keys, 3, 50_000))
    assert not torch.equal(u[0], u[1]) and not torch.equal(u, uniform(keys, 4, 50_000))
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    hist = torch.histc(u.float().flatten(), bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.005


def test_row_keys_differ_by_every_part():
    base = row_key(0, 5, "s1", 0)
    others = [row_key(1, 5, "s1", 0), row_key(0, 6, "s1", 0), row_key(0, 5, "s2", 0), row_key(0, 5, "s1", 1)]
    assert base not in others and len(set(others)) == 4 and 0 <= base < 2**63


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draws_follow_the_softmax(temperature):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    n = 20_000
    proc = GumbelSampler([row_key(0, 0, f"s{i}", 0) for i in range(n)], temperature)
    ids = torch.zeros(n, 7, dtype=torch.long)
    picks = proc(ids, logits.expand(n, -1).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=5).double() / n
    expect = torch.softmax(logits.double() / temperature, -1)
    assert freq[4] == 0  # a suppressed token is never drawn
    # 4 standard errors of a binomial share
    assert torch.all((freq - expect).abs() <= 4 * torch.sqrt(expect * (1 - expect) / n) + 1e-9), (freq, expect)


def test_a_row_draws_the_same_whatever_its_batch_and_padding():
    torch.manual_seed(0)
    logits = torch.randn(6, 300)
    keys = [row_key(3, 2, f"s{i // 2}", i % 2) for i in range(6)]
    seqs = []
    for pad in (0, 5):  # positions count from the first completion token, not the padded length
        proc = GumbelSampler(keys, 0.7)
        steps = [proc(torch.zeros(6, 10 + pad + t, dtype=torch.long), logits.clone()).argmax(-1) for t in range(4)]
        seqs.append(torch.stack(steps, 1))
    assert torch.equal(seqs[0], seqs[1])
    perm = [4, 5, 0, 1, 2, 3]  # another layout: rows in another order, in two batches of 3
    procs = [GumbelSampler([keys[i] for i in perm[:3]], 0.7), GumbelSampler([keys[i] for i in perm[3:]], 0.7)]
    got = []
    for part, proc in zip((perm[:3], perm[3:]), procs):
        steps = [proc(torch.zeros(3, 8 + t, dtype=torch.long), logits[part].clone()).argmax(-1) for t in range(4)]
        got.append(torch.stack(steps, 1))
    assert torch.equal(torch.cat(got), seqs[0][perm])
    assert len({tuple(r) for r in seqs[0].tolist()}) > 1  # and different rows do draw differently


def test_row_count_mismatch_and_unsupported_filters_are_errors():
    with pytest.raises(RuntimeError, match="3 rows but 2 keys"):
        GumbelSampler([1, 2])(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="temperature"):
        GumbelSampler([1], 0.0)
    check_supported(1.0, 0, None)
    for bad in [(0.9, 0, None), (1.0, 50, None), (1.0, 0, 0.1)]:
        with pytest.raises(ValueError, match="temperature only"):
            check_supported(*bad)
    assert not math.isnan(float(uniform(torch.tensor([0]), 0, 1)))
