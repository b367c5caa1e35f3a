"""locate_piece: find the one decoder layer in a graph Dynamo compiled from a decoder layer's own frame.

Qwen3-Omni's deepstack step indexes hidden states with a boolean mask between its first decoder layers;
Dynamo breaks the trace there, skips the decoder's frame and compiles each layer's forward as a graph of
its own. Such a graph holds one layer: its residual stream in and out, the rotary cos/sin, the 4-D mask,
the keys/values it hands to the KV cache, and the layer's parameters. Every fact comes from graph
structure, Dynamo sources (module state or not) and example values, as in `locate`.
"""

from __future__ import annotations

import torch
from torch.fx import GraphModule, Node

from seats_fx.passes import dynamo_meta as meta
from seats_fx.passes.locate import (ContinuedPrompt, Unsupported, _check_literal_length, check_length_multiples,
                                    spelled_length)
from seats_fx.passes.plan import GraphPlan, LayerNodes


def _data_placeholders(gm: GraphModule) -> list[Node]:
    return [p for p in meta.placeholders(gm) if not meta.is_module_state(p)]


def _tensor(node: Node) -> torch.Tensor | None:
    value = meta.example(node)
    return value if isinstance(value, torch.Tensor) else None


def locate_layer_piece(gm: GraphModule, adapter) -> GraphPlan:
    """Returns a one-layer plan of a decoder layer's own graph (positions and final_hidden: the layer's
    input and output; there is no final norm here), or raises Unsupported naming what did not fit."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = output.args[0] if isinstance(output.args[0], (list, tuple)) else (output.args[0],)
    data = _data_placeholders(gm)
    residual_out = [v for v in values if isinstance(v, Node) and _tensor(v) is not None and _tensor(v).dim() == 3]
    if len(residual_out) != 1:
        raise Unsupported(f"a decoder-layer graph returns {len(residual_out)} 3-D tensors, expected one residual "
                          "stream", kind="layer graph")
    residual_out = residual_out[0]
    shape = tuple(_tensor(residual_out).shape)
    hidden = [p for p in data if _tensor(p) is not None and tuple(_tensor(p).shape) == shape
              and _tensor(p).is_floating_point()]
    if len(hidden) != 1:
        raise Unsupported(f"cannot find the residual stream entering a decoder-layer graph ({len(hidden)} inputs "
                          f"shaped {shape})", kind="layer graph")
    hidden = hidden[0]
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    attention = [n for n in nodes if meta.is_call(n, meta.SDPA_FUNCTIONS)]
    if len(attention) != 1:
        raise Unsupported(f"a decoder-layer graph has {len(attention)} scaled_dot_product_attention calls, "
                          "expected one", kind="layer graph")
    layer = LayerNodes(0, nodes, hidden, residual_out, attention[0])
    mask = layer.mask
    if mask is not None and not (mask.op == "placeholder" and mask in data):
        raise Unsupported("the attention mask of a decoder-layer graph is not one of its inputs", kind="layer graph")
    batch_and_length = shape[:2]
    per_token = [p for p in data if p is not hidden and p is not mask and _tensor(p) is not None
                 and _tensor(p).dim() == 3 and tuple(_tensor(p).shape[:2]) == batch_and_length]
    cache = _cache_reads(data, mask)
    known = {hidden, mask, *per_token, *cache}
    unknown = [p for p in data if p not in known and not isinstance(meta.example(p), torch.SymInt)]
    if len(per_token) != 2 or unknown:
        raise Unsupported(f"a decoder-layer graph reads {[meta.source_name(p) or p.name for p in unknown]} "
                          f"besides the residual stream, the mask, the KV cache and {len(per_token)} per-token "
                          "inputs (expected the rotary cos and sin)", kind="layer graph")
    if cache:
        raise ContinuedPrompt("the KV cache already holds tokens (a continued prompt): only a prefill is pruned")
    writes = [v for v in values if isinstance(v, Node) and v is not residual_out]
    for written in writes:
        value = _tensor(written)
        if value is None or value.dim() != 4:
            raise Unsupported(f"a decoder-layer graph returns {written.name}, expected the residual stream and "
                              "the KV cache's keys/values", kind="layer graph")
    return GraphPlan(adapter, [layer], hidden, hidden, None, per_token, mask,
                     _piece_length(gm, layer, batch_and_length[1]), residual_out, [], writes)


def _cache_reads(data: list[Node], mask: Node | None) -> list[Node]:
    """Returns the past keys/values the layer extends (4-D inputs other than the mask)."""
    return [p for p in data if p is not mask and _tensor(p) is not None and _tensor(p).dim() == 4]


def _piece_length(gm: GraphModule, layer: LayerNodes, length) -> int | list[Node]:
    """Returns how the graph spells the sequence length: the SymInt placeholders carrying it, or the int of a
    static trace (checked: it appears in sizes only, as do its multiples by the layer's top-k)."""
    length = spelled_length(gm, length)
    if isinstance(length, list):
        return length
    if length == 1:
        raise Unsupported("a decoder-layer graph over one token (a decode step split by layer) is not rewritten",
                          kind="layer decode step")
    _check_literal_length([layer], length)
    check_length_multiples([layer], length)
    return length
