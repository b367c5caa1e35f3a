"""Replay a decoder piece's kernels as a CUDA graph (SeatsConfig.cuda_graphs).

A pruned decoder on a GPU is bound by the host: on an H200 each layer piece cost about 1.5 ms of host time
per call (Inductor's Python wrapper, cuBLAS and launch calls, Dynamo's guards) for a fraction of that on the
GPU. A CUDA graph replays the recorded kernels in one call. Inductor's own CUDA graphs (cudagraph trees)
do not fit the pieces: each piece is a torch.compile'd function of its own, entered once per layer, and
every such entry starts a new cudagraph-tree generation that frees the previous piece's outputs while the
next piece still reads them.

So each piece records its own graphs here, one per input signature (shapes, strides, dtypes, the weights'
addresses: `signature`), and from its third call with a signature on replays it: the first call runs the
piece as it is (and shows whether it writes to its inputs, which a replay from copied inputs could not
honour), the second runs it on copies of its inputs and records, later calls copy their inputs into those
copies and replay. Module state (weights, buffers) is read in place, its address in the signature; a 0-d CPU
tensor (a float Dynamo lifted) is read when the graph is recorded, its value in the signature. All graphs of
one backend share one memory pool, so a replay may overwrite the outputs another graph left in it: every
replay's outputs are copied out at once, and nothing the caller holds ever lives in the pool. A piece whose
recording fails (it reads device data on the host, say) says so and runs as it is from then on.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Hashable, Protocol, Sequence

import torch

log = logging.getLogger("seats_fx")

# input signatures recorded per piece: each holds its input copies and graph; a prompt length the server has
# not seen before runs uncaptured past this many
MAX_GRAPHS_PER_PIECE = 8
# signatures remembered as seen once (each decode step's cache length is one: it must not grow forever)
MAX_SEEN_PER_PIECE = 64
# what the pieces did, cumulative in this process: "replayed", "recorded", "ran" (uncaptured), and
# "refused: <why>" per piece that gave up graphs (bench reads differences around a call)
COUNTS: collections.Counter = collections.Counter()


class GraphRecorder(Protocol):
    """Records and replays graphs on one device; one per decoder and device, shared by its pieces."""

    def warm_up(self, run: Callable[..., Any], inputs: Sequence[Any]) -> Any:
        """Returns run(*inputs), run where the graph will be recorded (lazy per-stream state is made here)."""

    def record(self, run: Callable[..., Any], inputs: Sequence[Any]) -> tuple[Callable[[], None], Any]:
        """Returns (replay, outputs): replay() reruns the kernels of run(*inputs) on the same memory, whose
        results then are in outputs."""


class CudaGraphRecorder:
    """Records on a side stream into one memory pool for all of a decoder's pieces; replays on the current
    stream."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)

    def warm_up(self, run, inputs):
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            outputs = run(*inputs)
        current.wait_stream(self.stream)
        for tensor in _tensors(outputs):  # made on the side stream, used and freed on the current one
            tensor.record_stream(current)
        return outputs

    def record(self, run, inputs):
        graph = torch.cuda.CUDAGraph()
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            # thread_local: another thread's allocations (a data loader's) do not spoil this capture
            graph.capture_begin(pool=self.pool, capture_error_mode="thread_local")
            try:
                outputs = run(*inputs)
            except BaseException:
                try:
                    graph.capture_end()
                except Exception:  # the capture is invalid after the error; the error to report is run's
                    pass
                raise
            graph.capture_end()
        current.wait_stream(self.stream)
        return graph.replay, outputs


