"""layer_piece: rewrite a decoder layer compiled as a graph of its own (see passes.locate_piece).

The layer's inputs arrive at the prompt's full length and its output must leave at full length: the model's
eager code between layers (Qwen3-Omni's deepstack additions) indexes them with full-length masks, and the
next layer's graph was traced for that shape. So the rewritten graph gathers the rows this forward keeps at
entry, runs the layer on them, lets the stage boundary after the layer (if any) select from its q and k,
and scatters its output back to full length (pruned rows zero) at exit. The selection state goes from one
layer's graph to the next in one SeatsCall (seats_fx.layerwise).
"""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.layerwise import seats_layer_cache, seats_layer_enter, seats_layer_exit
from seats_fx.passes.boundary import GLUE, call_node, insert_boundary, route_outputs
from seats_fx.passes.plan import PassContext


def rewrite_layer_piece(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Inserts the entry gathers (seats_layer_enter: stage 1 in layer 0's graph), the exit (the boundary
    after this layer, then full length) and the KV-cache hand-over (seats_layer_cache)."""
    plan = ctx.plan
    layer = plan.layers[0]
    output = layer.output
    insert_boundary(gm, plan, 0, seats_layer_enter, (plan.mask,))
    with gm.graph.inserting_after(output):
        full = gm.graph.call_function(seats_layer_exit, (call_node(gm), output, layer.query, layer.key, layer.scale))
        full.meta[GLUE] = True
    graph_output = next(n for n in gm.graph.nodes if n.op == "output")
    graph_output.replace_input_with(output, full)
    if plan.cache_writes:
        route_outputs(gm, seats_layer_cache, plan.cache_writes)
    plan.boundaries.append("layer piece")
    return gm
