"""The counting modes count what a GPU would stall on: every kind of host read once, uploads apart, and ops
at the dispatcher (views apart; a seats custom op once, its torch implementation apart on request); and the
layout sizes (seats_fx.ops.sizes) come back in one read."""

import pytest
import torch

from seats_fx.host_reads import HostReadCounter
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.diversity import greedy_max_min, greedy_max_min_torch, weighted_cosine_distance
from seats_fx.ops.sizes import read_sizes, sizes_on_host

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


def _counted_sizes(modality, window, valid):
    """Brute-force SampleSizes fields per sample: (text, ((video, audio) per window), padding)."""
    result = []
    for m, w, v in zip(modality.tolist(), window.tolist(), valid.tolist()):
        windows = max(w) + 1
        pairs = tuple((sum(1 for a, b in zip(m, w) if b == i and a == VIDEO),
                       sum(1 for a, b in zip(m, w) if b == i and a == AUDIO)) for i in range(windows))
        result.append((sum(1 for a, r in zip(m, v) if a == 0 and r), pairs, v.count(0)))
    return result


def test_layout_sizes_come_back_in_one_read_and_equal_the_host_count():
    # sample 0: left padding, text, windows 0 and 1 (video and audio); sample 1: window 2 audio only
    modality = torch.tensor([[0, 0, 0, 1, 1, 2, 1, 2, 2, 0], [0, 2, 2, 0, 1, 1, 2, 0, 0, 0]])
    window = torch.tensor([[-1, -1, -1, 0, 0, 0, 1, 1, 1, -1], [-1, 2, 2, -1, 0, 1, 1, -1, -1, -1]])
    valid = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 10])
    with HostReadCounter(where=True) as counts:
        sizes = read_sizes(modality, window, valid)
    assert counts.reads == 1, counts.read_sites
    assert [(s.text, s.windows, s.padding) for s in sizes] == _counted_sizes(modality, window, valid)
    assert sizes[1].windows == ((1, 0), (1, 1), (0, 2))
    assert sizes == sizes_on_host(modality.numpy(), window.numpy(), valid.numpy())


def test_window_ids_past_the_length_are_counted_in_the_same_read():
    # empty windows between sparse frames: window id 12 in a 4-token sequence
    modality, window = torch.tensor([[0, 1, 2, 0]]), torch.tensor([[-1, 0, 12, -1]])
    with HostReadCounter() as counts:
        sizes = read_sizes(modality, window)
    assert counts.reads == 1
    assert sizes[0].text == 2 and sizes[0].windows[0] == (1, 0) and sizes[0].windows[12] == (0, 1)
    assert sizes[0].num_windows == 13 and sizes[0].padding == 0


def test_a_custom_op_of_two_triton_kernels_counts_two_launches():
    from seats_fx.ops.budget import top_per_slot

    scores, slot = torch.tensor([0.5, 0.2, 0.9, 0.1]), torch.tensor([0, 0, 1, 1])
    with HostReadCounter() as counts:
        kept = top_per_slot(scores, slot, torch.tensor([1, 2]), 3)
    assert dict(counts.ops) == {"seats_fx::top_per_slot": 1} and counts.launches == 2
    assert kept.tolist() == [0, 2, 3]
