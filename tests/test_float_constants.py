"""Float module attributes traced as constants in what seats_fx.compile compiles (seats_fx.float_constants):
without it Dynamo makes each one (RMSNorm epsilon, attention scaling) a 0-d tensor input that every call
builds on the host and every decoder piece reads back with .item()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seats_fx.float_constants import with_float_constants


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.eps = 1e-6
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def tensor_floats(graphs) -> int:
    """Placeholders that hold a 0-d floating tensor: a float Dynamo lifted to a graph input."""
    return sum(1 for gm in graphs for node in gm.graph.nodes if node.op == "placeholder"
               and isinstance(node.meta.get("example_value"), torch.Tensor)
               and node.meta["example_value"].dim() == 0 and node.meta["example_value"].is_floating_point())


def recording(graphs: list, backend=None):
    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward if backend is None else backend(gm, example_inputs)
    return record


@pytest.mark.parametrize("constants", [False, True], ids=["dynamo-default", "float-constants"])
def test_a_float_attribute_is_a_constant_not_a_graph_input(constants):
    graphs: list = []
    torch._dynamo.reset()
    module = Norm()
    compiled = torch.compile(module, backend=recording(graphs), dynamic=True)
    if constants:
        compiled = with_float_constants(compiled)
    x = torch.randn(3, 4)
    torch.testing.assert_close(compiled(x), module(x))
    torch._dynamo.reset()
    assert graphs and tensor_floats(graphs) == (0 if constants else 1)


@pytest.mark.slow
def test_seats_fx_compile_traces_the_thinkers_floats_as_constants(tiny_thinker):
    """Through seats_fx.compile's own compile (compile_with_backend) of a tiny thinker: no graph gets a
    lifted float, and the prompt is still pruned."""
    from eager_towers import fresh_copy  # tests/ is on sys.path (rootdir conftest)

    from seats_fx import SeatsBackend, last_stats
    from seats_fx.compile_model import compile_with_backend
    from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

    options = {"retention": 0.1, "inductor": False}
    seats = SeatsBackend(options)
    graphs: list = []
    torch._dynamo.reset()
    model = compile_with_backend(fresh_copy(tiny_thinker), recording(graphs, seats), seats.config)
    with torch.no_grad():
        model(**synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, seed=1)))
    torch._dynamo.reset()
    assert last_stats().pruned, last_stats().skipped
    assert len(graphs) > 5 and tensor_floats(graphs) == 0
