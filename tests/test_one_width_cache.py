"""One-width KV caches: where transformers gives a decode step one mask for all layers, a pruned prefill writes
every layer's cache at the widest layer's count (SeatsCall.align_cache), and nowhere else.

The decision (decode_step.decode_mask_shared_by_all_layers) is checked against what it stands for: a real
transformers decoder, traced by Dynamo over a cache whose layers hold different counts, fails exactly where
it says the mask is shared. The filling is checked against attention over the unfilled cache."""

import pytest
import torch
from torch.nn.functional import scaled_dot_product_attention

from seats_fx import call as call_module
from seats_fx.call import SeatsCall
from seats_fx.decode_step import decode_mask_shared_by_all_layers, seats_decode_step
from seats_fx.runtime import PrefillRecord, prefill_record, set_prefill_record

# a 10-token prompt pruned to 6 cached tokens in layers 0-1 and 4 in layer 2; the next position is 7
PROMPT_LENGTH, NEXT_POSITION, LAYER_LENGTHS = 10, 7, [6, 6, 4]


@pytest.fixture
def record():
    """The last prefill on this thread left LAYER_LENGTHS (every entry a real token); removed afterwards."""
    installed = PrefillRecord(PROMPT_LENGTH, list(LAYER_LENGTHS), None, torch.tensor([NEXT_POSITION]))
    set_prefill_record(installed)
    yield installed
    set_prefill_record(None)


def _unpadded_call() -> SeatsCall:
    """The host state align_cache reads of a batch-1 prompt without padding that was pruned."""
    call = object.__new__(SeatsCall)
    call.active, call.padded_prompt = True, False
    call.valid = torch.ones(1, PROMPT_LENGTH, dtype=torch.long)
    return call


def _written() -> tuple[torch.Tensor, ...]:
    """Keys and values (1, 2 heads, n, 4) per layer, as the layers hand them to the cache (k0, v0, k1, ...)."""
    torch.manual_seed(0)
    return tuple(torch.randn(1, 2, n, 4) for n in LAYER_LENGTHS for _ in range(2))


def test_a_shared_decode_mask_gets_one_width_whose_fillers_no_layer_attends_to(record, monkeypatch):
    monkeypatch.setattr(call_module, "decode_mask_shared_by_all_layers", lambda: True)
    written = _written()
    aligned = _unpadded_call().align_cache(written)
    assert [t.shape[-2] for t in aligned] == [6] * 6
    # layer 2's 4 entries keep their values, behind 2 zero fillers recorded as not valid
    assert torch.equal(aligned[4][:, :, 2:], written[4]) and not aligned[4][:, :, :2].any()
    filled = prefill_record()
    assert filled.layer_lengths == [6, 6, 6]
    assert [v.tolist() for v in filled.layer_valid] == [[[True] * 6], [[True] * 6], [[False] * 2 + [True] * 4]]
    # the first decode step: transformers' one mask for all layers, sized by layer 0 (6 cached + the new token);
    # each layer's own mask over the one-width cache attends as the layer's unfilled cache would
    shared = torch.ones(1, 1, 1, 7, dtype=torch.bool)
    positions = torch.full((3, 1, 1), 6 + NEXT_POSITION - PROMPT_LENGTH)  # from layer 0's cache length
    positions, masks = seats_decode_step(positions, True, shared, *aligned[::2])
    assert positions.flatten().tolist() == [NEXT_POSITION] * 3
    query, new_key, new_value = torch.randn(3, 1, 2, 1, 4).unbind(0)
    for layer in range(3):
        keys, values = written[2 * layer], written[2 * layer + 1]
        expected = scaled_dot_product_attention(query, torch.cat([keys, new_key], 2), torch.cat([values, new_value], 2))
        got = scaled_dot_product_attention(query, torch.cat([aligned[2 * layer], new_key], 2),
                                           torch.cat([aligned[2 * layer + 1], new_value], 2), attn_mask=masks[layer])
        torch.testing.assert_close(got, expected, msg=lambda text, layer=layer: f"layer {layer}: {text}")


