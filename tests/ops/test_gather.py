"""Batched keep indices: fillers, and masks that hide them."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.gather import causal_mask, gather_square_mask, keep_for_samples, mask_fillers


@st.composite
def kept_lists(draw, ragged: bool = False):
    """Sorted kept positions of 1-4 samples of one length; ragged: at least two samples keep different
    counts, so fillers exist."""
    length = draw(st.integers(2 if ragged else 1, 30))
    samples = draw(st.integers(2 if ragged else 1, 4))
    kept = [draw(st.sets(st.integers(0, length - 1), min_size=1, max_size=length)) for _ in range(samples)]
    if ragged and len({len(chosen) for chosen in kept}) == 1:
        # every sample keeps as many: the first keeps one less (or, keeping just one, one more)
        first = set(kept[0])
        if len(first) > 1:
            first.discard(draw(st.sampled_from(sorted(first))))
        else:
            first.add(draw(st.sampled_from(sorted(set(range(length)) - first))))
        kept[0] = first
    return length, [torch.tensor(sorted(chosen)) for chosen in kept]


@settings(max_examples=150)
@given(kept_lists())
def test_fillers_pad_at_the_front_and_rows_keep_their_positions(case):
    _, kept = case
    keep = keep_for_samples(kept)
    width = max(k.numel() for k in kept)
    assert keep.index.shape == (len(kept), width)
    for b, k in enumerate(kept):
        filler = keep.filler[b] if keep.filler is not None else torch.zeros(width, dtype=torch.bool)
        assert int(filler.sum()) == width - k.numel()
        assert bool(filler[:width - k.numel()].all())  # fillers first, so the last entry is real
        assert torch.equal(keep.index[b][~filler], k)
        assert bool((keep.index[b][filler] == k[0]).all())
    assert (keep.filler is None) == all(k.numel() == width for k in kept)


@settings(max_examples=150)
@given(kept_lists(ragged=True), st.booleans())
def test_masked_fillers_are_never_attended_and_rows_stay_finite(case, as_float):
    length, kept = case
    keep = keep_for_samples(kept)
    assert keep.filler is not None and bool(keep.filler.any()), [k.numel() for k in kept]
    mask = gather_square_mask(causal_mask(len(kept), length, "cpu"), keep.index)
    if as_float:
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    masked = mask_fillers(mask, keep.filler)
    allowed = masked if masked.dtype == torch.bool else masked == 0
    real = ~keep.filler
    # no query attends a filler key except the filler itself; every row attends something
    off_diagonal = ~torch.eye(keep.index.shape[1], dtype=torch.bool)
    assert not bool((allowed[:, 0] & keep.filler[:, None, :] & off_diagonal).any())
    assert bool(allowed.any(-1).all())
    # real rows keep exactly their causal pattern over real keys
    causal = keep.index[:, None, :] <= keep.index[:, :, None]
    expected = causal & real[:, None, :]
    assert torch.equal(allowed[:, 0][real], expected[real])


@settings(max_examples=100)
@given(kept_lists(), st.integers(1, 3), st.sampled_from([torch.bool, torch.float32]), st.integers(0, 2 ** 31 - 1))
def test_square_mask_keeps_exactly_the_kept_rows_and_columns(case, heads, dtype, seed):
    length, kept = case
    kept = [k[:min(len(x) for x in kept)] for k in kept]  # one width, no fillers
    index = torch.stack(kept)
    source = torch.randn(len(kept), heads, length, length, generator=torch.Generator().manual_seed(seed))
    mask = source > 0 if dtype == torch.bool else source
    gathered = gather_square_mask(mask, index)
    expected = torch.stack([torch.stack([torch.stack([torch.stack([mask[b, h, i, j] for j in rows])
                                                      for i in rows]) for h in range(heads)])
                            for b, rows in enumerate(index.tolist())])
    assert gathered.dtype == mask.dtype and torch.equal(gathered, expected)
