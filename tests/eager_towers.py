"""Tiny thinkers whose encoder towers run eagerly inside a compiled forward, for the decoder-selection tests."""

from __future__ import annotations

from copy import deepcopy

import torch

from seats_fx import use_fast_encoders
from seats_fx.encoder_attention import encoder_towers


def fresh_copy(model):
    """A new thinker with `model`'s weights and a config of its own (a test may change the copy's config)."""
    copy = type(model)(deepcopy(model.config)).eval()
    copy.load_state_dict(model.state_dict())
    return copy


def towers_run_eagerly(model):
    """`model` (changed in place) with the fast encoder towers, whose last layers record stage 1's q/k
    (what seats_fx.compile sets), and whose forwards Dynamo skips: they run eagerly inside a compiled forward,
    as generate() runs them before the prefill.

    For the tests of what the decoder rewrite selects: the stage-1 signal is the same full encoder attention
    (the op's record instead of the graph's tap), but a compile traces the decoder and its glue only (about
    19 s here instead of 50-60 s), and a new clip structure costs no retrace of the towers' per-frame and
    per-chunk loops, so one dynamic compile serves every clip a property draws. The towers inside the compiled
    graph (the headline usage's path: locate's encoder taps) keep their own tests: test_headline_usage.py,
    test_locate.py, test_fast_encoders.py, the Qwen3-Omni prompts, the compat smoke subset and one fuzz shard.
    """
    use_fast_encoders(model, stage1_taps=True)
    for tower in encoder_towers(model).values():
        tower.forward = torch.compiler.disable(tower.forward)
    return model
