"""FLOPs of a decoder run: measured with torch.utils.flop_counter, and predicted from token counts."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# FlopCounterMode has no formula for the CPU SDPA kernel and counts it as 0 FLOPs (torch 2.13), which
# would hide the quadratic attention cost that pruning removes; count it like the other SDPA kernels.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_SDPA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


def measured_flops(run: Callable[[], object]) -> int:
    """Returns the FLOPs FlopCounterMode counts while `run()` executes (CPU SDPA included)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        run()
    return counter.get_total_flops()


def predicted_decoder_flops(layer_tokens: list[int], layer: nn.Module, num_heads: int, head_dim: int,
                            lm_head_tokens: int, hidden_size: int, vocab_size: int) -> int:
    """Returns the matmul FLOPs of decoder layers that process layer_tokens[l] tokens each, plus lm_head.

    Per layer: 2 * n * (weights of its linear layers) + 4 * n^2 * heads * head_dim (scores and values,
    counted as FlopCounterMode counts SDPA: the full square). MoE layers are not modelled here.
    """
    linear_weights = sum(m.weight.numel() for m in layer.modules() if isinstance(m, nn.Linear))
    total = sum(2 * n * linear_weights + 4 * n * n * num_heads * head_dim for n in layer_tokens)
    return total + 2 * lm_head_tokens * hidden_size * vocab_size
