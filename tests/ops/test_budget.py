from collections import Counter

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from seats_fx.ops.budget import (ALWAYS, AUDIO, VIDEO, allocate_exact, rank_within_groups, select_by_group_budget,
                                 top_per_slot, top_per_slot_torch, window_modality_budgets)
from seats_fx.ops.stage_select import stage2_keep_index

TEXT = 0


@st.composite
def allocations(draw):
    width = draw(st.integers(1, 12))
    upper = draw(st.lists(st.integers(0, 30), min_size=width, max_size=width))
    lower = [draw(st.integers(0, u)) for u in upper]
    total = draw(st.integers(sum(lower), sum(upper)))
    targets = draw(st.lists(st.floats(0, 40), min_size=width, max_size=width))
    return torch.tensor(targets), torch.tensor(lower), torch.tensor(upper), total


@settings(max_examples=200)
@given(allocations())
def test_budgets_sum_exactly_to_total_within_bounds(args):
    targets, lower, upper, total = args
    b = allocate_exact(targets, lower, upper, total)
    assert int(b.sum()) == total
    assert bool(((lower <= b) & (b <= upper)).all())


@settings(max_examples=100)
@given(allocations())
def test_allocation_is_greedy_optimal(args):
    """No unit can move from one entry to another and bring both closer to their targets."""
    targets, lower, upper, total = args
    b = allocate_exact(targets, lower, upper, total).double()
    gap = targets.double() - b  # > 0: wants more
    for i in range(len(b)):
        for j in range(len(b)):
            if i != j and b[i] < upper[i] and b[j] > lower[j]:
                # giving i one more and j one less must not improve: gap_i - 1 vs gap_j... greedy slot order
                assert targets[i] - b[i] <= targets[j] - (b[j] - 1) + 1e-9


@st.composite
def sequences(draw):
    """1-5 windows of up to 9 video and 9 audio tokens; some windows may be empty (as after earlier drops),
    the last one never is."""
    windows = draw(st.integers(1, 5))
    modality, window = [TEXT] * draw(st.integers(1, 4)), [-1] * 0
    window = [-1] * len(modality)
    for w in range(windows):
        nv, na = draw(st.integers(0, 9)), draw(st.integers(0, 9))
        if nv + na == 0 and (w == windows - 1 or not draw(st.booleans())):
            nv = 1
        modality += [VIDEO] * nv + [AUDIO] * na
        window += [w] * (nv + na)
    tail = draw(st.integers(1, 4))
    modality += [TEXT] * tail
    window += [-1] * tail
    seed = draw(st.integers(0, 2**31 - 1))
    modality, window = torch.tensor(modality), torch.tensor(window)
    relevance = torch.rand(len(modality), generator=torch.Generator().manual_seed(seed))
    n_video, n_audio = int((modality == VIDEO).sum()), int((modality == AUDIO).sum())
    vk = draw(st.integers(0, n_video)) if n_video else 0
    ak = draw(st.integers(0 if vk else 1, n_audio)) if n_audio else 0
    if vk + ak == 0:
        vk = 1
    return relevance, modality, window, windows, vk, ak


def _two_occupied_of_four_windows():
    """Windows 0 and 3 hold 3 video and 3 audio tokens each, 1 and 2 are empty; keep 1 video and 1 audio."""
    modality = torch.tensor([TEXT] + ([VIDEO] * 3 + [AUDIO] * 3) * 2 + [TEXT])
    window = torch.tensor([-1] + [0] * 6 + [3] * 6 + [-1])
    relevance = torch.linspace(0.0, 1.0, len(modality), dtype=torch.float64)
    return relevance, modality, window, 4, 1, 1


@settings(max_examples=200)
@given(sequences())
@example(_two_occupied_of_four_windows())  # a total below the window count but covering the occupied ones
def test_window_modality_budgets_sum_exactly_and_fit_groups(args):
    relevance, modality, window, windows, vk, ak = args
    budgets = window_modality_budgets(relevance, modality, window, windows, vk, ak, 0.1)
    assert int(budgets.sum()) == vk + ak
    for w in range(windows):
        in_window = window == w
        nv, na = int((in_window & (modality == VIDEO)).sum()), int((in_window & (modality == AUDIO)).sum())
        v, a = budgets[w].tolist()
        assert 0 <= v <= nv and 0 <= a <= na
        if nv and na and v + a >= 2:
            assert v >= 1 and a >= 1
    occupied = torch.stack([((window == w) & (modality != TEXT)).any() for w in range(windows)])
    if vk + ak >= int(occupied.sum()):  # the total covers every window holding tokens: one at least each
        assert bool((budgets.sum(1)[occupied] >= 1).all())


