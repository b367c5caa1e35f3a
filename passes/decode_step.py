"""Decode steps: one new token over a (possibly pruned) KV cache gets its own positions and layer masks."""

from __future__ import annotations

import operator

from torch.fx import GraphModule

import torch

from seats_fx.decode_step import seats_decode_step
from seats_fx.passes import dynamo_meta as meta
from seats_fx.passes.boundary import GLUE
from seats_fx.passes.locate import Unsupported, find_upstream
from seats_fx.passes.plan import PassContext


def _is_per_token_input(node) -> bool:
    """True for an input with a sequence dim that positions can be built from: a padding mask (B, L) or
    position ids (B, L) (integer), or (3, B, L) position ids (integer or, in Qwen3-Omni, float), or the
    (4, B, L) text-and-TMRoPE rows that generate() passes in later transformers. Positions built from one
    count the prompt's tokens, not the KV cache's."""
    value = meta.example(node)
    if node.op != "placeholder" or meta.is_module_state(node) or not isinstance(value, torch.Tensor):
        return False
    return (meta.is_integer_tensor(value) or value.dtype == torch.bool) and value.dim() >= 2 \
        or value.dim() == 3 and value.shape[0] in (3, 4)


def rewrite_decode_step(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts `seats_decode_step` where the positions are ready and points the rotary embedding at its
    positions and each layer's attention at its own mask (a pruned cache differs in length per layer)."""
    plan = ctx.plan
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    after = max((n for n in (plan.positions, plan.mask) if n is not None), key=order.__getitem__)
    positions_users = list(plan.positions.users)
    if any(order[user] <= order[after] for user in positions_users):
        raise Unsupported("the decode graph reads the positions before it builds the attention mask")
    # otherwise transformers counted "tokens seen" from layer 0's cache length (a size, not a tensor input)
    follows_cache = find_upstream(plan.positions, _is_per_token_input,
                                  through=lambda n: isinstance(meta.example(n), torch.Tensor)) is None
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
