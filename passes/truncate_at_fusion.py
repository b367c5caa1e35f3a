"""Stage 3: from the late-block layer on, only text tokens are processed."""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.call import seats_finish, seats_select_stage3
from seats_fx.passes.boundary import GLUE, call_node, insert_boundary
from seats_fx.passes.plan import PassContext


def truncate_at_fusion(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts the text-only truncation before `late_block_layer` (1-based), if the plan has one."""
    late = ctx.stages.late_block_layer
    if late is not None:
        insert_boundary(gm, ctx.plan, late - 1, seats_select_stage3, (late,))
        ctx.plan.boundaries.append(f"stage3@{late}")
    return gm


def restore_output_length(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Puts the final hidden states back at the original sequence length (pruned rows zero) for every
    consumer: the graph output, or the lm_head when it is in this graph."""
    final = ctx.plan.final_hidden
    with gm.graph.inserting_after(final):
        finished = gm.graph.call_function(seats_finish, (call_node(gm), final))
        finished.meta[GLUE] = True
    final.replace_all_uses_with(finished, delete_user_cb=lambda user: user is not finished)
    return gm
