"""Decode steps: one new token over a (possibly pruned) KV cache gets its own positions and layer masks."""

from __future__ import annotations

import operator

from torch.fx import GraphModule

from seats_fx.decode_step import seats_decode_step
from seats_fx.passes.boundary import GLUE
from seats_fx.passes.locate import Unsupported, find_upstream, source_name
from seats_fx.passes.plan import GraphPlan

# inputs transformers builds decode positions from instead of the cache length
_POSITION_SOURCES = ("attention_mask", "position_ids")


def rewrite_decode_step(gm: GraphModule, plan: GraphPlan) -> GraphModule:
    """Inserts `seats_decode_step` where the positions are ready and points the rotary embedding at its
    positions and each layer's attention at its own mask (a pruned cache differs in length per layer)."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    after = max((n for n in (plan.positions, plan.mask) if n is not None), key=order.__getitem__)
    positions_users = list(plan.positions.users)
    if any(order[user] <= order[after] for user in positions_users):
        raise Unsupported("the decode graph reads the positions before it builds the attention mask")
    follows_cache = find_upstream(plan.positions, lambda n: n.op == "placeholder" and any(
        name in source_name(n) for name in _POSITION_SOURCES)) is None
    layer_keys = [reads[0] for reads in plan.cache]
    with gm.graph.inserting_after(after):
        step = gm.graph.call_function(seats_decode_step, (plan.positions, follows_cache, plan.mask, *layer_keys))
    with gm.graph.inserting_after(step):
        positions = gm.graph.call_function(operator.getitem, (step, 0))
        masks = gm.graph.call_function(operator.getitem, (step, 1))
    with gm.graph.inserting_after(masks):
        layer_masks = [gm.graph.call_function(operator.getitem, (masks, i)) for i in range(len(plan.layers))]
    for node in (step, positions, masks, *layer_masks):
        node.meta[GLUE] = True
    for user in positions_users:
        user.replace_input_with(plan.positions, positions)
    for layer, mask in zip(plan.layers, layer_masks):
        layer.set_mask(mask)
    gm.graph.lint()
    gm.recompile()
    return gm
