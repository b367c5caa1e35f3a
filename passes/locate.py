"""locate: find the decoder (layers, residual stream, positions, masks) and the taps in Dynamo graphs.

Every fact comes from graph structure, module types and identity, Dynamo sources and values, read
through `passes.dynamo_meta`; none from source text. Model facts (token ids, depth) come from the model
itself (`seats_fx.models.facts`), handed over by seats_fx.compile or read from the frame Dynamo compiles.
"""

from __future__ import annotations

import operator
from typing import Callable

import torch
from torch.fx import GraphModule, Node

from seats_fx.models import ADAPTERS, ModelFacts, adapter_of_type, model_facts
from seats_fx.passes import dynamo_meta as meta
from seats_fx.passes.plan import GraphPlan, LayerNodes, TapPlan

SIZE_METHODS = ("view", "reshape", "expand")  # where a graph spells the sequence length inside layers
_SIZE_FUNCTIONS = (torch.arange,)  # where a static MoE graph spells length x top_k (token-expert pairs)
_METADATA_METHODS = ("numel", "size", "dim")
# the per-token state `insert_boundary` gathers, and what reads the KV cache: anything else a layer reads
# from outside must be module state or a size
_CACHE_DIMS = (-2, 2)


class Unsupported(Exception):
    """The graph holds a decoder seats_fx recognises, but not in a shape it can rewrite soundly. `kind`
    names the reason apart from graph-specific details (one warning per kind is enough)."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or message


class ContinuedPrompt(Unsupported):
    """A prompt over a KV cache that already holds tokens: never pruned, and wrong over a pruned cache."""


# ---- which model a graph belongs to ---------------------------------------------------------------------
def family_of(gm: GraphModule):
    """Returns the adapter class whose decoder layers appear in the graph, or None."""
    types = meta.graph_module_types(gm)
    return next((adapter for adapter in ADAPTERS if adapter.decoder_layer_class in types), None)


def _is_model_specific(kind: type) -> bool:
    """True for a module class of a particular model: one from a transformers model's modeling file, or
    from user code. torch.nn and transformers' shared modules (activations, ...) name no model."""
    module = getattr(kind, "__module__", "") or ""
    if module.startswith("transformers.models."):
        return True
    return not (module.startswith("torch.") or module.startswith("transformers.") or module == "builtins")


def graph_owner(gm: GraphModule, frame: torch.nn.Module | None) -> tuple[str, str]:
    """Returns ("supported" | "foreign" | "neutral", what decided it) from the module types a graph holds
    and the module whose frame was compiled. "neutral": nothing model-specific (a helper function, a
    torch.nn module after a graph break): such graphs say nothing about the model."""
    kinds = set(meta.graph_module_types(gm))
    if frame is not None:
        kinds.add(type(frame))
    specific = {kind for kind in kinds if _is_model_specific(kind)}
    supported = {kind for kind in specific if adapter_of_type(kind) is not None}
    if supported:
        return "supported", min(kind.__name__ for kind in supported)
    if specific:
        foreign = min(specific, key=lambda kind: kind.__qualname__)
        return "foreign", f"{foreign.__module__}.{foreign.__qualname__}"
    return "neutral", ""


def decoder_layer_frame(frame: torch.nn.Module | None):
    """Returns the adapter whose decoder layer `frame` is (a layer compiled as a frame of its own: the
    model's code broke the decoder into pieces), or None."""
    return next((adapter for adapter in ADAPTERS if isinstance(frame, adapter.decoder_layer_class)), None)


# ---- taps: what graphs before the decoder's see ----------------------------------------------------------
def _is_data_input(node) -> bool:
    return isinstance(node, Node) and node.op == "placeholder" and not meta.is_module_state(node)


def locate_tap(gm: GraphModule, token_ids: dict[str, tuple[int, ...]] | None) -> TapPlan | None:
    """Returns where a graph compares token ids with the model's placeholder ids (get_placeholder_mask),
    or None. token_ids: the model's placeholder ids per modality (its config)."""
    if not token_ids:
        return None
    modality_of = {value: name for name, values in token_ids.items() for value in values}
    found: dict[str, set[int]] = {}
    ids_node = None
    for node in gm.graph.nodes:
        operands = meta.equality_operands(node)
        if operands is None:
            continue
        ids, value = operands
        if not (_is_data_input(ids) and meta.is_integer_tensor(meta.example(ids))
                and isinstance(value, int) and value in modality_of):
            continue
        if ids_node is not None and ids_node is not ids:
            return None  # two different token tensors: not the placeholder masks of one prompt
        ids_node = ids
        found.setdefault(modality_of[value], set()).add(value)
    if ids_node is None:
        return None
    inputs = meta.placeholders(gm)
    embedding = locate_embedding_tap(gm)
    weight_index = embedding[1] if embedding is not None and inputs[embedding[0]] is ids_node else None
    return TapPlan(inputs.index(ids_node), {k: tuple(sorted(v)) for k, v in found.items()}, weight_index)


