"""Helpers shared by the generate() and batch tests (pytest puts this folder on sys.path)."""

import torch

import seats_fx

_compiled: dict = {}


def fresh_copy(model):
    """A new thinker with `model`'s weights (seats_fx.compile changes the model it is given)."""
    copy = type(model)(model.config).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def compiled_copy(model, options: dict):
    key = (id(model), tuple(sorted(options.items())))
    if key not in _compiled:
        _compiled[key] = seats_fx.compile(fresh_copy(model), options)
    return _compiled[key]


def generate(model, inputs, tokens: int):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False, return_dict_in_generate=True)
    return out.sequences[:, inputs["input_ids"].shape[1]:], out.past_key_values


def cache_lengths(cache) -> list[int]:
    return [layer.keys.shape[-2] for layer in cache.layers]
