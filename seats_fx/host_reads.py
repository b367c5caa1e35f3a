"""Counting modes: host reads of tensor data and ops launched, to prove on a CPU what a GPU would stall on.

On CUDA every read of device data on the host (`.item()`, `int(t)`, `bool(t)`, `.tolist()`, `nonzero`,
boolean-mask indexing, `torch.equal`, a copy to the CPU, ...) waits for the GPU to finish all queued work
(a `cudaStreamSynchronize`), and every op is one or more kernel launches. A CPU run shows neither, so the
selection glue is held to counts instead: `HostReadCounter` counts both under a `TorchFunctionMode`
(Python-level reads that never reach the dispatcher as an op, e.g. `tolist`) and a `TorchDispatchMode`
(everything else); `counting_glue()` switches it on for the seats glue functions only.

What counts as a host read (each is one stall on CUDA):
- `Tensor.item / tolist / numpy / cpu` (`.cpu().numpy()` once) and `__bool__ / __int__ / __index__ /
  __float__` (these reach the dispatcher as `aten._local_scalar_dense`, counted once), `torch.equal`;
- ops whose output size depends on the data: `nonzero`, `masked_select`, `unique*`, boolean-mask indexing
  (`t[mask]`, `t[mask] = v`), `repeat_interleave` with a tensor of repeats;
- copies from a device to the CPU (`_to_copy` / `copy_` into a CPU tensor from another device).
Uploads (`torch.tensor(python data)`, host-to-device copies) are counted apart: a pageable upload also
synchronizes the stream on CUDA, but it reads nothing of the device's data.

Ops are counted at the dispatcher: every aten op once (views apart, they launch nothing), and a seats
custom op (`torch.ops.seats_fx.*`) as the Triton launches its CUDA kernel makes (one, or two:
CUSTOM_OP_LAUNCHES). With `look_inside=True` the counter also runs
the torch implementation a custom op has on CPU and counts its aten ops apart (`inner_ops`), so both
figures can be reported, clearly labelled.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import traceback
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# Python-level reads that either never reach the dispatcher (tolist, numpy, cpu of a CPU tensor) or
# reach it as an op counted below (_local_scalar_dense): counted here once, the ops inside not again
_READ_METHODS = {
    torch.Tensor.item: "item", torch.Tensor.tolist: "tolist", torch.Tensor.numpy: "numpy",
    torch.Tensor.cpu: "cpu", torch.Tensor.__bool__: "__bool__", torch.Tensor.__int__: "__int__",
    torch.Tensor.__index__: "__index__", torch.Tensor.__float__: "__float__",
    torch.Tensor.__array__: "__array__", torch.equal: "equal",
}
_ALWAYS_READ_OPS = {"aten::_local_scalar_dense", "aten::equal", "aten::nonzero", "aten::masked_select",
                    "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
                    "aten::unique_dim_consecutive", "aten::argwhere", "aten::bincount", "aten::is_nonzero",
                    "aten::allclose"}
_MASK_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}
# ops that launch no kernel: metadata, allocation, views the dispatcher does not flag as views
_NO_LAUNCH_OPS = {"aten::lift_fresh", "aten::detach", "aten::alias", "aten::_local_scalar_dense",
                  "aten::empty", "aten::empty_strided", "aten::sym_size", "aten::sym_stride", "aten::sym_numel",
                  "aten::_unsafe_view"}

# seats custom op -> (module, function) of the torch implementation it runs off CUDA, for look_inside
INNER_IMPLEMENTATIONS: dict[str, tuple[str, str]] = {
    "seats_fx::greedy_max_min": ("seats_fx.ops.diversity", "greedy_max_min_torch"),
    "seats_fx::window_budgets": ("seats_fx.ops.budget", "window_budgets_torch"),
    "seats_fx::query_relevance": ("seats_fx.ops.relevance", "text_query_relevance"),
    "seats_fx::top_per_slot": ("seats_fx.ops.budget", "top_per_slot_torch"),
}
# seats custom ops whose CUDA kernel is more than one Triton launch (ops.triton_kernels): counted as such
CUSTOM_OP_LAUNCHES = {"seats_fx::query_relevance": 2, "seats_fx::top_per_slot": 2}


@dataclass
class Counts:
    """What ran under a HostReadCounter. Keys are op or method names."""

    host_reads: Counter = field(default_factory=Counter)
    uploads: Counter = field(default_factory=Counter)
    ops: Counter = field(default_factory=Counter)  # at the dispatcher, views excluded (they launch nothing)
    views: Counter = field(default_factory=Counter)
    inner_ops: Counter = field(default_factory=Counter)  # aten ops inside seats custom ops (look_inside)
    read_sites: list[str] = field(default_factory=list)  # where each host read happened (with where=True)

    @property
    def reads(self) -> int:
        return sum(self.host_reads.values())

    @property
    def upload_count(self) -> int:
        """Host-to-device uploads (each one more copy on a GPU stream)."""
        return sum(self.uploads.values())

    @property
    def launches(self) -> int:
        """Ops that launch work (on CUDA: one or more kernels or copies each), a seats custom op as the
        Triton launches it makes on CUDA (CUSTOM_OP_LAUNCHES, else one)."""
        return sum(n * CUSTOM_OP_LAUNCHES.get(name, 1) for name, n in self.ops.items() if name not in _NO_LAUNCH_OPS)

    def add(self, other: "Counts") -> "Counts":
        for name in ("host_reads", "uploads", "ops", "views", "inner_ops"):
            getattr(self, name).update(getattr(other, name))
        self.read_sites += other.read_sites
        return self

    def summary(self) -> dict:
        return {"host_reads": self.reads, "uploads": self.upload_count, "ops": self.launches,
                "views": sum(self.views.values()), "inner_ops": sum(self.inner_ops.values()),
                "reads_by_kind": dict(self.host_reads)}


def _op_name(func) -> str:
    return func._schema.name if hasattr(func, "_schema") else str(func)


def _is_mask_index(name: str, args) -> bool:
    if name not in _MASK_INDEX_OPS or len(args) < 2:
        return False
    indices = args[1] if isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _copy_direction(name: str, args, result) -> str | None:
    """Returns "read" for a copy into the CPU from another device, "upload" for the other way, else None."""
    if name == "aten::_to_copy" and isinstance(result, torch.Tensor) and isinstance(args[0], torch.Tensor):
        source, target = args[0].device, result.device
    elif name == "aten::copy_" and len(args) >= 2 and isinstance(args[1], torch.Tensor):
        source, target = args[1].device, args[0].device
    else:
        return None
    if source.type != "cpu" and target.type == "cpu":
        return "read"
    if source.type == "cpu" and target.type != "cpu":
        return "upload"
    return None


def _caller(skip_prefixes: tuple[str, ...]) -> str:
    """Returns file:line of the innermost frame outside torch and this module."""
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(skip_prefixes):
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return "?"


_TORCH_DIR = torch.__file__.rsplit("/", 1)[0]


class _FunctionLevel(TorchFunctionMode):
    def __init__(self, owner: "HostReadCounter") -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # .to(device) is counted at the dispatcher when it copies from another device (device-generic code
        # moves a tensor to where it already is); .cpu() says it wants the host, so it counts on any device
        name = _READ_METHODS.get(func)
        if name is None or self.owner._quiet:
            return func(*args, **kwargs)
        if name == "numpy" and args and self.owner._host_copies.get(id(args[0])) is args[0]:
            return func(*args, **kwargs)  # a view of what a counted .cpu() brought over (CUDA: no numpy())
        self.owner._read(name)
        self.owner._quiet += 1  # the ops this read dispatches (e.g. _local_scalar_dense) are the same read
        try:
            result = func(*args, **kwargs)
        finally:
            self.owner._quiet -= 1
        if name == "cpu" and isinstance(result, torch.Tensor):
            self.owner._host_copies[id(result)] = result
        return result


class _DispatchLevel(TorchDispatchMode):
    def __init__(self, owner: "HostReadCounter") -> None:
        super().__init__()
        self.owner = owner

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner, counts = self.owner, self.owner.counts
        name = _op_name(func)
        tally = counts.inner_ops if owner._inside else (counts.views if getattr(func, "is_view", False)
                                                        else counts.ops)
        tally[name] += 1
        if not owner._quiet and (name in _ALWAYS_READ_OPS or _is_mask_index(name, args)
                                 or (name == "aten::repeat_interleave" and kwargs.get("output_size") is None
                                     and isinstance(args[0], torch.Tensor) and len(args) == 1)):
            owner._read(name if not _is_mask_index(name, args) else f"{name} (boolean mask)")
        if name == "aten::lift_fresh" and not owner._inside:
            counts.uploads["torch.tensor(host data)"] += 1
        implementation = INNER_IMPLEMENTATIONS.get(name)
        if implementation is not None and owner.look_inside:
            module, function = implementation
            implementation = getattr(importlib.import_module(module), function)
            owner._inside += 1
            try:
                with self:
                    return implementation(*args, **kwargs)
            finally:
                owner._inside -= 1
        result = func(*args, **kwargs)
        direction = _copy_direction(name, args, result)
        if direction == "read" and not owner._quiet:
            owner._read(f"{name} to cpu")
        elif direction == "upload" and not owner._inside:
            counts.uploads[f"{name} to device"] += 1
        return result


class HostReadCounter:
    """Context manager counting host reads, uploads and ops of the code run inside it (see module doc).

    counts: a Counts to add to (a new one by default); look_inside: also run and count the torch
    implementation of seats custom ops; where: record file:line of every host read in counts.read_sites.
    """

    def __init__(self, counts: Counts | None = None, look_inside: bool = False, where: bool = False) -> None:
        self.counts = counts if counts is not None else Counts()
        self.look_inside, self.where = look_inside, where
        self._quiet = 0
        self._inside = 0
        # results of counted .cpu() reads, by id (tensors compare elementwise, so no set of them)
        self._host_copies: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._modes = (_FunctionLevel(self), _DispatchLevel(self))

    def _read(self, name: str) -> None:
        if self._inside:
            return
        self.counts.host_reads[name] += 1
        if self.where:
            self.counts.read_sites.append(f"{name} at {_caller((_TORCH_DIR, __file__))}")

    def __enter__(self) -> Counts:
        for mode in self._modes:
            mode.__enter__()
        return self.counts

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


_local = threading.local()


@contextlib.contextmanager
def counting_glue(look_inside: bool = False, where: bool = False) -> Iterator[dict[str, Counts]]:
    """Counts host reads and ops of the seats glue only (the functions the rewritten decoder calls between
    its compiled pieces: seats_fx.call's seats_* functions), per glue function name, on this thread."""
    from seats_fx import call

    per_glue: dict[str, Counts] = {}

    def observe(name: str):
        return HostReadCounter(per_glue.setdefault(name, Counts()), look_inside, where)

    previous = call.set_glue_observer(observe)
    try:
        yield per_glue
    finally:
        call.set_glue_observer(previous)


def total(per_glue: dict[str, Counts]) -> Counts:
    """Returns the sum of per-glue counts."""
    summed = Counts()
    for counts in per_glue.values():
        summed.add(counts)
    return summed


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m seats_fx.host_reads
    with HostReadCounter(where=True) as seen:
        x = torch.arange(6)
        int(x.sum()), x[x > 2], x.tolist()
    print(seen.summary(), *seen.read_sites, sep="\n", file=sys.stdout)
