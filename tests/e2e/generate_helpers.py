"""Helpers shared by the generate() and batch tests (pytest puts this folder on sys.path)."""

import torch

import seats_fx
from seats_fx.decode_step import decode_mask_shared_by_all_layers

from eager_towers import fresh_copy, towers_run_eagerly  # noqa: F401 (fresh_copy: used by the generate tests)
from option_switch import OptionSwitch, switch_for

_compiled: dict = {}


def compiled_copy(model, options: dict, eager_towers: bool = True):
    """seats_fx.compile of a fresh copy of `model`, one per option set. eager_towers (the default): the copy's
    towers run eagerly (eager_towers.towers_run_eagerly), so the compile traces the decoder only and a new
    clip structure costs no retrace; the generate and batch tests are about the decoder."""
    key = (id(model), tuple(sorted(options.items())), eager_towers)
    if key not in _compiled:
        copy = fresh_copy(model)
        if eager_towers:
            towers_run_eagerly(copy)
        _compiled[key] = seats_fx.compile(copy, options)
    return _compiled[key]


def switched_copy(model, option_sets: list[dict]) -> OptionSwitch:
    """compiled_copy for several option sets (each without Inductor) at the cost of one: seats_fx.compile's
    steps on one fresh copy of `model` (towers eager), with a backend that runs each set's own rewrite of
    every graph (option_switch.OptionSwitch). Run `switch.compiled` under `switch.selecting(options)`."""
    return switch_for(model, option_sets, whole_model_of=_eager_towers_copy)


def _eager_towers_copy(model):
    return towers_run_eagerly(fresh_copy(model))


def generate(model, inputs, tokens: int):
    generated, cache, _ = generate_with_logits(model, inputs, tokens)
    return generated, cache


def generate_with_logits(model, inputs, tokens: int):
    """Greedy generate(): (new tokens (B, N), the KV cache, N logits (B, V): the ones each token was chosen from)."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False, return_dict_in_generate=True,
                             output_logits=True)
    return out.sequences[:, inputs["input_ids"].shape[1]:], out.past_key_values, out.logits


def assert_step_logits_match(got, expected, atol: float) -> None:
    """Every step's (B, V) logits of generate() against the reference's, step by step: the same count, then
    close values (a wrong decode position or mask moves them long before it flips a greedy token)."""
    assert len(got) == len(expected), f"{len(got)} steps of logits, the reference has {len(expected)}"
    for step, (logits, reference) in enumerate(zip(got, expected)):
        torch.testing.assert_close(logits.float(), reference.float(), atol=atol, rtol=0,
                                   msg=lambda text, step=step: f"step {step}: {text}")


def cache_lengths(cache) -> list[int]:
    return [layer.keys.shape[-2] for layer in cache.layers]


def expected_cache_lengths(per_layer: list[int]) -> list[int]:
    """The KV-cache lengths a pruned prefill leaves: each layer's own count, or every layer at the widest one
    (fillers, SeatsCall.align_cache) where transformers gives a decode step one mask for all layers
    (transformers 5.17; decode_step.decode_mask_shared_by_all_layers)."""
    if len(set(per_layer)) > 1 and decode_mask_shared_by_all_layers():
        return [max(per_layer)] * len(per_layer)
    return list(per_layer)
