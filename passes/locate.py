"""locate: find the decoder (layers, residual stream, positions, masks) and modality taps in Dynamo graphs."""

from __future__ import annotations

import inspect
import operator
import re
from typing import Callable

import torch
from torch.fx import GraphModule, Node

from seats_fx.passes.plan import GraphPlan, LayerNodes, TapPlan
from seats_fx.models import ADAPTERS

_SDPA = (torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention)
SIZE_METHODS = ("view", "reshape", "expand")  # where a graph spells the sequence length inside layers
_METADATA_METHODS = ("numel", "size", "dim")


class Unsupported(Exception):
    """The graph holds a decoder seats_fx recognises, but not in a shape it can rewrite soundly. `kind`
    names the reason apart from graph-specific details (one warning per kind is enough)."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or message


class ContinuedPrompt(Unsupported):
    """A prompt over a KV cache that already holds tokens: never pruned, and wrong over a pruned cache."""


def _class_name(kind) -> str:
    return getattr(kind, "__name__", None) or str(kind).rsplit(".", 1)[-1].strip("'>")


def _module_entries(node: Node) -> list[tuple[str, str]]:
    return [(path, _class_name(kind)) for path, kind in (node.meta.get("nn_module_stack") or {}).values()]


def _layer_index(node: Node, layer_class: str) -> int | None:
    for path, name in _module_entries(node):
        if name == layer_class:
            found = re.search(r"layers\[(\d+)\]$", path) or re.search(r"layers[._](\d+)$", path)
            if found:
                return int(found.group(1))
    return None


def _in_module(node: Node, suffix: str) -> bool:
    return any(re.sub(r"[\[\]'\"]", "", path).replace("_modules.", "").endswith(suffix.replace("_modules.", ""))
               or path.endswith(suffix) for path, _ in _module_entries(node))


def family_of(gm: GraphModule):
    """Returns the adapter class whose decoder layers appear in the graph, or None."""
    names = {name for node in gm.graph.nodes for _, name in _module_entries(node)}
    for adapter in ADAPTERS:
        if adapter.decoder_layer_class in names:
            return adapter
    return None


def _family_files() -> tuple[str, ...]:
    """The modeling files of the known families (their code appears in a thinker graph's stack traces)."""
    return tuple(inspect.getfile(adapter.thinker_class) for adapter in ADAPTERS)


def foreign_source(gm: GraphModule) -> str | None:
    """Returns where a graph's code comes from ("file:line in function") when it is not a known family's
    code, or None when any node was traced from a known family's modeling file or no node says where
    it comes from. Such a graph belongs to a model seats does not prune (a Llama, a user module)."""
    traces = [node.meta.get("stack_trace") or "" for node in gm.graph.nodes]
    traces = [trace for trace in traces if trace]
    if not traces:
        return None
    files = _family_files()
    if any(path in trace for trace in traces for path in files):
        return None
    frames = [frame for trace in traces for frame in re.findall(r'File "([^"]+)", line (\d+), in (\S+)', trace)]
    if not frames:
        return "code outside the supported families"
    # name the model's own code where a frame shows it (transformers' wrappers come first in the traces)
    path, line, function = next((f for f in frames if "/models/" in f[0]), frames[-1])
    return f"{path}:{line} in {function}"


def decoder_layer_frame(gm: GraphModule):
    """Returns the adapter whose decoder layer this graph is, compiled as a frame of its own (its
    parameters named from L['self']), or None. Such a graph means the decoder came in pieces."""
    names = {source_name(p) for p in _placeholders(gm)}
    for adapter in ADAPTERS:
        if all(any(name.startswith(source) for name in names) for source in adapter.decoder_layer_frame_sources):
            return adapter
    return None


def _placeholders(gm: GraphModule) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _is_parameter(node: Node) -> bool:
    """True for placeholders that hold module state (parameters, buffers, attributes such as eps)."""
    source = getattr(node.meta.get("grapharg"), "source", None)
    name = source.name if source is not None and hasattr(source, "name") else ""
    name = str(name() if callable(name) else name)
    return "_parameters" in name or "_buffers" in name or name.startswith("L['self']")


def _example(node: Node):
    return node.meta.get("example_value")


def locate_tap(gm: GraphModule) -> TapPlan | None:
    """Returns where a graph compares input_ids with modality token ids (get_placeholder_mask), or None."""
    adapter = family_of(gm) or _family_by_pattern(gm)
    if adapter is None:
        return None
    placeholders = _placeholders(gm)
    token_ids: dict[str, set[int]] = {}
    ids_node = None
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target is not operator.eq or len(node.args) != 2:
            continue
        source, value = node.args
        if not (isinstance(source, Node) and source.op == "placeholder" and isinstance(value, int)):
            continue
        found = re.search(adapter.modality_compare_pattern, node.meta.get("stack_trace") or "")
        if found:
            token_ids.setdefault(found.group(1), set()).add(value)
            if ids_node is not None and ids_node is not source:
                return None
            ids_node = source
    if ids_node is None:
        return None
    weight_index = None
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch.nn.functional.embedding \
                and node.args[0] is ids_node and node.args[1].op == "placeholder":
            weight_index = placeholders.index(node.args[1])
    return TapPlan(placeholders.index(ids_node), {k: tuple(sorted(v)) for k, v in token_ids.items()}, weight_index)


def find_upstream(node: Node, found: Callable[[Node], bool]) -> Node | None:
    """Returns the first of `node` and the nodes it is computed from (transitively) for which `found`
    holds, or None."""
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if found(current):
            return current
        stack.extend(current.all_input_nodes)
    return None


def source_name(node: Node) -> str:
    source = getattr(node.meta.get("grapharg"), "source", None)
    return str(source.name) if source is not None else ""


def locate_encoder_taps(gm: GraphModule) -> list[tuple[str, tuple]]:
    """Returns what an encoder graph exposes for stage-1 weights, as (kind, where) records:
    ("audio_lengths", (placeholder index,)), ("window_index", (placeholder index,)) (a vision run starts:
    its window permutation, or the pixels entering the patch embedding), and ("audio_chunks" |
    "vision_chunks", ((q node, k node), ..., scale)) for graphs that run an encoder attention over
    cu_seqlens chunks; scale is a float, a placeholder index, or None (head_dim ** -0.5). Each kind is
    reported once, whichever families' rules find it."""
    placeholders = _placeholders(gm)
    names = [source_name(p) for p in placeholders]
    found: dict[str, tuple] = {}
    for adapter in ADAPTERS:
        for kind, source in (("audio_lengths", adapter.audio_lengths_source),
                             ("window_index", adapter.vision_window_index_source)):
            if source is not None and source in names:
                found.setdefault(kind, (names.index(source),))
        start = _vision_run_start(placeholders, names, adapter)
        if start is not None:
            found.setdefault("window_index", (start,))
        attention = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in _SDPA]
        if not attention:
            continue
        kind = "audio_chunks" if any(adapter.audio_attention_projection in n for n in names) else \
            "vision_chunks" if any(adapter.vision_attention_projection in n for n in names) else None
        if kind is None:
            continue
        scales = {n.kwargs.get("scale") for n in attention}
        scale = scales.pop() if len(scales) == 1 else None
        if isinstance(scale, Node):
            scale = placeholders.index(scale) if scale.op == "placeholder" else None
        found.setdefault(kind, (tuple((n.args[0], n.args[1]) for n in attention), scale))
    return list(found.items())


