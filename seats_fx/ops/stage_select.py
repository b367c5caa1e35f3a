"""Per-sample keep indices of stage 1 (diversity per window x modality) and stage 2 (query-guided budgets)."""

from __future__ import annotations

from collections import defaultdict

import torch

from seats_fx.ops.budget import AUDIO, VIDEO, select_by_group_budget, window_modality_budgets
from seats_fx.ops.diversity import diversity_select
from seats_fx.ops.sampling import random_select, uniform_select
from seats_fx.ops.schedule import count_at_level

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


def stage1_keep_index(embeds: torch.Tensor, weights: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                      keep_level: dict[int, float], selector: str = "weighted_diversity",
                      seed: int = 0) -> torch.Tensor:
    """Returns the sorted positions kept before the LLM: all text, plus per (window, modality) group the
    max(1, round(level * size)) tokens chosen by `selector` (SEATS: attention-weighted diversity).

    embeds: (L, D) decoder inputs; weights: (L,) encoder attention received; modality, window: (L,);
    keep_level: {VIDEO: fraction, AUDIO: fraction}; seed: the "random" selector's draws (one sample's
    picks depend only on its own layout and the seed). Groups of equal size and budget run as one batch.
    """
    generator = torch.Generator().manual_seed(seed)
    members: dict[tuple[int, int], list[int]] = defaultdict(list)
    for position, (kind, win) in enumerate(zip(modality.tolist(), window.tolist())):
        if kind != TEXT:
            members[(win, kind)].append(position)
    batches: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
    for (_, kind), positions in members.items():
        batches[(len(positions), count_at_level(keep_level[kind], len(positions)))].append(positions)
    kept = [torch.nonzero(modality == TEXT).flatten()]
    for (_, k), groups in batches.items():
        index = torch.tensor(groups, device=embeds.device)
        chosen = _select_in_groups(embeds[index], weights[index], k, selector, generator)
        kept.append(index.gather(1, chosen).flatten())
    return torch.sort(torch.cat(kept)).values


def stage2_keep_index(relevance: torch.Tensor, modality: torch.Tensor, window: torch.Tensor, num_windows: int,
                      video_keep: int, audio_keep: int, temperature: float,
                      allocation: str = "windows") -> torch.Tensor:
    """Returns the sorted positions kept at a stage-2 step: all text, plus the top-relevance tokens of each
    (window, modality) group under the budgets of `window_modality_budgets` ("windows"), or the top
    video_keep + audio_keep non-text tokens over the whole prompt ("global", FastV's rule). Output size is
    fixed: text count + min(video_keep + audio_keep, candidates left)."""
    is_text = modality == TEXT
    video_present, audio_present = int((modality == VIDEO).sum()), int((modality == AUDIO).sum())
    video_keep, audio_keep = (video_keep if video_present else 0), (audio_keep if audio_present else 0)
    total = min(video_keep + audio_keep, video_present + audio_present)
    if allocation == "global":
        budget = torch.tensor([total], device=relevance.device)
        return select_by_group_budget(relevance, torch.zeros_like(window), budget, is_text, int(is_text.sum()) + total)
    if allocation != "windows":
        raise ValueError(f"stage-2 allocation must be one of {STAGE2_ALLOCATIONS}, got {allocation!r}")
    budgets = window_modality_budgets(relevance, modality, window, num_windows, video_keep, audio_keep,
                                      temperature, total)
    group = torch.where(is_text, torch.zeros_like(window), window * 2 + (modality - VIDEO))
    count = int(is_text.sum()) + total
    return select_by_group_budget(relevance, group, budgets.flatten(), is_text, count)
