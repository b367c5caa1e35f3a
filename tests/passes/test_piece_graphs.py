"""SeatsConfig.cuda_graphs: a decoder piece records a graph of its kernels per input signature and replays it.

No CUDA here, so a recorder that reruns the piece stands in for CUDA graphs (rerun_recorder.RerunRecorder): it
keeps one set of outputs per graph, which each replay overwrites, and a replay spoils every other graph's
outputs, as a replay in a shared CUDA memory pool may. What is tested is the logic around the graphs, the same
on a GPU: when a piece records, what a signature holds, that inputs reach the copies a graph reads, that
nothing handed out lives in the pool, and the fallbacks.
"""

from __future__ import annotations

import contextlib
import logging
from unittest import mock

import pytest
import torch

from seats_fx.passes import piece_graphs
from seats_fx.passes.piece_graphs import COUNTS, CudaGraphRecorder, DecoderGraphs, PieceGraphs, signature

from rerun_recorder import register_rerun_recorder


@pytest.fixture
def recorders(monkeypatch):
    return register_rerun_recorder(monkeypatch)


def _layer(x, weight):
    return (torch.relu(x @ weight) + x,)


def _calls(piece, run, args_list):
    before = COUNTS.copy()
    outputs = [piece(run, args) for args in args_list]
    return outputs, dict(COUNTS - before)


def test_a_piece_runs_then_records_then_replays_and_every_call_is_right(recorders):
    weight = torch.nn.Parameter(torch.randn(8, 8), requires_grad=False)
    piece = PieceGraphs(DecoderGraphs(), "layer", module_state=frozenset({1}))
    xs = [torch.randn(5, 8) for _ in range(5)]
    outputs, counts = _calls(piece, _layer, [(x, weight) for x in xs])
    assert counts == {"ran": 1, "recorded": 1, "replayed": 3}
    assert recorders[0].replays == 3
    for x, (got,) in zip(xs, outputs):
        torch.testing.assert_close(got, _layer(x, weight)[0], rtol=0, atol=0)


def test_outputs_handed_out_are_copies_a_later_replay_does_not_touch(recorders):
    """Two pieces share one recorder (one pool): replaying the second spoils what the first's graph left in
    the pool, and must not spoil what the first piece returned."""
    decoder = DecoderGraphs()
    first, second = PieceGraphs(decoder, "a", frozenset({1})), PieceGraphs(decoder, "b", frozenset({1}))
    w1, w2 = torch.randn(8, 8), torch.randn(8, 8)
    for _ in range(2):  # run, record
        first(_layer, (torch.randn(4, 8), w1)), second(_layer, (torch.randn(4, 8), w2))
    x = torch.randn(4, 8)
    (held,) = first(_layer, (x, w1))
    (again,) = first(_layer, (x + 1, w1))  # the same graph replayed: its pool outputs change
    second(_layer, (torch.randn(4, 8), w2))
    assert recorders[0].replays == 3
    torch.testing.assert_close(held, _layer(x, w1)[0], rtol=0, atol=0)
    torch.testing.assert_close(again, _layer(x + 1, w1)[0], rtol=0, atol=0)


def test_an_output_that_is_an_input_is_handed_out_as_a_copy(recorders):
    """A piece may return an input as it is (a table the next layer reads too): the graph's copy of that
    input is refilled by the next replay, so what the caller got must not be it."""
    piece = PieceGraphs(DecoderGraphs(), "through", frozenset())
    held = []
    for value in range(5):
        x = torch.full((3,), float(value))
        held.append(piece(lambda t: (t, t * 2), (x,)))
    for value, (through, doubled) in enumerate(held):
        assert through.tolist() == [value] * 3 and doubled.tolist() == [2 * value] * 3


def test_each_input_signature_has_its_own_graph(recorders):
    weight = torch.randn(8, 8)
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    shapes = [5, 5, 7, 7, 5, 7, 5]
    xs = [torch.randn(n, 8) for n in shapes]
    outputs, counts = _calls(piece, _layer, [(x, weight) for x in xs])
    assert counts == {"ran": 2, "recorded": 2, "replayed": 3}
    for x, (got,) in zip(xs, outputs):
        torch.testing.assert_close(got, _layer(x, weight)[0], rtol=0, atol=0)