# the encoder towers of every supported family (their own lookups are not of token ids)
_TOWER_CLASSES = tuple(kind for adapter in ADAPTERS for kind in (adapter.vision_encoder_class,
                                                                  adapter.audio_encoder_class))


def locate_embedding_tap(gm: GraphModule, frame: torch.nn.Module | None = None) -> tuple[int, int] | None:
    """Returns (token ids index, weight index) of a graph that looks up embeddings of an input tensor of
    token ids in a module's weight, or None. An encoder's own lookups (Qwen3-Omni's vision position
    embedding: a graph of the tower's frame, or nodes inside a tower) are not of token ids."""
    if isinstance(frame, _TOWER_CLASSES):
        return None
    inputs = meta.placeholders(gm)
    for node in gm.graph.nodes:
        if any(entry.type is not None and issubclass(entry.type, _TOWER_CLASSES) for entry in meta.module_stack(node)):
            continue
        if meta.is_call(node, meta.EMBEDDING_FUNCTIONS) and len(node.args) >= 2:
            ids, weight = node.args[0], node.args[1]
            if _is_data_input(ids) and isinstance(weight, Node) and weight.op == "placeholder" \
                    and meta.is_module_state(weight):
                return inputs.index(ids), inputs.index(weight)
    return None


def locate_encoder_taps(gm: GraphModule, frame: torch.nn.Module | None) -> list[tuple[str, tuple]]:
    """Returns what an encoder graph exposes for stage-1 weights, as (kind, where) records:
    ("audio_lengths", (placeholder index,)) for the audio lengths input; ("window_index", (placeholder
    index,)) where a vision run starts (its window permutation, or the pixels entering the patch
    embedding); ("audio_chunks" | "vision_chunks", ((q node, k node), ..., scale)) for the graph of an
    encoder attention module over cu_seqlens chunks (scale: a float, a placeholder index, or None for
    head_dim ** -0.5). `frame`: the module whose forward this graph was compiled from."""
    inputs = meta.placeholders(gm)
    data = [(i, node) for i, node in enumerate(inputs) if _is_data_input(node)]
    found: dict[str, tuple] = {}
    for adapter in ADAPTERS:
        for i, node in data:
            # feature_attention_mask: the thinker forward's own argument, its mel-frame mask
            if meta.local_name(node) == "feature_attention_mask":
                found.setdefault("audio_lengths", (i,))
        if isinstance(frame, adapter.vision_encoder_class) and adapter.vision_window_index_local is not None:
            for i, node in data:
                if meta.local_name(node) == adapter.vision_window_index_local:
                    found.setdefault("window_index", (i,))
        if adapter.vision_patch_embed_class is not None and isinstance(frame, adapter.vision_patch_embed_class):
            pixels = [i for i, node in data if isinstance(meta.example(node), torch.Tensor)]
            if len(pixels) == 1:
                found.setdefault("window_index", (pixels[0],))
        kind = "audio_chunks" if isinstance(frame, adapter.audio_attention_class) else \
            "vision_chunks" if isinstance(frame, adapter.vision_attention_class) else None
        attention = [node for node in gm.graph.nodes if meta.is_call(node, meta.SDPA_FUNCTIONS)]
        if kind is None or not attention:
            continue
        scales = {node.kwargs.get("scale") for node in attention}
        scale = scales.pop() if len(scales) == 1 else None
        if isinstance(scale, Node):
            scale = inputs.index(scale) if scale.op == "placeholder" else None
        found.setdefault(kind, (tuple((node.args[0], node.args[1]) for node in attention), scale))
    return list(found.items())


