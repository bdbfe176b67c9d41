"""Which rows of a GRPO batch form the groups of one prompt that `ego3s.models.generation.group_generate`
rolls out from one prefill: TRL repeats each prompt G times, with the same visual tensors."""

from __future__ import annotations

import torch


def groups_of(prompt_ids: list, visual: list | None, group: int) -> list[int] | None:
    """Start rows of the groups when the rows come in runs of `group` identical prompts with the
    same visual tensors (how TRL repeats each prompt); None when any run differs."""
    n = len(prompt_ids)
    if group < 2 or n == 0 or n % group:
        return None
    starts = list(range(0, n, group))
    for s in starts:
        for r in range(s + 1, s + group):
            if list(prompt_ids[r]) != list(prompt_ids[s]):
                return None
            if visual is not None and not _same_visual(visual[r], visual[s]):
                return None
    return starts


def _same_visual(a: dict | None, b: dict | None) -> bool:
    if a is b:
        return True
    a, b = a or {}, b or {}
    if a.keys() != b.keys():
        return False
    return all(
        a[k] is b[k]
        or (a[k].shape == b[k].shape and torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k])
        for k in a
    )