# recorder factories by device type; tests register one for "cpu" (no CUDA here) to run the same logic
RECORDERS: dict[str, Callable[[torch.device], GraphRecorder]] = {"cuda": CudaGraphRecorder}


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _copy_out(value: Any) -> Any:
    """Returns value with every tensor cloned (same strides) and the same tuple/list structure."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_copy_out(item) for item in value)
    return value


def _values(value: Any) -> list[Any]:
    """Returns the values in value that are not tensors (sizes a piece returns), in order."""
    if isinstance(value, torch.Tensor):
        return []
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _values(item)]
    return [value]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))


class DecoderGraphs:
    """The recorders of one compiled decoder, one per device, made on first use."""

    def __init__(self) -> None:
        self._recorders: dict[torch.device, GraphRecorder | None] = {}
        self.warned = False  # a failed recording is a warning once per backend (every MoE layer may fail alike)

    def recorder_for(self, device: torch.device) -> GraphRecorder | None:
        """Returns the recorder of `device`, None when there is none (a CPU piece)."""
        if device not in self._recorders:
            factory = RECORDERS.get(device.type)
            try:
                self._recorders[device] = factory(device) if factory is not None else None
            except Exception as error:  # no graphs on this device; the pieces run as they are
                log.warning("seats: no CUDA graphs of the decoder pieces on %s (%s: %s)", device,
                            type(error).__name__, error)
                self._recorders[device] = None
        return self._recorders[device]


def signature(args: Sequence[Any], module_state: frozenset[int], device: torch.device) -> Hashable | None:
    """Returns what a graph recorded for args is valid for: each tensor's device, dtype, shape and strides,
    the address of module state (read in place: `module_state` holds its positions), the value of a 0-d CPU
    tensor (a float Dynamo lifted, made anew each call, read on the host when the graph is recorded), which
    positions hold the same tensor, and every other argument's value. None when args cannot be replayed: a
    larger CPU tensor beside device inputs, a tensor on another device, a tensor autograd would track, an
    argument that is not a plain value. device: device_of(args)."""
    grad = torch.is_grad_enabled()
    first_position: dict[int, int] = {}
    entries: list[Hashable] = []
    for position, arg in enumerate(args):
        if isinstance(arg, torch.Tensor):
            if grad and arg.requires_grad:
                return None
            same = first_position.setdefault(id(arg), position)
            if same != position:
                entries.append(("same as", same))
            elif _is_host_scalar(arg):
                entries.append(("host scalar", arg.dtype, arg.item()))
            elif arg.device != device:
                return None
            elif position in module_state:
                try:
                    address = arg.data_ptr()
                except RuntimeError:  # a tensor subclass without storage of its own
                    return None
                entries.append(("state", address, arg.dtype, tuple(arg.shape), arg.stride()))
            else:
                entries.append(("tensor", arg.dtype, tuple(arg.shape), arg.stride()))
        elif arg is None or isinstance(arg, (bool, int, float, str, torch.dtype)):
            entries.append(("value", type(arg).__name__, arg))
        else:
            return None
    return (device, tuple(entries))


def _is_host_scalar(arg: torch.Tensor) -> bool:
    return arg.device.type == "cpu" and arg.dim() == 0


def device_of(args: Sequence[Any]) -> torch.device:
    """Returns the device of the inputs that are not on the CPU (the CPU when all are)."""
    for arg in args:
        if isinstance(arg, torch.Tensor) and arg.device.type != "cpu":
            return arg.device
    return torch.device("cpu")


class _Recorded:
    """One recorded graph: copies of the inputs it reads, its replay, and its outputs in the pool."""

    def __init__(self, recorder: GraphRecorder, run: Callable[..., Any], args: Sequence[Any],
                 module_state: frozenset[int]) -> None:
        self.copies: list[tuple[int, torch.Tensor]] = []
        static: list[Any] = []
        by_tensor: dict[int, torch.Tensor] = {}
        for position, arg in enumerate(args):
            in_place = (not isinstance(arg, torch.Tensor) or position in module_state or _is_host_scalar(arg))
            if in_place:
                static.append(arg)
            elif id(arg) in by_tensor:
                static.append(by_tensor[id(arg)])
            else:
                copy = torch.empty_like(arg)  # dense inputs keep their strides, others become contiguous
                copy.copy_(arg)
                by_tensor[id(arg)] = copy
                self.copies.append((position, copy))
                static.append(copy)
        self.warm_outputs = recorder.warm_up(run, static)
        if not all(_plain(value) for value in _values(self.warm_outputs)):
            raise _NotReplayable("it returns values that are neither tensors nor numbers")
        self.replay_graph, self.outputs = recorder.record(run, static)
        # numbers it returns (sizes) are functions of the signature: a replay hands out the recorded ones
        if _values(self.outputs) != _values(self.warm_outputs):
            raise _NotReplayable("the numbers it returns differ between two calls of one signature")

    def replay(self, args: Sequence[Any]) -> Any:
        # copies made under torch.inference_mode are inference tensors, writable only inside it (a later call
        # may come under no_grad alone); a normal copy is as writable there
        with torch.inference_mode():
            for position, copy in self.copies:
                copy.copy_(args[position])
        self.replay_graph()
        return _copy_out(self.outputs)


class _NotReplayable(Exception):
    """A piece whose calls a graph cannot stand for."""


class PieceGraphs:
    """The recorded graphs of one decoder piece (one layer's weights), by input signature."""

    def __init__(self, decoder: DecoderGraphs, name: str, module_state: frozenset[int] = frozenset(),
                 input_write: str | None = None) -> None:
        """module_state: positions of the piece's inputs that hold module state (weights, buffers): read in
        place by a replay, their addresses part of each graph's signature; every other tensor input is
        copied into the graph's own copy of it before a replay. input_write: the piece graph's first op that may
        write to one of its inputs in place (passes.in_place.first_input_write), None when none may."""
        self.decoder = decoder
        self.name = name
        self.module_state = module_state
        self.input_write = input_write
        self.graphs: dict[Hashable, _Recorded] = {}
        self.seen: collections.OrderedDict = collections.OrderedDict()
        self.refused: str | None = None
        self.full = False  # MAX_GRAPHS_PER_PIECE reached (said once)

    def __call__(self, run: Callable[..., Any], args: Sequence[Any]) -> Any:
        device = device_of(args)
        recorder = None if self.refused else self.decoder.recorder_for(device)
        key = signature(args, self.module_state, device) if recorder is not None else None
        if key is None:
            return _run_as_is(run, args)
        recorded = self.graphs.get(key)
        if recorded is not None:
            COUNTS["replayed"] += 1
            return recorded.replay(args)
        if key not in self.seen:
            return self._first_call(run, args, key)
        if len(self.graphs) >= MAX_GRAPHS_PER_PIECE:
            if not self.full:
                self.full = True
                log.info("seats: decoder piece %s holds %d CUDA graphs (one per input shape); new shapes run "
                         "without one", self.name, MAX_GRAPHS_PER_PIECE)
            return _run_as_is(run, args)
        try:
            recorded = _Recorded(recorder, run, args, self.module_state)
        except _NotReplayable as reason:
            self._refuse(str(reason))
            return _run_as_is(run, args)
        except Exception as error:  # e.g. the piece reads device data on the host, which a capture forbids
            self._refuse(f"recording failed ({type(error).__name__}: {str(error)[:200]})", loud=True)
            return _run_as_is(run, args)
        self.graphs[key] = recorded
        del self.seen[key]
        COUNTS["recorded"] += 1
        outputs, recorded.warm_outputs = recorded.warm_outputs, None
        return _copy_out(outputs)  # an output may be one of the input copies, which the next replay refills

    def _first_call(self, run, args, key):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        # inference tensors (torch.inference_mode) keep no version counter: a write to one cannot be seen, so
        # the graph must show that it writes no input
        tracked = [t for t in tensors if not t.is_inference()]
        if len(tracked) < len(tensors) and self.input_write is not None:
            self._refuse(f"its inputs are inference tensors, whose writes a call cannot show, and its graph may "
                         f"write to an input in place ({self.input_write})")
            return _run_as_is(run, args)
        tensors, versions = tracked, [t._version for t in tracked]
        outputs = _run_as_is(run, args)
        if any(t._version != v for t, v in zip(tensors, versions)):
            self._refuse("it writes to its inputs, which a replay from copies of them would not")
            return outputs
        self.seen[key] = None
        if len(self.seen) > MAX_SEEN_PER_PIECE:
            self.seen.popitem(last=False)
        return outputs

    def _refuse(self, reason: str, loud: bool = False) -> None:
        """Gives graphs up for this piece from now on, and says why."""
        self.refused = reason
        self.graphs.clear()
        self.seen.clear()
        COUNTS[f"refused: {reason.split(' (')[0]}"] += 1
        if loud and not self.decoder.warned:
            self.decoder.warned = True
            log.warning("seats: decoder piece %s runs without CUDA graphs: %s (said once; more such pieces are "
                        "logged at INFO)", self.name, reason)
        else:
            log.info("seats: decoder piece %s runs without CUDA graphs: %s", self.name, reason)


def _run_as_is(run: Callable[..., Any], args: Sequence[Any]) -> Any:
    COUNTS["ran"] += 1
    return run(*args)
