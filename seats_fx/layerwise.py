"""Layerwise selection: one forward's SeatsCall carried through decoder layers that Dynamo compiled as graphs
of their own (passes.layer_piece rewrites each; the model's eager code runs between them).

Layer 0's graph starts the forward (the layout, stage 1), every layer's graph gathers the kept rows at entry
and puts its output back at full length at exit, the boundary after a drop layer selects from that layer's
q and k, and the last layer's graph finishes the call (last_stats(), the prefill record). Layers must run in
order, each through its graph: a layer that ran outside (e.g. Dynamo hit its recompile limit and ran it
eagerly) is an error at the next graph, never a silently different model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from seats_fx.call import SeatsCall, _timed, seats_select_stage1, seats_select_stage2, seats_select_stage3
from seats_fx.ops.gather import KeepIndex

_local = threading.local()


@dataclass
class LayerwiseForward:
    """One forward through layer graphs: its call, the TMRoPE positions its rotary embedding read, the next
    layer expected, and why it cannot be pruned when that is known before the layout (else None)."""

    call: SeatsCall
    positions: torch.Tensor | None
    why_not: str | None
    next_layer: int = 0


@dataclass(frozen=True)
class LayerStep:
    """What one layer graph's glue reads: the forward, the layer's 0-based index, and the decoder's depth."""

    forward: LayerwiseForward
    index: int
    depth: int

    @property
    def call(self) -> SeatsCall:
        return self.forward.call


def start_forward(forward: LayerwiseForward) -> None:
    _local.forward = forward


def current_forward() -> LayerwiseForward | None:
    return getattr(_local, "forward", None)


def end_forward() -> None:
    _local.forward = None


def padding_from_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Returns the (B, L) padding mask (1: a real token) a 4-D attention mask encodes in its last query row,
    which attends to every real token of a causal prompt; None without a mask."""
    if mask is None:
        return None
    row = mask[:, 0, -1, :]
    return row.long() if row.dtype == torch.bool else (row == 0).long()


# ---- functions the rewritten layer graphs call (FX call_function targets) ---------------------------------
@_timed
def seats_layer_enter(step: LayerStep, hidden: torch.Tensor, mask: torch.Tensor | None) -> KeepIndex | None:
    """Returns which rows of the full-length inputs this layer runs on (None: all); in layer 0's graph,
    first reads the layout and runs stage 1."""
    call = step.call
    if step.index == 0:
        forward = step.forward
        positions = forward.positions
        why_not = forward.why_not
        if positions is None or tuple(positions.shape) != (3, *hidden.shape[:2]):
            why_not = why_not or "the TMRoPE position ids of this forward were not seen by a seats graph"
            positions = torch.zeros(3, *hidden.shape[:2], dtype=torch.long, device=hidden.device)
        call.begin(hidden, positions, padding_from_mask(mask), (), why_not)
        return seats_select_stage1(call, hidden)
    if not call.active or call.positions.shape[1] == hidden.shape[1]:
        return None
    return KeepIndex(call.positions)


@_timed
def seats_layer_exit(step: LayerStep, hidden: torch.Tensor, query: torch.Tensor, key: torch.Tensor, scale=None
                     ) -> torch.Tensor:
    """Returns the layer's output at full length, after the stage boundary that follows this layer (if
    any) selected with its q and k; the last layer's graph finishes the call."""
    call = step.call
    after = step.index + 1  # the boundary before 0-based layer `after`, as the whole-decoder passes place it
    if after == step.depth:
        return call.finish(hidden)
    positions, filler = call.positions, call.filler
    if after in call.plan.drop_layers:
        seats_select_stage2(call, hidden, after, query, key, scale)
    late = call.plan.late_block_layer
    if late is not None and late - 1 == after:
        seats_select_stage3(call, hidden, late)
    return call.full_length(hidden, positions, filler) if call.active else hidden


@_timed
def seats_layer_cache(step: LayerStep, *written: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return step.call.align_layer_cache(written)
