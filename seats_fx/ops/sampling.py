"""Content-blind stage-1 selectors the baselines use: seeded random and evenly spaced picks per group."""

from __future__ import annotations

import torch


def _check(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for groups of {n} tokens, got {k}")


def uniform_select(groups: int, n: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """Returns (groups, k) sorted indices spread evenly over n tokens: the middle of each of k equal spans.

    Group tokens are in time order (a window's frames one after another, then audio by time), so this is
    uniform temporal sampling at the resolution of one window's group.
    """
    _check(n, k)
    picks = ((torch.arange(k, device=device, dtype=torch.float64) + 0.5) * n / k).floor().long()
    return picks.expand(groups, k).clone()


def random_select(groups: int, n: int, k: int, generator: torch.Generator,
                  device: torch.device | None = None) -> torch.Tensor:
    """Returns (groups, k) sorted indices drawn without replacement from `generator` (host-side, seeded)."""
    _check(n, k)
    draws = torch.stack([torch.randperm(n, generator=generator)[:k] for _ in range(groups)])
    picks = torch.sort(draws, dim=1).values
    if device is None or torch.device(device).type != "cuda":
        return picks.to(device)
    return picks.pin_memory().to(device, non_blocking=True)  # a pageable copy would sync the stream
