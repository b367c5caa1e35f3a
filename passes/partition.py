"""Split a rewritten decoder graph into Inductor pieces and the eager selection glue between them."""

from __future__ import annotations

import logging
import threading
from typing import Any, Hashable

import torch
from torch import nn
from torch._inductor.custom_graph_pass import CustomGraphPass
from torch.fx import GraphModule, Node
from torch.fx.passes.split_module import split_module

from seats_fx.inductor_patches import known_bug_patches
from seats_fx.passes import dynamo_meta
from seats_fx.passes.boundary import GLUE
from seats_fx.passes.in_place import first_input_write
from seats_fx.passes.piece_graphs import PieceGraphs
from seats_fx.passes.plan import PassContext

log = logging.getLogger("seats_fx")

class SeatsCacheKey(CustomGraphPass):
    """Puts the seats pass manager's uuid (config + every pass's source) into Inductor's cache key of each
    piece, as a post-grad pass that changes nothing: a changed option or pass never meets a cached piece
    compiled under another."""

    def __init__(self, uuid: str) -> None:
        self._uuid = uuid

    def __call__(self, graph: torch.fx.graph.Graph) -> None:
        return None

    def uuid(self) -> str:
        return self._uuid


_patches = threading.local()


def _scalar_capture():
    """Dynamo's capture_scalar_outputs for the calling thread, as one reusable patch per thread: a patch made
    per piece call defines a class each time (17 us against 6 us here, on every layer of every call). Not
    reentrant under torch 2.11, and piece calls never nest."""
    patch = getattr(_patches, "scalar_capture", None)
    if patch is None:
        patch = _patches.scalar_capture = torch._dynamo.config.patch(capture_scalar_outputs=True)
    return patch


class PieceProgram:
    """The code of one or more pieces that compute the same function of their inputs (the same graph over
    different layers' weights, which Dynamo lifted to inputs): compiled by Inductor once, on first call,
    with dynamic shapes (kept-token counts change from call to call without recompiling); every piece that
    shares it runs it on its own inputs."""

    def __init__(self, graph_module: GraphModule, use_inductor: bool, cache_key: str, cpp_wrapper: bool = False
                 ) -> None:
        self.graph_module = graph_module
        self.use_inductor = use_inductor
        self.cache_key = cache_key
        self.cpp_wrapper = cpp_wrapper  # Inductor's C++ wrapper (SeatsConfig.cpp_wrapper)
        self.compiles = 0  # how many times this program was handed to torch.compile (0 or 1)
        self.lowerings = 0  # graphs Dynamo traced from it and Inductor lowered (0 after a call: it ran eagerly)
        self._compiled = None

    def _lower(self, gm: GraphModule, example_inputs: list):
        from torch._inductor.compile_fx import compile_fx

        patches = {"post_grad_custom_post_pass": SeatsCacheKey(self.cache_key)}
        if self.cpp_wrapper:  # an Inductor config patch: in Inductor's cache key like the pass above
            patches["cpp_wrapper"] = True
        patches.update(known_bug_patches(example_inputs))  # e.g. torch 2.11's C++ index check
        compiled = compile_fx(gm, example_inputs, config_patches=patches)
        self.lowerings += 1  # counted once lowered: Dynamo may call a backend again after restarting its analysis
        return compiled

    def __call__(self, *args):
        if not self.use_inductor:
            return self.graph_module(*args)
        first = self._compiled is None
        if first:
            self.compiles += 1
            # Dynamo marks the code FX generates while Dynamo compiles as code never to trace (convert_frame's
            # fx_forward_from_src_skip_result), and this piece was generated inside the seats backend: under
            # torch 2.11 its torch.compile then ran it eagerly, silently. Code generated now, at run time, is
            # not marked
            self.graph_module.recompile()
            self._compiled = torch.compile(self.graph_module, backend=self._lower, dynamic=True)
        # Dynamo lifted float module attributes (RMSNorm epsilon, attention scaling) to 0-d tensors the graph
        # reads with .item(); retracing a piece without this breaks its graph at each read (four graphs and
        # compiles per layer instead of one)
        with _scalar_capture():
            out = self._compiled(*args)
        if first and self.lowerings == 0:
            log.warning("seats: a decoder piece ran eagerly: Dynamo traced no graph from it, so Inductor did not "
                        "lower it (torch %s); the outputs are right, the speed is not", torch.__version__)
        return out


