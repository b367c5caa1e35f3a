"""Per-sample keep indices of stage 1 (diversity per window x modality) and stage 2 (query-guided budgets)."""

from __future__ import annotations

from collections import defaultdict

import torch

from seats_fx.ops.budget import AUDIO, VIDEO, select_by_group_budget, window_modality_budgets
from seats_fx.ops.diversity import diversity_select
from seats_fx.ops.schedule import count_at_level

TEXT = 0


def stage1_keep_index(embeds: torch.Tensor, weights: torch.Tensor, modality: torch.Tensor, window: torch.Tensor,
                      keep_level: dict[int, float]) -> torch.Tensor:
    """Returns the sorted positions kept before the LLM: all text, plus per (window, modality) group the
    max(1, round(level * size)) tokens chosen by attention-weighted diversity.

    embeds: (L, D) decoder inputs; weights: (L,) encoder attention received; modality, window: (L,);
    keep_level: {VIDEO: fraction, AUDIO: fraction}. Groups of equal size and budget run as one batch.
    """
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
        chosen = diversity_select(embeds[index], weights[index], k)
        kept.append(index.gather(1, chosen).flatten())
    return torch.sort(torch.cat(kept)).values


def stage2_keep_index(relevance: torch.Tensor, modality: torch.Tensor, window: torch.Tensor, num_windows: int,
                      video_keep: int, audio_keep: int, temperature: float) -> torch.Tensor:
    """Returns the sorted positions kept at a stage-2 step: all text, plus the top-relevance tokens of each
    (window, modality) group under the budgets of `window_modality_budgets`. Output size is fixed:
    text count + min(video_keep + audio_keep, candidates left)."""
    is_text = modality == TEXT
    video_present, audio_present = int((modality == VIDEO).sum()), int((modality == AUDIO).sum())
    video_keep, audio_keep = (video_keep if video_present else 0), (audio_keep if audio_present else 0)
    total = min(video_keep + audio_keep, video_present + audio_present)
    budgets = window_modality_budgets(relevance, modality, window, num_windows, video_keep, audio_keep,
                                      temperature, total)
    group = torch.where(is_text, torch.zeros_like(window), window * 2 + (modality - VIDEO))
    count = int(is_text.sum()) + total
    return select_by_group_budget(relevance, group, budgets.flatten(), is_text, count)
