"""A graph Inductor cannot lower (sizes read from tensor data) runs as captured, with one info line."""

import logging

import torch

from seats_fx.backend import SeatsBackend


def _sized_by_tensor(x, n):
    # Qwen3-Omni's rope index sizes a view by a 0-d tensor like this: Inductor would have to read n's value.
    # A tuple, as Dynamo's graphs return
    return (torch.arange(4).view(1, -1, 1).expand(2, -1, n) + x.sum(),)


def test_a_graph_inductor_cannot_lower_runs_as_captured_with_one_info_line(caplog):
    gm = torch.fx.symbolic_trace(_sized_by_tensor)
    backend = SeatsBackend({"inductor": True})
    inputs = [torch.ones(2), torch.tensor(3)]
    with caplog.at_level(logging.INFO, logger="seats_fx"):
        first = backend._lower(gm, inputs)
        second = backend._lower(gm, inputs)
    torch.testing.assert_close(first(*inputs), _sized_by_tensor(*inputs))
    torch.testing.assert_close(second(torch.zeros(2), torch.tensor(5)), _sized_by_tensor(torch.zeros(2), torch.tensor(5)))
    lines = [r.getMessage() for r in caplog.records if r.name == "seats_fx"]
    assert len(lines) == 1 and "cannot lower" in lines[0] and "runs as captured" in lines[0], lines
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "seats_fx")