def test_per_layer_decode_masks_keep_the_pruned_counts_without_fillers(record, monkeypatch):
    monkeypatch.setattr(call_module, "decode_mask_shared_by_all_layers", lambda: False)
    written = _written()
    assert _unpadded_call().align_cache(written) is written
    assert prefill_record() is record


def test_a_padded_prompt_gets_one_width_whatever_the_decode_mask(monkeypatch):
    """Padding: transformers builds the decode mask from the 2-D padding mask, once, for all layers."""
    monkeypatch.setattr(call_module, "decode_mask_shared_by_all_layers", lambda: False)
    # a batch of 2 whose second sample is padded at the front: its first cached entry in layers 0-1 is padding
    valid = [torch.tensor([[True] * 4, [False] + [True] * 3])] * 2 + [torch.tensor([[True] * 3, [True] * 3])]
    set_prefill_record(PrefillRecord(PROMPT_LENGTH, [4, 4, 3], valid, torch.tensor([NEXT_POSITION] * 2)))
    call = _unpadded_call()
    call.padded_prompt, call.valid = True, torch.ones(2, PROMPT_LENGTH, dtype=torch.long)
    try:
        written = tuple(torch.randn(2, 2, n, 4) for n in (4, 4, 3) for _ in range(2))
        aligned = call.align_cache(written)
        assert [t.shape[-2] for t in aligned] == [4] * 6 and aligned[0] is written[0]
        assert torch.equal(aligned[5][:, :, 1:], written[5]) and not aligned[5][:, :, :1].any()
        filled = prefill_record()
        assert filled.layer_lengths == [4, 4, 4]
        assert filled.layer_valid[1] is valid[1]
        assert filled.layer_valid[2].tolist() == [[False] + [True] * 3] * 2
    finally:
        set_prefill_record(None)


def test_a_cache_of_one_width_already_is_left_as_it_is(monkeypatch):
    def not_asked():
        raise AssertionError("no layers of different widths to align: the decode mask does not matter")

    monkeypatch.setattr(call_module, "decode_mask_shared_by_all_layers", not_asked)
    installed = PrefillRecord(PROMPT_LENGTH, [6, 6, 6], None, torch.tensor([NEXT_POSITION]))
    set_prefill_record(installed)
    try:
        written = tuple(torch.randn(1, 2, 6, 4) for _ in range(6))
        assert _unpadded_call().align_cache(written) is written
        assert prefill_record() is installed
    finally:
        set_prefill_record(None)


def test_the_decision_says_where_a_dynamo_traced_decode_step_over_uneven_layers_fails():
    """A 2-layer Qwen2 decoder (the thinkers' text model builds its masks the same way): one token over a
    cache of 3 tokens in layer 0 and 2 in layer 1, traced by Dynamo. With one mask for all layers (sized
    3 + 1) layer 1's attention over 2 + 1 keys cannot be traced; with per-layer masks it runs."""
    from transformers import DynamicCache, Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, attn_implementation="sdpa")
    model = Qwen2Model(config).eval()
    cache = DynamicCache(config=config)
    for layer, length in enumerate((3, 2)):
        cache.update(torch.randn(1, 1, length, 4), torch.randn(1, 1, length, 4), layer)
    compiled = torch.compile(model, backend="eager")
    try:
        with torch.no_grad():
            compiled(input_ids=torch.tensor([[1]]), past_key_values=cache, use_cache=True)
        failed = None
    except Exception as error:  # Dynamo wraps the fake-tensor failure in its own error types
        failed = error
    assert (failed is not None) == decode_mask_shared_by_all_layers(), failed
    if failed is not None:  # layer 1's attention, handed the mask sized by layer 0's cache (3 + 1 keys)
        assert "scaled_dot_product_attention" in str(failed) and "size=(1, 1, 1, 4)" in str(failed), failed
