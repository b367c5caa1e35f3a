"""seats_fx.decode_step: a decode step's positions and per-layer masks over a pruned KV cache, with
expectations worked out by hand from what the prefill left (PrefillRecord)."""

import pytest
import torch

from seats_fx import decode_step
from seats_fx.runtime import PrefillRecord, set_prefill_record

# A 10-token prompt whose TMRoPE positions end at 6 (a clip compresses time: the first generated token
# sits at 7, not 10); layers 0-1 cached 6 tokens after stage 1, layer 2 cached 4 after a stage-2 drop.
PROMPT_LENGTH, NEXT_POSITION, LAYER_LENGTHS = 10, 7, [6, 6, 4]


@pytest.fixture
def prefill():
    """Installs a record as the last prefill on this thread; removes it afterwards."""
    def install(record: PrefillRecord) -> PrefillRecord:
        set_prefill_record(record)
        return record

    yield install
    set_prefill_record(None)


def _keys(*lengths: int, batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, 2, n, 4) for n in lengths]


def _hf_positions(cached_in_layer0: int, batch: int = 1) -> torch.Tensor:
    """(3, B, 1) positions as transformers computes them without a padding mask: layer 0's cache length
    plus the rope delta (next position - prompt length), on all three axes."""
    return torch.full((3, batch, 1), cached_in_layer0 + NEXT_POSITION - PROMPT_LENGTH)


# ---- _steps_since_prefill -------------------------------------------------------------------------
def _record(lengths=LAYER_LENGTHS, valid=None, batch: int = 1) -> PrefillRecord:
    return PrefillRecord(PROMPT_LENGTH, list(lengths), valid, torch.full((batch,), NEXT_POSITION))


@pytest.mark.parametrize("lengths, steps", [([6, 6, 4], 0), ([7, 7, 5], 1), ([11, 11, 9], 5)])
def test_steps_since_prefill_counts_tokens_appended_to_every_layer(lengths, steps):
    assert decode_step._steps_since_prefill(_record(), lengths) == steps


@pytest.mark.parametrize("lengths", [[7, 6, 4], [7, 7, 4], [5, 5, 3], [6, 6], [6, 6, 4, 4]],
                         ids=["one-layer-ahead", "last-layer-behind", "shorter-than-recorded", "fewer-layers",
                              "more-layers"])
def test_steps_since_prefill_refuses_a_cache_the_record_does_not_describe(lengths):
    with pytest.raises(RuntimeError, match=r"does not continue the last pruned prefill.*\[6, 6, 4\]"):
        decode_step._steps_since_prefill(_record(), lengths)


# ---- _layer_mask ----------------------------------------------------------------------------------
VALID = torch.tensor([[False, True, True], [True, True, True]])  # sample 0's first entry is padding


@pytest.mark.parametrize("like", [None, torch.ones(1, dtype=torch.bool)], ids=["no-mask", "bool-mask"])
def test_layer_mask_is_bool_cached_validity_then_every_generated_token(like):
    mask = decode_step._layer_mask(VALID, 2, like)
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 1, 6)
    assert mask[:, 0, 0].tolist() == [[False, True, True, True, True, True], [True] * 6]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_layer_mask_as_additive_float_mask(dtype):
    mask = decode_step._layer_mask(VALID, 0, torch.zeros(1, dtype=dtype))
    low = torch.finfo(dtype).min
    assert mask.dtype == dtype and mask.shape == (2, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[low, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]


# ---- seats_decode_step ----------------------------------------------------------------------------
def test_without_a_prefill_record_everything_passes_through(prefill):
    set_prefill_record(None)
    positions, mask = _hf_positions(12), torch.zeros(1, 1, 1, 13)
    out_positions, masks = decode_step.seats_decode_step(positions, True, mask, *_keys(12, 12, 12))
    assert out_positions is positions and len(masks) == 3 and all(m is mask for m in masks)


def test_without_a_prefill_record_a_ragged_cache_is_refused(prefill):
    set_prefill_record(None)
    with pytest.raises(RuntimeError, match=r"layers hold \[6, 6, 4\] tokens"):
        decode_step.seats_decode_step(_hf_positions(6), True, None, *_keys(6, 6, 4))


@pytest.mark.parametrize("steps", [0, 1, 3])
def test_positions_from_the_cache_length_are_moved_to_the_unpruned_models(prefill, steps):
    # transformers counted layer 0's 6 + steps cached tokens; the unpruned model gives position 7 + steps
    prefill(_record())
    positions, masks = decode_step.seats_decode_step(_hf_positions(6 + steps), True, None,
                                                     *_keys(6 + steps, 6 + steps, 4 + steps))
    assert positions.tolist() == [[[NEXT_POSITION + steps]]] * 3
    assert masks == (None, None, None)


def test_positions_from_a_padding_mask_are_left_as_transformers_computed_them(prefill):
    prefill(_record())
    given = torch.full((3, 1, 1), NEXT_POSITION + 1)
    positions, _ = decode_step.seats_decode_step(given, False, None, *_keys(7, 7, 5))
    assert positions is given


def test_positions_that_do_not_continue_the_prompt_are_refused(prefill):
    prefill(_record())
    with pytest.raises(RuntimeError, match=r"decode positions \[\[8\], \[8\], \[8\]\] do not continue the "
                                           r"prompt's positions \(expected \[7\]\)"):
        decode_step.seats_decode_step(_hf_positions(7), True, None, *_keys(6, 6, 4))  # one step ahead


def test_each_layer_gets_its_own_float_mask_over_what_it_cached(prefill):
    prefill(_record())
    shared = torch.zeros(1, 1, 1, 6 + 2, dtype=torch.float32)  # sized by layer 0, as transformers builds it
    _, masks = decode_step.seats_decode_step(_hf_positions(6 + 1), True, shared, *_keys(7, 7, 5))
    assert [tuple(m.shape) for m in masks] == [(1, 1, 1, 8), (1, 1, 1, 8), (1, 1, 1, 6)]
    assert all(m.dtype == torch.float32 and bool((m == 0).all()) for m in masks)


def test_padded_batch_masks_keep_each_layers_padding_out(prefill):
    # batch of 2 padded to one width per layer (seats_align_cache): sample 1 is shorter, its first cached
    # entries are fillers in every layer; layer 2 kept one filler more
    valid = [torch.tensor([[True, True, True, True], [False, True, True, True]]),
             torch.tensor([[True, True, True, True], [False, True, True, True]]),
             torch.tensor([[True, True, True], [False, False, True]])]
    prefill(PrefillRecord(PROMPT_LENGTH, [4, 4, 3], valid, torch.tensor([NEXT_POSITION, NEXT_POSITION - 2])))
    given = torch.tensor([[[7], [5]]]).expand(3, 2, 1)
    shared = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    positions, masks = decode_step.seats_decode_step(given, False, shared, *_keys(5, 5, 4, batch=2))
    assert positions is given
    assert [m[:, 0, 0].tolist() for m in masks] == [
        [[True, True, True, True, True, True], [False, True, True, True, True, True]],
        [[True, True, True, True, True, True], [False, True, True, True, True, True]],
        [[True, True, True, True, True], [False, False, True, True, True]],
    ]
    _, float_masks = decode_step.seats_decode_step(given, False, shared.float(), *_keys(5, 5, 4, batch=2))
    low = torch.finfo(torch.float32).min
    assert float_masks[2][:, 0, 0].tolist() == [[0.0] * 5, [low, low, 0.0, 0.0, 0.0]]
