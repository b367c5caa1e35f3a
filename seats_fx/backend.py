"""The `seats` torch.compile backend: SEATS passes on the decoder graph, Inductor for everything."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch.fx import GraphModule

from seats_fx.call import SeatsCall
from seats_fx.config import SeatsConfig
from seats_fx.passes.locate import (Unsupported, locate_decoder, locate_embedding_tap, locate_encoder_taps,
                                    locate_tap)
from seats_fx.passes.manager import SeatsPassManager
from seats_fx.runtime import (record_attention_chunks, record_audio_lengths, record_embedding, record_modality_tap,
                              record_window_index, take_encoder_taps, take_modality_tap)

log = logging.getLogger("seats_fx")


def _inductor(gm: GraphModule, example_inputs: list) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


def _holds_decoder(gm: GraphModule) -> bool:
    from seats_fx.passes.locate import family_of

    return family_of(gm) is not None


def _copy_graph_module(gm: GraphModule) -> GraphModule:
    """Returns a GraphModule over a copy of gm's graph (node meta shared, nodes new)."""
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return GraphModule(gm, graph)


class _TappedGraph:
    """An Inductor-compiled graph that first hands some of its runtime inputs to the runtime recorders."""

    def __init__(self, compiled: Callable, recorders: list[Callable[[tuple], None]]) -> None:
        self.compiled, self.recorders = compiled, recorders

    def __call__(self, *args):
        for record in self.recorders:
            record(args)
        return self.compiled(*args)


def _recorders(gm: GraphModule) -> list[Callable[[tuple], None]]:
    """Returns the runtime recorders a graph needs: modality tap, embedding, encoder taps."""
    recorders: list[Callable[[tuple], None]] = []
    embedding = locate_embedding_tap(gm)
    if embedding is not None:
        ids_at, weight_at = embedding
        recorders.append(lambda args: record_embedding(args[ids_at], args[weight_at]))
    tap = locate_tap(gm)
    if tap is not None:
        recorders.append(lambda args: record_modality_tap(args[tap.input_ids_index], tap.token_ids))
    for kind, where in locate_encoder_taps(gm):
        if kind == "audio_lengths":
            recorders.append(lambda args, i=where[0]: record_audio_lengths(args[i]))
        elif kind == "window_index":
            recorders.append(lambda args, i=where[0]: record_window_index(args[i]))
        else:
            *pairs, scale_at, scale = where
            modality = "audio" if kind == "audio_chunks" else "vision"

            def record(args, pairs=tuple(pairs), scale_at=scale_at, scale=scale, modality=modality):
                chunks = [(args[pairs[j]], args[pairs[j + 1]]) for j in range(0, len(pairs), 2)]
                record_attention_chunks(modality, chunks, args[scale_at] if scale_at >= 0 else scale)

            recorders.append(record)
    return recorders


class _DecoderRunner:
    """Runs the rewritten decoder graph with a fresh SeatsCall per call."""

    def __init__(self, rewritten: GraphModule, config: SeatsConfig, adapter, depth: int) -> None:
        self.rewritten, self.config, self.adapter, self.depth = rewritten, config, adapter, depth

    def __call__(self, *args):
        call = SeatsCall(self.config, self.adapter, self.depth, take_modality_tap(), take_encoder_taps())
        return self.rewritten(call, *args)


class SeatsBackend:
    """A Dynamo backend; `torch.compile(model, backend="seats", options={...})` builds one per compile."""

    def __init__(self, options: Mapping[str, Any] | SeatsConfig | None = None) -> None:
        self.config = SeatsConfig.from_options(options)
        self.manager = SeatsPassManager(self.config)

    def __call__(self, gm: GraphModule, example_inputs: list) -> Callable:
        try:
            # Dynamo reads the graph after the backend returns: rewrite a copy, never `gm` itself
            working = _copy_graph_module(gm) if _holds_decoder(gm) else gm
            plan = locate_decoder(working)
        except Unsupported as reason:
            if self.config.strict:
                raise RuntimeError(f"seats (strict): cannot rewrite this decoder graph: {reason}") from None
            log.warning("seats: decoder graph left unpruned (compiled by Inductor unchanged): %s", reason)
            plan = None
        if plan is not None:
            depth = len(plan.layers)
            # resolving the stage plan here turns a bad layer choice into an error at compile time
            SeatsCall(self.config, plan.adapter, depth, None, None)
            rewritten = self.manager(working, plan)
            log.info("seats: rewrote decoder graph with %d layers: %s", depth, ", ".join(plan.boundaries) or "no stage")
            return _DecoderRunner(rewritten, self.config, plan.adapter, depth)
        recorders = _recorders(gm)
        compiled = _inductor(gm, example_inputs)
        return _TappedGraph(compiled, recorders) if recorders else compiled


def seats(gm: GraphModule, example_inputs: list, **kwargs) -> Callable:
    """Entry point of `backend="seats"`; `options` arrive as keyword arguments."""
    options = kwargs.pop("options", None) or {}
    options = {**options, **kwargs}
    return SeatsBackend(options)(gm, example_inputs)


def backend(options: Mapping[str, Any] | SeatsConfig | None = None) -> SeatsBackend:
    """Returns a backend callable for `torch.compile(model, backend=seats_fx.backend({...}))`."""
    return SeatsBackend(options)
