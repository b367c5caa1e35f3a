"""Batches: each sample keeps what it keeps alone; padding is never kept and never moves a selection."""

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seats_fx import SeatsBackend, last_stats
from seats_fx.models.configs import token_ids_for_vocab
from seats_fx.models.synthetic import (ClipSpec, batch_inputs, synthetic_audio_inputs, synthetic_clip_inputs,
                                       synthetic_image_inputs)
from seats_fx.reference import seats_forward, seats_generate
from seats_fx.runtime import set_last_stats

from generate_helpers import assert_step_logits_match, compiled_copy, generate_with_logits
from option_switch import OptionSwitch, switch_for

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
        _compiled[key] = torch.compile(model, backend=SeatsBackend(options), dynamic=True)
    return _compiled[key]


# Sample kinds a batch mixes. transformers' use_audio_in_video is one flag for the whole batch, so a video with
# its audio track ("clip") and a video without one ("video") never share a batch; text-only, image and
# audio-only samples go with either.
WITH_AUDIO_IN_VIDEO = ("text", "clip", "image", "audio")
WITHOUT_AUDIO_IN_VIDEO = ("text", "video", "image", "audio")


def sample_inputs(config, kind: str, seconds: int, seed: int) -> dict:
    """One sample's forward() kwargs of the given kind (seconds: the clip's or the audio's length)."""
    if kind == "text":
        ids = torch.randint(0, 900, (1, 12 + seconds), generator=torch.Generator().manual_seed(seed))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind in ("clip", "video"):
        audio_seconds = None if kind == "clip" else 0  # None: as long as the video
        return synthetic_clip_inputs(config, ClipSpec(video_seconds=seconds, audio_seconds=audio_seconds, seed=seed))
    if kind == "image":
        return synthetic_image_inputs(config, 56 if seconds == 2 else 112, 84, seed=seed)
    if kind == "audio":
        return synthetic_audio_inputs(config, float(seconds), seed=seed)
    raise ValueError(f"unknown sample kind {kind!r}")


def mixed_batch(samples: list[dict], pad: int, side: str) -> dict:
    """Returns one batch of single-sample kwargs of any kinds, laid out as the processor batches them: ids and
    masks padded on `side`, each media tensor concatenated over the samples that have one (models.synthetic's
    batch_inputs needs every sample with audio or none)."""
    if all(("input_features" in s) == ("input_features" in samples[0]) for s in samples):
        return batch_inputs(samples, pad, side)
    width = max(s["input_ids"].shape[1] for s in samples)
    missing = [width - s["input_ids"].shape[1] for s in samples]
    pads = [(m, 0) if side == "left" else (0, m) for m in missing]
    pad_to = torch.nn.functional.pad
    batch = {"input_ids": torch.cat([pad_to(s["input_ids"], p, value=pad) for s, p in zip(samples, pads)]),
             "attention_mask": torch.cat([pad_to(s["attention_mask"], p, value=0) for s, p in zip(samples, pads)])}
    for key in ("pixel_values_videos", "video_grid_thw", "video_second_per_grid", "pixel_values", "image_grid_thw",
                "input_features", "feature_attention_mask"):
        parts = [s[key] for s in samples if key in s]
        if parts:
            batch[key] = torch.cat(parts)
    if any(s.get("use_audio_in_video") for s in samples):
        batch["use_audio_in_video"] = True
    return batch


@st.composite
def batches(draw, kinds=None):
    """(kinds, seconds, seeds) of a batch of 2-3 samples with at least one holding video or audio."""
    if kinds is None:
        family = draw(st.sampled_from([WITH_AUDIO_IN_VIDEO, WITHOUT_AUDIO_IN_VIDEO]))
        kinds = draw(st.lists(st.sampled_from(family), min_size=2, max_size=3))
        if all(kind == "text" for kind in kinds):
            kinds[0] = family[1]
    seconds = [draw(st.sampled_from([2, 4, 6])) for _ in kinds]
    seeds = [draw(st.integers(0, 10_000)) for _ in kinds]
    return list(kinds), seconds, seeds


# one mixed corner batch each run (the paper's schedule over text, video and image); hypothesis varies
# lengths, content and the padding side. The other option sets' corners are explicit cases of the slow search.
CORNER_BATCHES = [
    pytest.param(OPTIONS[0], ("text", "video", "image"), id="drops-3-5-text-video-image"),
]


@pytest.mark.parametrize("options, kinds", CORNER_BATCHES)
@settings(max_examples=1)
@given(data=st.data(), side=st.sampled_from(["left", "right"]))
def test_each_sample_keeps_what_it_keeps_alone(thinker_eager_towers, options, kinds, data, side):
    check_each_sample_alone(thinker_eager_towers, options, data.draw(batches(kinds)), side)


