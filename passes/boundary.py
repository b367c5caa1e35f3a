"""Insert one stage boundary into a decoder graph: a selection node and the gathers that apply it."""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

from seats_fx.call import seats_gather, seats_gather_mask
from seats_fx.passes.locate import SIZE_METHODS, _flat_args, find_upstream, is_size_node, length_multiples
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


def route_outputs(gm: GraphModule, glue, values: list[Node]) -> None:
    """Routes the graph outputs `values` through `glue(seats_call, *values)`, eager glue that returns one
    value for each, in order."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(output):
        routed = _glue(gm.graph.call_function(glue, (call_node(gm), *values)))
        for i, value in enumerate(values):
            output.replace_input_with(value, _glue(gm.graph.call_function(operator.getitem, (routed, i))))


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


def hoist_per_token(gm: GraphModule, plan: GraphPlan) -> None:
    """Moves the per-token inputs the layers read (and what computes them, all independent of the layers)
    before the first layer, so a boundary there can gather them; e.g. a deepstack addition is computed
    in the graph right before the layer output it is added to."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    first = plan.layers[0].nodes[0]
    late: set[Node] = set()
    stack = [n for n in plan.per_token if order[n] > order[first]]
    while stack:
        node = stack.pop()
        if node in late or order[node] < order[first]:
            continue
        late.add(node)
        stack.extend(node.all_input_nodes)
    for node in sorted(late, key=order.__getitem__):
        first.prepend(node)


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
            later.set_mask(kept_mask, is_causal=False)
        plan.mask = kept_mask
    elif kept_mask is not None:
        _replace_in_layers(plan, layer_index, plan.mask, kept_mask)
        plan.mask = kept_mask
    old_lengths = plan.seq_len if isinstance(plan.seq_len, list) else [plan.seq_len]
    if isinstance(plan.seq_len, int):
        _respell_length_multiples(gm, plan, layer_index, plan.seq_len, new_length)
    for old_length in old_lengths:
        _replace_in_layers(plan, layer_index, old_length, new_length)
    layer.nodes.insert(0, new_length)
    _recompute_sizes(gm, plan, layer_index, [n for n in old_lengths if isinstance(n, Node)], new_length)
    plan.seq_len = [new_length]
    return keep


def _respell_length_multiples(gm: GraphModule, plan: GraphPlan, layer_index: int, length: int,
                              new_length: Node) -> None:
    """In a static trace, replaces each length x top_k int in the sizes of layers >= layer_index by a node
    `new_length * k` of that layer (placed before its first use), which every later boundary re-points at
    its own kept length (locate.check_length_multiples vetted the ints)."""
    multiples = length_multiples(plan.layers[layer_index:], length)
    for layer in plan.layers[layer_index:]:
        for k, product in multiples.items():
            users = [n for n in layer.nodes if is_size_node(n) and product in _flat_args(n)]
            if not users:
                continue
            with gm.graph.inserting_before(users[0]):
                spelled = gm.graph.call_function(operator.mul, (new_length, k))
            layer.nodes.insert(layer.nodes.index(users[0]), spelled)

            def swap(value, spelled=spelled, product=product):
                if isinstance(value, (list, tuple)):
                    return type(value)(swap(v) for v in value)
                return spelled if isinstance(value, int) and not isinstance(value, bool) and value == product \
                    else value

            for node in users:
                node.args, node.kwargs = swap(node.args), {key: swap(v) for key, v in node.kwargs.items()}


def _recompute_sizes(gm: GraphModule, plan: GraphPlan, layer_index: int, old_lengths: list[Node],
                     new_length: Node) -> None:
    """Later layers may read sizes computed before the boundary from the old length (e.g. L * top_k,
    computed in layer 0 and reused by every MoE layer): they get copies computed from the new length."""
    later = {n for layer in plan.layers[layer_index:] for n in layer.nodes}
    copies: dict[Node, Node] = {}
    cursor = [new_length]

    def recomputed(node):
        if not isinstance(node, Node):
            return node
        if node in old_lengths:
            return new_length
        if node in copies:
            return copies[node]
        if node.op == "placeholder" or not isinstance(node.meta.get("example_value"), torch.SymInt) \
                or find_upstream(node, old_lengths.__contains__) is None:
            return node
        args = torch.fx.node.map_arg(node.args, recomputed)
        kwargs = torch.fx.node.map_arg(node.kwargs, recomputed)
        with gm.graph.inserting_after(cursor[0]):
            copy = gm.graph.create_node(node.op, node.target, args, kwargs)
        copy.meta = dict(node.meta)
        cursor[0] = copies[node] = copy
        return copy

    for layer in plan.layers[layer_index:]:
        for node in layer.nodes:
            for value in node.all_input_nodes:
                if value not in later and value.op != "placeholder" \
                        and isinstance(value.meta.get("example_value"), torch.SymInt):
                    node.replace_input_with(value, recomputed(value))
