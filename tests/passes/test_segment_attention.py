"""fuse_segment_attention: the per-segment SDPA calls of a captured graph become one encoder_attention call
with the same result, and graphs it does not understand are left alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from seats_fx.passes.segment_attention import fuse_segment_attention


def captured(fn, *inputs):
    """Returns the one Dynamo graph of fn(*inputs) (example values recorded, as the backend sees it)."""
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=keep, fullgraph=True, dynamic=False)(*inputs)
    assert len(graphs) == 1
    return graphs[0]


def per_segment(*qkv, scale=None):
    """transformers' sdpa path of a tower, in miniature: one call per segment, outputs put back together."""
    outputs = [F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, scale=scale)
               for q, k, v in zip(qkv[0::3], qkv[1::3], qkv[2::3])]
    return torch.cat([o.transpose(1, 2) for o in outputs], dim=1).reshape(-1, qkv[0].shape[1] * qkv[0].shape[-1])


def segments(lengths, heads, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, n, dim, generator=generator) for n in lengths for _ in range(3)]


def sdpa_calls(gm) -> int:
    return sum(node.op == "call_function" and node.target in (F.scaled_dot_product_attention,
                                                               torch._C._nn.scaled_dot_product_attention)
               for node in gm.graph.nodes)


@settings(max_examples=25)
@given(lengths=st.lists(st.integers(1, 9), min_size=2, max_size=5), heads=st.integers(1, 3),
       dim=st.sampled_from([4, 8]), scale=st.sampled_from([None, 0.3]), seed=st.integers(0, 99))
def test_one_call_gives_what_the_calls_per_segment_give(lengths, heads, dim, scale, seed):
    inputs = segments(lengths, heads, dim, seed)
    gm = captured(lambda *t: per_segment(*t, scale=scale), *inputs)
    expected = gm(*inputs)
    fused = fuse_segment_attention(gm)
    assert fused is not None and sdpa_calls(fused) == 0
    assert sum(node.target == torch.ops.seats_fx.encoder_attention.default for node in fused.graph.nodes) == 1
    torch.testing.assert_close(fused(*inputs), expected, atol=1e-6, rtol=1e-5)


def masked(*qkv):
    q0, k0, v0, q1, k1, v1 = qkv
    mask = torch.ones(q0.shape[2], k0.shape[2], dtype=torch.bool).tril()
    return torch.cat([F.scaled_dot_product_attention(q0, k0, v0, attn_mask=mask),
                      F.scaled_dot_product_attention(q1, k1, v1)], dim=2)


def causal(*qkv):
    q0, k0, v0, q1, k1, v1 = qkv
    return torch.cat([F.scaled_dot_product_attention(q0, k0, v0, is_causal=True),
                      F.scaled_dot_product_attention(q1, k1, v1, is_causal=True)], dim=2)


def two_scales(*qkv):
    q0, k0, v0, q1, k1, v1 = qkv
    return torch.cat([F.scaled_dot_product_attention(q0, k0, v0, scale=0.1),
                      F.scaled_dot_product_attention(q1, k1, v1, scale=0.2)], dim=2)


def one_call(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def separate(*qkv):
    return tuple(F.scaled_dot_product_attention(q, k, v) for q, k, v in zip(qkv[0::3], qkv[1::3], qkv[2::3]))


@pytest.mark.parametrize("fn, inputs", [
    (masked, segments([3, 3], 2, 4)),
    (causal, segments([3, 5], 2, 4)),
    (two_scales, segments([3, 5], 2, 4)),
    (one_call, segments([6], 2, 4)),
    (separate, [torch.randn(1, 2, 3, 4)] * 3 + [torch.randn(1, 3, 3, 4)] * 3),  # other head counts
    (separate, [torch.randn(2, 2, 3, 4)] * 6),  # two samples per call
], ids=["a mask", "causal", "two scales", "one call", "other heads", "batch 2"])
def test_graphs_it_does_not_understand_are_left_alone(fn, inputs):
    gm = captured(fn, *inputs)
    before = gm.code
    assert fuse_segment_attention(gm) is None
    assert gm.code == before