def locate_rotary_positions(gm: GraphModule, frame: torch.nn.Module | None) -> int | None:
    """Returns the placeholder index of the (3, B, L) TMRoPE position ids a graph hands to the text model's
    rotary embedding (the graph of that module's frame, or one that calls it), or None. When the decoder
    layers run as graphs of their own, this is where their positions are seen."""
    rotary_classes = tuple(adapter.rotary_class for adapter in ADAPTERS)
    in_frame = isinstance(frame, rotary_classes)
    found = []
    for index, node in enumerate(meta.placeholders(gm)):
        example = meta.example(node)
        if not (_is_data_input(node) and isinstance(example, torch.Tensor) and example.dim() == 3):
            continue
        if not (in_frame or any(any(entry.type in rotary_classes for entry in meta.module_stack(user))
                                for user in node.users)):
            continue
        # a size compared under dynamic shapes becomes a guard of the graph: compared only for the rotary
        # embedding's inputs (an audio tower's chunk count compared to 3 recompiled its graph at 3 chunks)
        if example.shape[0] == 3:
            found.append(index)
    return found[0] if len(found) == 1 else None


def locate_lm_head(gm: GraphModule, output_weight) -> list[Node]:
    """Returns the bias-free linear nodes of a graph whose weight is the model's output embedding
    (compared by identity with the real parameter: `output_weight`, or None when unknown)."""
    if output_weight is None:
        return []
    found = []
    for node in gm.graph.nodes:
        if not meta.is_call(node, meta.LINEAR_FUNCTIONS):
            continue
        weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
        bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
        if bias is None and isinstance(weight, Node) and weight.op == "placeholder" \
                and meta.runtime_value(weight) is output_weight:
            found.append(node)
    return found


def find_upstream(node: Node, found: Callable[[Node], bool], through: Callable[[Node], bool] = lambda n: True
                  ) -> Node | None:
    """Returns the first of `node` and the nodes it is computed from (transitively, only through nodes for
    which `through` holds) for which `found` holds, or None."""
    seen, stack = set(), [node]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if found(current):
            return current
        if current is node or through(current):
            stack.extend(current.all_input_nodes)
    return None


# ---- the decoder: one named step per fact of GraphPlan ---------------------------------------------------
def locate_decoder(gm: GraphModule, facts: ModelFacts | None = None) -> GraphPlan | None:
    """Returns the plan of the decoder in `gm`, None when the graph holds no decoder layer of a known
    family, and raises Unsupported (with the reason) when it holds one that cannot be rewritten soundly.
    facts: what the model says about itself (seats_fx.compile passes them; else read from the frame
    Dynamo is compiling)."""
    adapter = family_of(gm)
    if adapter is None:
        return None
    facts = facts or model_facts(meta.frame_module())
    layer_groups = _layer_groups(gm, adapter, facts)
    layers, outside_inputs, additions = _layers(layer_groups)
    mask = _attention_mask(layers)
    cache = _cache_reads(layers, outside_inputs, mask)
    rotary = _rotary_outputs(adapter, outside_inputs, mask)
    if len(rotary) != 2:
        raise Unsupported(f"expected the rotary cos and sin as per-token inputs of the layers, found "
                          f"{[n.name for n in rotary]}")
    per_token = rotary + additions
    _check_layer_inputs(layers, outside_inputs, per_token, mask, cache)
    return GraphPlan(adapter, layers, layers[0].input, _rotary_positions(gm, adapter, layers), _padding_mask(mask),
                     per_token, mask, _sequence_length(gm, adapter, layers), _final_hidden(gm, adapter, layers),
                     cache, _cache_writes(layers))


def _layer_entry(node: Node, adapter) -> tuple[int, meta.ModuleEntry] | None:
    for depth, entry in enumerate(meta.module_stack(node)):
        if entry.type is adapter.decoder_layer_class:
            return depth, entry
    return None


def _layer_groups(gm: GraphModule, adapter, facts: ModelFacts | None) -> list[list[Node]]:
    """Returns the nodes of each decoder layer, in the order the layers run (one module instance each)."""
    groups: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        found = _layer_entry(node, adapter) if node.op != "placeholder" else None
        if found is not None:
            groups.setdefault(found[1].key, []).append(node)
    depth = facts.depth if facts is not None and facts.adapter is adapter else None
    if depth is None:
        raise Unsupported("cannot tell how many decoder layers the model has (no model facts for this graph)",
                          kind="no model facts")
    if len(groups) != depth:
        raise Unsupported(f"this graph holds {len(groups)} of the model's {depth} decoder layers (a partial "
                          "decoder: the model's code broke the decoder into several graphs)", kind="partial decoder")
    return list(groups.values())