def test_a_weight_at_another_address_is_another_signature_and_other_inputs_are_copied_in(recorders):
    """Weights are read in place (their address in the signature): a new weight tensor never meets a graph
    recorded over the old one. Other inputs are copied into the graph's copies: a new tensor of the same
    shape is replayed."""
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    old, new = torch.randn(8, 8), torch.randn(8, 8)
    x = torch.randn(5, 8)
    calls = [(x, old), (x, old), (x, old), (x + 2, old), (x, new), (x, new), (x, new)]
    outputs, counts = _calls(piece, _layer, calls)
    assert counts == {"ran": 2, "recorded": 2, "replayed": 3}
    for args, (got,) in zip(calls, outputs):
        torch.testing.assert_close(got, _layer(*args)[0], rtol=0, atol=0)


def test_a_weight_changed_in_place_is_read_by_the_replay(recorders):
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    weight, x = torch.randn(8, 8), torch.randn(5, 8)
    for _ in range(3):
        piece(_layer, (x, weight))
    weight.mul_(-1)
    (got,) = piece(_layer, (x, weight))
    assert recorders[0].replays == 2
    torch.testing.assert_close(got, _layer(x, weight)[0], rtol=0, atol=0)


def test_the_same_tensor_in_two_places_is_one_copy_and_part_of_the_signature(recorders):
    piece = PieceGraphs(DecoderGraphs(), "sum", frozenset())
    a, b = torch.randn(3), torch.randn(3)
    assert signature((a, a), frozenset(), a.device) != signature((a, b), frozenset(), a.device)
    calls = [(a, a), (a, a), (a, a), (b, b)]
    outputs, counts = _calls(piece, lambda x, y: (x * 2 + y,), calls)
    assert counts == {"ran": 1, "recorded": 1, "replayed": 2}
    for (x, _), (got,) in zip(calls, outputs):
        torch.testing.assert_close(got, x * 3, rtol=0, atol=0)


def test_a_piece_that_writes_to_its_inputs_is_never_recorded(recorders, caplog):
    def writes(x, w):
        x.add_(1)
        return (x @ w,)

    piece = PieceGraphs(DecoderGraphs(), "writes", frozenset({1}))
    weight = torch.randn(4, 4)
    with caplog.at_level(logging.INFO, logger="seats_fx"):
        for _ in range(4):
            x = torch.randn(2, 4)
            written = x + 1
            (got,) = piece(writes, (x, weight))
            torch.testing.assert_close(got, written @ weight, rtol=0, atol=0)
            torch.testing.assert_close(x, written, rtol=0, atol=0)  # the caller's tensor, written
    assert piece.refused and "writes to its inputs" in piece.refused
    assert not piece.graphs and recorders[0].replays == 0
    assert [r for r in caplog.records if "without CUDA graphs" in r.getMessage()]


def test_under_inference_mode_a_piece_whose_graph_writes_nothing_records_and_replays(recorders):
    """torch.inference_mode's tensors keep no version counter (reading one raises): a piece whose graph has no
    in-place op records from them, and its graphs replay in inference mode and under no_grad alike."""
    weight = torch.randn(8, 8)
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}), input_write=None)
    with torch.inference_mode():
        xs = [torch.randn(5, 8) for _ in range(4)]
        outputs, counts = _calls(piece, _layer, [(x, weight) for x in xs])
    assert counts == {"ran": 1, "recorded": 1, "replayed": 2}
    with torch.no_grad():  # the graph's input copies are inference tensors, written inside inference mode
        later = torch.randn(5, 8)
        [(got,)], counts = _calls(piece, _layer, [(later, weight)])
    assert counts == {"replayed": 1}
    torch.testing.assert_close(got, _layer(later, weight)[0], rtol=0, atol=0)
    for x, (out,) in zip(xs, outputs):
        torch.testing.assert_close(out, _layer(x, weight)[0], rtol=0, atol=0)
    assert recorders[0].replays == 3


