"""Float module attributes traced as constants, for the compiles seats_fx.compile makes.

Dynamo turns a model's float attributes (RMSNorm epsilon, attention scaling: about three per decoder layer)
into 0-d tensor inputs of its graphs unless `torch._dynamo.config.specialize_float` is set. Every call then
makes those tensors on the host and every decoder piece reads them back with `.item()`; Inductor also
restarts each piece's analysis once over those reads. On an H200 the decoder graph's entry alone took 7 ms of
host time (172 tensors, 87 reads), the GPU idle. Traced as constants, the values are guarded instead (they
never change). The setting is scoped to the compiled callables seats_fx.compile makes, not set for the
process: other compiled code keeps Dynamo's defaults.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch


def with_float_constants(compiled: Callable) -> Callable:
    """Returns `compiled` (a torch.compile'd callable) run with Dynamo tracing float attributes as
    constants: whatever Dynamo traces during a call (the first call's compile, a recompile) does so. A torch
    whose Dynamo has no such setting gets `compiled` back unchanged (the floats stay graph inputs)."""
    if not hasattr(torch._dynamo.config, "specialize_float"):
        return compiled

    @functools.wraps(compiled)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(specialize_float=True):
            return compiled(*args, **kwargs)
    # called from inside a compiled forward (the thinker's forward calls get_video_features), Dynamo would
    # trace this wrapper as frames of their own, two more guarded entries per call; `compiled` is compiled
    # on its own either way
    return torch.compiler.disable(run, recursive=False)
