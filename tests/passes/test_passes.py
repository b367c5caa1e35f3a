"""Each rewrite pass on its own, on graphs Dynamo really produces, captured before and after the pass (as
vLLM's tests/compile/backend.py TestBackend does): structure checked node by node, numerics against the
graph the pass started from."""

from __future__ import annotations

import operator

import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.backend import _copy_graph_module
from seats_fx.call import seats_gather, seats_gather_mask
from seats_fx.config import SeatsConfig
from seats_fx.decode_step import seats_decode_step
from seats_fx.logits import seats_logits
from seats_fx.models import model_facts
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.ops.gather import KeepIndex
from seats_fx.passes import dynamo_meta as meta
from seats_fx.passes.boundary import GLUE, insert_boundary
from seats_fx.passes.cleanup import cleanup
from seats_fx.passes.decode_step import rewrite_decode_step
from seats_fx.passes.kept_row_logits import route_lm_head
from seats_fx.passes.locate import locate_decoder, locate_lm_head
from seats_fx.passes.partition import InductorPiece, partition
from seats_fx.passes.plan import PassContext

from eager_towers import towers_run_eagerly

COPIES = 4  # independent located copies of the decoder graph, one per test that rewrites it


class CapturingBackend:
    """Keeps, per graph Dynamo hands over, what the tests need while Dynamo's metadata is attached: located
    copies of a prefill decoder graph and of a decode-step graph, and graphs that hold the lm_head."""

    def __init__(self) -> None:
        self.prefill: list = []  # (gm, plan, example inputs)
        self.decode: list = []
        self.logits: list = []  # (gm, lm_head weight)

    def __call__(self, gm, example_inputs):
        facts = model_facts(meta.frame_module())
        plan = locate_decoder(_copy_graph_module(gm), facts)
        if plan is not None:
            target = self.decode if plan.seq_len == 1 else self.prefill
            if not target:
                for _ in range(COPIES):
                    copy = _copy_graph_module(gm)
                    target.append((copy, locate_decoder(copy, facts), list(example_inputs)))
        elif facts is not None and not self.logits and locate_lm_head(gm, facts.output_weight()):
            self.logits.append((_copy_graph_module(gm), facts.output_weight()))
        return gm.forward


@pytest.fixture(scope="module")
def captured():
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=3))).eval()
    towers_run_eagerly(model)  # the passes rewrite the decoder's graphs: tracing the towers would only cost time
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=2))
    backend = CapturingBackend()
    torch._dynamo.reset()
    model.compile(backend=backend)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    torch._dynamo.reset()
    assert backend.prefill and backend.decode and backend.logits
    return backend


def _users_in_layer(plan, layer_index: int, node) -> list:
    members = set(plan.layers[layer_index].nodes)
    return [user for user in node.users if user in members]


def FixedKeep(positions: list[int]):
    """Returns a stand-in selection that keeps fixed positions (the passes do not care how a keep index is
    chosen)."""
    def keep_fixed_positions(call, hidden):
        return KeepIndex(torch.tensor([positions]))
    return keep_fixed_positions


def test_insert_boundary_points_every_later_layer_at_the_gathered_tokens(captured):
    gm, plan, _ = captured.prefill[0]
    old_input, old_cos_sin, old_mask = plan.layers[1].input, list(plan.per_token), plan.mask
    keep = insert_boundary(gm, plan, 1, FixedKeep([0, 1, 2]), ())
    gm.graph.lint()
    assert keep.meta[GLUE]
    gathered = plan.layers[1].input
    assert gathered.target is seats_gather and gathered.args[0] is old_input and gathered.args[1] is keep
    assert not _users_in_layer(plan, 1, old_input) and not _users_in_layer(plan, 2, old_input)
    for old, new in zip(old_cos_sin, plan.per_token):
        assert new.target is seats_gather and new.args[0] is old
        assert not _users_in_layer(plan, 1, old) and _users_in_layer(plan, 1, new)
        assert _users_in_layer(plan, 0, old)  # the layer before the boundary still reads every token
    if old_mask is not None:
        assert plan.mask.target is seats_gather_mask and plan.mask.args[:2] == (old_mask, keep)
    assert plan.boundaries == []  # insert_boundary inserts; the stage passes name what they inserted


