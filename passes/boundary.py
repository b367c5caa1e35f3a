"""Insert one stage boundary into a decoder graph: a selection node and the gathers that apply it."""

from __future__ import annotations

from torch.fx import GraphModule, Node

from seats_fx.call import seats_gather, seats_gather_mask
from seats_fx.passes.locate import SIZE_METHODS
from seats_fx.passes.plan import GraphPlan

GLUE = "seats_glue"  # node.meta flag: runs eagerly between Inductor pieces


def call_node(gm: GraphModule) -> Node:
    """Returns the `seats_call` placeholder of a rewritten graph (added on first use)."""
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name == "seats_call":
            return node
    first = next(iter(gm.graph.nodes))
    with gm.graph.inserting_before(first):
        return gm.graph.placeholder("seats_call")


def _glue(node: Node) -> Node:
    node.meta[GLUE] = True
    return node


def _replace_in_layers(plan: GraphPlan, start: int, old, new) -> None:
    """Replaces `old` (a node, or the literal sequence length) by `new` in the args of layers >= start."""
    def swap(value):
        if isinstance(value, (list, tuple)):
            return type(value)(swap(v) for v in value)
        if isinstance(old, Node):
            return new if value is old else value
        return new if (isinstance(value, int) and not isinstance(value, bool) and value == old) else value

    for layer in plan.layers[start:]:
        for node in layer.nodes:
            if isinstance(old, Node) or (node.op == "call_method" and node.target in SIZE_METHODS):
                node.args, node.kwargs = swap(node.args), {k: swap(v) for k, v in node.kwargs.items()}


def _single_sample(plan: GraphPlan) -> bool:
    """True when the graph was traced for batch size 1 (Dynamo specialises size 1, so it stays 1)."""
    embeds = plan.inputs_embeds.meta.get("example_value")
    return embeds is not None and isinstance(embeds.shape[0], int) and embeds.shape[0] == 1


def insert_boundary(gm: GraphModule, plan: GraphPlan, layer_index: int, select, select_args: tuple) -> Node:
    """Inserts `keep = select(seats_call, hidden, *select_args)` before layer `layer_index` (0-based) and
    re-points every per-token input of the later layers (residual stream, cos/sin, mask, sequence
    length) at its gathered version. Returns the keep node."""
    layer = plan.layers[layer_index]
    hidden = layer.input
    seats_call = call_node(gm)
    with gm.graph.inserting_before(layer.nodes[0]):
        keep = _glue(gm.graph.call_function(select, (seats_call, hidden, *select_args)))
        kept_hidden = _glue(gm.graph.call_function(seats_gather, (hidden, keep, 1)))
        kept_per_token = [_glue(gm.graph.call_function(seats_gather, (node, keep, 1))) for node in plan.per_token]
        kept_mask = None
        if plan.mask is not None:
            kept_mask = _glue(gm.graph.call_function(seats_gather_mask, (plan.mask, keep)))
        elif not _single_sample(plan):
            # causal attention without a mask: samples may keep different counts, so from here on the
            # layers take an explicit mask that hides the entries filling shorter samples up
            kept_mask = _glue(gm.graph.call_function(seats_gather_mask, (None, keep, kept_hidden)))
        new_length = gm.graph.call_method("size", (kept_hidden, 1))
    for node in layer.nodes:
        node.args = tuple(kept_hidden if a is hidden else a for a in node.args)
    layer.input = kept_hidden
    for old, new in zip(plan.per_token, kept_per_token):
        _replace_in_layers(plan, layer_index, old, new)
    plan.per_token = kept_per_token
    if kept_mask is not None and plan.mask is None:
        for later in plan.layers[layer_index:]:
            later.attention.kwargs = {**later.attention.kwargs, "attn_mask": kept_mask, "is_causal": False}
        plan.mask = kept_mask
    elif kept_mask is not None:
        _replace_in_layers(plan, layer_index, plan.mask, kept_mask)
        plan.mask = kept_mask
    for old_length in (plan.seq_len if isinstance(plan.seq_len, list) else [plan.seq_len]):
        _replace_in_layers(plan, layer_index, old_length, new_length)
    layer.nodes.insert(0, new_length)
    plan.seq_len = [new_length]
    return keep