@pytest.mark.slow
@settings(max_examples=10)  # each case runs the batch and each of its samples, compiled and in the reference
@given(options=st.sampled_from(OPTIONS), batch=batches(), side=st.sampled_from(["left", "right"]))
@example(options=OPTIONS[1], batch=(["clip", "text", "audio"], [4, 2, 6], [11, 12, 13]), side="left")
@example(options=OPTIONS[2], batch=(["image", "clip"], [6, 4], [21, 22]), side="right")
def test_each_sample_keeps_what_it_keeps_alone_wide(thinker_eager_towers, options, batch, side):
    # one trace for the three option sets: a batch structure drawn under one set is not traced again under another
    check_each_sample_alone(thinker_eager_towers, options, batch, side, switch_for(thinker_eager_towers, OPTIONS))


def expected_rows(alone, stages, length: int) -> list[torch.Tensor]:
    """The positions one sample keeps after each stage of the batch, from its reference run alone: a stage the
    sample skipped alone (no video or audio left for it) keeps what it held."""
    by_stage = {(record.stage, record.after_layer): record.kept_positions[0] for record in alone.stages}
    missing = set(by_stage) - {(stage, layer) for stage, layer, _ in stages}
    assert not missing, f"stages the sample ran alone but not in the batch: {sorted(missing)}"
    rows, current = [], torch.arange(length)
    for stage, layer, _ in stages:
        current = by_stage.get((stage, layer), current)
        rows.append(current)
    return rows


def check_each_sample_alone(model, options, batch_spec, side, switch: OptionSwitch | None = None):
    options = dict(options, inductor=False)
    run = switch.for_options(options) if switch is not None else compiled(model, options)
    kinds, seconds, seeds = batch_spec
    singles = [sample_inputs(model.config, kind, s, seed) for kind, s, seed in zip(kinds, seconds, seeds)]
    batch = mixed_batch(singles, pad_id(model), side)
    set_last_stats(None)  # the stats read below are this call's
    with torch.no_grad():
        logits = run(**batch).logits
    stats = last_stats()
    assert stats.pruned, stats.skipped
    assert len(stats.stage_positions) == len(stats.stages)
    width = batch["input_ids"].shape[1]
    for b, single in enumerate(singles):
        length = single["input_ids"].shape[1]
        offset = width - length if side == "left" else 0
        kept = stats.kept_positions[b]
        kept = kept[kept >= 0]  # -1: entries that only fill this sample up to the batch's width
        assert bool((batch["attention_mask"][b, kept] == 1).all()), "a padding position was kept"
        alone = seats_forward(model, single, options)
        assert torch.equal(kept - offset, alone.kept_positions[0]), kinds[b]
        for got, expected, (stage, layer, _) in zip(stats.stage_positions, expected_rows(alone, stats.stages, length),
                                                     stats.stages):
            row = got[b]
            assert torch.equal(row[row >= 0] - offset, expected), (kinds[b], stage, layer)
        torch.testing.assert_close(logits[b, kept], alone.logits[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("seconds", [pytest.param((4, 4), marks=pytest.mark.slow), (4, 2),
                                     pytest.param((6, 2, 4), marks=pytest.mark.slow)],
                         ids=["equal-lengths", "padded", "three-padded"])
@pytest.mark.xdist_group("test_batch-generate-compile")  # one compiled copy serves every case
def test_batch_generate_matches_each_sample_alone(thinker_eager_towers, seconds):
    # equal lengths: generate() passes no padding mask and each layer caches its own count; padded:
    # every layer caches one width (fillers masked) so transformers' one decode mask fits them all
    options = dict(OPTIONS[0], inductor=False)
    singles = [synthetic_clip_inputs(thinker_eager_towers.config, ClipSpec(video_seconds=s, seed=i))
               for i, s in enumerate(seconds)]
    batch = batch_inputs(singles, pad_id(thinker_eager_towers))
    model = compiled_copy(thinker_eager_towers, options)
    model.generation_config.pad_token_id = pad_id(thinker_eager_towers)
    generated, cache, logits = generate_with_logits(model, batch, 5)
    stats = last_stats()
    assert stats.pruned, stats.skipped
    for b, single in enumerate(singles):
        alone = seats_generate(thinker_eager_towers, single, options, max_new_tokens=5)
        assert_step_logits_match([step[b:b + 1] for step in logits], alone.logits, atol=1e-4)
        assert generated[b].tolist() == alone.tokens[0].tolist(), f"sample {b}"
    widths = {layer.keys.shape[-2] for layer in cache.layers}
    assert len(widths) == 1 if len(set(seconds)) > 1 else len(widths) > 2
