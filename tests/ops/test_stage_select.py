import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.schedule import count_at_level
from seats_fx.ops.sampling import uniform_select
from seats_fx.ops.sizes import group_slot
from seats_fx.ops.stage_select import STAGE1_SELECTORS, stage1_keep_index, stage2_keep_index, stage2_select

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
@given(layouts(), st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.sampled_from(STAGE1_SELECTORS))
def test_stage1_keeps_text_and_budget_per_group(layout, video_level, audio_level, selector):
    modality, window, windows, seed = layout
    gen = torch.Generator().manual_seed(seed)
    embeds, weights = torch.randn(len(modality), 8, generator=gen), torch.rand(len(modality), generator=gen)
    kept = stage1_keep_index(embeds, weights, modality, window, {VIDEO: video_level, AUDIO: audio_level}, selector,
                             seed)
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


@settings(max_examples=50)
@given(layouts(), st.floats(0.01, 0.9))
def test_random_selector_follows_its_seed_only(layout, level):
    modality, window, _, seed = layout
    gen = torch.Generator().manual_seed(seed)
    embeds, weights = torch.randn(len(modality), 8, generator=gen), torch.rand(len(modality), generator=gen)
    levels = {VIDEO: level, AUDIO: level}
    first = stage1_keep_index(embeds, weights, modality, window, levels, "random", seed)
    # other content, same seed and layout: the same draws
    again = stage1_keep_index(torch.randn_like(embeds), torch.rand_like(weights), modality, window, levels, "random", seed)
    assert torch.equal(first, again)


@settings(max_examples=100)
@given(st.integers(1, 200), st.data())
def test_uniform_picks_are_evenly_spaced(n, data):
    k = data.draw(st.integers(1, n))
    picks = uniform_select(3, n, k)[0]
    assert picks.tolist() == sorted(set(picks.tolist())) and 0 <= int(picks[0]) and int(picks[-1]) < n
    gaps = set(torch.diff(picks).tolist()) | {int(picks[0]) * 2 + 1, (n - int(picks[-1])) * 2 - 1}
    assert max(gaps) - min(gaps) <= 2  # inner gaps n/k apart, edges half a span in, up to rounding


@settings(max_examples=50)
@given(layouts(), st.floats(0.01, 0.9))
def test_unweighted_diversity_ignores_encoder_attention(layout, level):
    modality, window, _, seed = layout
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(len(modality), 8, generator=gen)
    levels = {VIDEO: level, AUDIO: level}
    one = stage1_keep_index(embeds, torch.rand(len(modality), generator=gen), modality, window, levels, "diversity")
    other = stage1_keep_index(embeds, torch.rand(len(modality), generator=gen), modality, window, levels, "diversity")
    assert torch.equal(one, other)


@settings(max_examples=100)
@given(layouts(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_global_allocation_keeps_the_top_scorers_of_all_media(layout, video_fraction, audio_fraction):
    modality, window, windows, seed = layout
    relevance = torch.randperm(len(modality), generator=torch.Generator().manual_seed(seed)).float()  # no ties
    n_video, n_audio = int((modality == VIDEO).sum()), int((modality == AUDIO).sum())
    vk, ak = count_at_level(video_fraction, n_video), count_at_level(audio_fraction, n_audio)
    kept = stage2_keep_index(relevance, modality, window, windows, vk, ak, 0.1, "global")
    media = modality != TEXT
    kept_mask = torch.zeros_like(media)
    kept_mask[kept] = True
    assert bool(kept_mask[~media].all()) and int((kept_mask & media).sum()) == vk + ak
    if bool((media & ~kept_mask).any()) and bool((media & kept_mask).any()):
        assert relevance[media & kept_mask].min() > relevance[media & ~kept_mask].max()


@settings(max_examples=50)
@given(layouts(), st.floats(0.0, 1.0), st.sampled_from([VIDEO, AUDIO]))
def test_stage2_with_one_modality_in_the_prompt_keeps_its_top_k_and_reports_the_kept_groups(layout, fraction,
                                                                                           present):
    """A prompt with one non-text modality (the other's keep is 0): the step keeps that modality's top-k over
    all windows, and the (2, W) budgets it returns are the tokens it kept per group (the next step's counts)."""
    modality, window, windows, seed = layout
    modality = torch.where(modality == TEXT, TEXT, present)
    relevance = torch.randperm(len(modality), generator=torch.Generator().manual_seed(seed)).double()  # no ties
    media = modality != TEXT
    keep = count_at_level(fraction, int(media.sum()))
    video_keep, audio_keep = (keep, 0) if present == VIDEO else (0, keep)
    slot = group_slot(modality, window.clamp_min(0), windows)
    kept, budgets = stage2_select(relevance, slot, windows, video_keep, audio_keep, 0.1, "windows",
                                  int((~media).sum()), int(media.sum()))
    positions = torch.arange(len(modality))
    expected = sorted(positions[~media].tolist() + positions[media][torch.argsort(relevance[media],
                                                                                  descending=True)[:keep]].tolist())
    assert kept.tolist() == expected
    per_group = [[sum(1 for i in expected if int(modality[i]) == kind and int(window[i]) == w)
                  for w in range(windows)] for kind in (VIDEO, AUDIO)]
    assert budgets.tolist() == per_group
