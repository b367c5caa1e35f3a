"""Stage 1: attention-weighted diversity selection before the first decoder layer."""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.call import seats_begin, seats_select_stage1
from seats_fx.passes.boundary import GLUE, call_node, hoist_per_token, insert_boundary
from seats_fx.passes.plan import PassContext


def insert_begin(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts the node that reads this call's layout (from the modality tap) before the first layer; it
    also sees the KV cache, since only a call over an empty cache (a prefill) may be pruned."""
    plan = ctx.plan
    hoist_per_token(gm, plan)
    with gm.graph.inserting_before(plan.layers[0].nodes[0]):
        node = gm.graph.call_function(seats_begin, (call_node(gm), plan.inputs_embeds, plan.positions,
                                                    plan.attention_mask,
                                                    tuple(n for reads in plan.cache for n in reads)))
        node.meta[GLUE] = True
    return gm


def select_before_llm(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts the stage-1 selection before layer 0 (a no-op when the stage plan has no stage 1); its
    weights come from the encoder taps of the same forward (SeatsCall.begin)."""
    if ctx.stages.stage1:
        insert_boundary(gm, ctx.plan, 0, seats_select_stage1, ())
        ctx.plan.boundaries.append("stage1@0")
    return gm