def test_under_inference_mode_a_piece_whose_graph_may_write_is_refused(recorders):
    """A write to an inference tensor cannot be seen after the call, so a graph that may write an input is
    never recorded from such inputs; the piece runs as it is, its writes reach the caller."""
    def writes(x, w):
        x.add_(1)
        return (x @ w,)

    piece = PieceGraphs(DecoderGraphs(), "writes", frozenset({1}), input_write="add_ at node add_")
    weight = torch.randn(4, 4)
    with torch.inference_mode():
        for _ in range(3):
            x = torch.randn(2, 4)
            written = x + 1
            (got,) = piece(writes, (x, weight))
            torch.testing.assert_close(got, written @ weight, rtol=0, atol=0)
            torch.testing.assert_close(x, written, rtol=0, atol=0)
    assert piece.refused and "inference tensors" in piece.refused and "add_" in piece.refused
    assert not piece.graphs and recorders[0].replays == 0


def test_a_failed_recording_warns_and_the_piece_runs_as_it_is(recorders, caplog):
    def fails(run, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    decoder = DecoderGraphs()
    piece = PieceGraphs(decoder, "layer", frozenset({1}))
    weight = torch.randn(8, 8)
    piece(_layer, (torch.randn(5, 8), weight))
    decoder.recorder_for(weight.device).record = fails
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        for _ in range(3):
            x = torch.randn(5, 8)
            (got,) = piece(_layer, (x, weight))
            torch.testing.assert_close(got, _layer(x, weight)[0], rtol=0, atol=0)
    assert "recording failed" in piece.refused
    assert [r for r in caplog.records if "recording failed" in r.getMessage()]
    # another piece of the same backend failing alike (an MoE layer's host reads, say) is not a second warning
    other = PieceGraphs(decoder, "next layer", frozenset({1}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        for _ in range(3):
            other(_layer, (torch.randn(5, 8), weight))
    assert other.refused and not caplog.records


def test_inputs_autograd_tracks_run_uncaptured(recorders):
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    weight = torch.randn(8, 8, requires_grad=True)
    with torch.enable_grad():
        outputs, counts = _calls(piece, _layer, [(torch.randn(5, 8), weight)] * 3)
    assert counts == {"ran": 3}
    outputs[0][0].sum().backward()
    assert weight.grad is not None


def test_a_device_without_a_recorder_runs_as_it_is():
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    weight = torch.randn(8, 8)
    outputs, counts = _calls(piece, _layer, [(torch.randn(5, 8), weight)] * 3)
    assert counts == {"ran": 3}


def test_a_host_scalar_is_in_the_signature_by_value():
    """A 0-d CPU tensor (a float Dynamo lifted, made anew each call, read with .item()) is read when the graph
    is recorded: its value is part of the signature, not its address; a larger CPU tensor beside device
    inputs cannot be replayed. (Meta tensors stand in for device ones.)"""
    x = torch.empty(4, 8, device="meta")
    one, two = torch.tensor(1e-6), torch.tensor(2e-6)
    assert signature((x, one), frozenset(), x.device) == signature((x, torch.tensor(1e-6)), frozenset(), x.device)
    assert signature((x, one), frozenset(), x.device) != signature((x, two), frozenset(), x.device)
    assert signature((x, torch.ones(3)), frozenset(), x.device) is None
    assert signature((x, object()), frozenset(), x.device) is None
    # module state too: Dynamo's sources name a lifted float's module as its origin
    assert signature((x, one), frozenset({1}), x.device) == signature((x, torch.tensor(1e-6)), frozenset({1}),
                                                                      x.device)


@pytest.fixture
def cuda_calls(monkeypatch):
    """torch.cuda's streams and graphs replaced by mocks checked against the real signatures (autospec), which
    log what the CUDA recorder does to them, in order; returns (calls, current stream, side stream, graph)."""
    calls: list = []
    current = mock.create_autospec(torch.cuda.Stream, instance=True)
    side = mock.create_autospec(torch.cuda.Stream, instance=True)
    graph = mock.create_autospec(torch.cuda.CUDAGraph, instance=True)

    @contextlib.contextmanager
    def on(stream):
        calls.append(("on", stream))
        yield
        calls.append(("off", stream))

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: side)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "stream", on)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: graph)
    graph.capture_begin.side_effect = lambda *args, **kwargs: calls.append(("begin", args, kwargs))
    graph.capture_end.side_effect = lambda: calls.append(("end",))
    side.wait_stream.side_effect = lambda stream: calls.append(("side waits for", stream))
    current.wait_stream.side_effect = lambda stream: calls.append(("current waits for", stream))
    return calls, current, side, graph


