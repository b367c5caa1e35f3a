import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.logits import seats_logits


@settings(max_examples=50)
@given(st.integers(1, 3), st.integers(1, 40), st.floats(0.0, 1.0), st.integers(0, 2**31 - 1))
def test_skipping_zero_rows_returns_the_full_linear(batch, length, kept_fraction, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, 16, generator=gen)
    hidden[torch.rand(batch, length, generator=gen) > kept_fraction] = 0.0
    weight = torch.randn(32, 16, generator=gen)
    got, expected = seats_logits(hidden, weight), F.linear(hidden, weight)
    # a GEMM over fewer rows may round differently in the last bit; zero rows stay exactly zero
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)
    zero_rows = (hidden == 0).all(-1)
    assert bool((got[zero_rows] == 0).all())


def test_a_non_finite_weight_falls_back_to_the_full_linear():
    hidden = torch.zeros(1, 4, 8)
    hidden[0, 1] = 1.0
    weight = torch.ones(5, 8)
    weight[2, 3] = float("inf")
    expected = F.linear(hidden, weight)  # 0 * inf: NaN in the zero rows
    torch.testing.assert_close(seats_logits(hidden, weight), expected, equal_nan=True)
    assert bool(seats_logits(hidden, weight)[0, 0].isnan().any())
