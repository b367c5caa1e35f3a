"""kept_row_logits: route the lm_head of a graph through seats_fx.logits.seats_logits (eager glue), so a
pruned prefill's logits cost the kept rows only. Returns the same values for any input."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from seats_fx.logits import seats_logits
from seats_fx.passes.boundary import GLUE
from seats_fx.passes.locate import locate_lm_head
from seats_fx.passes.plan import PassContext


def route_lm_head(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Routes every linear by the model's lm_head weight (ctx.output_weight, compared by identity) through
    seats_logits, as eager glue; gm.meta["seats_lm_head_routed"] says how many. Inference only: a zero
    row's logits are zero, but its gradient is not."""
    found = [] if torch.is_grad_enabled() else locate_lm_head(gm, ctx.output_weight())
    for node in found:
        hidden = node.args[0] if node.args else node.kwargs["input"]
        weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
        node.target, node.args, node.kwargs = seats_logits, (hidden, weight), {}
        node.meta[GLUE] = True
    gm.meta["seats_lm_head_routed"] = len(found)
    if found:
        gm.recompile()
    return gm