class InductorPiece(nn.Module):
    """A piece of the decoder between two stage boundaries (or one layer of it); runs its PieceProgram,
    which it may share with pieces of the same structure, or replays the CUDA graphs it recorded of it
    (SeatsConfig.cuda_graphs: passes.piece_graphs)."""

    def __init__(self, piece: GraphModule, program: PieceProgram, graphs: PieceGraphs | None = None) -> None:
        super().__init__()
        self.piece = piece
        self.program = program
        self.graphs = graphs

    def forward(self, *args):
        if self.graphs is None:
            return self.program(*args)
        return self.graphs(self.program, args)


class _Unshareable(Exception):
    """A piece holds something its structure cannot name (module state, an unknown constant)."""


def _constant_key(value: Any, index: dict[Node, int]) -> Hashable:
    """Returns a key naming an argument of a node: graph values by position, constants by type and value."""
    if isinstance(value, Node):
        return ("node", index[value])
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_constant_key(item, index) for item in value))
    if isinstance(value, dict):
        return ("dict", tuple((key, _constant_key(item, index)) for key, item in value.items()))
    if isinstance(value, slice):
        return ("slice", _constant_key(value.start, index), _constant_key(value.stop, index),
                _constant_key(value.step, index))
    if value is None or value is Ellipsis or isinstance(value, (bool, int, float, complex, str, torch.dtype,
                                                                torch.device, torch.layout, torch.memory_format)):
        # float('nan') != itself: its repr keeps a NaN constant equal to itself
        return (type(value).__name__, repr(value))
    raise _Unshareable(f"constant of type {type(value).__name__}")


def structure_key(piece: GraphModule) -> Hashable | None:
    """Returns a key equal for two pieces exactly when they run the same operations in the same order on
    inputs in the same positions with the same constants (node names, layer indices and weights aside),
    i.e. when one piece's code computes the other's outputs from the other's inputs; None when the piece
    reads module state (get_attr, call_module) or a constant the key cannot name: it shares with none."""
    index: dict[Node, int] = {}
    entries = []
    try:
        for position, node in enumerate(piece.graph.nodes):
            index[node] = position
            if node.op in ("get_attr", "call_module"):
                return None
            target = node.target if node.op == "call_function" else str(node.target)
            if node.op == "placeholder":
                target = "placeholder"  # named after the layer's values: position is what counts
            entries.append((node.op, target, _constant_key(node.args, index), _constant_key(node.kwargs, index)))
        return tuple(entries)
    except _Unshareable:
        return None


def _layer_of_nodes(ctx: PassContext) -> dict[Node, int]:
    """Returns the decoder layer index of every node locate placed in a layer (empty without a plan)."""
    if ctx.plan is None:
        return {}
    return {node: layer.index for layer in ctx.plan.layers for node in layer.nodes}


def _part_of_nodes(gm: GraphModule, layer_of: dict[Node, int]) -> tuple[dict[str, int], set[int]]:
    """Returns each node's part and the parts that are glue: a part changes where glue starts or ends and
    where a node of another decoder layer than the part's begins; nodes of no layer (rotary, masks, final
    norm) stay with the part they follow."""
    part_of: dict[str, int] = {}
    part, previous_glue, part_layer = 0, None, None
    glue_parts: set[int] = set()
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        is_glue = bool(node.meta.get(GLUE))
        layer = None if is_glue else layer_of.get(node)
        if previous_glue is not None and is_glue != previous_glue:
            part, part_layer = part + 1, None
        elif layer is not None and part_layer is not None and layer != part_layer:
            part += 1
        if layer is not None:
            part_layer = layer
        previous_glue = is_glue
        part_of[node.name] = part
        if is_glue:
            glue_parts.add(part)
    return part_of, glue_parts


