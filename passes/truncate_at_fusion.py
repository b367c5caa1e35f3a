"""Stage 3: from the late-block layer on, only text tokens are processed."""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.call import seats_finish, seats_select_stage3
from seats_fx.passes.boundary import GLUE, call_node, insert_boundary
from seats_fx.passes.plan import GraphPlan
from seats_fx.stage_plan import StagePlan


def truncate_at_fusion(gm: GraphModule, plan: GraphPlan, stages: StagePlan) -> GraphModule:
    """Inserts the text-only truncation before `late_block_layer` (1-based), if the plan has one."""
    if stages.late_block_layer is not None:
        insert_boundary(gm, plan, stages.late_block_layer - 1, seats_select_stage3, (stages.late_block_layer,))
        plan.boundaries.append(f"stage3@{stages.late_block_layer}")
    return gm


def restore_output_length(gm: GraphModule, plan: GraphPlan) -> GraphModule:
    """Wraps the final hidden states output so callers get the original sequence length back."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = list(output.args[0]) if isinstance(output.args[0], (tuple, list)) else [output.args[0]]
    with gm.graph.inserting_before(output):
        finished = gm.graph.call_function(seats_finish, (call_node(gm), values[plan.final_hidden_index]))
        finished.meta[GLUE] = True
    values[plan.final_hidden_index] = finished
    output.args = (type(output.args[0])(values) if isinstance(output.args[0], (tuple, list)) else values[0],)
    return gm
