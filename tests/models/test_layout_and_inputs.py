import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.models import adapter_for
from seats_fx.models.synthetic import ClipSpec, audio_tokens_for_frames, synthetic_clip_inputs
from seats_fx.ops.budget import AUDIO, VIDEO


@settings(max_examples=25)
@given(st.integers(1, 9), st.sampled_from([None, 0.5, 3.0]), st.sampled_from([(56, 56), (112, 84)]))
def test_layout_windows_follow_tmrope_time(tiny_thinker, seconds, audio_scale, size):
    seconds = seconds * 2 if seconds % 2 else seconds  # 2 fps with temporal patch 2: even frame counts
    audio_seconds = None if audio_scale is None else max(1.0, seconds * audio_scale)
    clip = ClipSpec(video_seconds=seconds, audio_seconds=audio_seconds, height=size[0], width=size[1])
    inputs = synthetic_clip_inputs(tiny_thinker.config, clip)
    encoded = adapter_for(tiny_thinker).encode(inputs, window_seconds=2.0)
    layout = encoded.layout
    per_grid = (size[0] // 28) * (size[1] // 28)
    audio_len = seconds if audio_seconds is None else audio_seconds
    n_audio = audio_tokens_for_frames(int(round(audio_len * 100)))
    assert layout.count(VIDEO) == seconds * per_grid and layout.count(AUDIO) == n_audio
    assert layout.num_windows(0) == max(math.ceil(seconds / 2), math.ceil(n_audio / 50))
    for w in range(layout.num_windows(0)):
        in_window = layout.window[0] == w
        video_grids = int((in_window & (layout.modality[0] == VIDEO)).sum()) // per_grid
        assert video_grids == max(0, min(2, seconds - 2 * w))
        assert int((in_window & (layout.modality[0] == AUDIO)).sum()) == max(0, min(50, n_audio - 50 * w))
    # the model's own positions: within a window, temporal positions span < 50
    t = encoded.position_ids[0, 0]
    for w in range(layout.num_windows(0)):
        in_window = layout.window[0] == w
        assert int(t[in_window].max() - t[in_window].min()) < 50


def test_stage1_weights_are_attention_distributions(tiny_thinker):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4))
    encoded = adapter_for(tiny_thinker).encode(inputs, window_seconds=2.0)
    media = encoded.layout.modality[0] != 0
    weights = encoded.token_weights[0]
    assert bool((weights[media] > 0).all()) and bool((weights[~media] == 0).all())
    # audio weights: attention received averaged over queries, within one 100-frame chunk sums to 1 per frame pool
    assert float(weights[encoded.layout.modality[0] == AUDIO].sum()) == pytest.approx(
        (4 * 50) / 100 / 2, rel=1e-4)


def test_merged_embeddings_equal_the_models_own_merge(tiny_thinker):
    inputs = synthetic_clip_inputs(tiny_thinker.config, ClipSpec(video_seconds=4))
    encoded = adapter_for(tiny_thinker).encode(inputs, window_seconds=2.0)
    captured = {}
    hook = tiny_thinker.model.language_model.register_forward_pre_hook(
        lambda m, a, kw: captured.update(kw), with_kwargs=True)
    try:
        with torch.no_grad():
            tiny_thinker(**inputs)
    finally:
        hook.remove()
    assert torch.equal(captured["inputs_embeds"], encoded.inputs_embeds)
    assert torch.equal(captured["position_ids"], encoded.position_ids)
