"""SEATS selection math on plain tensors: no FX, no transformers. One implementation of each formula."""

from seats_fx.ops.budget import (AUDIO, VIDEO, allocate_exact, keep_index_from_mask, rank_within_groups,
                                 select_by_group_budget, window_modality_budgets)
from seats_fx.ops.diversity import diversity_select, weighted_cosine_distance
from seats_fx.ops.gather import gather_square_mask, gather_tokens
from seats_fx.ops.relevance import encoder_attention_received, text_query_relevance
from seats_fx.ops.schedule import ModalitySchedule, count_at_level, scaled_layers, solve_schedule

__all__ = [
    "AUDIO", "VIDEO", "ModalitySchedule", "allocate_exact", "count_at_level", "diversity_select",
    "encoder_attention_received", "gather_square_mask", "gather_tokens", "keep_index_from_mask",
    "rank_within_groups", "scaled_layers", "select_by_group_budget", "solve_schedule", "text_query_relevance",
    "weighted_cosine_distance", "window_modality_budgets",
]
