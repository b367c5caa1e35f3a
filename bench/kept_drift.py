"""Kept-position drift of seats_fx.compile against the eager reference, on CPU, with real-shaped Qwen2.5-Omni
towers (the 7B checkpoint's 32-layer vision and audio towers, random weights) and a small decoder: the question
an H200 check left open (in bf16 there, about a third of stage 1's kept positions differed from the
reference's). Run once in bf16 with Inductor, in bf16 with the rewritten graphs run eagerly, and in fp32 with
Inductor, it tells Inductor's bf16 rounding apart from a selection bug: only the first differs.

Usage: python -m bench.kept_drift [--dtype bfloat16|float32] [--no-inductor]   (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

import seats_fx
from bench.gpu_check import clip_inputs, kept_against, random_thinker
from seats_fx import last_stats
from seats_fx.models.configs import real_qwen2_5_omni_config
from seats_fx.reference import seats_forward


def real_towers_small_decoder(dtype: torch.dtype) -> Qwen2_5OmniThinkerForConditionalGeneration:
    config = real_qwen2_5_omni_config("7B")
    text = config.text_config
    # head_dim stays 128, so the checkpoint's TMRoPE sections still fit
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 512, 1024, 8
    text.num_attention_heads, text.num_key_value_heads = 4, 2
    config.vision_config.out_hidden_size = text.hidden_size
    config.audio_config.output_dim = text.hidden_size
    return random_thinker(config, torch.device("cpu"), dtype)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--inductor", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seconds", type=int, default=2)
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    model = real_towers_small_decoder(dtype)
    inputs = clip_inputs(model, args.seconds, 224, torch.device("cpu"), dtype, seed=1)
    options = {"retention": 0.1, "inductor": args.inductor}
    started = time.perf_counter()
    with torch.inference_mode():
        reference = seats_forward(model, inputs, options)
        seats_fx.compile(model, options)
        logits = model(**inputs, logits_to_keep=1).logits[:, -1].float()
    stats = last_stats()
    result = {"dtype": args.dtype, "inductor": args.inductor, "seconds": args.seconds,
              "kept_vs_reference": kept_against(stats.stage_positions, reference.stages),
              "max_abs_logit_diff": float((logits - reference.last_logits.float()).abs().max()),
              "max_abs_logit": float(reference.last_logits.float().abs().max()),
              "wall_s": time.perf_counter() - started}
    print(result)
    return result


if __name__ == "__main__":
    main()
