"""The mutation check: break one SEATS rule on purpose and require the tests written for it to fail.

A test that passes whatever the code does proves nothing. Each mutant below replaces one piece of the code the
way a plausible bug would (weights ignored, a position off by one), runs the tests meant to catch it, and
requires an AssertionError from each; the same tests pass on the real code (checked here too, so a mutant that
"fails" because the test was already broken does not count, unless the suite runs that very test unpatched
anyway). Runs in the default suite, but for the generate() mutant (a generate compile of its own: slow tier).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import seats_fx.decode_step as decode_step
import seats_fx.ops.budget as budget
import seats_fx.ops.diversity as diversity
import seats_fx.ops.stage_select as stage_select
import test_oracles as oracles
from seats_fx.runtime import PrefillRecord, set_prefill_record

# tests/ (the decode-step unit tests) and tests/e2e (generate()), as pytest puts them on sys.path for their own
# files; importing the same module names shares their compiled models when the whole suite runs
for folder in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parents[1] / "e2e"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
import test_decode_step as decode_tests  # noqa: E402


def replace(monkeypatch, module, name: str, replacement) -> None:
    """Patches module.name; fails (not errors) when the rule moved, so the mutant gets pointed at its new home."""
    if not hasattr(module, name):
        pytest.fail(f"this mutant replaces {module.__name__}.{name}, which no longer exists: move the mutant "
                    "to where that rule lives now")
    monkeypatch.setattr(module, name, replacement)


def assert_caught(monkeypatch, mutate, *tests, clean_first: bool = True) -> None:
    """Each test passes on the code as it is and raises AssertionError once `mutate(monkeypatch)` ran.
    clean_first=False skips the clean run where the suite itself runs that very test unpatched."""
    for test in tests if clean_first else ():
        test()
    with monkeypatch.context() as patch:
        mutate(patch)
        for test in tests:
            with pytest.raises(AssertionError):
                test()


# ---- stage 2: budgets that ignore relevance -------------------------------------------------------
def _uniform_window_weights(patch) -> None:
    def uniform(scores: torch.Tensor, temperature: float) -> torch.Tensor:
        present = torch.isfinite(scores).double()
        return present / present.sum().clamp_min(1)

    replace(patch, budget, "_masked_softmax", uniform)


def test_uniform_stage2_window_weights_are_caught(monkeypatch):
    assert_caught(monkeypatch, _uniform_window_weights, oracles.test_stage2_corner_budgets_on_the_definition)


# ---- stage 1: selection that ignores the encoder weights (SEATS becomes DivPrune) -----------------
def _stage1_without_weights(patch) -> None:
    weighted = stage_select.diversity_select
    replace(patch, stage_select, "diversity_select",
            lambda embeds, weights, k: weighted(embeds, torch.ones_like(weights), k))


def _max_min_without_weights(patch) -> None:
    distance = diversity.weighted_cosine_distance
    replace(patch, diversity, "weighted_cosine_distance",
            lambda embeds, weights: distance(embeds, torch.ones_like(weights)))


def test_stage1_grouping_without_encoder_weights_is_caught(monkeypatch):
    assert_caught(monkeypatch, _stage1_without_weights, oracles.test_stage1_corners_on_the_definition)


def test_max_min_distances_without_encoder_weights_are_caught(monkeypatch):
    assert_caught(monkeypatch, _max_min_without_weights, oracles.test_max_min_corners_on_the_definition)


# ---- stage-1 weights: vision tokens weighted in the tower's order, not the LLM's -------------------
def _vision_weights_in_tower_order(patch) -> None:
    """The vision tower attends in window order; its per-token weights must be put back in the order the
    LLM sees the tokens. Mutant: they are not (each LLM token gets another token's weight)."""
    from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter

    unit = Qwen2_5OmniAdapter.spatial_merge_unit
    replace(patch, Qwen2_5OmniAdapter, "vision_token_weights",
            staticmethod(lambda patch_weights, window_index: patch_weights.view(-1, unit).mean(dim=1)))


def test_vision_weights_in_the_towers_window_order_are_caught(tiny_thinker, monkeypatch):
    clip = oracles.weight_clip_inputs(tiny_thinker.config)
    assert_caught(monkeypatch, _vision_weights_in_tower_order,
                  lambda: oracles.test_encoder_weights_are_the_attention_received_in_the_last_encoder_layers(
                      tiny_thinker, clip), clean_first=False)


# ---- decode steps: positions one further than the unpruned model's --------------------------------
def _decode_positions_plus_one(patch) -> None:
    """seats_decode_step moves transformers' positions to the unpruned model's: make it land one further
    (and check against one further), as an off-by-one in counting the prompt or the pruned tokens would."""
    recorded = decode_step.prefill_record

    def shifted():
        record = recorded()
        if record is None:
            return None
        return PrefillRecord(record.input_length + 1, record.layer_lengths, record.layer_valid,
                             record.next_position + 1)

    replace(patch, decode_step, "prefill_record", shifted)


def test_a_decode_position_shift_is_caught_by_the_decode_step_unit_tests(monkeypatch):
    def unit_test():
        try:
            decode_tests.test_positions_from_the_cache_length_are_moved_to_the_unpruned_models(
                lambda record: set_prefill_record(record), 1)
        finally:
            set_prefill_record(None)

    assert_caught(monkeypatch, _decode_positions_plus_one, unit_test)


def _reference_decode_positions_plus_one(patch) -> None:
    """The eager reference decoder's generated tokens one position further than the unpruned model's (the
    shift the issue tried by hand): generate()'s decode positions come from transformers' rope deltas, so
    the generate test must see a decoder that disagrees with them by one."""
    from seats_fx.models.thinker import ThinkerAdapter

    rotary = ThinkerAdapter.rotary
    replace(patch, ThinkerAdapter, "rotary", lambda self, hidden, positions: rotary(
        self, hidden, positions + 1 if hidden.shape[1] == 1 else positions))


def test_a_decode_position_shift_is_caught_by_the_generate_test(tiny_thinker, monkeypatch):
    import test_generate
    from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

    # the first generate corner's options and clip shape: the corner test runs this very check unpatched
    options, corner = test_generate.GENERATE_CORNERS[0]
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=corner.video_seconds,
                                                                 audio_seconds=corner.audio_seconds, seed=5))
    assert_caught(monkeypatch, _reference_decode_positions_plus_one,
                  lambda: test_generate.assert_generate_matches_reference(tiny_thinker, inputs, options, tokens=3),
                  clean_first=False)
