"""One attention call for an encoder layer that transformers' sdpa path splits into one call per segment.

Under a bare `torch.compile(model, backend="seats")` the towers keep transformers' sdpa path: each attention
layer cuts q/k/v at `cu_seqlens` on the host (`.tolist()`, a graph break) and the graph of the attention
module's frame receives the pieces and calls SDPA once per window / chunk (510 calls per vision layer for a
60 s clip at 7B shapes). This pass replaces those calls with one `seats_fx::encoder_attention` (the fast
encoders' op: flash varlen on CUDA, an exact padded batch elsewhere) over the pieces put back together, and
hands each former call's users its own rows of the result. Everything else in the graph is left as it is.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

import seats_fx.encoder_attention  # noqa: F401  (defines torch.ops.seats_fx.encoder_attention)
from seats_fx.passes import dynamo_meta as meta

_PLAIN_SDPA_KWARGS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False}


def _segment(node: Node) -> tuple[int, int, int] | None:
    """Returns (heads, tokens, head dim) of an SDPA call one segment's attention can replace: q, k, v of one
    sample, (1, H, n, d), unmasked, not causal, no dropout, no GQA; else None."""
    if len(node.args) != 3 or any(node.kwargs.get(k, v) != v for k, v in _PLAIN_SDPA_KWARGS.items()) \
            or node.kwargs.get("enable_gqa", False) or set(node.kwargs) - {*_PLAIN_SDPA_KWARGS, "scale", "enable_gqa"}:
        return None
    shapes = [getattr(meta.example(arg), "shape", None) for arg in node.args]
    if any(shape is None or len(shape) != 4 or shape[0] != 1 for shape in shapes):
        return None
    (_, heads, tokens, dim), key, value = shapes
    if tuple(key) != (1, heads, tokens, dim) or tuple(value[:3]) != (1, heads, tokens):
        return None
    if not all(isinstance(size, int) for size in (heads, tokens, dim, value[3])):
        return None  # sizes Dynamo kept symbolic: the segment bounds would not be constants
    return heads, tokens, dim


def fuse_segment_attention(gm: GraphModule) -> GraphModule | None:
    """Returns gm with its per-segment SDPA calls replaced by one encoder_attention call, or None (gm left
    as it is) unless the graph calls SDPA at least twice and every call is one plain segment of the same
    heads, head dim, scale, dtype and device."""
    calls = [node for node in gm.graph.nodes if meta.is_call(node, meta.SDPA_FUNCTIONS)]
    segments = [_segment(node) for node in calls]
    if len(calls) < 2 or any(s is None for s in segments):
        return None
    scales = {node.kwargs.get("scale") for node in calls}
    examples = [meta.example(node.args[0]) for node in calls]
    if len({(heads, dim) for heads, _, dim in segments}) != 1 or len(scales) != 1 \
            or len({(e.dtype, e.device) for e in examples}) != 1:
        return None
    scale = scales.pop()
    if not (scale is None or isinstance(scale, float)):
        return None
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    if any(order[arg] > order[calls[0]] for node in calls for arg in node.args):
        return None  # a later segment's q/k/v computed after the first call: no single place for the one call
    heads, _, dim = segments[0]
    lengths = [tokens for _, tokens, _ in segments]
    bounds = torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    gm.register_buffer("_seats_segment_bounds", bounds.to(examples[0].device))

    graph = gm.graph
    with graph.inserting_before(calls[0]):
        packed = [graph.call_function(torch.cat, ([node.args[i] for node in calls],), {"dim": 2}) for i in range(3)]
        bounds_node = graph.get_attr("_seats_segment_bounds")
        attended = graph.call_function(torch.ops.seats_fx.encoder_attention.default, (*packed, bounds_node, max(lengths),
                                                           dim ** -0.5 if scale is None else scale, ""))
    start = 0
    for node, tokens in zip(calls, lengths):
        with graph.inserting_before(node):
            rows = graph.call_method("narrow", (attended, 0, start, tokens))  # (n, H, d)
            own = graph.call_method("unsqueeze", (graph.call_method("permute", (rows, 1, 0, 2)), 0))  # (1, H, n, d)
        node.replace_all_uses_with(own)
        graph.erase_node(node)
        start += tokens
    graph.lint()
    gm.recompile()
    return gm
