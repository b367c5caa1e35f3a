"""layout_on_host (the layout the selection glue computes from one host read) against a token-by-token
oracle written from the rule in its docstring, on random prompts: interleaved video/audio blocks with
sparse and repeated times, images, text between blocks, padding on either side."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.models.layout import TEXT, build_token_layout, layout_on_host
from seats_fx.ops.budget import AUDIO, VIDEO

VIDEO_ID, AUDIO_ID, IMAGE_ID, WORD = 5, 6, 7, 1


def oracle_layout(ids, temporal, valid, per_window):
    """Token-by-token: blocks are maximal runs of real media tokens; window = offset from the block's earliest
    time // per_window (0 for images), numbered on across a sample's blocks."""
    modality, window = np.zeros_like(ids), np.full_like(ids, -1)
    for b in range(ids.shape[0]):
        runs, current = [], []
        for i in range(ids.shape[1]):
            media = valid[b, i] > 0 and ids[b, i] in (VIDEO_ID, AUDIO_ID, IMAGE_ID)
            if media:
                current.append(i)
                modality[b, i] = AUDIO if ids[b, i] == AUDIO_ID else VIDEO
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        next_window = 0
        for run in runs:
            start = min(temporal[b, i] for i in run)
            for i in run:
                window[b, i] = next_window + (0 if ids[b, i] == IMAGE_ID else (temporal[b, i] - start) // per_window)
            next_window = max(window[b, i] for i in run) + 1
    return modality, window


@st.composite
def prompts(draw):
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 40))
    ids = np.array(draw(st.lists(st.lists(st.sampled_from([WORD, VIDEO_ID, AUDIO_ID, IMAGE_ID]), min_size=length,
                                          max_size=length), min_size=batch, max_size=batch)))
    # times rise through a prompt with jumps (sparse frames) and repeats (interleaved chunks)
    steps = np.array(draw(st.lists(st.lists(st.sampled_from([0, 0, 1, 3, 9, 25]), min_size=length, max_size=length),
                                   min_size=batch, max_size=batch)))
    temporal = np.cumsum(steps, axis=1)
    valid = np.ones_like(ids)
    for b in range(batch):
        pad = draw(st.integers(0, length - 1))
        if draw(st.booleans()):
            valid[b, :pad] = 0
        else:
            valid[b, length - pad:] = 0
    return ids, temporal, valid, draw(st.sampled_from([1, 4, 50]))


@settings(max_examples=150, deadline=None)
@given(prompts())
def test_layout_on_host_matches_the_token_by_token_rule(prompt):
    ids, temporal, valid, per_window = prompt
    modality, window = layout_on_host(ids, temporal, valid, (VIDEO_ID,), (AUDIO_ID,), (IMAGE_ID,), per_window)
    expected_modality, expected_window = oracle_layout(ids, temporal, valid, per_window)
    assert modality.dtype == window.dtype == np.int64
    np.testing.assert_array_equal(modality, expected_modality)
    np.testing.assert_array_equal(window, expected_window)


def test_build_token_layout_gives_the_host_layout_on_the_inputs_device():
    ids = torch.tensor([[WORD, VIDEO_ID, VIDEO_ID, AUDIO_ID, VIDEO_ID, AUDIO_ID, WORD, IMAGE_ID, IMAGE_ID]])
    temporal = torch.tensor([[0, 1, 1, 1, 51, 51, 101, 102, 102]])
    layout = build_token_layout(ids, temporal, None, (VIDEO_ID,), (AUDIO_ID,), (IMAGE_ID,), 50)
    assert layout.modality.tolist() == [[TEXT, VIDEO, VIDEO, AUDIO, VIDEO, AUDIO, TEXT, VIDEO, VIDEO]]
    assert layout.window.tolist() == [[-1, 0, 0, 0, 1, 1, -1, 2, 2]]
    assert layout.valid.tolist() == [[1] * 9] and layout.window.device == ids.device
