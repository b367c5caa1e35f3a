"""The Triton kernels against the torch ops they stand in for on CUDA, run by triton's interpreter on CPU
tensors (TRITON_INTERPRET=1): identical picks, kept tokens and budgets. Skipped without triton.

The default suite runs a small slice of each property; the `slow` tier runs >= 200 cases of each.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.budget import ALWAYS, AUDIO, VIDEO, group_sums, top_per_slot_torch, window_budgets_torch
from seats_fx.ops.diversity import greedy_max_min_torch, weighted_cosine_distance
from seats_fx.ops.relevance import text_query_relevance
from seats_fx.ops.sizes import group_slot
from seats_fx.ops.stage_select import stage2_select

pytest.importorskip("triton")

from seats_fx.ops import triton_kernels  # noqa: E402

TEXT = 0
FEW, MANY = 4, 200  # MANY: the wide searches (slow tier) run 200 cases per kernel, as each core equivalence property


@pytest.fixture(autouse=True)
def interpreted(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.delenv("SEATS_FX_TRITON", raising=False)


# ---- stage 1: greedy max-min ---------------------------------------------------------------------------
@st.composite
def groups_of_tokens(draw):
    """(G, n, d) embeddings with copies and near-copies of tokens (the ties the distance grid decides),
    encoder weights (some equal), and k < n."""
    groups, n, dim = draw(st.integers(1, 4)), draw(st.integers(2, draw(st.sampled_from([12, 40])))), \
        draw(st.integers(2, 16))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    embeds = torch.randn(groups, n, dim, generator=gen)
    copies = draw(st.integers(0, n // 2))
    for index in range(copies):  # token i + copies repeats token i, up to float noise or exactly
        noise = draw(st.sampled_from([0.0, 1e-7, 1e-3]))
        embeds[:, (index + copies) % n] = embeds[:, index] + noise * torch.randn(groups, dim, generator=gen)
    weights = torch.rand(groups, n, generator=gen) if draw(st.booleans()) else torch.ones(groups, n)
    return embeds, weights, draw(st.integers(1, n - 1))


def check_greedy(case) -> None:
    embeds, weights, k = case
    distance = weighted_cosine_distance(embeds, weights)
    assert torch.equal(triton_kernels.greedy_max_min(distance, k), greedy_max_min_torch(distance, k))


@settings(max_examples=FEW)
@given(groups_of_tokens())
def test_greedy_kernel_picks_what_the_torch_loop_picks(case):
    check_greedy(case)


@pytest.mark.slow
@settings(max_examples=MANY)
@given(groups_of_tokens())
def test_greedy_kernel_picks_what_the_torch_loop_picks_wide(case):
    check_greedy(case)


def test_greedy_kernel_on_a_one_token_group_and_exact_copies():
    one = torch.zeros(3, 1, 1)
    assert torch.equal(triton_kernels.greedy_max_min(one, 1), greedy_max_min_torch(one, 1))
    copies = weighted_cosine_distance(torch.ones(2, 6, 4), torch.ones(2, 6))  # every distance 0: lowest index
    assert triton_kernels.greedy_max_min(copies, 3).tolist() == [[0, 1, 2]] * 2


# ---- stage 2: the last token's attention row -------------------------------------------------------------
@st.composite
def attention_rows(draw):
    """One query row per sample against keys of 1-300 tokens (several kernel blocks), GQA head groupings,
    head dims that are not powers of two, padding masks; and a layout of windows to select with."""
    batch = draw(st.integers(1, 2))
    heads, kv_heads = draw(st.sampled_from([(4, 4), (4, 2), (6, 1), (8, 2)]))
    dim = draw(st.sampled_from([8, 16, 24, 64, 80]))
    length = draw(st.integers(1, 300))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    query = torch.randn(batch, heads, 1, dim, generator=gen).to(dtype)
    keys = torch.randn(batch, kv_heads, length, dim, generator=gen).to(dtype)
    mask = None
    if draw(st.booleans()):
        mask = torch.rand(batch, length, generator=gen) > 0.2
        mask[:, -1] = True
    return query, keys, mask, draw(st.floats(0.05, 0.5)), gen


def check_relevance(case) -> None:
    query, keys, mask, scale, gen = case
    expected = text_query_relevance(query, keys, mask, scale)
    got = triton_kernels.query_relevance(query, keys, mask, scale)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=1e-7)
    # the same tokens survive a stage-2 step scored either way
    length = keys.shape[2]
    windows = max(1, length // 20)
    modality = torch.randint(0, 3, (length,), generator=gen)
    window = torch.where(modality == TEXT, -1, torch.randint(0, windows, (length,), generator=gen))
    slot = group_slot(modality, window, windows)
    media = int((modality != TEXT).sum())
    video_keep, audio_keep = max(1, media // 6), max(1, media // 5)
    for b in range(query.shape[0]):
        kept = [stage2_select(scores[b], slot, windows, video_keep, audio_keep, 0.1, "windows",
                              int((modality == TEXT).sum()), media)[0] for scores in (got, expected)]
        assert torch.equal(kept[0], kept[1])


@settings(max_examples=FEW)
@given(attention_rows())
def test_relevance_kernel_matches_torch_and_keeps_the_same_tokens(case):
    check_relevance(case)


@pytest.mark.slow
@settings(max_examples=MANY)
@given(attention_rows())
def test_relevance_kernel_matches_torch_and_keeps_the_same_tokens_wide(case):
    check_relevance(case)


# ---- stage 2: window budgets -------------------------------------------------------------------------------
@st.composite
def window_groups(draw):
    """Relevance sums and counts of 1-40 windows (empty windows, one-modality windows, modalities absent from
    the whole sequence), keeps from 0 to everything, totals below and above the number of windows."""
    windows = draw(st.integers(1, 40))
    counts = torch.tensor(draw(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=windows,
                                        max_size=windows))).t().double()
    if draw(st.booleans()):
        counts[draw(st.integers(0, 1))] = 0  # one modality absent everywhere
    if counts.sum() == 0:
        counts[0, 0] = 1
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    # per-window relevance levels; equal levels make exact ties between windows
    levels = torch.rand(2, windows, generator=gen, dtype=torch.float64) if draw(st.booleans()) else \
        torch.full((2, windows), 0.25, dtype=torch.float64)
    sums = levels * counts
    n_video, n_audio = int(counts[0].sum()), int(counts[1].sum())
    video_keep = draw(st.integers(1, n_video)) if n_video else draw(st.sampled_from([0, 1]))
    audio_keep = draw(st.integers(1, n_audio)) if n_audio else draw(st.sampled_from([0, 1]))
    total = min(video_keep + audio_keep, n_video + n_audio)
    temperature = draw(st.sampled_from([0.02, 0.1, 0.3, 1.0, 5.0]))
    return sums, counts, video_keep, audio_keep, total, temperature


def check_budgets(case) -> None:
    expected = window_budgets_torch(*case)
    got = triton_kernels.window_budgets(*case)
    assert torch.equal(got, expected), (case, got.tolist(), expected.tolist())


@settings(max_examples=FEW)
@given(window_groups())
def test_budget_kernel_allocates_what_the_torch_ops_allocate(case):
    check_budgets(case)


@pytest.mark.slow
@settings(max_examples=MANY)
@given(window_groups())
def test_budget_kernel_allocates_what_the_torch_ops_allocate_wide(case):
    check_budgets(case)


def test_budget_kernel_on_relevance_of_a_real_layout():
    gen = torch.Generator().manual_seed(3)
    modality = torch.tensor([TEXT] * 3 + ([VIDEO] * 9 + [AUDIO] * 5) * 6 + [TEXT] * 2)
    window = torch.where(modality == TEXT, -1, (torch.arange(len(modality)) - 3).clamp_min(0) // 14)
    sums, counts = group_sums(torch.rand(len(modality), generator=gen), group_slot(modality, window, 6), 6)
    for video_keep, audio_keep, counted in ((1, 1, counts), (20, 11, counts.long()), (54, 30, counts)):
        check_budgets((sums, counted, video_keep, audio_keep, video_keep + audio_keep, 0.1))


def test_budget_kernel_with_empty_windows_and_a_total_below_the_window_count():
    """Windows 1, 2 and 4 of 5 hold nothing; totals of 2 to 5 cover the 2 occupied windows (but not all 5
    ids): each occupied window gets one token at least, in the kernel as in the torch ops."""
    counts = torch.tensor([[3, 0, 0, 2, 0], [3, 0, 0, 0, 0]], dtype=torch.float64)
    sums = counts * torch.tensor([[0.2, 0, 0, 0.9, 0], [0.3, 0, 0, 0, 0]], dtype=torch.float64)
    for video_keep, audio_keep in ((1, 1), (1, 2), (2, 2), (3, 2)):
        case = (sums, counts, video_keep, audio_keep, video_keep + audio_keep, 0.1)
        check_budgets(case)
        occupied_budgets = window_budgets_torch(*case)[:10].view(2, 5).sum(0)[[0, 3]]
        assert bool((occupied_budgets >= 1).all()), occupied_budgets


# ---- stage 2: top scorers per slot -----------------------------------------------------------------------
@st.composite
def slot_rankings(draw):
    """1-300 tokens (up to five kernel blocks) in 1-12 slots, scores with many exact ties (a few levels, -0.0
    beside 0.0, infinities, NaN; float32, bfloat16 or float16), limits of 0, ALWAYS, within and above the
    slot sizes, strided inputs; count = the number kept."""
    length, slots = draw(st.integers(1, 300)), draw(st.integers(1, 12))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    if draw(st.booleans()):
        scores = torch.randint(-2, 3, (length,), generator=gen).float() * 0.5  # five levels: ties everywhere
    else:
        scores = torch.rand(length, generator=gen)
    scores[torch.rand(length, generator=gen) < 0.15] = -0.0
    if draw(st.booleans()):
        specials = torch.tensor([0.0, float("inf"), float("-inf"), float("nan"), -float("nan")])
        picked = torch.rand(length, generator=gen) < 0.1
        scores[picked] = specials[torch.randint(0, 5, (int(picked.sum()),), generator=gen)]
    scores = scores.to(draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16])))
    slot = torch.randint(0, slots, (length,), generator=gen)
    sizes = torch.bincount(slot, minlength=slots)
    limits = torch.tensor([draw(st.sampled_from([0, ALWAYS, int(size) + draw(st.integers(1, 3)),
                                                 draw(st.integers(0, max(0, int(size))))])) for size in sizes])
    if draw(st.booleans()):  # every other element of a wider tensor: the kernels read through strides
        scores = torch.stack([scores, torch.zeros_like(scores)], dim=1)[:, 0]
        slot = torch.stack([slot, torch.zeros_like(slot)], dim=1)[:, 0]
    count = int(torch.minimum(sizes, limits).sum())
    return scores, slot, limits, count


def check_top_per_slot(case) -> None:
    expected = top_per_slot_torch(*case)
    got = triton_kernels.top_per_slot(*case)
    assert torch.equal(got, expected), (case, got.tolist(), expected.tolist())


@settings(max_examples=FEW)
@given(slot_rankings())
def test_top_per_slot_kernel_keeps_what_the_torch_sorts_keep(case):
    check_top_per_slot(case)


@pytest.mark.slow
@settings(max_examples=MANY)
@given(slot_rankings())
def test_top_per_slot_kernel_keeps_what_the_torch_sorts_keep_wide(case):
    check_top_per_slot(case)


def test_top_per_slot_kernel_on_ties_across_blocks_and_counts_past_the_kept():
    """Equal scores in one slot across three kernel blocks (the lower positions win, in every block), -0.0
    tying 0.0, NaN of either sign above +inf; a count above the number kept (torch pads with L), above L,
    and 0."""
    length = 150
    scores = torch.where(torch.arange(length) % 2 == 0, 0.0, -0.0)
    scores[[7, 91]] = torch.tensor([-float("nan"), float("nan")])  # sign bit set, and clear
    scores[[4, 139, 3]] = float("inf")
    scores[[1, 140]] = float("-inf")
    slot = torch.arange(length) % 3  # slot 0: the text (ALWAYS); 1: kept up to 20; 2: padding (0)
    limits = torch.tensor([ALWAYS, 20, 0])
    kept = 50 + 20
    for count in (kept, kept + 7, length + 5, 0, 1):
        check_top_per_slot((scores, slot, limits, count))
    check_top_per_slot((torch.tensor([0.5]), torch.tensor([0]), torch.tensor([1]), 1))  # one token
    check_top_per_slot((torch.tensor([0.5]), torch.tensor([0]), torch.tensor([0]), 1))
    check_top_per_slot((torch.empty(0), torch.empty(0, dtype=torch.long), torch.tensor([ALWAYS]), 0))


def test_top_per_slot_op_runs_the_torch_ops_off_cuda():
    """The custom op (stage 2 of the glue calls it) gives the torch result on CPU, where it runs those ops."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (90,), generator=gen).float()
    slot = torch.randint(0, 4, (90,), generator=gen)
    limits = torch.tensor([ALWAYS, 5, 3, 0])
    count = int(torch.minimum(torch.bincount(slot, minlength=4), limits).sum())
    got = torch.ops.seats_fx.top_per_slot(scores, slot, limits, count)
    assert torch.equal(got, top_per_slot_torch(scores, slot, limits, count))
    assert torch.equal(got, triton_kernels.top_per_slot(scores, slot, limits, count))


