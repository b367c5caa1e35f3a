"""The fast encoders' stage-1 record (SegmentChunks) holds its segment bounds on the device; begin's one host
transfer carries them, so the stage-1 weights read nothing more than with the graph taps' host-known chunks,
and they are the same weights."""

import pytest
import torch

from seats_fx.call import SeatsCall, _device_bounded_records, _received
from seats_fx.config import SeatsConfig
from seats_fx.encoder_attention import SegmentChunks
from seats_fx.host_reads import HostReadCounter
from seats_fx.models.qwen2_5_omni import Qwen2_5OmniAdapter
from seats_fx.runtime import EncoderTaps, ModalityTap, VisionRun, take_encoder_taps

HEADS, HEAD_DIM, SCALE = 2, 4, 0.5


def _record(bounds: list[int], seed: int) -> SegmentChunks:
    """A record as the op makes it: (1, H, N, hd) q/k, a transpose of the towers' (1, N, H, hd) projections."""
    gen = torch.Generator().manual_seed(seed)
    query, key = (torch.randn(1, bounds[-1], HEADS, HEAD_DIM, generator=gen).transpose(1, 2) for _ in range(2))
    return SegmentChunks(query.clone(), key.clone(), torch.tensor(bounds, dtype=torch.int32))


def _received_per_segment(record: SegmentChunks, bounds: list[int]) -> torch.Tensor:
    """Independent of the code under test: per segment, softmax of q·k per head, mean over heads and queries."""
    out = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k = record.query[0, :, start:end], record.key[0, :, start:end]  # (H, n, hd)
        out.append(torch.softmax(q @ k.transpose(-1, -2) * SCALE, -1).mean((0, 1)))
    return torch.cat(out)


def test_given_bounds_split_the_record_without_a_host_read():
    bounds = [0, 3, 3, 8, 10]  # an empty segment too (repeated bounds)
    record = _record(bounds, 0)
    record.set_host_bounds(bounds)
    with HostReadCounter(where=True) as counts:
        chunks = list(record)
    assert counts.reads == 0, counts.read_sites
    assert [q.shape[2] for q, _ in chunks] == [3, 0, 5, 2] and len(record) == 4
    assert torch.equal(torch.cat([k for _, k in chunks], 2), record.key)


def test_without_given_bounds_the_record_reads_them_once():
    record = _record([0, 4, 10], 1)
    with HostReadCounter(where=True) as counts:
        list(record)
        record.bounds()
    assert counts.reads == 1, counts.read_sites
    assert record.bounds() == [0, 4, 10]


@pytest.mark.parametrize("bounds", [[0, 4], [0, 4, 9], [1, 4, 10], [0, 6, 4, 10]])
def test_bounds_that_are_not_the_records_are_refused(bounds):
    record = _record([0, 4, 10], 2)
    with pytest.raises(ValueError, match="expected the 3 non-decreasing segment bounds of this call, from 0 to its 10"):
        record.set_host_bounds(bounds)


def test_received_from_the_packed_record_is_what_the_split_chunks_give_and_reads_nothing():
    bounds = [0, 5, 10, 15, 17, 22]  # equal-length runs and odd ones, as windows and frames give
    record = _record(bounds, 3)
    record.set_host_bounds(bounds)
    with HostReadCounter(where=True) as counts:
        got = _received(record, SCALE)
    assert counts.reads == 0, counts.read_sites
    # the chunks as the graph taps hand them over (a list of per-segment (q, k), host-known shapes)
    split = [(q.clone(), k.clone()) for q, k in record]
    assert torch.equal(got, _received(split, SCALE))
    torch.testing.assert_close(got, _received_per_segment(record, bounds), atol=1e-6, rtol=1e-5)


def test_the_op_records_a_segment_chunks_with_its_bounds_on_the_device():
    take_encoder_taps()
    record = _record([0, 3, 8], 4)
    torch.ops.seats_fx.encoder_attention(record.query, record.key, record.key, record.cu_seqlens, 5, SCALE, "audio")
    recorded = take_encoder_taps().audio_chunks
    assert isinstance(recorded, SegmentChunks) and recorded.cu_seqlens is record.cu_seqlens
    assert torch.equal(recorded.query, record.query) and recorded.query is not record.query


