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


class _CountingLinear:
    """Stands in for torch.nn.functional inside seats_fx.logits: records the rows each linear computes."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def linear(self, hidden, weight, bias=None):
        self.rows.append(hidden.reshape(-1, hidden.shape[-1]).shape[0])
        return F.linear(hidden, weight, bias)


def test_the_lm_head_computes_only_the_nonzero_rows(monkeypatch):
    import seats_fx.logits

    counting = _CountingLinear()
    monkeypatch.setattr(seats_fx.logits, "F", counting)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 9, 16, generator=gen)
    hidden[0, :5] = 0.0
    hidden[1, 2:8] = 0.0  # 4 + 3 rows left
    weight = torch.randn(32, 16, generator=gen)
    got = seats_logits(hidden, weight)
    assert counting.rows == [7], counting.rows
    torch.testing.assert_close(got, F.linear(hidden, weight), rtol=1e-6, atol=1e-5)
    # nothing to skip: one linear over every row
    counting.rows.clear()
    seats_logits(torch.randn(2, 9, 16, generator=gen), weight)
    assert counting.rows == [18]


def test_skipping_zero_rows_reads_the_device_once_and_one_row_not_at_all():
    from seats_fx.host_reads import HostReadCounter

    hidden = torch.randn(2, 9, 16)
    hidden[:, 2:7] = 0.0
    weight = torch.randn(32, 16)
    seats_logits(hidden, weight)  # the finite-weight check reads once per weight, then is cached
    with HostReadCounter(where=True) as counts:
        got = seats_logits(hidden, weight)
    assert counts.reads == 1, counts.read_sites  # how many rows are kept: the GEMM's size
    torch.testing.assert_close(got, F.linear(hidden, weight), rtol=1e-6, atol=1e-5)
    with HostReadCounter(where=True) as counts:
        seats_logits(hidden[:, -1:], weight)
    assert counts.reads == 0, counts.read_sites


def test_a_weight_made_under_inference_mode_is_checked_on_every_call():
    """A model made or moved under torch.inference_mode holds inference tensors, which keep no version counter
    (reading it raises): their finiteness cannot be cached, so every call checks it, in the same host read as
    the kept-row count, and a weight written in place since the last call is seen."""
    from seats_fx.host_reads import HostReadCounter

    hidden = torch.zeros(1, 6, 8)
    hidden[0, 2] = 1.0
    with torch.inference_mode():
        weight = torch.ones(5, 8)
    for _ in range(2):
        with HostReadCounter(where=True) as counts:
            got = seats_logits(hidden, weight)
        assert counts.reads == 1, counts.read_sites
        torch.testing.assert_close(got, F.linear(hidden, weight), rtol=0, atol=0)
    with torch.inference_mode():
        weight[2, 3] = float("inf")  # no version bump: only a check on this call can see it
    got = seats_logits(hidden, weight)
    assert bool(got[0, 0].isnan().any())  # the full linear: 0 * inf in the zero rows, as without seats
    torch.testing.assert_close(got, F.linear(hidden, weight), equal_nan=True)


def test_a_fresh_weight_is_checked_in_the_same_read_as_the_kept_rows():
    from seats_fx.host_reads import HostReadCounter

    hidden = torch.randn(2, 9, 16)
    hidden[:, 2:7] = 0.0
    weight = torch.randn(32, 16)
    with HostReadCounter(where=True) as counts:
        seats_logits(hidden, weight)
    assert counts.reads == 1, counts.read_sites


def test_under_autocast_the_logits_have_the_linears_dtype():
    """torch.autocast computes F.linear in its dtype; the rows left zero must not force hidden's dtype on it
    (the scatter into a float32 buffer raised)."""
    hidden = torch.randn(1, 7, 16)
    hidden[0, 1:5] = 0.0
    weight = torch.randn(32, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = seats_logits(hidden, weight), F.linear(hidden, weight)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
