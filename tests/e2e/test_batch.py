"""Batches: each sample keeps what it keeps alone; padding is never kept and never moves a selection."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx import SeatsBackend, last_stats
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import ClipSpec, batch_inputs, synthetic_clip_inputs
from seats_fx.reference import seats_forward, seats_generate

from generate_helpers import compiled_copy, generate

OPTIONS = [
    dict(progressive_drop_layers=(3, 5), late_block_layer=7, retention=0.2),
    dict(progressive_drop_layers=(2,), late_block_layer=5, retention=0.1, stage1=False),
    dict(progressive_drop_layers=(1, 6), stage3=False, video_retention=0.3, audio_retention=0.6),
]
_compiled: dict = {}


def pad_id(model) -> int:
    return token_ids_for_vocab(model.config.text_config.vocab_size)["pad"]


def compiled(model, options):
    key = tuple(sorted(options.items()))
    if key not in _compiled:
        _compiled[key] = torch.compile(model, backend=SeatsBackend(options))
    return _compiled[key]


clip = st.builds(ClipSpec, video_seconds=st.sampled_from([2, 4, 6]), audio_seconds=st.sampled_from([None, 1.0]),
                 seed=st.integers(0, 10_000))


@settings(max_examples=2)
@given(options=st.sampled_from(OPTIONS), clips=st.lists(clip, min_size=2, max_size=3),
       side=st.sampled_from(["left", "right"]))
def test_each_sample_keeps_what_it_keeps_alone(tiny_thinker, options, clips, side):
    check_each_sample_alone(tiny_thinker, options, clips, side)


@pytest.mark.slow
@settings(max_examples=25)
@given(options=st.sampled_from(OPTIONS), clips=st.lists(clip, min_size=2, max_size=4),
       side=st.sampled_from(["left", "right"]))
def test_each_sample_keeps_what_it_keeps_alone_wide(tiny_thinker, options, clips, side):
    check_each_sample_alone(tiny_thinker, options, clips, side)


def check_each_sample_alone(tiny_thinker, options, clips, side):
    options = dict(options, inductor=False)
    singles = [synthetic_clip_inputs(tiny_thinker.config, c) for c in clips]
    batch = batch_inputs(singles, pad_id(tiny_thinker), side)
    with torch.no_grad():
        logits = compiled(tiny_thinker, options)(**batch).logits
    stats = last_stats()
    assert stats.pruned, stats.skipped
    width = batch["input_ids"].shape[1]
    for b, single in enumerate(singles):
        length = single["input_ids"].shape[1]
        offset = width - length if side == "left" else 0
        kept = stats.kept_positions[b]
        kept = kept[kept >= 0]  # -1: entries that only fill this sample up to the batch's width
        assert bool((batch["attention_mask"][b, kept] == 1).all()), "a padding position was kept"
        alone = seats_forward(tiny_thinker, single, options)
        assert torch.equal(kept - offset, alone.kept_positions[0])
        for got, expected in zip(stats.stage_positions, alone.stages):
            row = got[b]
            assert torch.equal(row[row >= 0] - offset, expected.kept_positions[0]), expected.stage
        torch.testing.assert_close(logits[b, kept], alone.logits[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("seconds", [pytest.param((4, 4), marks=pytest.mark.slow), (4, 2),
                                     pytest.param((6, 2, 4), marks=pytest.mark.slow)],
                         ids=["equal-lengths", "padded", "three-padded"])
def test_batch_generate_matches_each_sample_alone(tiny_thinker, seconds):
    # equal lengths: generate() passes no padding mask and each layer caches its own count; padded:
    # every layer caches one width (fillers masked) so transformers' one decode mask fits them all
    options = dict(OPTIONS[0], inductor=False)
    singles = [synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=s, seed=i))
               for i, s in enumerate(seconds)]
    batch = batch_inputs(singles, pad_id(tiny_thinker))
    model = compiled_copy(tiny_thinker, options)
    model.generation_config.pad_token_id = pad_id(tiny_thinker)
    generated, cache = generate(model, batch, 5)
    stats = last_stats()
    assert stats.pruned, stats.skipped
    for b, single in enumerate(singles):
        alone = seats_generate(tiny_thinker, single, options, max_new_tokens=5).tokens[0]
        assert generated[b].tolist() == alone.tolist(), f"sample {b}"
    widths = {layer.keys.shape[-2] for layer in cache.layers}
    assert len(widths) == 1 if len(set(seconds)) > 1 else len(widths) > 2