def _vision_run_start(placeholders: list[Node], names: list[str], adapter) -> int | None:
    """Returns the index of the pixels a vision patch embedding (Conv3d) reads, for families whose vision
    tower has no window permutation to mark the start of a run; None otherwise."""
    weight = getattr(adapter, "vision_patch_embed_weight_source", None)
    if weight is None or weight not in names:
        return None
    value = _example(placeholders[names.index(weight)])
    data = [i for i, (p, name) in enumerate(zip(placeholders, names))
            if not _is_parameter(p) and isinstance(_example(p), torch.Tensor)]
    return data[0] if value is not None and value.dim() == 5 and len(data) == 1 else None


def locate_embedding_tap(gm: GraphModule) -> tuple[int, int] | None:
    """Returns (input_ids index, weight index) of a graph that looks up L['input_ids'] embeddings, or None."""
    placeholders = _placeholders(gm)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch.nn.functional.embedding:
            ids, weight = node.args[0], node.args[1]
            source = getattr(ids.meta.get("grapharg"), "source", None) if isinstance(ids, Node) else None
            if source is not None and "input_ids" in source.name and weight.op == "placeholder":
                return placeholders.index(ids), placeholders.index(weight)
    return None


def _family_by_pattern(gm: GraphModule):
    text = "\n".join((n.meta.get("stack_trace") or "") for n in gm.graph.nodes if n.target is operator.eq)
    for adapter in ADAPTERS:
        if re.search(adapter.modality_compare_pattern, text):
            return adapter
    return None


