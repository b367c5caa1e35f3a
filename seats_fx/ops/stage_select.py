"""Per-sample keep indices of stage 1 (diversity per window x modality) and stage 2 (query-guided budgets)."""

from __future__ import annotations

import torch

from seats_fx.ops.budget import (AUDIO, VIDEO, group_sums, keep_index_from_mask, top_per_group, top_per_slot,
                                 window_budgets)
from seats_fx.ops.diversity import diversity_select
from seats_fx.ops.sampling import random_select, uniform_select
from seats_fx.ops.schedule import count_at_level
from seats_fx.ops.sizes import SampleSizes, group_slot, host_table, read_sizes

TEXT = 0
# how stage 1 picks inside a (window, modality) group: SEATS, then the baselines' pre-LLM selectors
STAGE1_SELECTORS = ("weighted_diversity", "diversity", "random", "uniform")
# how stage 2 splits its budget: SEATS's window x modality allocation, or one global top-k (FastV)
STAGE2_ALLOCATIONS = ("windows", "global")


def _select_in_groups(embeds: torch.Tensor, weights: torch.Tensor, k: int, selector: str,
                      generator: torch.Generator) -> torch.Tensor:
    """Returns (G, k) sorted picks inside each of G equal-sized groups of tokens."""
    groups, n = weights.shape
    if selector == "weighted_diversity":
        return diversity_select(embeds, weights, k)
    if selector == "diversity":  # DivPrune: max-min diversity, every token weighted alike
        return diversity_select(embeds, torch.ones_like(weights), k)
    if selector == "random":
        return random_select(groups, n, k, generator, embeds.device)
    if selector == "uniform":
        return uniform_select(groups, n, k, embeds.device)
    raise ValueError(f"stage-1 selector must be one of {STAGE1_SELECTORS}, got {selector!r}")


