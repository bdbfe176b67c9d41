"""Rollouts that do not depend on how the batch is laid out over GPUs.

TRL samples completions with the process's torch RNG, so the same run on 1 and on 2 GPUs draws
different completions (each rank samples its own slice, from its own generator state), and a
multi-GPU run can never be compared with a one-GPU run step by step. Here each row's randomness
is a pure function of (seed, step, sample id, replica index within the group, completion
position): the Gumbel-max trick turns it into an exact draw from softmax(logits / temperature),
and greedy decoding over the perturbed logits keeps every draw independent of batch size,
padding and rank. With it, `accelerate launch` on N GPUs gives the completions, rewards and
losses of one GPU at the same global batch (up to floating-point differences of the logits).

Only temperature is supported (top-p, top-k and min-p filtering would need the same treatment
and are rejected rather than silently ignored).
"""

from __future__ import annotations

import hashlib

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed 64-bit integer
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's `>>` is arithmetic on negative values)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic): a counter-based generator, so
    every (row, position, token) gets its own number with no sequential state."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def uniform(keys: torch.Tensor, position: int, vocab: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), shape (rows, vocab), from each row's key and the position."""
    base = splitmix64(keys.view(-1, 1) ^ splitmix64(torch.full_like(keys.view(-1, 1), position)))
    z = splitmix64(base + torch.arange(vocab, device=keys.device, dtype=torch.int64).view(1, -1))
    return (_shr(z, 11).double() + 0.5) / float(1 << 53)


def row_key(seed: int, step: int | str, sample_id: str, replica: int) -> int:
    """A 63-bit key for one rollout: the same on every rank and for every batch layout."""
    digest = hashlib.blake2b(f"{seed}|{step}|{sample_id}|{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class GumbelSampler:
    """A `LogitsProcessor`: adds each row's Gumbel noise to logits / temperature. Use with
    `do_sample=False` (the argmax of the perturbed logits is the sample)."""

    def __init__(self, keys: list[int], temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
        self.keys = torch.tensor(keys, dtype=torch.int64)
        self.temperature = float(temperature)
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != len(self.keys):
            raise RuntimeError(f"layout-invariant sampling: {input_ids.shape[0]} rows but {len(self.keys)} keys")
        if self.start is None:  # completion position, not padded length: padding differs by layout
            self.start = input_ids.shape[1]
        u = uniform(self.keys.to(scores.device), input_ids.shape[1] - self.start, scores.shape[-1])
        gumbel = -torch.log(-torch.log(u))
        return (scores.double() / self.temperature + gumbel).to(scores.dtype)


def check_supported(top_p: float | None, top_k: int | None, min_p: float | None) -> None:
    if (top_p is not None and top_p < 1.0) or (top_k or 0) > 0 or (min_p or 0.0) > 0:
        raise ValueError(
            "layout_invariant_sampling supports temperature only: set top_p=1.0, top_k=0, min_p=None "
            f"(got top_p={top_p}, top_k={top_k}, min_p={min_p})"
        )
