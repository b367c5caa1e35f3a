"""Methods swapped on a model's own modules (instance attributes), never on transformers' classes: another
model of the same class is untouched, and removing the attribute gives the class's method back."""

from __future__ import annotations

import types
from typing import Callable

from torch import nn


def override_methods(model: nn.Module, overrides_for: Callable[[nn.Module], dict[str, Callable]],
                     enabled: bool = True) -> bool:
    """Binds the functions overrides_for(module) names ({method name: function}; empty for a module it does not
    concern) on every module of `model`, or with enabled=False removes those the module holds itself. Returns
    whether any module was concerned."""
    found = False
    for module in model.modules():
        overrides = overrides_for(module)
        if not overrides:
            continue
        found = True
        for name, function in overrides.items():
            if enabled:
                setattr(module, name, types.MethodType(function, module))
            elif name in module.__dict__:
                delattr(module, name)
    return found