def test_only_the_records_stage1_can_read_have_their_bounds_carried():
    audio = _record([0, 4, 8], 5)
    runs = [VisionRun(torch.arange(2), _record([0, 8], seed)) for seed in (6, 7, 8)]
    tapped = [(torch.zeros(1, HEADS, 4, HEAD_DIM),) * 2]  # a graph tap's chunks: bounds known already
    taps = EncoderTaps(torch.tensor([16]), audio, SCALE, [*runs, VisionRun(torch.arange(1), None)])
    # one run per vision kind (image, video) at most: the last two with a record
    assert _device_bounded_records(taps) == (audio, runs[1].chunks, runs[2].chunks)
    assert _device_bounded_records(EncoderTaps(None, tapped, SCALE, [VisionRun(torch.arange(1), tapped)])) == ()


# ---- begin: the bounds travel in its one transfer ---------------------------------------------------------
VIDEO_ID, AUDIO_ID, IMAGE_ID = 5, 6, 7
AUDIO_BOUNDS = [0, 5, 8]  # 8 frames after the stride-2 convolution: mel 16, pooled to 4 audio tokens
VISION_BOUNDS = [0, 4, 12, 16]  # 16 patches, 4 per token (Qwen2.5-Omni's 2x2 merge): 4 video tokens
WINDOW_INDEX = torch.tensor([2, 0, 3, 1])


def _begin(encoder_taps: EncoderTaps):
    """Runs SeatsCall.begin on a hand-made prompt (4 video, 4 audio tokens in two 2 s windows) and the given
    encoder records; returns the call, the prompt's ids and the host reads begin made."""
    ids = torch.tensor([[1, 2, VIDEO_ID, VIDEO_ID, AUDIO_ID, AUDIO_ID, VIDEO_ID, VIDEO_ID, AUDIO_ID, AUDIO_ID, 3, 4]])
    weight = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    tap = ModalityTap(ids, {"video": (VIDEO_ID,), "audio": (AUDIO_ID,), "image": (IMAGE_ID,)}, weight)
    call = SeatsCall(SeatsConfig(retention=0.5), Qwen2_5OmniAdapter, 8, tap, encoder_taps, 25,
                     lambda reason, kind: None)
    temporal = torch.tensor([0, 1, 2, 2, 2, 2, 52, 52, 52, 52, 102, 103])
    with HostReadCounter(where=True) as counts:
        call.begin(weight[ids], temporal.expand(3, 1, -1), None)
    return call, ids[0], counts


def _fast_encoder_taps(audio: bool = True) -> EncoderTaps:
    audio_record = _record(AUDIO_BOUNDS, 10) if audio else None
    run = VisionRun(WINDOW_INDEX, _record(VISION_BOUNDS, 11), SCALE)
    return EncoderTaps(torch.tensor([16]) if audio else None, audio_record, SCALE, [run])


def test_begin_reads_the_records_bounds_in_its_one_transfer_and_weights_tokens_by_their_attention():
    taps = _fast_encoder_taps()
    call, ids, counts = _begin(taps)
    assert counts.reads == 1, counts.read_sites
    assert call.active and call.stats.stage1_signal == {"audio": "encoder attention", "video": "encoder attention"}
    audio, run = taps.audio_chunks, taps.vision_runs[0]
    assert audio.bounds() == AUDIO_BOUNDS and run.chunks.bounds() == VISION_BOUNDS
    # independent: frames pooled in pairs; patches merged 4 to a token, then out of window order
    frames = _received_per_segment(audio, AUDIO_BOUNDS)
    patches = _received_per_segment(run.chunks, VISION_BOUNDS).view(-1, 4).mean(1)
    weights = call.token_weights[0]
    torch.testing.assert_close(weights[ids == AUDIO_ID], frames.view(-1, 2).mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights[ids == VIDEO_ID], patches[torch.argsort(WINDOW_INDEX)], atol=1e-6, rtol=1e-5)
    assert torch.all(weights[(ids != AUDIO_ID) & (ids != VIDEO_ID)] == 0)


def test_a_missing_audio_record_falls_back_to_uniform_with_the_vision_records_bounds_still_carried():
    call, ids, counts = _begin(_fast_encoder_taps(audio=False))
    assert counts.reads == 1, counts.read_sites
    assert call.stats.stage1_signal["video"] == "encoder attention"
    assert call.stats.stage1_signal["audio"].startswith("uniform (the audio tower's last attention was not seen")
    assert torch.all(call.token_weights[0][ids == AUDIO_ID] == 1)