# ---- no triton, no kernels -----------------------------------------------------------------------------
@pytest.mark.slow
def test_the_package_runs_its_ops_without_triton():
    """CPU users without triton: importing seats_fx loads no kernel module, and the ops run on torch."""
    code = """
import sys
sys.modules["triton"] = None  # import triton raises ImportError, as when it is not installed
import torch
import seats_fx
from seats_fx.ops.diversity import diversity_select
from seats_fx.ops.relevance import last_token_relevance
from seats_fx.ops.stage_select import stage2_keep_index
picks = diversity_select(torch.randn(2, 9, 4), torch.rand(2, 9), 3)
scores = last_token_relevance(torch.randn(1, 4, 1, 8), torch.randn(1, 2, 12, 8), None, 0.3)[0]
kept = stage2_keep_index(scores, torch.tensor([0] + [1] * 5 + [2] * 5 + [0]),
                         torch.tensor([-1] + [0, 0, 1, 1, 1] * 2 + [-1]), 2, 2, 2, 0.1)
print(tuple(picks.shape), len(kept), any(name.startswith("seats_fx.ops._triton") for name in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "(2, 3) 6 False", out.stdout


def test_kernels_are_off_without_triton_or_when_switched_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton raises ImportError
    assert not triton_kernels.available()
    monkeypatch.delitem(sys.modules, "triton")
    monkeypatch.setenv("SEATS_FX_TRITON", "0")
    assert not triton_kernels.available()
