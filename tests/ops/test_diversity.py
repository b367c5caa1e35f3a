import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.diversity import DISTANCE_GRID, diversity_select


def naive_max_min(embeds: torch.Tensor, weights: torch.Tensor, k: int) -> list[int]:
    """Independent loop version: distance from s to c is (1 - cos) * weight[c] / max weight, on the grid."""
    x = embeds.double().tolist()
    top = float(weights.max())
    a = [w / top for w in weights.double().tolist()]
    n = len(x)

    def dist(s, c):
        dot = sum(p * q for p, q in zip(x[s], x[c]))
        ns, nc = math.sqrt(sum(p * p for p in x[s])), math.sqrt(sum(q * q for q in x[c]))
        return round(max(0.0, 1.0 - dot / max(ns * nc, 1e-12)) * a[c] / DISTANCE_GRID)

    if n == 1:
        return [0]
    nearest = [min(dist(s, c) for s in range(n) if s != c) for c in range(n)]
    chosen = [max(range(n), key=lambda c: (nearest[c], -c))]
    while len(chosen) < k:
        rest = [c for c in range(n) if c not in chosen]
        chosen.append(max(rest, key=lambda c: (min(dist(s, c) for s in chosen), -c)))
    return sorted(chosen)


group_shapes = st.tuples(st.integers(1, 4), st.integers(1, 24), st.integers(2, 16)).flatmap(
    lambda s: st.tuples(st.just(s), st.integers(1, s[1]), st.integers(0, 2**31 - 1)))


@settings(max_examples=100)
@given(group_shapes)
def test_kept_indices_sorted_unique_in_group_and_deterministic(args):
    (groups, n, dim), k, seed = args
    gen = torch.Generator().manual_seed(seed)
    embeds, weights = torch.randn(groups, n, dim, generator=gen), torch.rand(groups, n, generator=gen)
    chosen = diversity_select(embeds, weights, k)
    assert chosen.shape == (groups, k)
    for row in chosen.tolist():
        assert row == sorted(set(row)) and all(0 <= i < n for i in row)
    assert torch.equal(chosen, diversity_select(embeds, weights, k))


@settings(max_examples=100)
@given(group_shapes)
def test_selection_matches_naive_greedy_max_min(args):
    (groups, n, dim), k, seed = args
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(groups, n, dim, generator=gen, dtype=torch.float64)
    weights = torch.rand(groups, n, generator=gen, dtype=torch.float64) + 0.05
    chosen = diversity_select(embeds, weights, k)
    for g in range(groups):
        assert chosen[g].tolist() == naive_max_min(embeds[g], weights[g], k)


def test_keep_all_returns_every_index():
    embeds, weights = torch.randn(2, 7, 4), torch.rand(2, 7)
    assert torch.equal(diversity_select(embeds, weights, 7), torch.arange(7).expand(2, 7))


def test_duplicates_are_not_chosen_twice_before_novel_tokens():
    base = torch.randn(3, 8)
    embeds = torch.cat([base, base]).unsqueeze(0)  # every token has an exact duplicate
    chosen = diversity_select(embeds, torch.ones(1, 6), 3)[0].tolist()
    assert len({i % 3 for i in chosen}) == 3


def test_near_duplicates_tie_exactly_and_the_lower_index_wins():
    # three copies of one token, differing only by float noise, and one distinct token: whichever copy
    # the noise favours, the pick among the copies must be the lowest index
    base, other = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    for seed in range(20):
        noise = 1e-7 * torch.randn(3, 8, generator=torch.Generator().manual_seed(seed))
        embeds = torch.stack([*(base + noise), other])[None]
        assert diversity_select(embeds, torch.ones(1, 4), 2).tolist() == [[0, 3]]
