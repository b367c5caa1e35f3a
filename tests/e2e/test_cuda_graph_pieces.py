"""SeatsConfig.cuda_graphs end to end on the tiny thinker, with the CPU stand-in for CUDA graphs
(rerun_recorder.RerunRecorder: a replay spoils what every other graph left in the shared pool). Prompts of two
lengths in turn, so the pieces run, record and replay, each call against the eager reference; then generate(),
whose decode steps read the KV cache a replayed prefill left and replay graphs of their own."""

from __future__ import annotations

import pytest
import torch

import seats_fx
from seats_fx import last_stats
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.passes.piece_graphs import COUNTS
from seats_fx.reference import seats_generate

from eager_towers import fresh_copy, towers_run_eagerly
from generate_helpers import assert_step_logits_match, generate_with_logits
from rerun_recorder import register_rerun_recorder
from test_backend import assert_matches_reference

OPTIONS = dict(progressive_drop_layers=(3, 5), late_block_layer=7, retention=0.2, inductor=False, cuda_graphs=True)


def _counts_since(before) -> dict[str, int]:
    return dict(COUNTS - before)


# the pieces lowered by Inductor (slow tier: a compile of about a minute here) or run eagerly: the graphs are
# recorded around either the same way
@pytest.mark.parametrize("inductor", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["pieces-eager", "pieces-inductor"])
def test_prefills_that_replay_graphs_match_the_reference(thinker_eager_towers, monkeypatch, inductor):
    register_rerun_recorder(monkeypatch)
    options = dict(OPTIONS, inductor=inductor)
    config = thinker_eager_towers.config
    short = synthetic_clip_inputs(config, ClipSpec(video_seconds=4, audio_seconds=3.5, seed=1))
    long = synthetic_clip_inputs(config, ClipSpec(video_seconds=6, audio_seconds=3.5, seed=2))
    per_call = []
    for inputs in (short, long, short, long, short, short):
        before = COUNTS.copy()
        assert_matches_reference(thinker_eager_towers, inputs, options, )
        per_call.append(_counts_since(before))
    pieces = sum(per_call[0].values())
    assert pieces >= 4 and per_call[0] == {"ran": pieces}, per_call  # each piece's first call of a signature
    # the short prompt's second call records every piece the long prompt did not record first (the text-only
    # layers after the late-block cut run on the same tokens for both)
    assert per_call[2]["recorded"] >= pieces - 1 and "ran" not in per_call[2], per_call
    assert per_call[4] == per_call[5] == {"replayed": pieces}, per_call  # then replays them all


def test_generate_over_a_replayed_prefill_matches_the_reference(tiny_thinker, monkeypatch):
    register_rerun_recorder(monkeypatch)
    model = seats_fx.compile(towers_run_eagerly(fresh_copy(tiny_thinker)), OPTIONS)
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4, audio_seconds=3.5, seed=3))
    reference = seats_generate(tiny_thinker, inputs, OPTIONS, max_new_tokens=4)
    per_call = []
    for _ in range(3):  # run, record, replay: the prefill and every decode step
        before = COUNTS.copy()
        generated, _, logits = generate_with_logits(model, inputs, 4)
        per_call.append(_counts_since(before))
        assert last_stats().pruned, last_stats().skipped
        assert torch.equal(last_stats().kept_positions, reference.prefill.kept_positions)
        assert_step_logits_match(logits, reference.logits, 1e-4)
        assert generated.tolist() == reference.tokens.tolist()
    calls = sum(per_call[0].values())
    assert per_call[2] == {"replayed": calls}, per_call


def test_a_model_made_and_run_under_inference_mode_replays_graphs_and_matches_the_reference(tiny_thinker,
                                                                                           monkeypatch):
    """torch.inference_mode, the usual way to serve: its tensors keep no version counter, so neither the pieces'
    check for writes to their inputs nor the lm_head's cached check of its weight can read one. A thinker made
    under it (weights are inference tensors) and run under it records, replays and matches the reference."""
    register_rerun_recorder(monkeypatch)
    with torch.inference_mode():
        model = towers_run_eagerly(fresh_copy(tiny_thinker))
    assert model.lm_head.weight.is_inference()
    inputs = synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4, audio_seconds=3.5, seed=4))
    per_call = []
    with torch.inference_mode():
        for _ in range(3):  # run, record, replay
            before = COUNTS.copy()
            assert_matches_reference(model, inputs, OPTIONS)
            per_call.append(_counts_since(before))
    pieces = sum(per_call[0].values())
    assert per_call[0] == {"ran": pieces} and per_call[2] == {"replayed": pieces}, per_call
