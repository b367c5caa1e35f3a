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


def _masked_softmax(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    # all -inf (modality absent) gives NaN: that modality then weighs nothing, without a host sync
    return torch.nan_to_num(torch.softmax(scores / temperature, dim=0), nan=0.0)


# window_budgets' per-slot keep limits end with two entries for the slots outside every group: ALWAYS for
# 2W (text: kept whatever its score) and 0 for 2W + 1 (padding and fillers: never kept); ops.sizes.group_slot
ALWAYS = 2 ** 62


def window_modality_budgets(relevance: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                            num_windows: int, video_keep: int, audio_keep: int,
                            temperature: float, total: int | None = None) -> torch.Tensor:
    """Returns (num_windows, 2) budgets [video, audio] per window; they sum to video_keep + audio_keep.

    relevance, modality, window: (L,) per token of the current sequence; modality codes VIDEO / AUDIO mark
    candidates (anything else is text and ignored); window ids are in [0, num_windows).
    Inter-window: weight_w = mean over the modalities present of softmax(mean relevance of the modality in
    w / T) (a modality absent everywhere contributes nothing); window budget ~ weight * total, at least 1
    for every window holding tokens when the total covers all of them (empty window ids do not count), at
    most the window's size. Intra-window: video share w_v*vk / (w_v*vk + w_a*ak), clamped to each side's
    size, at least one token of each modality present when the budget allows. `total` (default video_keep
    + audio_keep) caps the sum when fewer candidates are left. These are the window budgets only: a step
    where one modality is absent keeps the plain top-k instead (stage_select.stage2_select).
    """
    slot = torch.where((modality == VIDEO) | (modality == AUDIO),
                       (modality - VIDEO) * num_windows + window.clamp(0, num_windows - 1), 2 * num_windows)
    sums, counts = group_sums(relevance, slot, num_windows)
    total = video_keep + audio_keep if total is None else total
    limits = window_budgets(sums, counts, video_keep, audio_keep, total, temperature)
    return limits[:2 * num_windows].view(2, num_windows).t()


def group_sums(relevance: torch.Tensor, slot: torch.Tensor, num_windows: int,
               with_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (2, W) float64 sums of relevance, and token counts (None unless with_counts), per [video,
    audio] x window group, from the group slot of each token ((modality - 1) * W + window; 2W and 2W + 1
    for tokens outside every group, see ops.sizes.group_slot)."""
    values = relevance.double()
    if with_counts:
        values = torch.stack([values, torch.ones_like(values)], dim=1)
    sums = torch.zeros(2 * num_windows + 2, *values.shape[1:], dtype=torch.float64,
                       device=relevance.device).index_add_(0, slot, values)
    if not with_counts:
        return sums[:-2].view(2, num_windows), None
    return sums[:-2, 0].view(2, num_windows), sums[:-2, 1].view(2, num_windows)


@torch.library.custom_op("seats_fx::window_budgets", mutates_args=())
def window_budgets(sums: torch.Tensor, counts: torch.Tensor, video_keep: int, audio_keep: int, total: int,
                   temperature: float) -> torch.Tensor:
    """Returns (2W + 2,) long keep limits per group slot: video budgets of windows 0..W-1, audio budgets,
    then ALWAYS and 0 (see ALWAYS), from (2, W) float64 sums of relevance and (2, W) token counts per
    modality and window (see window_modality_budgets for the rule). One op at the dispatcher: one Triton
    kernel on CUDA, these torch ops elsewhere."""
    return window_budgets_torch(sums, counts, video_keep, audio_keep, total, temperature)


@window_budgets.register_fake
def _(sums, counts, video_keep, audio_keep, total, temperature):
    return sums.new_empty(2 * sums.shape[1] + 2, dtype=torch.long)


@window_budgets.register_kernel("cuda")
def _(sums, counts, video_keep, audio_keep, total, temperature):
    from seats_fx.ops import triton_kernels

    if triton_kernels.usable(sums) and sums.shape[1] <= triton_kernels.MAX_WINDOWS:
        return triton_kernels.window_budgets(sums, counts, video_keep, audio_keep, total, temperature)
    return window_budgets_torch(sums, counts, video_keep, audio_keep, total, temperature)


def window_budgets_torch(sums: torch.Tensor, counts: torch.Tensor, video_keep: int, audio_keep: int, total: int,
                         temperature: float) -> torch.Tensor:
    """The torch implementation of window_budgets (the reference for the Triton kernel)."""
    counts = counts.double()
    means = torch.where(counts > 0, sums / counts.clamp_min(1), float("-inf"))
    video_weight = _masked_softmax(means[0], temperature)
    audio_weight = _masked_softmax(means[1], temperature)
    # modalities present in this sequence (and kept by the schedule) share the window weight
    present = (counts[0].sum() > 0).double() * float(video_keep > 0) + \
        (counts[1].sum() > 0).double() * float(audio_keep > 0)
    window_weight = (video_weight + audio_weight) / present.clamp_min(1)
    video_size, audio_size = counts[0].long(), counts[1].long()
    window_size = video_size + audio_size
    occupied = (window_size > 0).long()
    # "at least 1 per window holding tokens" whenever the total covers every such window. Empty window ids
    # (no tokens from the layout, or none left by earlier steps) do not count: their size caps them at 0.
    # Decided on the device: after a stage-2 step only the device knows which windows still hold tokens.
    lower = occupied * (occupied.sum() <= total)
    window_budget = allocate_exact(window_weight * total, lower, window_size, total)

    video_claim = video_weight * video_keep
    audio_claim = audio_weight * audio_keep
    share = torch.where(video_claim + audio_claim > 0, video_claim / (video_claim + audio_claim),
                        (video_size > 0).double())
    both = (video_size > 0) & (audio_size > 0) & (window_budget >= 2)
    low = torch.maximum(window_budget - audio_size, both.long())
    high = torch.minimum(video_size, window_budget - both.long())
    video_budget = torch.minimum(torch.maximum(torch.round(window_budget * share).long(), low), high)
    return torch.cat([video_budget, window_budget - video_budget, video_budget.new_full((1,), ALWAYS),
                      video_budget.new_zeros(1)])


def rank_within_groups(scores: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Returns (L,) rank of each token inside its group by descending score (0 = best; ties: lower index)."""
    ordered, sorted_groups = _order_by_group_then_score(scores, group)
    rank = torch.empty_like(group)
    rank[ordered] = _rank_in_sorted_groups(sorted_groups)
    return rank


def _order_by_group_then_score(scores: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns token positions ordered by (group, descending score, position), and their groups."""
    by_score = torch.sort(scores, descending=True, stable=True).indices
    grouped = torch.sort(group[by_score], stable=True)
    return by_score[grouped.indices], grouped.values


def _rank_in_sorted_groups(sorted_groups: torch.Tensor) -> torch.Tensor:
    """Returns i - (first index of sorted_groups[i]'s value): the rank inside each run of equal groups."""
    first = torch.searchsorted(sorted_groups, sorted_groups)
    return torch.arange(sorted_groups.numel(), device=sorted_groups.device) - first


def keep_index_from_mask(keep: torch.Tensor, count: int) -> torch.Tensor:
    """Returns the sorted positions of the `count` True entries of each row of a mask (count is host-known):
    a stable descending sort puts the True entries first, in position order."""
    return torch.sort(keep, dim=-1, descending=True, stable=True).indices[..., :count]


def top_per_group(scores: torch.Tensor, slot: torch.Tensor, budget: torch.Tensor, count: int) -> torch.Tensor:
    """Returns the sorted positions of the top budget[g] scorers of each group g, plus every token whose slot
    is G = budget.numel() (always kept) and none whose slot is G + 1 (never kept); count = always-kept +
    sum(budget), host-known. Ties: lower position."""
    limits = torch.nn.functional.pad(torch.nn.functional.pad(budget.long(), (0, 1), value=ALWAYS), (0, 1))
    return top_per_slot(scores, slot, limits, count)


@torch.library.custom_op("seats_fx::top_per_slot", mutates_args=())
def top_per_slot(scores: torch.Tensor, slot: torch.Tensor, limits: torch.Tensor, count: int) -> torch.Tensor:
    """Returns the sorted positions of the top limits[s] scorers among the tokens of each slot s; count (the
    number kept, host-known) must equal sum over slots of min(limits[s], tokens in s). Ties: lower position.

    scores: (L,) float; slot: (L,) long in [0, S); limits: (S,) long (ALWAYS and 0 allowed). A larger count
    (at most L) is padded with L. One op at the dispatcher: two Triton kernels on CUDA (rank within the slot,
    then compaction), these torch ops (two sorts, a searchsorted, a final sort, ...) elsewhere."""
    return top_per_slot_torch(scores, slot, limits, count)


@top_per_slot.register_fake
def _(scores, slot, limits, count):
    return scores.new_empty(count, dtype=torch.long)


@top_per_slot.register_kernel("cuda")
def _(scores, slot, limits, count):
    from seats_fx.ops import triton_kernels

    if triton_kernels.usable(scores) and scores.numel() <= triton_kernels.MAX_RANKED_TOKENS and \
            scores.dtype in triton_kernels.RANKED_DTYPES:
        return triton_kernels.top_per_slot(scores, slot, limits, count)
    return top_per_slot_torch(scores, slot, limits, count)


def top_per_slot_torch(scores: torch.Tensor, slot: torch.Tensor, limits: torch.Tensor, count: int) -> torch.Tensor:
    """The torch implementation of top_per_slot (the reference for the Triton kernels)."""
    ordered, sorted_slots = _order_by_group_then_score(scores, slot)
    kept = torch.where(_rank_in_sorted_groups(sorted_slots) < limits[sorted_slots], ordered, slot.numel())
    return torch.sort(kept).values[:count]


def select_by_group_budget(scores: torch.Tensor, group: torch.Tensor, budget: torch.Tensor,
                           always_keep: torch.Tensor, count: int) -> torch.Tensor:
    """Returns sorted keep indices: every always_keep token plus the top budget[g] scorers of each group g.

    group: (L,) group id per token, ignored where always_keep; count = always-kept + sum(budget), host-known.
    """
    return top_per_group(scores, torch.where(always_keep, budget.numel(), group), budget, count)
