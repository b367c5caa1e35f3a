"""Inductor config patches for known bugs of a torch release, applied to every graph seats lowers.

torch 2.11's C++ code generation emits an indirect-indexing bounds check before the index it checks is declared
("'tmp2' was not declared in this scope") for masks built by indexing with positions: the decoder's causal-mask
arithmetic in seats' pieces, and transformers' own mask graphs in a second prompt length of Qwen3-Omni's
generate(). Without the check the kernel compiles; the indices are in bounds by construction (positions of
tokens of the prompt). A patch is an Inductor config change, so it is in the cache key of what it compiles.
"""

from __future__ import annotations

import torch

_CPP_INDEX_CHECK_BROKEN = torch.__version__.startswith("2.11.")


def known_bug_patches(example_inputs) -> dict:
    """Returns the Inductor config patches a graph with these inputs needs under this torch (often none)."""
    if _CPP_INDEX_CHECK_BROKEN and any(isinstance(x, torch.Tensor) and x.device.type == "cpu" for x in example_inputs):
        return {"assert_indirect_indexing": False}
    return {}
