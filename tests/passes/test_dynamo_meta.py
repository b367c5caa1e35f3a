"""passes.dynamo_meta on graphs Dynamo records with the torch that is installed (CI runs this file under the
lowest and highest supported torch too: make test-compat)."""

import operator

import pytest
import torch
from torch import nn
from torch.fx import Graph, GraphModule

from seats_fx.passes import dynamo_meta as meta


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("scale", torch.full((8,), 2.0))

    def forward(self, x):
        return self.proj(x) * self.scale


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = Block(), Block()

    def forward(self, ids, x):
        return self.second(self.first(x)), ids == 7


def record(model, *args):
    """Returns [(gm, facts)] for each graph, read while Dynamo's metadata is attached (in the backend)."""
    graphs = []

    def backend(gm, example_inputs):
        facts = {
            "frame": meta.frame_module(),
            "module_state": {n.name: meta.is_module_state(n) for n in meta.placeholders(gm)},
            "local": {n.name: meta.local_name(n) for n in meta.placeholders(gm)},
            "runtime": {n.name: meta.runtime_value(n) for n in meta.placeholders(gm)},
            "stacks": {n.name: meta.module_stack(n) for n in gm.graph.nodes},
        }
        graphs.append((gm, facts))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=backend)(*args)
    torch._dynamo.reset()
    return graphs


@pytest.fixture(scope="module")
def recorded():
    torch.manual_seed(0)
    model = Model()
    graphs = record(model, torch.tensor([[1, 7, 3]]), torch.randn(3, 8))
    assert len(graphs) == 1
    return model, graphs[0]


def test_module_stack_names_each_instance_once_with_its_class(recorded):
    model, (gm, facts) = recorded
    linear_keys = {entry.key for stack in facts["stacks"].values() for entry in stack if entry.type is nn.Linear}
    block_keys = {entry.key for stack in facts["stacks"].values() for entry in stack if entry.type is Block}
    assert len(linear_keys) == 2 and len(block_keys) == 2  # two instances of each class, told apart
    assert {Block, nn.Linear} <= meta.graph_module_types(gm)


def test_module_state_and_inputs_are_told_apart_by_their_sources(recorded):
    model, (gm, facts) = recorded
    state = facts["module_state"]
    inputs = [name for name, local in facts["local"].items() if local is not None]
    assert sorted(facts["local"][name] for name in inputs) == ["ids", "x"]
    assert not any(state[name] for name in inputs)
    assert sum(state.values()) == 6  # two weights, two biases, two buffers
    parameters = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    assert {id(facts["runtime"][name]) for name, is_state in state.items() if is_state} == parameters


def test_frame_module_is_the_compiled_module_inside_a_backend_and_none_outside(recorded):
    model, (gm, facts) = recorded
    assert facts["frame"] is model
    assert meta.frame_module() is None
    graphs = record(lambda x: x * 2, torch.ones(2))
    assert graphs[0][1]["frame"] is None


def test_equality_is_found_in_every_spelling():
    graph = Graph()
    ids = graph.placeholder("ids")
    spelled = [graph.call_function(operator.eq, (ids, 3)), graph.call_function(torch.eq, (ids, 4)),
               graph.call_method("__eq__", (ids, 5)), graph.call_method("eq", (ids, 6))]
    other = graph.call_function(operator.ne, (ids, 7))
    graph.output(tuple(spelled + [other]))
    GraphModule(nn.Module(), graph)
    assert [meta.equality_operands(n) for n in spelled] == [(ids, 3), (ids, 4), (ids, 5), (ids, 6)]
    assert meta.equality_operands(other) is None


def test_integer_tensors_exclude_floats_and_bools():
    assert meta.is_integer_tensor(torch.ones(2, dtype=torch.long))
    assert not meta.is_integer_tensor(torch.ones(2))
    assert not meta.is_integer_tensor(torch.ones(2, dtype=torch.bool))
    assert not meta.is_integer_tensor(3)
