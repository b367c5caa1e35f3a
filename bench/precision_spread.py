"""How far bf16 moves the last logits of the 7B-shaped random-weight thinker on the 60 s clip: the same weights
run in bf16 and then in fp32, unpruned (plain eager) and through the eager SEATS reference at R = 0.1. Puts
gpu_check's "max |logit diff| vs the reference" in scale: where the reference's own bf16 and fp32 runs keep
different tokens, a compiled run's different rounding can too. Needs a GPU with ~50 GB (the fp32 copy).

Usage: python -m bench.precision_spread
"""

from __future__ import annotations

import time

import torch

from bench.gpu_check import build, clip_inputs
from seats_fx.reference import seats_forward


def main() -> dict:
    started = time.perf_counter()
    device = torch.device("cuda")
    model = build(False, 28, device, torch.bfloat16)
    options = {"retention": 0.1}
    with torch.inference_mode():
        inputs = clip_inputs(model, 60, 336, device, torch.bfloat16)
        eager_bf16 = model(**inputs, logits_to_keep=1).logits[:, -1].float()
        reference_bf16 = seats_forward(model, inputs, options)
        model.float()
        inputs = clip_inputs(model, 60, 336, device, torch.float32)
        eager_fp32 = model(**inputs, logits_to_keep=1).logits[:, -1].float()
        reference_fp32 = seats_forward(model, inputs, options)
    result = {
        "max_abs_logit_fp32": float(eager_fp32.abs().max()),
        "eager_bf16_vs_fp32": float((eager_bf16 - eager_fp32).abs().max()),
        "reference_bf16_vs_fp32": float((reference_bf16.last_logits.float()
                                         - reference_fp32.last_logits.float()).abs().max()),
        "reference_counts_equal": reference_bf16.layer_counts == reference_fp32.layer_counts,
        "wall_s": time.perf_counter() - started,
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