def test_partition_splits_glue_from_pieces_and_computes_what_the_graph_computed(captured):
    gm, plan, example_inputs = captured.prefill[1]
    expected = gm(*example_inputs)
    # keep-everything selection: the rewritten graph must compute exactly what the original did
    length = meta.example(plan.inputs_embeds).shape[1]
    keep = insert_boundary(gm, plan, 1, FixedKeep(list(range(length))), ())
    keep.args = (None,) + keep.args[1:]  # no SeatsCall: the stand-in ignores it
    gm.graph.erase_node(next(n for n in gm.graph.nodes if n.op == "placeholder" and n.name == "seats_call"))
    gm = cleanup(gm)
    split = partition(gm, PassContext(plan, SeatsConfig(inductor=False)))
    pieces = [child for child in split.children() if isinstance(child, InductorPiece)]
    glue = [name for name, child in split.named_children() if not isinstance(child, InductorPiece)]
    assert len(pieces) == 2 and len(glue) == 1  # layer 0, the boundary's glue, layers 1-2
    assert all(node.meta.get(GLUE) for node in getattr(split, glue[0]).graph.nodes
               if node.op == "call_function")
    got = split(*example_inputs)
    for want, have in zip(expected, got):
        if isinstance(want, torch.Tensor):
            torch.testing.assert_close(have, want, atol=1e-5, rtol=0)


def test_cleanup_drops_dead_nodes_but_never_glue(captured):
    gm, plan, _ = captured.prefill[2]
    anchor = plan.layers[0].nodes[0]
    with gm.graph.inserting_before(anchor):
        dead = gm.graph.call_function(torch.add, (plan.inputs_embeds, 1))
        unused_glue = gm.graph.call_function(torch.mul, (plan.inputs_embeds, 2))
    unused_glue.meta[GLUE] = True
    gm = cleanup(gm)
    nodes = set(gm.graph.nodes)
    assert dead not in nodes and unused_glue in nodes


def test_decode_step_gives_each_layer_its_own_mask_and_shifted_positions(captured):
    gm, plan, _ = captured.decode[0]
    old_position_users = list(plan.positions.users)
    gm = rewrite_decode_step(gm, PassContext(plan, SeatsConfig()))
    step = next(n for n in gm.graph.nodes if n.target is seats_decode_step)
    assert step.meta[GLUE] and step.args[0] is plan.positions
    assert step.args[3:] == tuple(reads[0] for reads in plan.cache)  # each layer's past keys
    shifted = next(n for n in step.users if n.target is operator.getitem and n.args[1] == 0)
    assert all(shifted in user.all_input_nodes for user in old_position_users)
    masks = next(n for n in step.users if n.target is operator.getitem and n.args[1] == 1)
    layer_masks = [layer.mask for layer in plan.layers]
    assert [m.args for m in layer_masks] == [(masks, i) for i in range(len(plan.layers))]


def test_kept_row_logits_routes_the_model_lm_head_and_nothing_else(captured):
    gm, weight = captured.logits[0]
    with torch.no_grad():
        routed = route_lm_head(_copy_graph_module(gm), PassContext(None, SeatsConfig(), output_weight=lambda: weight))
        other = route_lm_head(_copy_graph_module(gm), PassContext(None, SeatsConfig(),
                                                                  output_weight=lambda: torch.ones(1)))
    assert routed.meta["seats_lm_head_routed"] == 1
    assert [n for n in routed.graph.nodes if n.target is seats_logits][0].meta[GLUE]
    assert other.meta["seats_lm_head_routed"] == 0
    assert not any(n.target is seats_logits for n in other.graph.nodes)
