"""Facts `locate` finds in a Dynamo graph; the rewrite passes read them and never re-discover them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from torch.fx import Node

if TYPE_CHECKING:
    from seats_fx.config import SeatsConfig
    from seats_fx.passes.piece_graphs import DecoderGraphs
    from seats_fx.stage_plan import StagePlan


@dataclass
class LayerNodes:
    """One decoder layer in the graph: its nodes in order, the residual stream entering and leaving it,
    and its attention call (whose q and k, rotary applied, stage 2 scores with)."""

    index: int
    nodes: list[Node]
    input: Node
    output: Node
    attention: Node

    @property
    def query(self) -> Node:
        return self.attention.args[0]

    @property
    def key(self) -> Node:
        return self.attention.args[1]

    @property
    def scale(self) -> "float | Node | None":
        return self.attention.kwargs.get("scale")

    @property
    def mask(self) -> "Node | None":
        args = self.attention.args
        return self.attention.kwargs.get("attn_mask", args[3] if len(args) > 3 else None)

    def set_mask(self, mask: Node, **flags) -> None:
        """Points the attention call at `mask` (and sets flags such as is_causal), wherever it passes it."""
        args = self.attention.args
        if len(args) > 3 and "attn_mask" not in self.attention.kwargs:
            self.attention.args = args[:3] + (mask,) + args[4:]
            self.attention.kwargs = {**self.attention.kwargs, **flags}
        else:
            self.attention.kwargs = {**self.attention.kwargs, "attn_mask": mask, **flags}


@dataclass
class GraphPlan:
    """Where the decoder lives in one graph.

    per_token: nodes outside the layers that layers read per token besides the residual stream (the
    rotary cos/sin, then per-token additions to layer outputs such as Qwen3-Omni's deepstack); mask: the 4-D attention mask the layers use (None when attention is causal without
    a mask); seq_len: how the graph spells the sequence length inside layers (an int when traced
    static, else the SymInt placeholders carrying it); positions: the (3, B, L) TMRoPE position ids node;
    final_hidden: the final norm's output (a graph output, or the lm_head's input when that is in the graph);
    cache: per layer, the KV-cache tensors (past keys, values) it concatenates new ones to ([] without a cache).
    """

    adapter: type
    layers: list[LayerNodes]
    inputs_embeds: Node
    positions: Node
    attention_mask: Node | None
    per_token: list[Node]
    mask: Node | None
    seq_len: int | list[Node]
    final_hidden: Node
    cache: list[tuple[Node, ...]] = field(default_factory=list)  # per layer: KV-cache tensors it extends
    cache_writes: list[Node] = field(default_factory=list)  # keys/values the layers hand to a KV cache (outputs)
    # filled by the rewrite passes: the nodes that currently carry each per-token tensor
    boundaries: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TapPlan:
    """A graph that sees input_ids: the placeholder positions of input_ids (and of the embedding weight
    when the graph looks tokens up), and the token ids it compares input_ids with, by modality."""

    input_ids_index: int
    token_ids: dict[str, tuple[int, ...]]
    embed_weight_index: int | None = None


@dataclass
class PassContext:
    """What every rewrite pass reads besides the graph: locate's plan (passes update the nodes it points at
    as they insert boundaries), the config, the stage plan resolved for this depth, the model's lm_head
    weight (returns None when unknown) and the key of every Inductor piece's cache entry."""

    plan: GraphPlan | None
    config: "SeatsConfig"
    stages: "StagePlan | None" = None
    output_weight: Callable[[], object] = lambda: None
    cache_key: str = ""
    # the CUDA-graph recorders the pieces share (SeatsConfig.cuda_graphs), one set per pass manager; None: off
    piece_graphs: "DecoderGraphs | None" = None
