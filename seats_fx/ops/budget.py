"""Stage-2 budgets: window -> modality allocation with exact totals, and per-group top-k keep indices."""

from __future__ import annotations

import torch

VIDEO, AUDIO = 1, 2


def allocate_exact(targets: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, total: int) -> torch.Tensor:
    """Returns integer budgets b (same shape as targets) with sum(b) == total and lower <= b <= upper.

    Each unit of budget is a slot (i, j): slot j of entry i has priority targets[i] - j, the first lower[i]
    slots are forced, slots at or past upper[i] do not exist; the `total` best slots win. This is the
    "round, then adjust one token at a time towards the largest remaining gap" rule in closed form, with a
    fixed-size tensor of slots and no host syncs. Requires sum(lower) <= total <= sum(upper) (checked by
    the caller on host-known counts); ties go to the lower index.
    """
    width = int(upper.numel())
    if width == 0:
        return torch.zeros_like(upper)
    slots = int(total)
    # fixed column count: no entry can take more than `total` slots
    columns = max(1, slots)
    j = torch.arange(columns, device=targets.device, dtype=torch.float64)
    priority = targets.double().unsqueeze(1) - j
    priority = torch.where(j < lower.unsqueeze(1), torch.full_like(priority, float("inf")), priority)
    priority = torch.where(j >= upper.unsqueeze(1), torch.full_like(priority, float("-inf")), priority)
    flat = priority.flatten()
    # stable descending order: ties resolved by (entry, slot) order
    order = torch.sort(-flat, stable=True).indices[:slots]
    chosen = torch.zeros_like(flat, dtype=torch.long)
    chosen[order] = 1
    return chosen.view(width, columns).sum(dim=1).to(upper.dtype)


def _group_means(values: torch.Tensor, group: torch.Tensor, member: torch.Tensor, groups: int) -> torch.Tensor:
    """Returns (groups,) mean of values over members of each group; -inf where a group has no member."""
    index = torch.where(member, group, torch.full_like(group, groups))
    sums = torch.zeros(groups + 1, dtype=torch.float64, device=values.device).index_add_(0, index, values.double())
    counts = torch.zeros(groups + 1, dtype=torch.float64, device=values.device).index_add_(
        0, index, member.double())
    means = sums[:groups] / counts[:groups].clamp_min(1)
    return torch.where(counts[:groups] > 0, means, torch.full_like(means, float("-inf")))


def _masked_softmax(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    # all -inf (modality absent) gives NaN: that modality then weighs nothing, without a host sync
    return torch.nan_to_num(torch.softmax(scores / temperature, dim=0), nan=0.0)


def window_modality_budgets(relevance: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                            num_windows: int, video_keep: int, audio_keep: int,
                            temperature: float, total: int | None = None) -> torch.Tensor:
    """Returns (num_windows, 2) budgets [video, audio] per window; they sum to video_keep + audio_keep.

    relevance, modality, window: (L,) per token of the current sequence; modality codes VIDEO / AUDIO mark
    candidates (anything else is text and ignored); window ids are in [0, num_windows).
    Inter-window: weight_w = (softmax(mean video relevance / T) + softmax(mean audio relevance / T)) / 2
    (a modality absent everywhere contributes nothing); window budget ~ weight * total, at least 1 when the
    total allows it, at most the window's size. Intra-window: video share w_v*vk / (w_v*vk + w_a*ak),
    clamped to each side's size, at least one token of each modality present when the budget allows.
    `total` (default video_keep + audio_keep) caps the sum when fewer candidates are left.
    """
    is_video, is_audio = modality == VIDEO, modality == AUDIO
    video_size = torch.zeros(num_windows, dtype=torch.long, device=relevance.device).index_add_(
        0, window.clamp(0, num_windows - 1), is_video.long())
    audio_size = torch.zeros(num_windows, dtype=torch.long, device=relevance.device).index_add_(
        0, window.clamp(0, num_windows - 1), is_audio.long())
    video_weight = _masked_softmax(_group_means(relevance, window, is_video, num_windows), temperature)
    audio_weight = _masked_softmax(_group_means(relevance, window, is_audio, num_windows), temperature)
    present = int(video_keep > 0) + int(audio_keep > 0)
    window_weight = (video_weight + audio_weight) / max(1, present)
    total = video_keep + audio_keep if total is None else total
    window_size = video_size + audio_size
    occupied = window_size > 0
    # "at least 1 per window" only when every occupied window can get one
    lower = occupied.long() if total >= num_windows else torch.zeros_like(window_size)
    window_budget = allocate_exact(window_weight * total, lower, window_size, total)

    video_claim = video_weight * video_keep
    audio_claim = audio_weight * audio_keep
    share = torch.where(video_claim + audio_claim > 0, video_claim / (video_claim + audio_claim),
                        (video_size > 0).double())
    both = (video_size > 0) & (audio_size > 0) & (window_budget >= 2)
    low = torch.maximum(window_budget - audio_size, both.long())
    high = torch.minimum(video_size, window_budget - both.long())
    video_budget = torch.minimum(torch.maximum(torch.round(window_budget * share).long(), low), high)
    return torch.stack([video_budget, window_budget - video_budget], dim=1)


def rank_within_groups(scores: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Returns (L,) rank of each token inside its group by descending score (0 = best; ties: lower index)."""
    by_score = torch.sort(-scores.double(), stable=True).indices
    by_group = torch.sort(group[by_score], stable=True).indices
    ordered = by_score[by_group]
    counts = torch.zeros(num_groups + 1, dtype=torch.long, device=scores.device).index_add_(
        0, group, torch.ones_like(group))
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(group)
    rank[ordered] = torch.arange(group.numel(), device=scores.device) - starts[group[ordered]]
    return rank


def keep_index_from_mask(keep: torch.Tensor, count: int) -> torch.Tensor:
    """Returns the sorted positions of the `count` True entries of a 1-D mask (count is host-known)."""
    return torch.sort(torch.sort((~keep).to(torch.uint8), stable=True).indices[:count]).values


def select_by_group_budget(scores: torch.Tensor, group: torch.Tensor, budget: torch.Tensor,
                           always_keep: torch.Tensor, count: int) -> torch.Tensor:
    """Returns sorted keep indices: every always_keep token plus the top budget[g] scorers of each group g.

    group: (L,) group id per token, ignored where always_keep; count = always-kept + sum(budget), host-known.
    """
    num_groups = int(budget.numel())
    group = torch.where(always_keep, torch.full_like(group, num_groups), group)
    rank = rank_within_groups(scores, group, num_groups)
    padded_budget = torch.cat([budget.long(), budget.new_zeros(1).long()])
    keep = always_keep | (rank < padded_budget[group])
    return keep_index_from_mask(keep, count)