def _layers(groups: list[list[Node]]) -> tuple[list[LayerNodes], list[set[Node]], list[Node]]:
    """Returns the layers (nodes, residual stream in and out, attention call), what each reads from outside
    besides its residual input, and per-token additions to layer outputs (e.g. Qwen3-Omni's deepstack)."""
    in_layers = set().union(*(set(group) for group in groups))
    layers: list[LayerNodes] = []
    outside_inputs: list[set[Node]] = []
    additions: list[Node] = []
    previous_output: Node | None = None
    for index, group in enumerate(groups):
        nodes, members = list(group), set(group)
        external = {a for n in nodes for a in n.all_input_nodes if a not in members}
        # a size a layer computes (e.g. L * top_k) may be reused by later layers: boundaries recompute it
        escaping = [n for n in nodes if any(u not in members and u.op != "output" for u in n.users)
                    and not isinstance(meta.example(n), torch.SymInt)]
        if len(escaping) != 1:
            raise Unsupported(f"layer {index} passes {len(escaping)} values to later code, expected one residual "
                              "stream")
        added = _layer_addition(escaping[0], in_layers)
        if added is not None:  # counted as the layer's last step
            add, term = added
            nodes, escaping = nodes + [add], [add]
            members.add(add)
            in_layers.add(add)
            external.add(term)
            additions.append(term)
        attention = [n for n in nodes if meta.is_call(n, meta.SDPA_FUNCTIONS)]
        if len(attention) != 1:
            raise Unsupported(f"layer {index} has {len(attention)} scaled_dot_product_attention calls, expected one")
        first_data = [a for a in nodes[0].all_input_nodes if a not in members]
        layer_input = previous_output if previous_output is not None else (first_data[0] if first_data else None)
        if layer_input is None or layer_input not in external:
            raise Unsupported(f"cannot find the residual stream entering layer {index}")
        layers.append(LayerNodes(index, nodes, layer_input, escaping[0], attention[0]))
        outside_inputs.append(external - {layer_input})
        previous_output = escaping[0]
    return layers, outside_inputs, additions


def _layer_addition(output: Node, in_layers: set[Node]) -> tuple[Node, Node] | None:
    """Returns (add, term) when the only consumer of a layer's output outside the layers adds it to a
    (B, L, D) tensor computed without any layer (a per-token addition), else None."""
    users = [u for u in output.users if u not in in_layers and u.op != "output"]
    if len(users) != 1 or users[0].op != "call_function" or users[0].target not in (torch.add, operator.add):
        return None
    add = users[0]
    terms = [a for a in add.args if a is not output]
    if len(add.args) != 2 or len(terms) != 1 or not isinstance(terms[0], Node):
        return None
    term = terms[0]
    if getattr(meta.example(term), "shape", None) != getattr(meta.example(output), "shape", None):
        return None
    return None if find_upstream(term, in_layers.__contains__) is not None else (add, term)


def _attention_mask(layers: list[LayerNodes]) -> Node | None:
    """Returns the one 4-D mask every layer's attention uses (None: causal attention without a mask)."""
    masks = {layer.mask for layer in layers}
    if len(masks) != 1:
        raise Unsupported("layers use different attention masks (sliding-window layers are not supported)")
    return masks.pop()


def _cache_reads(layers: list[LayerNodes], outside_inputs: list[set[Node]], mask: Node | None
                 ) -> list[tuple[Node, ...]]:
    """Returns, per layer, the past keys/values it reads (input tensors it extends with torch.cat on the
    sequence dim); [] when no layer reads a cache. A layer may only extend them, so they hold exactly the
    tokens each layer processed."""
    cache: list[tuple[Node, ...]] = []
    for layer, external in zip(layers, outside_inputs):
        members, reads = set(layer.nodes), []
        for node in sorted(external, key=lambda n: n.name):
            value = meta.example(node)
            if node is mask or not _is_data_input(node) or not isinstance(value, torch.Tensor) or value.dim() != 4:
                continue
            extended = False
            for user in node.users:
                if user.op == "call_method" and user.target in _METADATA_METHODS:
                    continue  # get_seq_length() and friends: the cache's size, not its contents
                dim = user.kwargs.get("dim", user.args[1] if len(user.args) > 1 else 0)
                if not (user in members and user.target is torch.cat and dim in _CACHE_DIMS):
                    raise Unsupported(f"layer {layer.index} reads the 4-D input {meta.source_name(node) or node.name} "
                                      f"other than by extending it on the sequence dim ({user.format_node()})")
                extended = True
            if extended:
                reads.append(node)
        cache.append(tuple(reads))
    if any(cache) and not all(cache):
        raise Unsupported("some layers read a KV cache and others do not")
    return cache if any(cache) else []