def _module_state_positions(args, state_targets: set) -> frozenset[int]:
    """Returns the positions of a piece's arguments that are placeholders of module state (weights, buffers,
    module attributes: Dynamo's sources say so), which a CUDA graph of the piece reads in place."""
    return frozenset(position for position, arg in enumerate(args)
                     if isinstance(arg, Node) and arg.op == "placeholder" and arg.target in state_targets)


def partition(gm: GraphModule, ctx: PassContext, per_layer: bool | None = None) -> GraphModule:
    """Returns a GraphModule whose submodules alternate Inductor pieces (lowered when ctx.config.inductor,
    their cache entries keyed by ctx.cache_key) and glue (selection + gathers), which runs eagerly.

    per_layer (default: when the pieces are lowered): each decoder layer starts a piece of its own, and
    pieces of one structure share one PieceProgram. The layers of a run between boundaries are the same
    code over other weights (Dynamo lifts them to inputs), so a cold compile lowers each distinct layer
    shape once instead of every run of layers whole: its cost follows the number of distinct pieces, not
    the depth. Unlowered pieces gain nothing from it and stay whole runs."""
    use_inductor, cache_key = ctx.config.inductor, ctx.cache_key
    if per_layer is None:
        per_layer = use_inductor
    layer_of = _layer_of_nodes(ctx)
    part_of, glue_parts = _part_of_nodes(gm, layer_of if per_layer else {})
    # CUDA graphs pay where a piece launches many kernels: the decoder layers. The piece before the first
    # layer (rotary tables, the full-length mask) launches a few and returns the mask, which a replay would
    # copy out whole
    layer_parts = {part_of[node.name] for node in layer_of if node.name in part_of}
    state = {node.target for node in dynamo_meta.placeholders(gm) if dynamo_meta.is_module_state(node)}
    split = split_module(gm, gm, lambda node: part_of[node.name], keep_original_order=True)
    piece_args = {node.target: node.args for node in split.graph.nodes if node.op == "call_module"}
    programs: dict[Hashable, PieceProgram] = {}
    for name, child in list(split.named_children()):
        index = int(name.rsplit("_", 1)[-1])
        if index in glue_parts:
            continue
        key = structure_key(child) if per_layer else None
        program = programs.get(key) if key is not None else None
        if program is None:
            program = PieceProgram(child, use_inductor, cache_key, ctx.config.cpp_wrapper)
            if key is not None:
                programs[key] = program
        graphs = None
        if ctx.piece_graphs is not None and index in layer_parts:
            graphs = PieceGraphs(ctx.piece_graphs, name, _module_state_positions(piece_args[name], state),
                                 first_input_write(child))
        setattr(split, name, InductorPiece(child, program, graphs))
    split.meta["seats_glue_parts"] = sorted(glue_parts)
    return split


def partition_whole(gm: GraphModule, ctx: PassContext) -> GraphModule:
    """partition without a piece per layer, for decode steps: their one glue call (positions and layer masks)
    comes before the first layer, so the layers run as one piece, one compiled call per generated token
    instead of one per layer (each call has its fixed host cost: Dynamo's guards, AOTAutograd's and Inductor's
    wrappers). Measured on this CPU, 8-layer tiny thinker with Inductor, one thread: 2.56 -> 1.73 ms per decode
    step, piece calls 9 -> 2. Plain Inductor compiles a decode graph whole too, so its cold compile is the
    baseline's; prefills keep per-layer pieces, whose compile sharing their stage boundaries need."""
    return partition(gm, ctx, per_layer=False)
