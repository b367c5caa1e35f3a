"""passes.in_place.first_in_place_op: which graphs may write a tensor in place (CUDA graphs of decoder pieces
cannot replay those from inference tensors), by op identity."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch.fx import Graph, GraphModule

from seats_fx.passes.in_place import first_in_place_op


def _graph(build) -> GraphModule:
    """A graph of one placeholder x and the node build(graph, x) makes, returned."""
    graph = Graph()
    x = graph.placeholder("x")
    graph.output(build(graph, x))
    return GraphModule(torch.nn.Module(), graph)


WRITES = {
    "method add_": lambda g, x: g.call_method("add_", (x, 1)),
    "method copy_": lambda g, x: g.call_method("copy_", (x, x)),
    "method __setitem__": lambda g, x: g.call_method("__setitem__", (x, 0, 1.0)),
    "operator.setitem": lambda g, x: g.call_function(operator.setitem, (x, 0, 1.0)),
    "operator.iadd": lambda g, x: g.call_function(operator.iadd, (x, 1)),
    "torch.relu_": lambda g, x: g.call_function(torch.relu_, (x,)),
    "aten.add_.Tensor": lambda g, x: g.call_function(torch.ops.aten.add_.Tensor, (x, x)),
    "aten.index_put_ packet": lambda g, x: g.call_function(torch.ops.aten.index_put_, (x, [x], x)),
    "out=": lambda g, x: g.call_function(torch.add, (x, 1), {"out": x}),
    "inplace=True": lambda g, x: g.call_function(F.relu, (x,), {"inplace": True}),
}
READS = {
    "method add": lambda g, x: g.call_method("add", (x, 1)),
    "method __getitem__": lambda g, x: g.call_method("__getitem__", (x, 0)),
    "operator.add": lambda g, x: g.call_function(operator.add, (x, 1)),
    "operator.getitem": lambda g, x: g.call_function(operator.getitem, (x, 0)),
    "aten.add.Tensor": lambda g, x: g.call_function(torch.ops.aten.add.Tensor, (x, x)),
    "F.relu": lambda g, x: g.call_function(F.relu, (x,), {"inplace": False}),
    "torch.cat": lambda g, x: g.call_function(torch.cat, ([x, x],)),
}


@pytest.mark.parametrize("name", list(WRITES))
def test_an_op_that_may_write_in_place_is_found(name):
    found = first_in_place_op(_graph(WRITES[name]))
    assert found is not None and found.endswith("at node " + _graph(WRITES[name]).graph.output_node().args[0].name)


@pytest.mark.parametrize("name", list(READS))
def test_an_op_that_writes_nothing_is_not(name):
    assert first_in_place_op(_graph(READS[name])) is None


def test_an_in_place_module_and_a_write_inside_a_subgraph_are_found():
    graph = Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module("act", (x,)))
    root = torch.nn.Module()
    root.act = torch.nn.ReLU(inplace=True)
    assert first_in_place_op(GraphModule(root, graph)) is not None
    root.act = torch.nn.ReLU()
    assert first_in_place_op(GraphModule(root, graph)) is None
    outer = GraphModule(torch.nn.Module(), _graph(READS["torch.cat"]).graph)
    outer.inner = _graph(WRITES["method add_"])  # e.g. a higher-order op's body
    assert first_in_place_op(outer) == "add_ at node add_"


def test_a_traced_decoder_layer_writes_nothing():
    """What the CUDA graphs of the pieces rely on under inference mode: transformers' decoder layer, as
    Dynamo records it, has no in-place op."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    from seats_fx.models import adapter_for
    from seats_fx.models.configs import tiny_qwen2_5_omni_config

    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config()).eval()
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    ids = torch.randint(0, 100, (1, 12))
    with torch.inference_mode():
        torch.compile(adapter_for(model).language_model, backend=capture)(input_ids=ids)
    torch._dynamo.reset()
    assert graphs and all(first_in_place_op(gm) is None for gm in graphs), [first_in_place_op(g) for g in graphs]
