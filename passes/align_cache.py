"""Hand the KV cache per-layer keys/values of one width, so a padded batch can decode over them."""

from __future__ import annotations

from torch.fx import GraphModule

from seats_fx.call import seats_align_cache
from seats_fx.passes.boundary import route_outputs
from seats_fx.passes.plan import PassContext


def align_cache(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """Routes the keys/values the layers return to the KV cache through `seats_align_cache` (which fills
    them up to one width when the prompt is padded; see SeatsCall.align_cache). A no-op without a cache."""
    if ctx.plan.cache_writes:
        route_outputs(gm, seats_align_cache, ctx.plan.cache_writes)
    return gm