def _in_module_of(node: Node, kind: type) -> bool:
    return any(entry.type is kind for entry in meta.module_stack(node))


def _rotary_outputs(adapter, outside_inputs: list[set[Node]], mask: Node | None) -> list[Node]:
    """Returns the rotary cos and sin the layers read (values computed in the rotary embedding module)."""
    return sorted({n for external in outside_inputs for n in external
                   if n is not mask and n.op != "placeholder" and _in_module_of(n, adapter.rotary_class)},
                  key=lambda n: n.name)


def _check_layer_inputs(layers: list[LayerNodes], outside_inputs: list[set[Node]], per_token: list[Node],
                        mask: Node | None, cache: list[tuple[Node, ...]]) -> None:
    """Raises Unsupported unless every value a layer reads from outside is one the boundaries can gather
    (residual stream, cos/sin, additions, mask), the KV cache, module state, or a size."""
    known = set(per_token) | {mask} | {n for reads in cache for n in reads}
    unknown = {n for external in outside_inputs for n in external} - known
    unknown = {n for n in unknown if not (n.op == "placeholder" and meta.is_module_state(n))}
    sizes = {n for n in unknown if isinstance(meta.example(n), torch.SymInt)}
    if meta.example(layers[0].input).shape[1] == 1:
        # a decode step is never pruned: sizes it computes (the cache length + 1) stay as they are
        unknown -= sizes
    elif cache and sizes and unknown == sizes:
        raise ContinuedPrompt("the KV cache already holds tokens (a continued prompt): only a prefill is pruned")
    else:
        unknown -= sizes  # sizes computed from the sequence length: insert_boundary recomputes them
    if unknown:
        raise Unsupported(f"layers read values seats_fx does not know how to prune: {sorted(n.name for n in unknown)}")


def _rotary_positions(gm: GraphModule, adapter, layers: list[LayerNodes]) -> Node:
    """Returns the (3, B, L) TMRoPE position ids the rotary embedding module reads (integer in Qwen2.5-Omni,
    float in Qwen3-Omni): its input shaped like the residual stream's (B, L) behind a leading 3."""
    batch_and_length = tuple(meta.example(layers[0].input).shape[:2])
    found = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or not _in_module_of(node, adapter.rotary_class):
            continue
        for value in node.all_input_nodes:
            example = meta.example(value)
            if not _in_module_of(value, adapter.rotary_class) and isinstance(example, torch.Tensor) \
                    and example.dim() == 3 and example.shape[0] == 3 \
                    and tuple(example.shape[1:]) == batch_and_length:
                found.add(value)
    if len(found) != 1:
        raise Unsupported(f"cannot find the 3-D position ids the rotary embedding reads (found {len(found)})")
    return found.pop()


def _padding_mask(mask: Node | None) -> Node | None:
    """Returns the (B, L) padding-mask input the 4-D mask is built from, or None (no mask)."""
    if mask is None:
        return None
    candidates = set()

    def two_dimensional_input(node: Node) -> bool:
        example = meta.example(node)
        if _is_data_input(node) and isinstance(example, torch.Tensor) and example.dim() == 2 \
                and not example.dtype.is_floating_point:
            candidates.add(node)
        return False

    # follow tensors only: a size read (inputs_embeds.shape) does not make a tensor part of the mask
    find_upstream(mask, two_dimensional_input, through=lambda n: isinstance(meta.example(n), torch.Tensor))
    if len(candidates) > 1:
        raise Unsupported(f"the attention mask is built from several 2-D inputs {sorted(n.name for n in candidates)}")
    return candidates.pop() if candidates else None


def _sequence_length(gm: GraphModule, adapter, layers: list[LayerNodes]) -> int | list[Node]:
    """Returns how the graph spells the sequence length inside layers: an int when traced static, else the
    SymInt placeholders carrying it."""
    length = spelled_length(gm, meta.example(layers[0].input).shape[1])
    if isinstance(length, list):
        return length
    if length != 1:  # one new token over a KV cache is a decode step: nothing to select, nothing rewritten
        _check_literal_length(layers, length)
        check_length_multiples(layers, length)
    return length


