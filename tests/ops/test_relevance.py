import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.ops.relevance import encoder_attention_received, text_query_relevance


@settings(max_examples=100)
@given(st.integers(1, 2), st.sampled_from([(4, 4), (4, 2), (6, 1)]), st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_relevance_equals_last_row_of_full_attention(batch, heads, length, seed):
    h, hkv = heads
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, h, length, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, hkv, length, 8, generator=gen, dtype=torch.float64)
    valid = torch.rand(batch, length, generator=gen) > 0.2
    valid[:, -1] = True
    # independent: full causal attention probabilities, then the last row
    k_full = k.repeat_interleave(h // hkv, dim=1)
    scores = (q @ k_full.transpose(-1, -2)) * 0.3
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    scores = scores.masked_fill(~(causal & valid[:, None, None, :]), float("-inf"))
    expected = torch.softmax(scores, -1)[:, :, -1, :].mean(1)
    got = text_query_relevance(q[:, :, -1:], k, valid, 0.3)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
    assert torch.all(got[~valid] == 0)


def test_encoder_attention_received_respects_segments():
    q, k = torch.randn(10, 2, 4), torch.randn(10, 2, 4)
    received = encoder_attention_received(q, k, torch.tensor([0, 4, 10]), 0.5)
    # in each segment the received attention averages to 1 / segment length
    assert torch.allclose(received[:4].sum(), torch.tensor(1.0)) and torch.allclose(received[4:].sum(), torch.tensor(1.0))
    probs = torch.softmax((q[:4].transpose(0, 1) @ k[:4].transpose(0, 1).transpose(-1, -2)) * 0.5, -1)
    assert torch.allclose(received[:4], probs.mean((0, 1)))