def locate_decoder(gm: GraphModule) -> GraphPlan | None:
    """Returns the plan of the decoder in `gm`, None when the graph holds no decoder layer of a known
    family, and raises Unsupported (with the reason) when it holds one that cannot be rewritten soundly."""
    adapter = family_of(gm)
    if adapter is None:
        return None
    by_layer: dict[int, list[Node]] = {}
    for node in gm.graph.nodes:
        index = _layer_index(node, adapter.decoder_layer_class) if node.op != "placeholder" else None
        if index is not None:
            by_layer.setdefault(index, []).append(node)
    indices = sorted(by_layer)
    if indices != list(range(len(indices))):
        raise Unsupported(f"decoder layers {indices} in this graph are not all layers 0..N-1 (a partial decoder: "
                          f"the model's code broke the decoder into several graphs)", kind="partial decoder")
    layer_sets = [set(by_layer[i]) for i in indices]
    in_layers = set().union(*layer_sets)

    layers: list[LayerNodes] = []
    additions: list[Node] = []
    previous_output: Node | None = None
    outside_inputs: list[set[Node]] = []
    for i in indices:
        nodes, members = by_layer[i], layer_sets[i]
        external = {a for n in nodes for a in n.all_input_nodes if a not in members}
        # a size a layer computes (e.g. L * top_k) may be reused by later layers: boundaries recompute it
        escaping = [n for n in nodes if any(u not in members and u.op != "output" for u in n.users)
                    and not isinstance(_example(n), torch.SymInt)]
        if len(escaping) != 1:
            raise Unsupported(f"layer {i} passes {len(escaping)} values to later code, expected one residual stream")
        added = _layer_addition(escaping[0], in_layers)
        if added is not None:  # e.g. Qwen3-Omni's deepstack: counted as the layer's last step
            add, term = added
            nodes, escaping = nodes + [add], [add]
            members.add(add)
            in_layers.add(add)
            external.add(term)
            additions.append(term)
        attention = [n for n in nodes if n.op == "call_function" and n.target in _SDPA]
        if len(attention) != 1:
            raise Unsupported(f"layer {i} has {len(attention)} scaled_dot_product_attention calls, expected one")
        first_data = [a for a in nodes[0].all_input_nodes if a not in members]
        layer_input = previous_output if previous_output is not None else (first_data[0] if first_data else None)
        if layer_input is None or layer_input not in external:
            raise Unsupported(f"cannot find the residual stream entering layer {i}")
        layers.append(LayerNodes(i, nodes, layer_input, escaping[0], attention[0]))
        outside_inputs.append(external - {layer_input})
        previous_output = escaping[0]

    cache = _cache_reads(layers, outside_inputs)
    first = layers[0]
    sdpa_masks = {layer.mask for layer in layers}
    if len(sdpa_masks) != 1:
        raise Unsupported("layers use different attention masks (sliding-window layers are not supported)")
    mask = sdpa_masks.pop()
    rotary = sorted({n for ext in outside_inputs for n in ext
                     if n is not mask and not (n.op == "placeholder" and (_is_parameter(n) or
                                                                          isinstance(_example(n), torch.SymInt)))
                     and _in_module(n, adapter.rotary_path_suffix)}, key=lambda n: n.name)
    per_token = rotary + additions
    known = set(per_token) | {mask} | {n for reads in cache for n in reads} | {
        n for n in _placeholders(gm) if _is_parameter(n) or isinstance(_example(n), torch.SymInt)}
    unknown = {n for ext in outside_inputs for n in ext} - known
    unknown = {n for n in unknown if not _is_parameter(n)}
    sizes = {n for n in unknown if isinstance(_example(n), torch.SymInt)}
    if _example(first.input).shape[1] == 1:
        # a decode step is never pruned: sizes it computes (the cache length + 1) stay as they are
        unknown -= sizes
    elif cache and sizes and unknown == sizes:
        raise ContinuedPrompt("the KV cache already holds tokens (a continued prompt): only a prefill is pruned")
    else:
        unknown -= sizes  # sizes computed from the sequence length: insert_boundary recomputes them
    if unknown:
        raise Unsupported(f"layers read values seats_fx does not know how to prune: {sorted(n.name for n in unknown)}")
    if len(rotary) != 2:
        raise Unsupported(f"expected the rotary cos and sin as per-token inputs of the layers, found "
                          f"{[n.name for n in rotary]}")

    positions = _rotary_positions(gm, adapter)
    embeds_value = _example(first.input)
    length = embeds_value.shape[1]
    if isinstance(length, torch.SymInt) and str(length).isdigit():
        length = int(length)  # a symbol Dynamo already specialised to a constant
    seq_len: int | list[Node] = int(length) if isinstance(length, int) else None
    if seq_len is None:
        # Dynamo may pass the same symbol more than once (one placeholder per source that sized it)
        seq_len = [p for p in _placeholders(gm) if isinstance(_example(p), torch.SymInt)
                   and str(_example(p)) == str(length)]
        if not seq_len:
            raise Unsupported(f"cannot find the SymInt input spelling the sequence length {length}")
    elif seq_len != 1:  # one new token over a KV cache is a decode step: nothing to select, nothing rewritten
        if not adapter.static_traces_supported:
            raise Unsupported(f"a static-shape trace of a {adapter.family} decoder bakes sizes derived from the "
                              "sequence length into constants (its MoE routing: length x top_k); compile with "
                              "dynamic=True (seats_fx.compile does)")
        _check_literal_length(layers, seq_len)

    norm_nodes = [n for n in gm.graph.nodes if n.op != "placeholder" and _in_module(n, adapter.final_norm_path_suffix)]
    finals = [n for n in norm_nodes if any(u not in norm_nodes for u in n.users)]
    if len(finals) != 1:
        raise Unsupported("cannot find the final norm's output (one value leaving the final norm)")
    attention_mask = _padding_mask_input(gm, mask, adapter)
    cache_writes = [n for layer in layers for n in layer.nodes
                    if n.target is torch.cat and any(u.op == "output" for u in n.users)]
    return GraphPlan(adapter, layers, first.input, positions, attention_mask, per_token, mask, seq_len, finals[0],
                     cache, cache_writes)


