"""A dispatch mode that counts reads of one tensor element on the host (.item(), bool(), int()): the tests of
the rope-index rewrites count what transformers' per-token loops read against theirs."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class ScalarReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.reads += 1
        return func(*args, **(kwargs or {}))
