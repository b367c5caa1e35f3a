"""kept_row_logits: route the lm_head of a graph through seats_fx.logits.seats_logits (eager glue), so a
pruned prefill's logits cost the kept rows only. Returns the same values for any input."""

from __future__ import annotations

import torch
from torch.fx import GraphModule

from seats_fx.logits import seats_logits
from seats_fx.passes.boundary import GLUE
from seats_fx.passes.locate import source_name


def _is_lm_head_linear(node) -> bool:
    if node.op != "call_function" or node.target is not torch._C._nn.linear:
        return False
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    return bias is None and weight is not None and weight.op == "placeholder" and "lm_head" in source_name(weight)


def route_lm_head(gm: GraphModule) -> bool:
    """Rewrites gm in place; returns whether it had an lm_head linear (bias-free) to route."""
    changed = False
    for node in list(gm.graph.nodes):
        if _is_lm_head_linear(node):
            hidden = node.args[0] if node.args else node.kwargs["input"]
            weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
            node.target, node.args, node.kwargs = seats_logits, (hidden, weight), {}
            node.meta[GLUE] = True
            changed = True
    if changed:
        gm.recompile()
    return changed
