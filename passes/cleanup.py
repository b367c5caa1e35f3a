"""cleanup: drop dead nodes, check the graph, regenerate code."""

from __future__ import annotations

from torch.fx import GraphModule, Node

from seats_fx.passes.boundary import GLUE
from seats_fx.passes.plan import PassContext


def _impure(node: Node) -> bool:
    # selection nodes update the call's record even when their result is unused (keep-everything calls)
    return bool(node.meta.get(GLUE)) or node.is_impure()


def cleanup(gm: GraphModule, ctx: PassContext | None = None) -> GraphModule:
    """Returns gm after dead-code elimination (never of selection nodes), lint and recompile."""
    gm.graph.eliminate_dead_code(is_impure_node=_impure)
    gm.graph.lint()
    gm.recompile()
    return gm