def stage1_batches(sizes: SampleSizes, keep_level: dict[int, float]
                   ) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Returns the stage-1 batches of one sample: (n, k, [(window, modality), ...]) for the groups of n tokens
    that keep k, in order of first appearance of (n, k) over the groups in (window, modality) order.
    Host-only: the sizes are known."""
    batches: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for win, kind, n in sizes.groups():
        batches.setdefault((n, count_at_level(keep_level[kind], n)), []).append((win, kind))
    return [(n, k, groups) for (n, k), groups in batches.items()]


def stage1_picks(embeds: torch.Tensor, weights: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                 sizes: SampleSizes, keep_level: dict[int, float], selector: str = "weighted_diversity",
                 seed: int = 0, slot: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the positions stage 1 picks among the video/audio tokens of one sample (unsorted; their number
    is the sum of the batches' G * k, host-known), with no host read.

    Tokens are ordered by group (one stable sort on a host-made slot -> group rank table), so each batch of
    G equal groups is one (G, n) view of that order: one selection call per batch, not per window.
    slot: the tokens' ops.sizes.group_slot when the caller has it.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = stage1_batches(sizes, keep_level)
    if not batches:
        return torch.zeros(0, dtype=torch.long, device=embeds.device)
    windows = sizes.num_windows
    rank = [len(sizes.groups())] * (2 * windows + 2)  # slots of empty groups, text and padding sort last
    for g, (win, kind) in enumerate(group for _, _, groups in batches for group in groups):
        rank[(kind - VIDEO) * windows + win] = g
    key = host_table(rank, embeds.device)[group_slot(modality, window, windows) if slot is None else slot]
    order = torch.sort(key, stable=True).indices
    picks, start = [], 0
    for n, k, groups in batches:
        members = order[start:start + len(groups) * n].view(len(groups), n)
        start += len(groups) * n
        chosen = _select_in_groups(embeds[members], weights[members], k, selector, generator)
        picks.append(members.gather(1, chosen).flatten())
    return torch.cat(picks) if len(picks) > 1 else picks[0]


def stage1_count(sizes: SampleSizes, keep_level: dict[int, float]) -> int:
    """Returns how many video/audio tokens stage 1 keeps for one sample."""
    return sum(len(groups) * k for _, k, groups in stage1_batches(sizes, keep_level))


def stage1_keep_index(embeds: torch.Tensor, weights: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                      keep_level: dict[int, float], selector: str = "weighted_diversity",
                      seed: int = 0, sizes: SampleSizes | None = None) -> torch.Tensor:
    """Returns the sorted positions kept before the LLM: all text, plus per (window, modality) group the
    max(1, round(level * size)) tokens chosen by `selector` (SEATS: attention-weighted diversity).

    embeds: (L, D) decoder inputs; weights: (L,) encoder attention received; modality, window: (L,);
    keep_level: {VIDEO: fraction, AUDIO: fraction}; seed: the "random" selector's draws (one sample's
    picks depend only on its own layout and the seed). Groups of equal size and budget run as one batch.
    sizes: the sample's host-known counts (read_sizes); without them they are read here (one host read).
    """
    if sizes is None:
        sizes = read_sizes(modality[None], window[None])[0]
    keep = modality == TEXT
    keep = keep.index_fill(0, stage1_picks(embeds, weights, modality, window, sizes, keep_level, selector, seed),
                           True)
    return keep_index_from_mask(keep, modality.numel() - sizes.media + stage1_count(sizes, keep_level))


def stage2_keep_index(relevance: torch.Tensor, modality: torch.Tensor, window: torch.Tensor, num_windows: int,
                      video_keep: int, audio_keep: int, temperature: float,
                      allocation: str = "windows") -> torch.Tensor:
    """Returns the sorted positions kept at a stage-2 step: all text, plus the top-relevance tokens of each
    (window, modality) group under the budgets of `window_modality_budgets` ("windows"), or the top
    video_keep + audio_keep non-text tokens over the whole prompt ("global", FastV's rule). Output size is
    fixed: text count + min(video_keep + audio_keep, candidates left). Reads the text and media counts
    (eager callers); the glue calls stage2_select with counts it knows."""
    media = (modality == VIDEO) | (modality == AUDIO)
    text_count, media_count = [int(n) for n in torch.stack([(~media).sum(), media.sum()]).tolist()]
    slot = group_slot(modality, window.clamp(0, max(num_windows - 1, 0)), num_windows)
    return stage2_select(relevance, slot, num_windows, video_keep, audio_keep, temperature, allocation,
                         text_count, media_count)[0]


def stage2_select(relevance: torch.Tensor, slot: torch.Tensor, num_windows: int, video_keep: int, audio_keep: int,
                  temperature: float, allocation: str, text_count: int, media_count: int,
                  counts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (sorted kept positions, (2, W) tokens kept per window [video; audio], or None for "global") of
    one stage-2 step, with no host read: every token whose slot is 2W (text) is kept, none whose slot is
    2W + 1 (padding, fillers), plus the top scorers of each (modality, window) slot (ops.sizes.group_slot).
    text_count: tokens with slot 2W; media_count: tokens with a (modality, window) slot; counts: (2, W)
    tokens per group when the caller knows them (the previous step's budgets), else counted here.

    The step keeps min(video_keep + audio_keep, media_count) media tokens. A modality the schedule keeps
    that has no token left in the sequence passes its share to the other (the total stays host-known).
    A keep of 0 means the modality is absent from the prompt (the schedule's count for 0 tokens): then, as
    SEATS.md says, there is nothing to weigh across windows or split between modalities, and the step keeps
    the plain top-k of the other modality over all windows. That decision is made on the host-known keeps;
    a modality that lost its last token at an earlier step (only the device knows) still gets window
    budgets.
    """
    if allocation not in STAGE2_ALLOCATIONS:
        raise ValueError(f"stage-2 allocation must be one of {STAGE2_ALLOCATIONS}, got {allocation!r}")
    total = min(video_keep + audio_keep, media_count)
    count = text_count + total
    if allocation == "global" or video_keep == 0 or audio_keep == 0:
        kept = _top_over_all_media(relevance, slot, num_windows, total, count)
        return kept, None if allocation == "global" else _kept_per_group(slot, kept, num_windows)
    sums, counted = group_sums(relevance, slot, num_windows, with_counts=counts is None)
    limits = window_budgets(sums, counted if counts is None else counts, video_keep, audio_keep, total, temperature)
    return top_per_slot(relevance, slot, limits, count), limits[:2 * num_windows].view(2, num_windows)


def _top_over_all_media(relevance: torch.Tensor, slot: torch.Tensor, num_windows: int, total: int,
                        count: int) -> torch.Tensor:
    """Returns the sorted positions of every text token and the `total` most relevant media tokens of the
    whole sequence, whatever their window or modality (padding and fillers never)."""
    media_slot = torch.where(slot < 2 * num_windows, 0, slot - 2 * num_windows + 1)
    return top_per_group(relevance, media_slot, relevance.new_full((1,), total, dtype=torch.long), count)


def _kept_per_group(slot: torch.Tensor, kept: torch.Tensor, num_windows: int) -> torch.Tensor:
    """Returns (2, W) how many of the kept positions fall in each (modality, window) group: the next step's
    group counts, as the window budgets are when the windows decide."""
    per_slot = torch.zeros(2 * num_windows + 2, dtype=torch.long, device=slot.device)
    per_slot.index_add_(0, slot[kept], torch.ones_like(kept))
    return per_slot[:2 * num_windows].view(2, num_windows)
