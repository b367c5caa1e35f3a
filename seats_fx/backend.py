"""The `seats` torch.compile backend: SEATS passes on the decoder graph, Inductor for everything."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch.fx import GraphModule, Node

from seats_fx.call import SeatsCall, glue_seconds, reset_glue_clock
from seats_fx.config import SeatsConfig
from seats_fx.models import ADAPTERS
from seats_fx.passes.locate import (ContinuedPrompt, Unsupported, decoder_layer_frame, family_of, foreign_source,
                                    locate_decoder,
                                    locate_embedding_tap, locate_encoder_taps, locate_tap)
from seats_fx.passes.manager import SeatsPassManager
from seats_fx.runtime import (SeatsStats, prefill_record, record_attention_chunks, record_audio_lengths,
                              record_embedding, record_modality_tap, record_window_index, set_last_stats,
                              set_prefill_record, take_encoder_taps, take_modality_tap)

log = logging.getLogger("seats_fx")

# transformers wraps most model functions in one decorator, so one code object collects a cache entry
# per wrapped function; at Dynamo's default recompile_limit (8) Dynamo then reuses any cached graph,
# whichever backend built it, and two option sets could serve each other's graphs.
MIN_RECOMPILE_LIMIT = 64


def _ensure_recompile_headroom() -> None:
    config = torch._dynamo.config
    if config.recompile_limit < MIN_RECOMPILE_LIMIT:
        log.info("seats: raising torch._dynamo.config.recompile_limit from %d to %d (transformers' decorators "
                 "share one code object; at the limit Dynamo would reuse graphs across backends)",
                 config.recompile_limit, MIN_RECOMPILE_LIMIT)
        config.recompile_limit = MIN_RECOMPILE_LIMIT


def _inductor(gm: GraphModule, example_inputs: list) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs)


def _copy_graph_module(gm: GraphModule) -> GraphModule:
    """Returns a GraphModule over a copy of gm's graph (node meta shared, nodes new)."""
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    return GraphModule(gm, graph)


class _TappedGraph:
    """A compiled graph that hands runtime inputs (and extra outputs appended for the purpose) to the
    runtime recorders, then returns exactly the outputs Dynamo expects."""

    def __init__(self, compiled: Callable, recorders: list[Callable], outputs: int | None) -> None:
        self.compiled, self.recorders, self.outputs = compiled, recorders, outputs

    def __call__(self, *args):
        results = self.compiled(*args)
        extras = ()
        if self.outputs is not None:
            extras = tuple(results[self.outputs:])
            results = type(results)(results[:self.outputs])
        for record in self.recorders:
            record(args, extras)
        return results


