"""A decoder piece is lowered by Inductor, not run eagerly: the pieces are made inside the seats backend, that
is while Dynamo compiles, and Dynamo marks the code FX generates then as code never to trace. Under torch
2.11 (the stock CUDA image's) every piece therefore ran eagerly and silently, which an H200 profile showed
(aten RMSNorm and SiLU kernels in the pruned decoder). Runs in the compat tier, under both ends of the range."""

from __future__ import annotations

import logging

import pytest
import torch

from seats_fx.passes.partition import PieceProgram


def _piece_backend(programs: list, cpp_wrapper: bool = False):
    """A Dynamo backend that wraps the graph it gets in a PieceProgram, made there, while Dynamo compiles,
    as the seats backend makes its pieces."""
    def backend(gm, example_inputs):
        piece = torch.fx.GraphModule(gm, gm.graph)  # its code generated now, inside Dynamo's compile
        program = PieceProgram(piece, use_inductor=True, cache_key="test-piece-lowering", cpp_wrapper=cpp_wrapper)
        programs.append(program)
        return program
    return backend


def test_a_piece_made_while_dynamo_compiles_is_lowered_by_inductor(caplog):
    programs: list[PieceProgram] = []
    compiled = torch.compile(lambda x, y: (torch.nn.functional.silu(x) * y + 1,), backend=_piece_backend(programs))
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        (got,) = compiled(x, y)
    assert len(programs) == 1
    assert programs[0].compiles == 1
    assert programs[0].lowerings >= 1, "the piece ran eagerly: Dynamo traced no graph from it"
    assert not [r for r in caplog.records if "ran eagerly" in r.getMessage()]
    torch.testing.assert_close(got, torch.nn.functional.silu(x) * y + 1)


@pytest.mark.parametrize("cpp_wrapper", [False, True], ids=["python-wrapper", "cpp-wrapper"])
def test_a_piece_is_lowered_with_the_wrapper_its_config_asks_for(cpp_wrapper, monkeypatch):
    """SeatsConfig.cpp_wrapper: Inductor's C++ wrapper launches a piece's kernels (no Python per launch), with
    dynamic shapes as the pieces have them; the outputs are the same."""
    lowered = []
    lower = PieceProgram._lower

    def recorded(self, gm, example_inputs):
        compiled = lower(self, gm, example_inputs)
        lowered.append(compiled)
        return compiled

    monkeypatch.setattr(PieceProgram, "_lower", recorded)
    programs: list[PieceProgram] = []
    compiled = torch.compile(lambda x, y: (torch.nn.functional.silu(x) @ y + 1,),
                             backend=_piece_backend(programs, cpp_wrapper), dynamic=True)
    for rows in (6, 9):
        x, y = torch.randn(rows, 8), torch.randn(8, 5)
        (got,) = compiled(x, y)
        torch.testing.assert_close(got, torch.nn.functional.silu(x) @ y + 1)
    assert programs[0].lowerings >= 1 and lowered
    assert all(("CppWrapperCodeCache" in piece.source_code) is cpp_wrapper for piece in lowered)


def test_a_piece_dynamo_does_not_trace_says_so(caplog, monkeypatch):
    """The warning that keeps an eager piece from being silent: Dynamo skipping the piece's code is simulated
    by a backend that never lowers."""
    programs: list[PieceProgram] = []
    compiled = torch.compile(lambda x: (x * 2,), backend=_piece_backend(programs))
    monkeypatch.setattr(PieceProgram, "_lower", lambda self, gm, example_inputs: gm.forward)
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        compiled(torch.randn(4))
    assert programs[0].lowerings == 0
    assert [r for r in caplog.records if "ran eagerly" in r.getMessage()]


class _ReadsAFloat(torch.nn.Module):
    def forward(self, x, eps):
        return (x / (x.pow(2).mean() + eps.item()),)  # how a piece reads a float attribute Dynamo lifted


def test_a_piece_that_reads_a_lifted_float_is_one_graph_on_every_call():
    """Pieces are traced with capture_scalar_outputs (one patch reused per thread, not made per call): without
    it each .item() splits the piece's graph. The setting is the piece's only: unchanged around it."""
    piece = torch.fx.symbolic_trace(_ReadsAFloat())
    program = PieceProgram(piece, use_inductor=True, cache_key="test-piece-lowering")
    before = torch._dynamo.config.capture_scalar_outputs
    for rows in (6, 9, 7):
        x, eps = torch.randn(rows, 8), torch.tensor(1e-6)
        (got,) = program(x, eps)
        torch.testing.assert_close(got, x / (x.pow(2).mean() + 1e-6))
        assert torch._dynamo.config.capture_scalar_outputs is before
    assert program.lowerings == 1