@settings(max_examples=200)
@given(sequences())
def test_group_selection_keeps_text_and_top_scorers_of_each_group(args):
    relevance, modality, window, windows, vk, ak = args
    budgets = window_modality_budgets(relevance, modality, window, windows, vk, ak, 0.1)
    is_text = modality == TEXT
    group = torch.where(is_text, 0, window * 2 + (modality - VIDEO))
    count = int(is_text.sum()) + vk + ak
    kept = select_by_group_budget(relevance, group, budgets.flatten(), is_text, count)
    assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == count
    kept_set = set(kept.tolist())
    assert all(i in kept_set for i in torch.nonzero(is_text).flatten().tolist())
    for g, b in enumerate(budgets.flatten().tolist()):
        members = [i for i in range(len(modality)) if not is_text[i] and int(group[i]) == g]
        best = sorted(members, key=lambda i: (-float(relevance[i]), i))[:b]
        assert sorted(best) == sorted(i for i in members if i in kept_set)


def test_keep_everything_budget_keeps_all():
    modality = torch.tensor([TEXT, VIDEO, VIDEO, AUDIO, VIDEO, AUDIO, TEXT])
    window = torch.tensor([-1, 0, 0, 0, 1, 1, -1])
    relevance = torch.rand(7)
    budgets = window_modality_budgets(relevance, modality, window, 2, 3, 2, 0.1)
    assert budgets.tolist() == [[2, 1], [1, 1]]
    group = torch.where(modality == TEXT, 0, window * 2 + modality - VIDEO)
    kept = select_by_group_budget(relevance, group, budgets.flatten(), modality == TEXT, 7)
    assert kept.tolist() == list(range(7))


class _DispatchedOps(TorchDispatchMode):
    """Counts the ops that reach the dispatcher by name (a custom op once, not the ops it runs inside)."""

    def __init__(self):
        super().__init__()
        self.names = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("allocation", ["windows", "global"])
def test_stage2_ranks_through_the_top_per_slot_op(allocation):
    """Stage 2's per-slot top-k is one seats_fx::top_per_slot op (two Triton kernels on CUDA), not the sorts
    of its torch implementation, for window budgets and for the plain top-k over all media."""
    modality = torch.tensor([TEXT] * 2 + ([VIDEO] * 6 + [AUDIO] * 4) * 3 + [TEXT])
    window = torch.where(modality == TEXT, -1, (torch.arange(len(modality)) - 2).clamp_min(0) // 10)
    relevance = torch.rand(len(modality), generator=torch.Generator().manual_seed(4))
    with _DispatchedOps() as ops:
        kept = stage2_keep_index(relevance, modality, window, 3, 6, 3, 0.1, allocation)
    assert ops.names["seats_fx::top_per_slot"] == 1, ops.names
    assert not {"aten::sort", "aten::searchsorted"} & set(ops.names), ops.names
    assert len(kept) == 3 + 9


def test_top_per_slot_op_equals_its_torch_implementation_and_pads_with_length():
    scores = torch.tensor([0.5, -0.0, 0.5, 0.0, 0.9, 0.1])
    slot = torch.tensor([0, 0, 0, 1, 1, 2])
    limits = torch.tensor([2, ALWAYS, 0])
    for count in (4, 5, 6):  # 4 kept: ties in slot 0 to the lower position; a larger count is padded with L
        got = top_per_slot(scores, slot, limits, count)
        assert torch.equal(got, top_per_slot_torch(scores, slot, limits, count))
        assert got.tolist() == ([0, 2, 3, 4] + [6, 6])[:count]


def test_rank_within_groups_breaks_ties_by_index():
    scores = torch.tensor([0.5, 0.5, 0.9, 0.1])
    group = torch.tensor([0, 0, 1, 0])
    assert rank_within_groups(scores, group, 2).tolist() == [0, 1, 0, 2]


# at T >= 0.1 (and relevance levels < 4 apart) every window weight stays far above float64 resolution next to
# whole tokens; at T = 0.02 two near-zero weights can tie exactly and the lower window index wins
@settings(max_examples=100)
@given(st.integers(2, 4), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31 - 1),
       st.sampled_from([0.1, 0.5, 2.0]), st.floats(0.1, 0.9))
def test_a_more_relevant_window_never_gets_a_smaller_budget(windows, nv, na, seed, temperature, keep):
    """Windows of one shape whose tokens are more relevant (in both modalities) get at least the budget of
    less relevant ones, at every temperature: the allocation follows relevance, not position."""
    gen = torch.Generator().manual_seed(seed)
    levels = torch.randperm(windows, generator=gen).double()  # distinct levels, far apart
    modality = torch.tensor(([VIDEO] * nv + [AUDIO] * na) * windows)
    window = torch.arange(windows).repeat_interleave(nv + na)
    relevance = levels[window] + 0.5 * torch.rand(len(window), generator=gen, dtype=torch.float64)
    video_keep, audio_keep = max(1, round(keep * nv * windows)), max(1, round(keep * na * windows))
    totals = window_modality_budgets(relevance, modality, window, windows, video_keep, audio_keep,
                                     temperature).sum(1)
    # window means differ by more than the 0.5 noise whenever levels differ by 1: order by level
    by_level = totals[torch.argsort(levels)].tolist()
    assert by_level == sorted(by_level), (levels.tolist(), totals.tolist())