def _expose(gm: GraphModule, nodes: list[Node]) -> int:
    """Appends `nodes` to gm's outputs; returns the original output count."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = output.args[0]
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    output.args = (tuple(values + nodes),)
    gm.recompile()
    return len(values)


def _input_recorders(gm: GraphModule) -> list[Callable]:
    """Returns recorders of the input_ids (and embedding weight) a graph sees; every recorder takes
    (runtime args, extra outputs)."""
    recorders: list[Callable] = []
    embedding = locate_embedding_tap(gm)
    if embedding is not None:
        ids_at, weight_at = embedding
        recorders.append(lambda args, extras: record_embedding(args[ids_at], args[weight_at]))
    tap = locate_tap(gm)
    if tap is not None:
        recorders.append(lambda args, extras: record_modality_tap(args[tap.input_ids_index], tap.token_ids))
    return recorders


def _tap_graph(gm: GraphModule) -> tuple[GraphModule, list[Callable], int | None]:
    """Returns the graph to compile (with extra outputs where a tap needs intermediate values), its
    recorders, and the original output count (None when no output was added)."""
    recorders = _input_recorders(gm)
    exposed: list[Node] = []
    for kind, where in locate_encoder_taps(gm):
        if kind == "audio_lengths":
            recorders.append(lambda args, extras, i=where[0]: record_audio_lengths(args[i]))
        elif kind == "window_index":
            recorders.append(lambda args, extras, i=where[0]: record_window_index(args[i]))
        else:
            pairs, scale = where
            first = len(exposed)
            exposed += [node for pair in pairs for node in pair]
            modality = "audio" if kind == "audio_chunks" else "vision"

            def record(args, extras, first=first, count=len(pairs), scale=scale, modality=modality):
                values = extras[first:first + 2 * count]
                chunks = [(values[2 * j], values[2 * j + 1]) for j in range(count)]
                record_attention_chunks(modality, chunks, args[scale] if isinstance(scale, int) else scale)

            recorders.append(record)
    outputs = None
    if exposed:
        names = [n.name for n in exposed]
        gm = _copy_graph_module(gm)
        by_name = {n.name: n for n in gm.graph.nodes}
        outputs = _expose(gm, [by_name[name] for name in names])
    return gm, recorders, outputs


class _DecoderRunner:
    """Runs the rewritten decoder graph with a fresh SeatsCall per call."""

    def __init__(self, rewritten: GraphModule, config: SeatsConfig, adapter, depth: int,
                 recorders: list[Callable], positions_per_second: int) -> None:
        self.rewritten, self.config, self.adapter, self.depth = rewritten, config, adapter, depth
        self.recorders, self.positions_per_second = recorders, positions_per_second

    def __call__(self, *args):
        for record in self.recorders:
            record(args, ())
        call = SeatsCall(self.config, self.adapter, self.depth, take_modality_tap(), take_encoder_taps(),
                         self.positions_per_second)
        reset_glue_clock()
        outputs = self.rewritten(call, *args)
        call.stats.selection_seconds = glue_seconds()
        return outputs


class _UnprunedDecoder:
    """A decoder graph locate could not explain: runs unchanged and says so in last_stats(). A continued
    prompt is refused over a pruned cache (its layers hold different counts than transformers assumes)."""

    def __init__(self, compiled: Callable, reason: str, continues_cache: bool = False) -> None:
        self.compiled, self.reason, self.continues_cache = compiled, reason, continues_cache

    def __call__(self, *args):
        if self.continues_cache and prefill_record() is not None:
            raise RuntimeError("seats: cannot continue a prompt over the pruned KV cache of the last prefill; "
                               "start from an empty cache (or compile without seats for multi-turn caches)")
        take_modality_tap()
        take_encoder_taps()
        set_last_stats(SeatsStats(pruned=False, skipped=self.reason))
        set_prefill_record(None)
        return self.compiled(*args)


class _UnprunedDecodeStep:
    """A decode-step graph seats could not rewrite: right over an unpruned cache, refused over a pruned one."""

    def __init__(self, compiled: Callable, reason: str) -> None:
        self.compiled, self.reason = compiled, reason

    def __call__(self, *args):
        if prefill_record() is not None:
            raise RuntimeError(f"seats: cannot decode over the pruned KV cache of the last prefill: {self.reason}")
        return self.compiled(*args)


class SeatsBackend:
    """A Dynamo backend; `torch.compile(model, backend="seats", options={...})` builds one per compile."""

    def __init__(self, options: Mapping[str, Any] | SeatsConfig | None = None,
                 positions_per_second: int | None = None, model_is_supported: bool = False) -> None:
        """positions_per_second: the model config's TMRoPE position_id_per_seconds, which the windows are cut
        on. seats_fx.compile passes it; a graph carries no trace of it, so a bare torch.compile(backend=
        "seats") assumes the family's released value (25 for both families) and says so once.
        model_is_supported: the caller checked the model is a supported thinker (seats_fx.compile does), so
        no graph is taken for a foreign model's; otherwise the first graph tells (see __call__)."""
        self.config = SeatsConfig.from_options(options)
        if positions_per_second is not None and (isinstance(positions_per_second, bool)
                                                 or not isinstance(positions_per_second, int)
                                                 or positions_per_second <= 0):
            raise ValueError(f"seats: positions_per_second must be a positive int, got {positions_per_second!r}")
        self.positions_per_second = positions_per_second
        self.manager = SeatsPassManager(self.config)
        self.decoder_compiles = 0  # how many prompt decoder graphs Dynamo handed this backend (recompiles + 1)
        self.decode_compiles = 0  # how many one-token decode-step graphs
        self._warned: set[str] = set()
        # Known after the first graph: a supported thinker's first graph is traced from its modeling file.
        # Later graphs of the same model may come from shared helpers only (transformers' vision_utils,
        # after a graph break) and are the thinker's all the same.
        self._model_is_supported = model_is_supported
        _ensure_recompile_headroom()

    def _lower(self, gm: GraphModule, example_inputs: list) -> Callable:
        return _inductor(gm, example_inputs) if self.config.inductor else gm.forward

    def _unpruned(self, gm: GraphModule, example_inputs: list, reason: Unsupported,
                  strict_raises: bool = True) -> Callable:
        """A decoder graph seats cannot (or must not) rewrite: compiled unchanged, one warning per kind of
        reason (strict: an error, unless the graph was understood and left alone on purpose), and
        last_stats() says why when it runs."""
        if self.config.strict and strict_raises:
            raise RuntimeError(f"seats (strict): cannot rewrite this decoder graph: {reason}") from None
        if reason.kind not in self._warned:  # e.g. one per layer when a decoder came in pieces
            self._warned.add(reason.kind)
            log.warning("seats: decoder graph left unpruned (compiled by Inductor unchanged): %s", reason)
        return _UnprunedDecoder(self._lower(gm, example_inputs), f"decoder graph not rewritten: {reason}",
                                isinstance(reason, ContinuedPrompt))

    def _decode_step(self, gm: GraphModule, working: GraphModule, plan, example_inputs: list) -> Callable:
        """A one-token decoder call: nothing to select (last_stats() keeps the prefill's record); over a KV
        cache it needs positions and layer masks that fit what the prefill kept."""
        if not plan.cache:
            return self._lower(gm, example_inputs)
        try:
            rewritten = self.manager.decode_step(working, plan)
        except Unsupported as reason:
            if self.config.strict:
                raise RuntimeError(f"seats (strict): cannot rewrite this decode-step graph: {reason}") from None
            log.warning("seats: decode-step graph compiled unchanged; it refuses a pruned KV cache: %s", reason)
            return _UnprunedDecodeStep(self._lower(gm, example_inputs), str(reason))
        self.decode_compiles += 1
        log.info("seats: rewrote a decode-step graph with %d layers", len(plan.layers))
        return rewritten.forward

    def _foreign(self, gm: GraphModule, example_inputs: list, where: str) -> Callable:
        """A graph of a model seats does not prune: compiled unchanged, one log line per backend."""
        message = (f"seats: not a Qwen-Omni thinker graph (code from {where}); supported families: "
                   f"{[a.family for a in ADAPTERS]}")
        if self.config.strict:
            raise RuntimeError(f"{message} (strict)")
        if "foreign model" not in self._warned:
            self._warned.add("foreign model")
            log.warning("%s; compiled by Inductor unchanged", message)
        return self._lower(gm, example_inputs)

    def __call__(self, gm: GraphModule, example_inputs: list) -> Callable:
        if family_of(gm) is None:
            piece = decoder_layer_frame(gm)
            if piece is not None:  # the model's code broke its decoder into one graph per layer
                reason = Unsupported(f"a {piece.family} decoder layer compiled as a graph of its own (the model's "
                                     "code broke the decoder into pieces; for Qwen3-Omni use seats_fx.compile)",
                                     kind="partial decoder")
                return self._unpruned(gm, example_inputs, reason)
            where = foreign_source(gm)
            if where is None:
                self._model_is_supported = True
            elif not self._model_is_supported:
                return self._foreign(gm, example_inputs, where)
            tapped, recorders, outputs = _tap_graph(gm)
            # the thinker's lm_head usually runs in a graph after the decoder's: skip pruned (zero) rows
            # (inference only: a zero row's logits are zero, but its gradient is not)
            with_logits = None if torch.is_grad_enabled() else self.manager.logits_graph(_copy_graph_module(tapped))
            compiled = with_logits.forward if with_logits is not None else self._lower(tapped, example_inputs)
            return _TappedGraph(compiled, recorders, outputs) if recorders else compiled
        self._model_is_supported = True
        # Dynamo reads the graph after the backend returns: rewrite a copy, never `gm` itself
        working = _copy_graph_module(gm)
        try:
            plan = locate_decoder(working)
        except Unsupported as reason:
            return self._unpruned(gm, example_inputs, reason)
        if plan.seq_len == 1:
            return self._decode_step(gm, working, plan, example_inputs)
        if torch.is_grad_enabled():  # Dynamo guards on grad mode: a no_grad call compiles its own graph
            return self._unpruned(gm, example_inputs, Unsupported(
                "traced with gradients enabled (training, or a forward outside torch.no_grad() / "
                "torch.inference_mode()): seats prunes inference only, so gradients stay those of the full "
                "model; generate() and no_grad forwards are pruned", kind="grad mode"), strict_raises=False)
        depth = len(plan.layers)
        # text-only and fused forwards see input_ids in the decoder graph itself
        recorders = _input_recorders(gm)
        rewritten = self.manager(working, plan)  # resolves the stage plan: a bad layer choice fails here
        self.decoder_compiles += 1
        log.info("seats: rewrote decoder graph with %d layers: %s", depth, ", ".join(plan.boundaries) or "no stage")
        if log.isEnabledFor(logging.DEBUG):  # the compiled pieces and the selection glue between them
            log.debug("seats: rewritten decoder graph:\n%s", rewritten.code)
        per_second = self.positions_per_second
        if per_second is None:
            per_second = plan.adapter.position_id_per_seconds
            if "positions per second" not in self._warned:
                self._warned.add("positions per second")
                log.info("seats: windows assume %d TMRoPE positions per second (the released %s value); "
                         "seats_fx.compile reads the model's own config", per_second, plan.adapter.family)
        return _DecoderRunner(rewritten, self.config, plan.adapter, depth, recorders, per_second)


def seats(gm: GraphModule, example_inputs: list, **kwargs) -> Callable:
    """Entry point of `backend="seats"`; `options` arrive as keyword arguments."""
    options = kwargs.pop("options", None) or {}
    options = {**options, **kwargs}
    return SeatsBackend(options)(gm, example_inputs)


def backend(options: Mapping[str, Any] | SeatsConfig | None = None) -> SeatsBackend:
    """Returns a backend callable for `torch.compile(model, backend=seats_fx.backend({...}))`."""
    return SeatsBackend(options)
