"""Stage-1 weights for the copies generate() makes of each prompt (num_beams, num_return_sequences).

transformers (5.23) encodes a prompt's images and videos once, before the prefill, and expands the batch by
repeating every sample k times (input_ids.repeat_interleave(k)) and the encoder outputs to match, so the
prefill's sample i is a copy of the original sample i // k. The vision tower's last attention, which stage 1
weighs tokens by, was recorded once, over the original samples only: k times fewer weights than the prefill
has tokens. Each copy gets its original's weights, exactly what a batch-1 run of that prompt would use.
"""

from __future__ import annotations

import torch


def weights_for_copies(weights: torch.Tensor, per_sample: list[int]) -> torch.Tensor | None:
    """Returns the weights of every token of a kind in the prefill, in row-major order, from `weights`, one
    per token of the original samples in row-major order; None unless the counts show k >= 2 copies of each
    original sample in turn (per_sample: the prefill's tokens of that kind, per sample)."""
    total, batch = weights.numel(), len(per_sample)
    if total == 0 or sum(per_sample) % total:
        return None
    copies = sum(per_sample) // total
    if copies < 2 or batch % copies:
        return None
    originals = per_sample[::copies]
    if sum(originals) != total or any(count != originals[i // copies] for i, count in enumerate(per_sample)):
        return None
    starts = [0]
    for count in originals:
        starts.append(starts[-1] + count)
    return torch.cat([weights[starts[i // copies]:starts[i // copies + 1]] for i in range(batch)])
