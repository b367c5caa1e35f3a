"""Hand the KV cache per-layer keys/values of one width, so a padded batch can decode over them."""

from __future__ import annotations

import operator

from torch.fx import GraphModule

from seats_fx.call import seats_align_cache
from seats_fx.passes.boundary import GLUE, call_node
from seats_fx.passes.plan import PassContext


def align_cache(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Routes the keys/values the layers return to the KV cache through `seats_align_cache` (which fills
    them up to one width when the prompt is padded; see SeatsCall.align_cache). A no-op without a cache."""
    plan = ctx.plan
    if not plan.cache_writes:
        return gm
    output = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(output):
        aligned = gm.graph.call_function(seats_align_cache, (call_node(gm), *plan.cache_writes))
        aligned.meta[GLUE] = True
        for i, written in enumerate(plan.cache_writes):
            item = gm.graph.call_function(operator.getitem, (aligned, i))
            item.meta[GLUE] = True
            output.replace_input_with(written, item)
    return gm
