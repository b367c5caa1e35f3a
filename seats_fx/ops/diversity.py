"""Stage-1 selection: attention-weighted greedy max-min diversity inside equal-sized token groups."""

from __future__ import annotations

import torch


# distances are compared on this grid: candidates equal up to float noise (repeated frames, silence) tie
# exactly and the lower index wins, so kernels that differ in the last bits (Inductor vs eager) pick alike
DISTANCE_GRID = 2.0 ** -14


def weighted_cosine_distance(embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Returns D[g, s, c] = (1 - cos(x_s, x_c)) * a_c / max(a) for groups of tokens, on DISTANCE_GRID.

    embeds: (G, n, d); weights: (G, n) attention each token receives. Column c (the candidate) is scaled
    by its own weight, so tokens the encoder attends to are preferred among equally novel ones. Dividing
    by the group's largest weight changes no choice (max-min is scale-free) and puts D in [0, 2].
    """
    unit = torch.nn.functional.normalize(embeds.float(), dim=-1)
    cosine = unit @ unit.transpose(1, 2)
    weights = weights.float()
    scale = weights.amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    distance = (1.0 - cosine).clamp_min(0.0) * (weights / scale).unsqueeze(1)
    return torch.round(distance / DISTANCE_GRID) * DISTANCE_GRID


def diversity_select(embeds: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """Returns (G, k) sorted indices chosen by greedy max-min over attention-weighted distances.

    First pick: the token whose nearest neighbour (weighted) is farthest. Then, k-1 times, the token whose
    minimum weighted distance to the chosen set is largest. Ties go to the lower index (deterministic).
    `k` is a host int, so the output shape is fixed; no data-dependent shapes or host syncs.
    """
    if embeds.dim() != 3 or weights.shape != embeds.shape[:2]:
        raise ValueError(f"expected embeds (G, n, d) and weights (G, n), got {tuple(embeds.shape)} "
                         f"and {tuple(weights.shape)}")
    groups, n, _ = embeds.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for groups of {n} tokens, got {k}")
    if k == n:
        return torch.arange(n, device=embeds.device).expand(groups, n).clone()
    return torch.sort(greedy_max_min(weighted_cosine_distance(embeds, weights), k), dim=1).values


@torch.library.custom_op("seats_fx::greedy_max_min", mutates_args=())
def greedy_max_min(distance: torch.Tensor, k: int) -> torch.Tensor:
    """Returns (G, k) picks, in the order picked, of greedy max-min over (G, n, n) distances D[g, s, c]
    (from a chosen s to a candidate c): first the candidate whose nearest other token is farthest, then
    k-1 times the candidate farthest from its nearest pick; ties to the lower index. One op at the
    dispatcher: one Triton kernel (one program per group) on CUDA, a loop of torch ops elsewhere."""
    return greedy_max_min_torch(distance, k)


@greedy_max_min.register_fake
def _(distance, k):
    return distance.new_empty(distance.shape[0], k, dtype=torch.long)


@greedy_max_min.register_kernel("cuda")
def _(distance, k):
    from seats_fx.ops import triton_kernels

    if triton_kernels.usable(distance) and distance.shape[1] <= triton_kernels.MAX_GROUP:
        return triton_kernels.greedy_max_min(distance, k)
    return greedy_max_min_torch(distance, k)


def greedy_max_min_torch(distance: torch.Tensor, k: int) -> torch.Tensor:
    """The torch implementation of greedy_max_min: k - 1 steps of a few ops each (the Triton kernel's
    reference)."""
    groups, n, _ = distance.shape
    eye = torch.eye(n, dtype=torch.bool, device=distance.device)
    # nearest-neighbour distance of each candidate c: min over other tokens s of D[s, c]
    nearest = distance.masked_fill(eye, float("inf")).amin(dim=1)
    if n == 1:
        nearest = torch.zeros_like(nearest)
    chosen = torch.empty(groups, k, dtype=torch.long, device=distance.device)
    first = torch.argmax(nearest, dim=1)
    chosen[:, 0] = first
    taken = torch.zeros(groups, n, dtype=torch.bool, device=distance.device)
    taken.scatter_(1, first.unsqueeze(1), True)
    min_to_chosen = distance.gather(1, first.view(groups, 1, 1).expand(groups, 1, n)).squeeze(1)
    for step in range(1, k):
        pick = torch.argmax(min_to_chosen.masked_fill(taken, float("-inf")), dim=1)
        chosen[:, step] = pick
        taken.scatter_(1, pick.unsqueeze(1), True)
        row = distance.gather(1, pick.view(groups, 1, 1).expand(groups, 1, n)).squeeze(1)
        min_to_chosen = torch.minimum(min_to_chosen, row)
    return chosen
