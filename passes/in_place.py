"""Whether a graph may write to a tensor in place: found by op identity (schemas, in-place names, out= and
inplace= arguments), never by source text.

A CUDA graph of a piece replays from copies of its inputs, so a piece that writes to an input cannot be
replayed. Where inputs carry a version counter, a call shows whether it wrote them; inference tensors
(torch.inference_mode) carry none, so there the graph itself must show that nothing can be written."""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

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


def _mutable_op(target) -> bool:
    """True for a torch.ops overload (or any overload of a packet) whose schema writes to an argument."""
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.is_mutable
    if isinstance(target, torch._ops.OpOverloadPacket):
        return any(getattr(target, name)._schema.is_mutable for name in target.overloads())
    return False


def _writes(node: Node, gm: GraphModule) -> bool:
    if node.op == "call_method":
        return _in_place_name(node.target)
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op != "call_function":
        return False
    target = node.target
    if target in _WRITING_OPERATORS or _mutable_op(target):
        return True
    if node.kwargs.get("out") is not None or node.kwargs.get("inplace") is True:
        return True
    return _in_place_name(getattr(target, "__name__", ""))


def first_in_place_op(gm: GraphModule) -> str | None:
    """Returns a description of the first op of gm (or of a subgraph it holds, e.g. a higher-order op's) that
    may write to a tensor in place, None when none may. Conservative: an in-place op on an intermediate
    counts too."""
    for module in gm.modules():
        if not isinstance(module, GraphModule):
            continue
        for node in module.graph.nodes:
            if _writes(node, module):
                target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__",
                                                                                  str(node.target))
                return f"{target} at node {node.name}"
    return None
