"""Split a rewritten decoder graph into Inductor pieces and the eager selection glue between them."""

from __future__ import annotations

import torch
from torch import nn
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.fx import GraphModule
from torch.fx.passes.split_module import split_module

from seats_fx.passes.boundary import GLUE
from seats_fx.passes.plan import PassContext


class SeatsCacheKey(CustomGraphPass):
    """Puts the seats pass manager's uuid (config + every pass's source) into Inductor's cache key of each
    piece, as a post-grad pass that changes nothing: a changed option or pass never meets a cached piece
    compiled under another."""

    def __init__(self, uuid: str) -> None:
        self._uuid = uuid

    def __call__(self, graph: torch.fx.graph.Graph) -> None:
        return None

    def uuid(self) -> str:
        return self._uuid


class InductorPiece(nn.Module):
    """A piece of the decoder between two stage boundaries, compiled by Inductor on first call with
    dynamic shapes (kept-token counts change from call to call without recompiling)."""

    def __init__(self, piece: GraphModule, use_inductor: bool, cache_key: str) -> None:
        super().__init__()
        self.piece = piece
        self.use_inductor = use_inductor
        self.cache_key = cache_key
        self._compiled = None

    def forward(self, *args):
        if not self.use_inductor:
            return self.piece(*args)
        if self._compiled is None:
            self._compiled = torch.compile(self.piece, backend="inductor", dynamic=True,
                                           options={"post_grad_custom_post_pass": SeatsCacheKey(self.cache_key)})
        return self._compiled(*args)


def partition(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Returns a GraphModule whose submodules alternate Inductor pieces (lowered when ctx.config.inductor,
    their cache entries keyed by ctx.cache_key) and glue (selection + gathers), which runs eagerly."""
    use_inductor, cache_key = ctx.config.inductor, ctx.cache_key
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
            setattr(split, name, InductorPiece(child, use_inductor, cache_key))
    split.meta["seats_glue_parts"] = sorted(glue_parts)
    return split
