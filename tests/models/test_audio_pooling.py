"""Stage 1's audio weights follow the audio tower's stride-2 average pooling: the pair index built on the host
from mel lengths (what the backend's glue has, no device read) equals transformers' get_pool_indices."""

import torch
from hypothesis import given
from hypothesis import strategies as st

from seats_fx.models.qwen2_5_omni import _pool_pairs


@given(mel_lengths=st.lists(st.integers(1, 3200), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_host_pair_index_equals_transformers_pooling(mel_lengths, seed):
    frames = sum((mel - 1) // 2 + 1 for mel in mel_lengths)
    weights = torch.rand(frames, generator=torch.Generator().manual_seed(seed))
    from_host = _pool_pairs(weights, mel_lengths)
    from_transformers = _pool_pairs(weights, torch.tensor(mel_lengths))
    assert from_host.shape == from_transformers.shape
    assert torch.equal(from_host, from_transformers)