def _layer_addition(output: Node, in_layers: set[Node]) -> tuple[Node, Node] | None:
    """Returns (add, term) when the only consumer of a layer's output outside the layers adds it to a
    (B, L, D) tensor computed without any layer (a per-token addition), else None."""
    users = [u for u in output.users if u not in in_layers and u.op != "output"]
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in (operator.add, torch.add):
        return None
    add = users[0]
    terms = [a for a in add.args if a is not output]
    if len(add.args) != 2 or len(terms) != 1 or not isinstance(terms[0], Node):
        return None
    term = terms[0]
    if getattr(_example(term), "shape", None) != getattr(_example(output), "shape", None):
        return None
    return None if find_upstream(term, in_layers.__contains__) is not None else (add, term)


def _cache_reads(layers: list[LayerNodes], outside_inputs: list[set[Node]]) -> list[tuple[Node, ...]]:
    """Returns, per layer, the past keys/values (DynamicCache tensors) it reads; () for all layers when
    there is no cache. A layer may only extend them (torch.cat on the sequence dim), so they hold
    exactly the tokens each layer processed."""
    cache: list[tuple[Node, ...]] = []
    for layer, external in zip(layers, outside_inputs):
        members, reads = set(layer.nodes), []
        for node in sorted(external, key=lambda n: n.name):
            if node.op != "placeholder" or "past_key_values" not in source_name(node) \
                    or not isinstance(_example(node), torch.Tensor):
                continue  # a SymInt sizing the cache is read like any other size
            for user in node.users:
                if user.op == "call_method" and user.target in _METADATA_METHODS:
                    continue  # get_seq_length() and friends: the cache's size, not its contents
                dim = user.kwargs.get("dim", user.args[1] if len(user.args) > 1 else 0)
                if not (user in members and user.target is torch.cat and dim in (-2, 2)):
                    raise Unsupported(f"layer {layer.index} reads its KV cache {node.name} other than by extending "
                                      f"it on the sequence dim ({user.format_node()})")
            reads.append(node)
        cache.append(tuple(reads))
    if any(cache) and not all(cache):
        raise Unsupported("some layers read a KV cache and others do not")
    return cache if any(cache) else []


def _rotary_positions(gm: GraphModule, adapter) -> Node:
    for node in gm.graph.nodes:
        # the rotary embedding's first step: position_ids.expand(3, -1, -1)
        if node.op == "call_method" and node.target == "expand" and _in_module(node, adapter.rotary_path_suffix) \
                and tuple(node.args[1:]) == (3, -1, -1):
            source = node.args[0]
            value = _example(source)
            if isinstance(source, Node) and value is not None and value.dim() == 3:
                return source
    raise Unsupported("cannot find the 3-D position ids the rotary embedding reads")


def _padding_mask_input(gm: GraphModule, mask: Node | None, adapter) -> Node | None:
    """Returns the (B, L) padding-mask input the 4-D mask is built from (by its Dynamo source), or None."""
    if mask is None:
        return None
    return find_upstream(mask, lambda n: n.op == "placeholder" and source_name(n) == adapter.attention_mask_source)


def _check_literal_length(layers: list[LayerNodes], length: int) -> None:
    """A static graph spells the length as an int inside views; make sure no other literal collides."""
    others: set[int] = set()
    for layer in layers:
        for node in layer.nodes:
            ints = [a for a in _flat_args(node) if isinstance(a, int) and not isinstance(a, bool)]
            if node.op == "call_method" and node.target in SIZE_METHODS:
                others.update(a for a in ints if a != length)
            elif length in ints and node.target not in (operator.getitem,):
                raise Unsupported(f"layer {layer.index} uses the sequence length {length} outside a view/reshape "
                                  f"({node.format_node()})")
    if length in others:
        raise Unsupported(f"sequence length {length} equals another size inside the layers; compile with "
                          "dynamic=True to rewrite this graph")


def _flat_args(node: Node) -> list:
    flat: list = []

    def visit(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        else:
            flat.append(value)

    visit(node.args)
    visit(list(node.kwargs.values()))
    return flat
