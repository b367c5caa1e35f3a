"""Whether a graph may write to one of its inputs in place: the writing ops are found by op identity (schemas,
in-place names, out= and inplace= arguments), what they write by Dynamo's example values, never by source
text.

A CUDA graph of a piece replays from copies of its inputs, so a piece that writes to an input cannot be
replayed. Where inputs carry a version counter, a call shows whether it wrote them; inference tensors
(torch.inference_mode) carry none, so there the graph itself must show that no input can be written. Dynamo's
example values are fake tensors that share storage exactly where the real ones would (a view, a no-op
`.contiguous()` or `.to()`), so a write reaches an input when its target shares an input's storage. A write
to a tensor made inside the graph (an MoE block's `routing_weights /= ...`) does not."""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node
from torch.multiprocessing.reductions import StorageWeakRef

# Python's augmented assignments (x += y Dynamo may record as operator.iadd) and item assignment
_WRITING_OPERATORS = {operator.setitem, operator.delitem, operator.iadd, operator.iand, operator.iconcat,
                      operator.ifloordiv, operator.ilshift, operator.imatmul, operator.imod, operator.imul,
                      operator.ior, operator.ipow, operator.irshift, operator.isub, operator.itruediv,
                      operator.ixor}
_WRITING_DUNDERS = {"__setitem__", "__delitem__", "__iadd__", "__iand__", "__ifloordiv__", "__ilshift__",
                    "__imatmul__", "__imod__", "__imul__", "__ior__", "__ipow__", "__irshift__", "__isub__",
                    "__itruediv__", "__ixor__"}


def _in_place_name(name: str) -> bool:
    """torch's naming rule: an in-place method or function ends in one underscore (add_, copy_, relu_)."""
    return name in _WRITING_DUNDERS or (name.endswith("_") and not name.startswith("__"))


def _schema_written(target, node: Node) -> list | None:
    """The arguments a torch.ops overload's schema writes (None: not such an op). A packet counts as writing
    its first argument when any of its overloads writes."""
    if isinstance(target, torch._ops.OpOverload):
        written = []
        for index, argument in enumerate(target._schema.arguments):
            if argument.alias_info is not None and argument.alias_info.is_write:
                written.append(node.args[index] if index < len(node.args) else node.kwargs.get(argument.name))
        return written
    if isinstance(target, torch._ops.OpOverloadPacket):
        mutable = any(getattr(target, name)._schema.is_mutable for name in target.overloads())
        return node.args[:1] if mutable else []
    return None


def written_values(node: Node, gm: GraphModule) -> list:
    """The values (nodes, usually) that `node` may write in place; empty when it writes nothing."""
    first = node.args[:1]
    if node.op == "call_method":
        return list(first) if _in_place_name(node.target) else []
    if node.op == "call_module":
        return list(first) if getattr(gm.get_submodule(node.target), "inplace", False) else []
    if node.op != "call_function":
        return []
    written = _schema_written(node.target, node)
    if written is None:
        in_place = node.target in _WRITING_OPERATORS or _in_place_name(getattr(node.target, "__name__", ""))
        written = list(first) if in_place or node.kwargs.get("inplace") is True else []
    out = node.kwargs.get("out")
    if out is not None:
        written += list(out) if isinstance(out, (tuple, list)) else [out]
    return [value for value in written if value is not None]


def _storage(value) -> StorageWeakRef | None:
    example = value.meta.get("example_value") if isinstance(value, Node) else None
    if not isinstance(example, torch.Tensor):
        return None
    try:
        return StorageWeakRef(example.untyped_storage())
    except (NotImplementedError, RuntimeError):  # a tensor subclass without a storage of its own
        return None


def first_input_write(gm: GraphModule) -> str | None:
    """Returns a description of the first op of gm (or of a subgraph it holds, e.g. a higher-order op's) that
    may write in place to storage of one of gm's inputs (placeholders, module state), None when none may.
    Conservative: a write whose target has no example tensor to tell by counts as an input write."""
    inputs: set[StorageWeakRef] = set()
    modules = [module for module in gm.modules() if isinstance(module, GraphModule)]
    for module in modules:
        for node in module.graph.nodes:
            storage = _storage(node) if node.op in ("placeholder", "get_attr") else None
            if storage is not None:
                inputs.add(storage)
    for module in modules:
        for node in module.graph.nodes:
            for value in written_values(node, module):
                storage = _storage(value)
                if storage is None or storage in inputs:
                    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__",
                                                                                      str(node.target))
                    return f"{target} at node {node.name}"
    return None
