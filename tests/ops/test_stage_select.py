import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.schedule import count_at_level
from seats_fx.ops.stage_select import stage1_keep_index, stage2_keep_index

TEXT = 0


@st.composite
def layouts(draw):
    modality, window = [TEXT] * draw(st.integers(1, 5)), []
    window = [-1] * len(modality)
    windows = draw(st.integers(1, 6))
    for w in range(windows):
        nv, na = draw(st.integers(0, 12)), draw(st.integers(0, 12))
        nv = nv or (0 if na else 1)
        modality += [VIDEO] * nv + [AUDIO] * na
        window += [w] * (nv + na)
    tail = draw(st.integers(1, 5))
    return (torch.tensor(modality + [TEXT] * tail), torch.tensor(window + [-1] * tail), windows,
            draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=100)
@given(layouts(), st.floats(0.01, 1.0), st.floats(0.01, 1.0))
def test_stage1_keeps_text_and_budget_per_group(layout, video_level, audio_level):
    modality, window, windows, seed = layout
    gen = torch.Generator().manual_seed(seed)
    embeds, weights = torch.randn(len(modality), 8, generator=gen), torch.rand(len(modality), generator=gen)
    kept = stage1_keep_index(embeds, weights, modality, window, {VIDEO: video_level, AUDIO: audio_level})
    assert kept.tolist() == sorted(set(kept.tolist()))
    kept_set = set(kept.tolist())
    assert all(i in kept_set for i in torch.nonzero(modality == TEXT).flatten().tolist())
    for w in range(windows):
        for kind, level in ((VIDEO, video_level), (AUDIO, audio_level)):
            members = torch.nonzero((window == w) & (modality == kind)).flatten().tolist()
            assert sum(i in kept_set for i in members) == count_at_level(level, len(members))


@settings(max_examples=100)
@given(layouts())
def test_stage1_ratio_one_keeps_everything(layout):
    modality, window, _, seed = layout
    embeds = torch.randn(len(modality), 4, generator=torch.Generator().manual_seed(seed))
    kept = stage1_keep_index(embeds, torch.rand(len(modality)), modality, window, {VIDEO: 1.0, AUDIO: 1.0})
    assert kept.tolist() == list(range(len(modality)))


@settings(max_examples=100)
@given(layouts(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_stage2_keeps_text_and_exact_total(layout, video_fraction, audio_fraction):
    modality, window, windows, seed = layout
    relevance = torch.rand(len(modality), generator=torch.Generator().manual_seed(seed))
    n_video, n_audio = int((modality == VIDEO).sum()), int((modality == AUDIO).sum())
    vk, ak = count_at_level(video_fraction, n_video), count_at_level(audio_fraction, n_audio)
    kept = stage2_keep_index(relevance, modality, window, windows, vk, ak, 0.1)
    text = torch.nonzero(modality == TEXT).flatten().tolist()
    assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == len(text) + vk + ak
    assert set(text) <= set(kept.tolist())
    assert torch.equal(kept, stage2_keep_index(relevance, modality, window, windows, vk, ak, 0.1))


@settings(max_examples=100)
@given(layouts())
def test_stage2_keep_all_budget_keeps_everything(layout):
    modality, window, windows, seed = layout
    relevance = torch.rand(len(modality), generator=torch.Generator().manual_seed(seed))
    kept = stage2_keep_index(relevance, modality, window, windows, int((modality == VIDEO).sum()),
                             int((modality == AUDIO).sum()), 0.1)
    assert kept.tolist() == list(range(len(modality)))
