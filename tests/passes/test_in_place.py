"""passes.in_place: which graphs may write one of their inputs in place (CUDA graphs of decoder pieces cannot
replay those from inference tensors). Writing ops by op identity, their targets by Dynamo's example values."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch.fx import Graph, GraphModule

from seats_fx.passes.in_place import first_input_write, written_values


def _graph(build) -> tuple[GraphModule, object]:
    """A graph of one placeholder x and the node build(graph, x) makes; returns (graph, that node)."""
    graph = Graph()
    x = graph.placeholder("x")
    node = build(graph, x)
    graph.output(node)
    return GraphModule(torch.nn.Module(), graph), node


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
def test_an_op_that_writes_in_place_is_found_and_without_example_values_counts_as_an_input_write(name):
    gm, node = _graph(WRITES[name])
    assert [v.name for v in written_values(node, gm)] == ["x"]
    assert first_input_write(gm) is not None  # no example value to tell x's storage by: conservative


@pytest.mark.parametrize("name", list(READS))
def test_an_op_that_writes_nothing_is_not(name):
    gm, node = _graph(READS[name])
    assert written_values(node, gm) == [] and first_input_write(gm) is None


def _dynamo_graph(fn, *args) -> GraphModule:
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=capture, dynamic=True)(*args)
    torch._dynamo.reset()
    assert len(graphs) == 1
    return graphs[0]


def _made_inside(x):
    z = x * 2
    z.mul_(3)
    z[0] = 5.0
    weights = z.softmax(-1)
    weights /= weights.sum(-1, keepdim=True)  # an MoE block's routing weights, normalized in place
    return weights


@pytest.mark.parametrize("write", [
    lambda x: x.view(-1).add_(1),
    lambda x: x.contiguous().sub_(1),  # a no-op contiguous() is x itself
    lambda x: x.to(torch.float32).mul_(2),  # a no-op to() too
    lambda x: x[1:].zero_(),
], ids=["view", "contiguous", "to", "slice"])
def test_a_write_through_a_view_or_no_op_copy_of_an_input_is_found(write):
    def fn(x):
        write(x)
        return x * 2

    assert first_input_write(_dynamo_graph(fn, torch.randn(4, 4))) is not None


def test_writes_to_tensors_made_inside_the_graph_are_not_input_writes():
    gm = _dynamo_graph(_made_inside, torch.randn(4, 4))
    assert sum(bool(written_values(node, gm)) for node in gm.graph.nodes) == 3  # mul_, setitem, itruediv
    assert first_input_write(gm) is None


def test_an_in_place_module_and_a_write_inside_a_subgraph_are_found():
    graph = Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_module("act", (x,)))
    root = torch.nn.Module()
    root.act = torch.nn.ReLU(inplace=True)
    assert first_input_write(GraphModule(root, graph)) is not None
    root.act = torch.nn.ReLU()
    assert first_input_write(GraphModule(root, graph)) is None
    outer = _graph(READS["torch.cat"])[0]
    outer.inner = _graph(WRITES["method add_"])[0]  # e.g. a higher-order op's body
    assert first_input_write(outer) == "add_ at node add_"


def test_traced_decoders_write_no_input():
    """What the CUDA graphs of the pieces rely on under inference mode: transformers' decoders, as Dynamo
    records them, write none of their inputs (Qwen3-Omni's MoE blocks write tensors they make)."""
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration

    from seats_fx.models import adapter_for
    from seats_fx.models.configs import tiny_qwen2_5_omni_config, tiny_qwen3_omni_moe_config

    for model_class, config in ((Qwen2_5OmniThinkerForConditionalGeneration, tiny_qwen2_5_omni_config()),
                                (Qwen3OmniMoeThinkerForConditionalGeneration, tiny_qwen3_omni_moe_config())):
        torch.manual_seed(0)
        model = model_class(config).eval()
        graphs = []

        def capture(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        with torch.inference_mode():
            torch.compile(adapter_for(model).language_model, backend=capture)(input_ids=torch.randint(0, 100, (1, 12)))
        torch._dynamo.reset()
        assert graphs and all(first_input_write(gm) is None for gm in graphs), \
            (model_class.__name__, [first_input_write(gm) for gm in graphs])