def spelled_length(gm: GraphModule, length) -> int | list[Node]:
    """Returns a traced sequence length as the graph spells it: an int (static, or a symbol Dynamo already
    specialised to a constant), else the SymInt placeholders carrying it."""
    if isinstance(length, torch.SymInt) and str(length).isdigit():
        length = int(length)
    if isinstance(length, int):
        return length
    # Dynamo may pass the same symbol more than once (one placeholder per source that sized it)
    spelled = [p for p in meta.placeholders(gm) if isinstance(meta.example(p), torch.SymInt)
               and str(meta.example(p)) == str(length)]
    if not spelled:
        raise Unsupported(f"cannot find the SymInt input spelling the sequence length {length}")
    return spelled


def _final_hidden(gm: GraphModule, adapter, layers: list[LayerNodes]) -> Node:
    """Returns the final norm's output: the one value leaving the module that runs after the last layer
    beside the layers (a sibling of the decoder layers, neither a layer nor the rotary embedding)."""
    depth, _ = _layer_entry(layers[0].nodes[0], adapter)
    parents = [entry.key for entry in meta.module_stack(layers[0].nodes[0])[:depth]]
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    last = max(order[n] for n in layers[-1].nodes)
    siblings: dict[str, list[Node]] = {}
    for node in gm.graph.nodes:
        stack = meta.module_stack(node)
        if order[node] <= last or len(stack) <= depth or [e.key for e in stack[:depth]] != parents:
            continue
        entry = stack[depth]
        if entry.type not in (adapter.decoder_layer_class, adapter.rotary_class):
            siblings.setdefault(entry.key, []).append(node)
    if len(siblings) != 1:
        raise Unsupported(f"cannot find the final norm after the last decoder layer ({len(siblings)} candidate "
                          "modules)")
    norm_nodes = next(iter(siblings.values()))
    finals = [n for n in norm_nodes if any(u not in norm_nodes for u in n.users)]
    if len(finals) != 1:
        raise Unsupported("cannot find the final norm's output (one value leaving the final norm)")
    return finals[0]


def _cache_writes(layers: list[LayerNodes]) -> list[Node]:
    """Returns the keys/values the layers hand to the KV cache (concatenations that leave the graph)."""
    return [n for layer in layers for n in layer.nodes
            if n.target is torch.cat and any(u.op == "output" for u in n.users)]


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


def is_size_node(node: Node) -> bool:
    """True for the nodes where a static trace spells sizes derived from the sequence length."""
    return (node.op == "call_method" and node.target in SIZE_METHODS) or \
        (node.op == "call_function" and node.target in _SIZE_FUNCTIONS)


def length_multiples(layers: list[LayerNodes], length: int) -> dict[int, int]:
    """Returns {k: length * k} for each k > 1 the layers' routing takes the top of (torch.topk's k): an MoE
    layer sizes its token-expert pairs as length x top_k, which a static trace spells as one int."""
    ks = set()
    for layer in layers:
        for node in layer.nodes:
            if meta.is_call(node, (torch.topk,)) or (node.op == "call_method" and node.target == "topk"):
                k = node.args[1] if len(node.args) > 1 else node.kwargs.get("k")
                if isinstance(k, int) and not isinstance(k, bool) and k > 1:
                    ks.add(k)
    return {k: length * k for k in ks}


def check_length_multiples(layers: list[LayerNodes], length: int) -> None:
    """A static MoE graph spells length x top_k as an int in sizes (boundaries re-spell it from the kept
    length): make sure it appears in sizes only and no other size equals it."""
    products = set(length_multiples(layers, length).values())
    if not products:
        return
    others: set[int] = set()
    for layer in layers:
        for node in layer.nodes:
            ints = {a for a in _flat_args(node) if isinstance(a, int) and not isinstance(a, bool)}
            if not is_size_node(node) and ints & products:
                raise Unsupported(f"layer {layer.index} uses the sequence length times its top-k "
                                  f"{sorted(ints & products)[0]} outside a size ({node.format_node()}); compile "
                                  "with dynamic=True to rewrite this graph", kind="static trace")
            if is_size_node(node):
                others |= ints - products - {length}
    if products & others:
        raise Unsupported("the sequence length times the top-k equals another size inside the layers; compile "
                          "with dynamic=True to rewrite this graph", kind="static trace")


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
