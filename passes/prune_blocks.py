"""Stage 2: query-guided progressive pruning after the drop layers."""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.call import seats_select_stage2
from seats_fx.passes.boundary import insert_boundary
from seats_fx.passes.plan import PassContext


def prune_blocks(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts a stage-2 selection after each drop layer l (1-based), scored with layer l's own q and k."""
    plan = ctx.plan
    for layer_number in ctx.stages.drop_layers:
        scored = plan.layers[layer_number - 1]
        insert_boundary(gm, plan, layer_number, seats_select_stage2,
                        (layer_number, scored.query, scored.key, scored.scale))
        plan.boundaries.append(f"stage2@{layer_number}")
    return gm
