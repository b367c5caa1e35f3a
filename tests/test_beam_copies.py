"""seats_fx.beam_copies: generate()'s k copies of each prompt get their original's stage-1 weights."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.beam_copies import weights_for_copies


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=4), st.integers(2, 4))
def test_each_copy_gets_its_originals_weights(originals, copies):
    """Original sample j has originals[j] tokens of a kind; the prefill holds `copies` copies of each in turn."""
    if sum(originals) == 0:
        return
    weights = torch.arange(1, sum(originals) + 1, dtype=torch.float32)  # distinct: a wrong slice shows
    per_sample = [count for count in originals for _ in range(copies)]
    got = weights_for_copies(weights, per_sample)
    starts = [sum(originals[:j]) for j in range(len(originals))]
    expected = torch.cat([weights[starts[j]:starts[j] + originals[j]] for j in range(len(originals))
                          for _ in range(copies)])
    assert got is not None and torch.equal(got, expected)


def test_counts_that_are_not_copies_give_nothing():
    weights = torch.ones(4)
    assert weights_for_copies(weights, [4]) is None  # one copy: nothing to expand
    assert weights_for_copies(weights, [3, 3]) is None  # 6 tokens are not a multiple of 4
    assert weights_for_copies(weights, [4, 2, 2]) is None  # 8 = 2 x 4, but 3 samples are not pairs
    assert weights_for_copies(torch.ones(6), [4, 2, 2, 4]) is None  # pairs of unequal samples
    assert weights_for_copies(torch.ones(5), [4, 1, 4, 1]) is None  # copies not in turn (s0 s1 s0 s1)
    assert weights_for_copies(torch.ones(0), [0, 0]) is None