def test_the_cuda_recorder_warms_up_and_records_on_its_side_stream_into_the_shared_pool(cuda_calls):
    """The CUDA recorder's calls, without CUDA: the side stream waits for the current one's work before, the
    current one for the side stream's after; the capture goes into the backend's pool in thread-local mode;
    warm-up outputs, made on the side stream, are marked as used on the current one."""
    calls, current, side, graph = cuda_calls
    output = mock.MagicMock(spec=torch.Tensor)

    def run(x):
        calls.append(("run", x))
        return (output,)

    recorder = CudaGraphRecorder(torch.device("cuda", 0))
    assert recorder.warm_up(run, ["x"]) == (output,)
    assert calls == [("side waits for", current), ("on", side), ("run", "x"), ("off", side),
                     ("current waits for", side)]
    output.record_stream.assert_called_once_with(current)
    calls.clear()
    replay, outputs = recorder.record(run, ["x"])
    assert calls == [("side waits for", current), ("on", side),
                     ("begin", (), {"pool": "pool", "capture_error_mode": "thread_local"}), ("run", "x"), ("end",),
                     ("off", side), ("current waits for", side)]
    assert outputs == (output,) and replay == graph.replay


def test_an_error_while_recording_ends_the_capture_and_is_the_one_raised(cuda_calls):
    calls, _, _, graph = cuda_calls
    graph.capture_end.side_effect = RuntimeError("capture invalidated")

    def run(x):
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
        CudaGraphRecorder(torch.device("cuda", 0)).record(run, ["x"])
    graph.capture_end.assert_called_once_with()


def test_a_recorder_that_cannot_be_made_leaves_the_pieces_as_they_are(monkeypatch, caplog):
    def broken(device):
        raise RuntimeError("no CUDA graphs here")

    monkeypatch.setitem(piece_graphs.RECORDERS, "cpu", broken)
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    weight = torch.randn(8, 8)
    with caplog.at_level(logging.WARNING, logger="seats_fx"):
        outputs, counts = _calls(piece, _layer, [(torch.randn(5, 8), weight)] * 3)
    assert counts == {"ran": 3}
    assert len([r for r in caplog.records if "no CUDA graphs" in r.getMessage()]) == 1


def test_graphs_and_signatures_seen_once_are_bounded_per_piece(recorders, monkeypatch, caplog):
    """A server meets many prompt lengths, decode steps a new cache length each: a piece holds at most
    MAX_GRAPHS_PER_PIECE graphs (later signatures run as they are, said once) and remembers at most
    MAX_SEEN_PER_PIECE signatures seen once."""
    monkeypatch.setattr(piece_graphs, "MAX_GRAPHS_PER_PIECE", 2)
    monkeypatch.setattr(piece_graphs, "MAX_SEEN_PER_PIECE", 3)
    piece = PieceGraphs(DecoderGraphs(), "layer", frozenset({1}))
    weight = torch.randn(8, 8)
    with caplog.at_level(logging.INFO, logger="seats_fx"):
        for rows in (1, 2, 3):  # three signatures, each called three times: two get graphs
            for _ in range(3):
                x = torch.randn(rows, 8)
                (got,) = piece(_layer, (x, weight))
                torch.testing.assert_close(got, _layer(x, weight)[0], rtol=0, atol=0)
    assert len(piece.graphs) == 2
    assert len([r for r in caplog.records if "holds 2 CUDA graphs" in r.getMessage()]) == 1
    for rows in range(10, 20):  # signatures seen once
        piece(_layer, (torch.randn(rows, 8), weight))
    assert len(piece.seen) == 3
