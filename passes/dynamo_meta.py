"""What Dynamo records on the graphs it hands a backend, read in one place (torch 2.11 - 2.14).

Every graph fact seats_fx uses comes from here: module types and module identity (`nn_module_stack`),
Dynamo sources of placeholders (their Source objects, not their spelling), example values, and the
module whose frame is being compiled. Nothing here reads stack traces or source text: those change
between torch and transformers releases, and a rule that stops matching fails silently.
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.fx import GraphModule, Node

SDPA_FUNCTIONS = (torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention)
LINEAR_FUNCTIONS = (torch._C._nn.linear, torch.nn.functional.linear)
EMBEDDING_FUNCTIONS = (torch.nn.functional.embedding,)
# `a == b` as Dynamo records it: a function in some torch releases, a method call (`a.__eq__(b)`) in others
_EQ_FUNCTIONS = (operator.eq, torch.eq)
_EQ_METHODS = ("__eq__", "eq")


@dataclass(frozen=True)
class ModuleEntry:
    """One module a node was traced inside: `key` identifies the module instance within a trace (Dynamo
    uses the module's id), `path` is for messages only, `type` is the module's class."""

    key: str
    path: str
    type: type | None


def module_stack(node: Node) -> list[ModuleEntry]:
    """Returns the modules a node was traced inside, outermost first."""
    entries = []
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        path, kind = value[0], value[1]
        entries.append(ModuleEntry(str(key), str(path), kind if isinstance(kind, type) else None))
    return entries


def graph_module_types(gm: GraphModule) -> set[type]:
    """Returns every module class a graph's nodes were traced inside."""
    return {entry.type for node in gm.graph.nodes for entry in module_stack(node) if entry.type is not None}


def placeholders(gm: GraphModule) -> list[Node]:
    return [node for node in gm.graph.nodes if node.op == "placeholder"]


def example(node) -> object:
    """Returns the example value Dynamo traced a node with (a FakeTensor, SymInt, ...), or None."""
    return node.meta.get("example_value") if isinstance(node, Node) else None


def source(node: Node):
    """Returns the Dynamo Source of a placeholder (where its value comes from at run time), or None."""
    return getattr(node.meta.get("grapharg"), "source", None)


def source_name(node: Node) -> str:
    """Returns the spelling of a placeholder's source, for messages (never for matching)."""
    found = source(node)
    if found is None:
        return ""
    name = found.name
    return str(name() if callable(name) else name)


def _source_chain(found) -> list:
    chain = []
    while found is not None:
        chain.append(found)
        found = getattr(found, "base", None)
    return chain


def local_name(node: Node) -> str | None:
    """Returns the name of the frame's local variable a placeholder is (e.g. `input_ids` for L['input_ids']),
    or None when it is something else (an attribute, an item, a module parameter)."""
    from torch._dynamo.source import LocalSource

    found = source(node)
    return found.local_name if isinstance(found, LocalSource) else None


def is_module_state(node: Node) -> bool:
    """True for placeholders that hold module state (parameters, buffers, module attributes)."""
    from torch._dynamo import source as sources

    kinds = tuple(getattr(sources, name) for name in ("ParamBufferSource", "UnspecializedParamBufferSource",
                                                       "NNModuleSource") if hasattr(sources, name))
    return any(isinstance(part, kinds) for part in _source_chain(source(node)))


def runtime_value(node: Node) -> object:
    """Returns the real object a placeholder was traced from (e.g. a Parameter), or None once Dynamo let go."""
    grapharg = node.meta.get("grapharg")
    try:
        return grapharg.example if grapharg is not None else None
    except (AttributeError, RuntimeError, TypeError):
        return None


def is_integer_tensor(value) -> bool:
    return isinstance(value, torch.Tensor) and not value.dtype.is_floating_point and not value.dtype.is_complex \
        and value.dtype != torch.bool


def equality_operands(node: Node) -> tuple[object, object] | None:
    """Returns (a, b) when the node computes `a == b` elementwise, else None."""
    if node.op == "call_function" and node.target in _EQ_FUNCTIONS and len(node.args) == 2:
        return node.args[0], node.args[1]
    if node.op == "call_method" and node.target in _EQ_METHODS and len(node.args) == 2:
        return node.args[0], node.args[1]
    return None


def is_call(node: Node, functions: tuple) -> bool:
    return node.op == "call_function" and node.target in functions


def frame_module() -> nn.Module | None:
    """Returns the `self` of the frame Dynamo is compiling right now when it is an nn.Module, else None.

    A backend runs inside Dynamo's trace of that frame, so this identifies the model (or the submodule
    whose forward was compiled on its own after a graph break) by type and by identity.
    """
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        translator = InstructionTranslator.current_tx()
    except (AttributeError, AssertionError, ImportError, RuntimeError):
        return None
    if translator is None:
        return None
    candidate = getattr(translator, "f_locals", {}).get("self")
    return candidate if isinstance(candidate, nn.Module) else None


def weak(value):
    """Returns a callable giving `value` back while it lives (None after), without keeping it alive."""
    try:
        return weakref.ref(value)
    except TypeError:
        return lambda: value
