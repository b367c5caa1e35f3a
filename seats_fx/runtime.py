"""Per-call runtime state of the seats backend: the modality tap and the stats of the last call.

Dynamo splits a thinker forward into many graphs; the graph holding the decoder never sees `input_ids`.
Graphs that compare `input_ids` with the model's modality token ids record them here when they run;
the decoder graph of the same forward takes them (and checks they belong to its `inputs_embeds`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch


@dataclass
class ModalityTap:
    """What earlier graphs of the current forward saw: input_ids (B, L), the token ids of each modality,
    and (when the embedding lookup was seen) the embedding weight, to verify the match."""

    input_ids: torch.Tensor
    token_ids: dict[str, tuple[int, ...]]
    embed_weight: torch.Tensor | None = None


@dataclass
class SeatsStats:
    """What the seats backend did in its last decoder call.

    pruned: whether selection ran (False: the reason is in `skipped`); stages: (stage, after_layer,
    {modality: count}) in order; layer_tokens: sequence length each decoder layer processed;
    layer_counts: tokens of each modality each layer processed; input_counts: counts before any stage.
    """

    pruned: bool = False
    skipped: str | None = None
    input_counts: dict[str, int] = field(default_factory=dict)
    stages: list[tuple[str, int, dict[str, int]]] = field(default_factory=list)
    layer_tokens: list[int] = field(default_factory=list)
    layer_counts: list[dict[str, int]] = field(default_factory=list)
    kept_positions: torch.Tensor | None = None
    stage_positions: list[torch.Tensor] = field(default_factory=list)

    def mean_fraction(self, modality: str) -> float:
        """Returns the layer-averaged fraction of `modality` tokens processed (1.0 when nothing was pruned)."""
        total = self.input_counts.get(modality, 0)
        if not total or not self.layer_counts:
            return 1.0
        return sum(c[modality] for c in self.layer_counts) / len(self.layer_counts) / total


_local = threading.local()


def record_modality_tap(input_ids: torch.Tensor, token_ids: dict[str, tuple[int, ...]]) -> None:
    """Stores the input_ids a placeholder-mask graph just saw (keeps an embedding weight seen before)."""
    previous: ModalityTap | None = getattr(_local, "tap", None)
    weight = previous.embed_weight if previous is not None and previous.input_ids is input_ids else None
    _local.tap = ModalityTap(input_ids, token_ids, weight)


def record_embedding(input_ids: torch.Tensor, weight: torch.Tensor) -> None:
    """Stores the input_ids and embedding weight an embedding-lookup graph just saw."""
    previous: ModalityTap | None = getattr(_local, "tap", None)
    token_ids = previous.token_ids if previous is not None else {}
    _local.tap = ModalityTap(input_ids, token_ids, weight)


def take_modality_tap() -> ModalityTap | None:
    """Returns and clears the tap of the current forward (each decoder call consumes it once)."""
    tap = getattr(_local, "tap", None)
    _local.tap = None
    return tap


def set_last_stats(stats: SeatsStats) -> None:
    _local.stats = stats


def last_stats() -> SeatsStats | None:
    """Returns what the seats backend did in the last decoder call on this thread (None before any)."""
    return getattr(_local, "stats", None)
