"""The `seats` torch.compile backend: SEATS passes on the decoder graph, Inductor for everything."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException
from torch.fx import GraphModule, Node
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from seats_fx.call import SeatsCall, glue_seconds, reset_glue_clock
from seats_fx.config import SeatsConfig
from seats_fx.inductor_patches import known_bug_patches
from seats_fx.layerwise import LayerStep, LayerwiseForward, current_forward, end_forward, start_forward
from seats_fx.models import ADAPTERS, ModelFacts, decoder_layer_position, model_facts
from seats_fx.passes import dynamo_meta
from seats_fx.passes.locate import (ContinuedPrompt, Unsupported, decoder_layer_frame, family_of, graph_owner,
                                    locate_decoder, locate_embedding_tap, locate_encoder_taps,
                                    locate_rotary_positions, locate_tap)
from seats_fx.passes.manager import SeatsPassManager
from seats_fx.passes.segment_attention import fuse_segment_attention
from seats_fx.runtime import (SeatsStats, prefill_record, record_attention_chunks, record_audio_lengths,
                              record_embedding, record_modality_tap, record_positions, record_window_index,
                              set_last_stats, set_prefill_record, take_encoder_taps, take_modality_tap,
                              positions_pending, take_positions, take_unconsumed_media_tap)

log = logging.getLogger("seats_fx")

# transformers wraps most model functions in one decorator, so one code object collects a cache entry
# per wrapped function; at Dynamo's default recompile_limit (8) Dynamo then reuses any cached graph,
# whichever backend built it, and two option sets could serve each other's graphs.
MIN_RECOMPILE_LIMIT = 64
# a decoder whose layers Dynamo compiles as frames of their own compiles one graph per layer (Dynamo guards
# on the layer module), static and then dynamic: a layer past the limit would run eagerly, unpruned
GRAPHS_PER_LAYER_FRAME = 3


def versions() -> str:
    """Returns the torch and transformers versions, for messages about what was not understood."""
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


def _ensure_recompile_headroom(minimum: int = MIN_RECOMPILE_LIMIT) -> None:
    config = torch._dynamo.config
    if config.recompile_limit < minimum:
        log.info("seats: raising torch._dynamo.config.recompile_limit from %d to %d (transformers' decorators "
                 "share one code object, and decoder layers compiled as frames of their own take one entry "
                 "each; at the limit Dynamo would reuse graphs across backends or run layers eagerly)",
                 config.recompile_limit, minimum)
        config.recompile_limit = minimum
    accumulated = getattr(config, "accumulated_recompile_limit", None)
    if isinstance(accumulated, int) and accumulated < 4 * minimum:
        config.accumulated_recompile_limit = 4 * minimum


# what Inductor raises for a graph whose sizes depend on tensor data (a .item() it must not guard on)
DATA_DEPENDENT_ERRORS = (DataDependentOutputException, DynamicOutputShapeException, GuardOnDataDependentSymNode)


def _inductor(gm: GraphModule, example_inputs: list) -> Callable:
    from torch._inductor.compile_fx import compile_fx

    return compile_fx(gm, example_inputs, config_patches=known_bug_patches(example_inputs) or None)


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


def _input_recorders(gm: GraphModule, facts: ModelFacts | None, frame=None) -> list[Callable]:
    """Returns recorders of the token ids (and embedding weight) a graph sees; every recorder takes
    (runtime args, extra outputs). frame: the module whose forward the graph was compiled from."""
    recorders: list[Callable] = []
    token_ids = facts.token_ids if facts is not None else None
    per_second = facts.positions_per_second if facts is not None else None
    embedding = locate_embedding_tap(gm, frame)
    if embedding is not None:
        ids_at, weight_at = embedding
        recorders.append(lambda args, extras: record_embedding(args[ids_at], args[weight_at], token_ids, per_second))
    tap = locate_tap(gm, token_ids)
    if tap is not None:
        recorders.append(lambda args, extras: record_modality_tap(args[tap.input_ids_index], tap.token_ids,
                                                                  per_second))
    return recorders


def _tap_graph(gm: GraphModule, facts: ModelFacts | None, frame, encoder_taps: list[tuple[str, tuple]]
               ) -> tuple[GraphModule, list[Callable], int | None]:
    """Returns the graph to compile (with extra outputs where a tap needs intermediate values), its
    recorders, and the original output count (None when no output was added). encoder_taps: what
    locate_encoder_taps found in gm."""
    recorders = _input_recorders(gm, facts, frame)
    positions = locate_rotary_positions(gm, frame)
    if positions is not None:
        recorders.append(lambda args, extras: record_positions(args[positions]))
    exposed: list[Node] = []
    for kind, where in encoder_taps:
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


def _attends_per_segment(encoder_taps: list[tuple[str, tuple]]) -> bool:
    """True for the graph of an encoder tower's attention module that calls attention more than once (once
    per cu_seqlens segment), from what locate_encoder_taps found in it."""
    return any(kind.endswith("_chunks") and len(where[0]) > 1 for kind, where in encoder_taps)


class _DecoderRunner:
    """Runs the rewritten decoder graph with a fresh SeatsCall per call."""

    def __init__(self, backend: "SeatsBackend", rewritten: GraphModule, adapter, depth: int,
                 recorders: list[Callable], positions_per_second: int) -> None:
        self.backend, self.rewritten, self.adapter, self.depth = backend, rewritten, adapter, depth
        self.recorders, self.positions_per_second = recorders, positions_per_second

    def __call__(self, *args):
        for record in self.recorders:
            record(args, ())
        call = SeatsCall(self.backend.config, self.adapter, self.depth, take_modality_tap(), take_encoder_taps(),
                         self.positions_per_second, self.backend.report)
        take_positions()  # a whole decoder reads its positions in the graph
        reset_glue_clock()
        outputs = self.rewritten(call, *args)
        call.stats.selection_seconds = glue_seconds()
        return outputs


class _LayerIdentity:
    """The layer module a layer graph was compiled from, recognised at run time by the parameter Dynamo passes
    in. Dynamo may run the graph for another layer module (of a copy of the model, or of every layer when the
    graph does not depend on the layer's index): then nothing is known about which layer it is."""

    def __init__(self, gm: GraphModule) -> None:
        self.at, self.parameter = None, lambda: None
        for at, node in enumerate(dynamo_meta.placeholders(gm)):
            value = dynamo_meta.runtime_value(node)
            if dynamo_meta.is_module_state(node) and isinstance(value, torch.Tensor):
                self.at, self.parameter = at, dynamo_meta.weak(value)
                return

    def same_module(self, args: tuple) -> bool:
        expected = self.parameter()
        return self.at is not None and expected is not None and args[self.at] is expected


class _LayerPieceRunner:
    """Runs the rewritten graph of a decoder layer (compiled from the layer's own frame) with this forward's
    LayerStep (seats_fx.layerwise). A layer's index is its place in the forward: a forward starts at the first
    layer graph after the rotary embedding recorded new positions (or after the last one ended, or at the
    graph of layer 0 running for its own module), and each layer graph after it is the next layer; where the
    graph runs for the module it was compiled from, that module's own index must agree."""

    def __init__(self, backend: "SeatsBackend", rewritten: GraphModule, adapter, index: int, depth: int,
                 identity: _LayerIdentity, hidden_at: int) -> None:
        self.backend, self.rewritten, self.adapter, self.index, self.depth = backend, rewritten, adapter, index, depth
        self.identity, self.hidden_at = identity, hidden_at

    def _start(self, args) -> LayerwiseForward:
        tap = take_modality_tap()
        batch = args[self.hidden_at].shape[0]
        why_not = None
        if tap is not None and batch != 1:
            why_not = (f"a batch of {batch} prompts whose decoder layers Dynamo compiled as graphs of their own: "
                       "seats prunes one prompt at a time there (seats_fx.compile traces the decoder whole and "
                       "prunes batches)")
        per_second = tap.positions_per_second if tap is not None and tap.positions_per_second else \
            self.backend._per_second(None, self.adapter)
        call = SeatsCall(self.backend.config, self.adapter, self.depth, tap, take_encoder_taps(), per_second,
                         self.backend.report)
        reset_glue_clock()
        return LayerwiseForward(call, take_positions(), why_not)

    def __call__(self, *args):
        forward = current_forward()
        own_module = self.identity.same_module(args)
        # a forward left unfinished (an error between layers) never continues into the next one's layer 0
        if forward is None or positions_pending() or (own_module and self.index == 0):
            forward = self._start(args)
            start_forward(forward)
        index = forward.next_layer
        if own_module and index != self.index:
            end_forward()
            raise RuntimeError(f"seats: decoder layer {self.index} ran through its compiled graph as layer {index} of "
                               "its forward: the layers before it ran outside the graphs seats rewrote (e.g. "
                               "eagerly, past Dynamo's recompile_limit), so the selection state is lost; raise "
                               "torch._dynamo.config.recompile_limit or use seats_fx.compile(model, options)")
        forward.next_layer = index + 1
        try:
            outputs = self.rewritten(LayerStep(forward, index, self.depth), *args)
        except BaseException:
            end_forward()
            raise
        if index == self.depth - 1:
            forward.call.stats.selection_seconds = glue_seconds()
            end_forward()
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


class _KeptEverything:
    """A decoder graph under a keep-everything config (both retentions 1.0): the graph as Dynamo gave it,
    so the output is the model's own; last_stats() says nothing was selected."""

    def __init__(self, compiled: Callable) -> None:
        self.compiled = compiled

    def __call__(self, *args):
        take_modality_tap()
        take_encoder_taps()
        set_last_stats(SeatsStats(pruned=False, skipped="retention 1.0: every token is kept"))
        set_prefill_record(None)
        return self.compiled(*args)


class _LmHeadGraph:
    """The graph holding the thinker's lm_head (over kept rows). A prompt with media whose tap no seats decoder
    took reached it: the decoder ran without selection (its graph was not recognised), so say so."""

    def __init__(self, compiled: Callable, report: Callable[[str, str], None]) -> None:
        self.compiled, self.report = compiled, report

    def __call__(self, *args):
        unfinished = current_forward()
        if unfinished is not None:
            end_forward()
            raise RuntimeError(f"seats: the lm_head ran after decoder layer {unfinished.next_layer - 1} of "
                               f"{unfinished.call.plan.depth}: the later layers ran outside the graphs seats "
                               "rewrote (e.g. eagerly, past Dynamo's recompile_limit), so this forward's output "
                               "mixes pruned and unpruned layers; raise torch._dynamo.config.recompile_limit or use "
                               "seats_fx.compile(model, options)")
        if take_unconsumed_media_tap() is not None:
            set_last_stats(SeatsStats(pruned=False, skipped="no decoder graph of this forward was recognised"))
            self.report("prompt with video/audio left unpruned: no decoder graph of this forward was recognised "
                        "(the decoder layers were not found in any graph seats received)", "decoder not found")
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
                 positions_per_second: int | None = None, facts: ModelFacts | None = None) -> None:
        """positions_per_second: the model config's TMRoPE position_id_per_seconds, which the windows are cut
        on (default: the model's own, read with its facts). facts: what the model says about itself
        (seats_fx.compile passes them; a bare torch.compile(backend="seats") reads them from the module whose
        frame Dynamo compiles)."""
        self.config = SeatsConfig.from_options(options)
        if positions_per_second is not None and (isinstance(positions_per_second, bool)
                                                 or not isinstance(positions_per_second, int)
                                                 or positions_per_second <= 0):
            raise ValueError(f"seats: positions_per_second must be a positive int, got {positions_per_second!r}")
        self.positions_per_second = positions_per_second
        self.facts = facts
        self.manager = SeatsPassManager(self.config)
        self.decoder_compiles = 0  # how many prompt decoder graphs Dynamo handed this backend (recompiles + 1)
        self.decode_compiles = 0  # how many one-token decode-step graphs
        self._warned: set[str] = set()
        _ensure_recompile_headroom()

    # ---- saying what was not done ---------------------------------------------------------------------
    def warn_once(self, kind: str, message: str, *args, level: int = logging.WARNING) -> None:
        """Logs `message` the first time this backend meets `kind` (at `level`), never again."""
        if kind not in self._warned:
            self._warned.add(kind)
            log.log(level, message, *args)

    def report(self, reason: str, kind: str) -> None:
        """A prompt with media left unpruned, or pruned with a weaker signal, for a reason that is not the
        user's choice: one warning per kind per backend naming the versions; strict raises."""
        message = f"seats: {reason} ({versions()})"
        if self.config.strict:
            raise RuntimeError(f"{message} (strict)")
        self.warn_once(kind, "%s", message)

    def _lower(self, gm: GraphModule, example_inputs: list) -> Callable:
        if not self.config.inductor:
            return gm.forward
        try:
            return _inductor(gm, example_inputs)
        except DATA_DEPENDENT_ERRORS as error:
            # a model's index bookkeeping (e.g. Qwen3-Omni's rope index sizes a view by a tensor) that Inductor
            # cannot lower: run it as captured (compile_fx may have applied its semantics-preserving pre-grad
            # passes to it first). Raised back to Dynamo instead, it would break the graph there and move the
            # ops the selection taps into other graphs than the eager path sees
            self.warn_once("not lowered", "seats: a graph Inductor cannot lower (%s: %s) runs as captured",
                           type(error).__name__, str(error).splitlines()[0], level=logging.INFO)  # not a pruning matter
            return gm.forward

    def _unpruned(self, gm: GraphModule, example_inputs: list, reason: Unsupported,
                  strict_raises: bool = True) -> Callable:
        """A decoder graph seats cannot (or must not) rewrite: compiled unchanged, one warning per kind of
        reason (strict: an error, unless the graph was understood and left alone on purpose), and
        last_stats() says why when it runs."""
        if self.config.strict and strict_raises:
            raise RuntimeError(f"seats (strict): cannot rewrite this decoder graph: {reason} ({versions()})") from None
        self.warn_once(reason.kind, "seats: decoder graph left unpruned (compiled by Inductor unchanged): %s (%s)",
                       reason, versions())
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
            self.warn_once("decode step", "seats: decode-step graph compiled unchanged; it refuses a pruned KV cache: "
                           "%s (%s)", reason, versions())
            return _UnprunedDecodeStep(self._lower(gm, example_inputs), str(reason))
        self.decode_compiles += 1
        log.info("seats: rewrote a decode-step graph with %d layers", len(plan.layers))
        return rewritten.forward

    def _foreign(self, gm: GraphModule, example_inputs: list, what: str) -> Callable:
        """A graph of a model seats does not prune: compiled unchanged, one log line per backend."""
        message = (f"seats: not a Qwen-Omni thinker ({what}); supported families: "
                   f"{[a.family for a in ADAPTERS]}")
        if self.config.strict:
            raise RuntimeError(f"{message} (strict)")
        self.warn_once("foreign model", "%s; compiled by Inductor unchanged", message)
        return self._lower(gm, example_inputs)

    def _facts_for(self, frame) -> ModelFacts | None:
        """Returns the model's facts: the ones seats_fx.compile gave, else those the module whose frame is
        compiled exposes (None for a tower's, a layer's or a helper function's frame: those graphs need none)."""
        return self.facts if self.facts is not None else model_facts(frame)

    def __call__(self, gm: GraphModule, example_inputs: list) -> Callable:
        frame = dynamo_meta.frame_module()
        facts = self._facts_for(frame)
        owner, what = graph_owner(gm, frame)
        if owner == "foreign":
            return self._foreign(gm, example_inputs, what)
        if family_of(gm) is None:
            piece = decoder_layer_frame(frame)
            if piece is not None and self.config.keeps_everything:
                return _KeptEverything(self._lower(gm, example_inputs))
            if piece is not None:  # the model's code broke its decoder into one graph per layer
                return self._layer_piece(gm, example_inputs, piece, frame)
            if self.config.keeps_everything:
                return self._lower(gm, example_inputs)
            return self._other_graph(gm, example_inputs, facts, frame)
        if self.config.keeps_everything:  # nothing to select: the model's graphs, untouched
            return _KeptEverything(self._lower(gm, example_inputs))
        # Dynamo reads the graph after the backend returns: rewrite a copy, never `gm` itself
        working = _copy_graph_module(gm)
        try:
            plan = locate_decoder(working, facts)
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
        recorders = _input_recorders(gm, facts, frame)
        rewritten = self.manager(working, plan, facts.output_weight if facts is not None else lambda: None)
        self.decoder_compiles += 1
        log.info("seats: rewrote decoder graph with %d layers: %s", depth, ", ".join(plan.boundaries) or "no stage")
        if log.isEnabledFor(logging.DEBUG):  # the compiled pieces and the selection glue between them
            log.debug("seats: rewritten decoder graph:\n%s", rewritten.code)
        return _DecoderRunner(self, rewritten, plan.adapter, depth, recorders, self._per_second(facts, plan.adapter))

    def _layer_piece(self, gm: GraphModule, example_inputs: list, adapter, frame) -> Callable:
        """A decoder layer Dynamo compiled from its own frame (the model's code broke the decoder there):
        rewritten to run on the kept rows of its forward (passes.layer_piece, seats_fx.layerwise)."""
        position = decoder_layer_position(frame)
        try:
            if position is None:
                raise Unsupported(f"cannot tell which of the decoder's layers a {adapter.family} layer graph holds "
                                  "(no attention module with a layer_idx and a config)", kind="layer graph")
            if torch.is_grad_enabled():
                return self._unpruned(gm, example_inputs, Unsupported(
                    "traced with gradients enabled (training, or a forward outside torch.no_grad() / "
                    "torch.inference_mode()): seats prunes inference only", kind="grad mode"), strict_raises=False)
            index, depth = position
            rewritten, plan = self.manager.layer_piece(_copy_graph_module(gm), adapter, depth)
        except Unsupported as reason:
            if reason.kind == "layer decode step":  # right over an unpruned cache, refused over a pruned one
                return _UnprunedDecodeStep(self._lower(gm, example_inputs), str(reason))
            return self._unpruned(gm, example_inputs, reason)
        _ensure_recompile_headroom(max(MIN_RECOMPILE_LIMIT, GRAPHS_PER_LAYER_FRAME * depth))
        hidden_at = [p.name for p in dynamo_meta.placeholders(gm)].index(plan.inputs_embeds.name)
        self.decoder_compiles += index == 0
        log.info("seats: rewrote the graph of decoder layer %d of %d (layers compiled one by one)", index, depth)
        return _LayerPieceRunner(self, rewritten, adapter, index, depth, _LayerIdentity(gm), hidden_at)

    def _per_second(self, facts: ModelFacts | None, adapter) -> int:
        """Returns the TMRoPE positions per second the windows are cut on: given, else the model config's."""
        if self.positions_per_second is not None:
            return self.positions_per_second
        if facts is not None and facts.positions_per_second is not None:
            return facts.positions_per_second
        self.warn_once("positions per second", "seats: windows assume %d TMRoPE positions per second (the released "
                       "%s value): the model's config could not be read (%s)", adapter.position_id_per_seconds,
                       adapter.family, versions())
        return adapter.position_id_per_seconds

    def _other_graph(self, gm: GraphModule, example_inputs: list, facts: ModelFacts | None, frame) -> Callable:
        """A graph of the thinker other than its decoder's: compiled unchanged, with taps where it sees what
        the decoder's selection needs, and the lm_head over kept rows where it holds the lm_head."""
        encoder_taps = locate_encoder_taps(gm, frame)
        tapped, recorders, outputs = _tap_graph(gm, facts, frame, encoder_taps)
        weight = facts.output_weight if facts is not None else (lambda: None)
        with_logits = self.manager.logits_graph(_copy_graph_module(tapped), weight)
        if with_logits is not None:
            compiled = _LmHeadGraph(with_logits.forward, self.report)
        elif _attends_per_segment(encoder_taps):
            # transformers' sdpa path of a tower: one attention call per window / chunk, whose q/k/v slices
            # Inductor copies before each call (an H200, 7B-shaped towers on a 60 s clip: 35,508 launches and
            # towers 2x slower than eager). The calls become one encoder_attention; the graph runs as captured
            fused = fuse_segment_attention(_copy_graph_module(tapped))
            self.warn_once("per-segment attention", "seats: encoder attention graphs with one attention call per "
                           "segment %s, not lowered by Inductor (seats_fx.compile's fast encoders also remove the "
                           "per-segment split)", "make one encoder_attention call" if fused is not None
                           else "run as captured", level=logging.INFO)
            compiled = (fused or tapped).forward
        else:
            compiled = self._lower(tapped, example_inputs)
        return _TappedGraph(compiled, recorders, outputs) if recorders else compiled


# torch.compile(backend="seats", options=...) calls the entry point once per graph; torch counts two
# compiles with equal options as the same backend (_TorchCompileWrapper.__eq__), and so does this table:
# one SeatsBackend per option set holds the once-per-backend warnings and the compile counters
_ENTRY_BACKENDS: dict[str, "SeatsBackend"] = {}


def seats(gm: GraphModule, example_inputs: list, **kwargs) -> Callable:
    """Entry point of `backend="seats"`; `options` arrive as keyword arguments."""
    options = kwargs.pop("options", None) or {}
    config = SeatsConfig.from_options({**options, **kwargs})
    key = config.stable_hash()
    if key not in _ENTRY_BACKENDS:
        _ENTRY_BACKENDS[key] = SeatsBackend(config)
    return _ENTRY_BACKENDS[key](gm, example_inputs)


def backend(options: Mapping[str, Any] | SeatsConfig | None = None) -> SeatsBackend:
    """Returns a backend callable for `torch.compile(model, backend=seats_fx.backend({...}))`."""
    return SeatsBackend(options)
