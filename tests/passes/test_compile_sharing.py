"""Pieces of the same code compile once: partition gives each decoder layer a piece of its own and pieces of
one structure one PieceProgram, so a cold compile lowers each distinct layer shape once, however deep the
decoder (issue 16, item 5). Default suite: structure and eager numerics on captured graphs, no Inductor;
the slow tier lowers the pieces with Inductor and counts the compiles."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.backend import _copy_graph_module
from seats_fx.config import SeatsConfig
from seats_fx.models import model_facts
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.passes import dynamo_meta as meta
from seats_fx.passes.locate import locate_decoder
from seats_fx.passes.manager import SeatsPassManager
from seats_fx.passes.partition import InductorPiece, partition, structure_key
from seats_fx.passes.plan import PassContext

DEPTHS = (6, 12)


class DecoderCapture:
    """A Dynamo backend that keeps the first prefill decoder graph (with the arguments of its first run: the
    example inputs of a dynamic trace hold symbolic sizes) and runs every graph eagerly."""

    def __init__(self) -> None:
        self.decoder = None

    def __call__(self, gm, example_inputs):
        if self.decoder is not None:
            return gm.forward
        facts = model_facts(meta.frame_module())
        try:
            plan = locate_decoder(_copy_graph_module(gm), facts)
        except Exception:  # a graph that is not the decoder's (towers, helpers)
            plan = None
        if plan is None or plan.seq_len == 1:
            return gm.forward
        kept = _copy_graph_module(gm)

        def run(*args):
            if self.decoder is None:
                self.decoder = (kept, facts, list(args))
            return gm.forward(*args)

        return run


def _capture(depth: int):
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=depth))).eval()
    # a text prompt: the decoder graph is the same, and no tower is traced (capturing stays cheap)
    input_ids = torch.randint(0, 500, (1, 48))
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    capture = DecoderCapture()
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=capture, dynamic=True)(**inputs)
    torch._dynamo.reset()
    assert capture.decoder is not None, "no prefill decoder graph was captured"
    return capture.decoder


@pytest.fixture(scope="module")
def decoders():
    return {depth: _capture(depth) for depth in DEPTHS}


def _located(decoders, depth: int):
    gm, facts, example_inputs = decoders[depth]
    gm = _copy_graph_module(gm)
    return gm, locate_decoder(gm, facts), example_inputs


def _pieces(split) -> list[InductorPiece]:
    return [child for child in split.children() if isinstance(child, InductorPiece)]


def _programs(split) -> set[int]:
    return {id(piece.program) for piece in _pieces(split)}


@pytest.mark.parametrize("depth", DEPTHS)
def test_each_layer_is_a_piece_and_the_layers_share_one_program(decoders, depth):
    gm, plan, _ = _located(decoders, depth)
    split = partition(gm, PassContext(plan, SeatsConfig(inductor=False)), per_layer=True)
    pieces = _pieces(split)
    assert len(pieces) == depth, f"expected one piece per layer ({depth}), found {len(pieces)}"
    # the first piece also computes the rotary tables and masks, the last the final norm; every other
    # layer is the same code over its own weights
    assert len(_programs(split)) == 3, f"expected 3 distinct programs for {depth} layers, found " \
                                       f"{len(_programs(split))}"


def test_pieces_sharing_a_program_compute_what_the_graph_computed(decoders):
    gm, plan, example_inputs = _located(decoders, DEPTHS[-1])
    expected = gm(*example_inputs)
    split = partition(gm, PassContext(plan, SeatsConfig(inductor=False)), per_layer=True)
    assert len(_programs(split)) < len(_pieces(split))
    got = split(*example_inputs)
    for want, have in zip(expected, got):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(have, want, atol=1e-5, rtol=0)


def test_a_piece_with_another_constant_shares_with_none(decoders):
    gm, plan, _ = _located(decoders, DEPTHS[-1])
    split = partition(gm, PassContext(plan, SeatsConfig(inductor=False)), per_layer=True)
    first, second = [piece.piece for piece in _pieces(split)][1:3]
    assert structure_key(first) == structure_key(second)
    # change one number the second piece's code holds (an exponent, a dim, a scale) in that piece only
    node = next(n for n in second.graph.nodes if n.op in ("call_function", "call_method")
                and any(type(a) in (int, float) for a in n.args))
    node.args = tuple(a + 1 if type(a) in (int, float) else a for a in node.args)
    assert structure_key(first) != structure_key(second)


def test_distinct_programs_of_a_rewritten_decoder_do_not_grow_with_depth(decoders):
    """The full seats rewrite (boundaries, glue) under Inductor lowering, not compiled: how many programs
    the first call would hand to Inductor, at two depths."""
    counts = {}
    for depth in DEPTHS:
        gm, plan, _ = _located(decoders, depth)
        rewritten = SeatsPassManager(SeatsConfig(retention=0.2, encoder_ratio_scale=2.0))(gm, plan)
        pieces = _pieces(rewritten)
        assert len(pieces) >= depth, f"expected a piece per layer at least ({depth}), found {len(pieces)}"
        counts[depth] = len(_programs(rewritten))
    assert counts[DEPTHS[-1]] == counts[DEPTHS[0]], f"distinct programs by depth: {counts}"
    assert counts[DEPTHS[-1]] < DEPTHS[-1], f"distinct programs by depth: {counts}"


@pytest.mark.slow
def test_inductor_compiles_each_shared_program_once(decoders, tmp_path, monkeypatch):
    """Lowered with Inductor for real: one torch.compile per distinct program, none per extra layer."""
    gm, plan, example_inputs = _located(decoders, DEPTHS[0])
    expected = gm(*example_inputs)
    # with a cache key, as the pass manager gives (without one Inductor bypasses its FX-graph cache)
    split = partition(gm, PassContext(plan, SeatsConfig(), cache_key="compile-sharing-test"), per_layer=True)
    # a cache of its own: in a shared one another test's pieces are served by AOTAutograd's cache, which
    # never reaches the FX-graph cache's counters
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    counters.clear()
    with torch.no_grad(), torch._inductor.config.patch(fx_graph_cache=True):
        got = split(*example_inputs)
        split(*example_inputs)
    programs = {id(piece.program): piece.program for piece in _pieces(split)}
    assert [program.compiles for program in programs.values()] == [1] * len(programs)
    assert [program.lowerings for program in programs.values()] == [1] * len(programs)  # none ran eagerly
    assert len(programs) < DEPTHS[0]
    # Inductor lowered one graph per program (a cache hit or a miss each), Dynamo traced no more
    lowered = counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"]
    assert lowered == len(programs), f"expected {len(programs)} Inductor graphs, found {lowered}"
    assert counters["stats"]["unique_graphs"] == len(programs)
    for want, have in zip(expected, got):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(have, want, atol=1e-4, rtol=1e-4)
