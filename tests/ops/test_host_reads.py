"""The counting modes count what a GPU would stall on: every kind of host read once, uploads apart, and ops
at the dispatcher (views apart; a seats custom op once, its torch implementation apart on request)."""

import pytest
import torch

from seats_fx.host_reads import HostReadCounter
from seats_fx.ops.diversity import greedy_max_min, greedy_max_min_torch, weighted_cosine_distance

READS = {
    "item": lambda x: x[0].item(),
    "int": lambda x: int(x[1]),
    "float": lambda x: float(x[1]),
    "bool": lambda x: bool(x[0] > 1),
    "index": lambda x: [10, 20, 30][x[1]],
    "tolist": lambda x: x.tolist(),
    "cpu": lambda x: x.cpu(),
    "numpy": lambda x: x.numpy(),
    "nonzero": lambda x: torch.nonzero(x > 1),
    "masked_select": lambda x: torch.masked_select(x, x > 1),
    "boolean index": lambda x: x[x > 1],
    "boolean index put": lambda x: x.clone().__setitem__(x > 1, 0),
    "equal": lambda x: torch.equal(x, x),
    "unique": lambda x: torch.unique(x),
    "repeat_interleave": lambda x: torch.repeat_interleave(x.clamp(0, 2)),
}


@pytest.mark.parametrize("kind", sorted(READS))
def test_each_kind_of_host_read_counts_once(kind):
    x = torch.arange(5)
    with HostReadCounter(where=True) as counts:
        READS[kind](x)
    assert counts.reads == 1, (dict(counts.host_reads), counts.read_sites)
    assert __file__ in counts.read_sites[0]


def test_fixed_shape_ops_read_nothing_and_views_launch_nothing():
    x = torch.arange(12.0)
    with HostReadCounter() as counts:
        y = x.view(3, 4).t().expand(2, 4, 3)  # views
        index = torch.sort(x > 5, descending=True, stable=True).indices[:6]
        torch.zeros(12).index_fill_(0, index, 1.0).sum()
    assert counts.reads == 0 and counts.launches == 5, (dict(counts.ops), dict(counts.views))  # gt sort zeros fill sum
    assert sum(counts.views.values()) >= 4 and y.shape == (2, 4, 3)


def test_host_data_made_into_tensors_count_as_uploads():
    with HostReadCounter() as counts:
        torch.tensor([1, 2, 3])
        torch.arange(3)  # made on the device from host scalars: no upload
    assert sum(counts.uploads.values()) == 1 and counts.reads == 0


def test_a_seats_custom_op_is_one_op_and_its_torch_implementation_is_counted_apart():
    distance = weighted_cosine_distance(torch.randn(2, 10, 4), torch.rand(2, 10))
    with HostReadCounter() as outside:
        greedy_max_min(distance, 6)
    assert dict(outside.ops) == {"seats_fx::greedy_max_min": 1} and not outside.inner_ops
    with HostReadCounter(look_inside=True) as inside:
        picks = greedy_max_min(distance, 6)
    assert dict(inside.ops) == {"seats_fx::greedy_max_min": 1}
    # the torch loop: a few ops per step, 5 steps after the first pick
    assert sum(inside.inner_ops.values()) > 5 * 4 and inside.reads == 0
    assert torch.equal(picks, greedy_max_min_torch(distance, 6))
