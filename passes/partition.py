"""Split a rewritten decoder graph into Inductor pieces and the eager selection glue between them."""

from __future__ import annotations

import torch
from torch import nn
from torch.fx import GraphModule
from torch.fx.passes.split_module import split_module

from seats_fx.passes.boundary import GLUE


class InductorPiece(nn.Module):
    """A piece of the decoder between two stage boundaries, compiled by Inductor on first call with
    dynamic shapes (kept-token counts change from call to call without recompiling)."""

    def __init__(self, piece: GraphModule, use_inductor: bool) -> None:
        super().__init__()
        self.piece = piece
        self.use_inductor = use_inductor
        self._compiled = None

    def forward(self, *args):
        if not self.use_inductor:
            return self.piece(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.piece, backend="inductor", dynamic=True)
        return self._compiled(*args)


def partition(gm: GraphModule, use_inductor: bool = True) -> GraphModule:
    """Returns a GraphModule whose submodules alternate Inductor pieces and glue (selection + gathers)."""
    part_of: dict[str, int] = {}
    part, previous = 0, None
    glue_parts: set[int] = set()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        is_glue = bool(node.meta.get(GLUE))
        if previous is not None and is_glue != previous:
            part += 1
        previous = is_glue
        part_of[node.name] = part
        if is_glue:
            glue_parts.add(part)
    split = split_module(gm, gm, lambda node: part_of[node.name], keep_original_order=True)
    for name, child in list(split.named_children()):
        index = int(name.rsplit("_", 1)[-1])
        if index not in glue_parts:
            setattr(split, name, InductorPiece(child, use_inductor))
    split.meta["seats_glue_parts"] = sorted(glue_parts)
    return split
