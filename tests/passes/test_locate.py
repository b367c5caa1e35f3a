"""locate on the graphs Dynamo really produces for a tiny Qwen2.5-Omni thinker."""

import pytest
import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.models import adapter_for, model_facts
from seats_fx.models.configs import TinySpec, tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.passes.dynamo_meta import frame_module
from seats_fx.passes.locate import (Unsupported, locate_decoder, locate_encoder_taps, locate_tap)

from eager_towers import fresh_copy, towers_run_eagerly


def captured_graphs(model, inputs, dynamic=None, **call_kwargs):
    """Returns, per Dynamo graph, what locate says about it (run while Dynamo's metadata is attached), with
    the facts a bare torch.compile(backend="seats") has: those of the module whose frame is compiled."""
    graphs = []

    def capture(gm, example_inputs):
        frame = frame_module()
        facts = model_facts(frame)
        try:
            decoder = locate_decoder(gm, facts)
        except Unsupported as reason:
            decoder = reason
        graphs.append((decoder, locate_tap(gm, facts.token_ids if facts else None), locate_encoder_taps(gm, frame)))
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=capture, dynamic=dynamic)
    with torch.no_grad():
        compiled(**inputs, **call_kwargs)
    torch._dynamo.reset()
    return graphs


@pytest.fixture(scope="module")
def three_layer():
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config(TinySpec(num_layers=3))).eval()
    return model, synthetic_clip_inputs(model.config, ClipSpec(video_seconds=4))


@pytest.fixture(scope="module")
def static_graphs(three_layer):
    """What locate says about each graph of one static trace (shared: a trace is most of a test's time)."""
    return captured_graphs(*three_layer)


@pytest.mark.parametrize("dynamic", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_locate_finds_every_layer_and_the_per_token_inputs(three_layer, static_graphs, dynamic):
    model, inputs = three_layer
    # the dynamic trace with the towers run eagerly: the decoder's graph is the same, and the towers' per-frame
    # loops would cost a dynamic retrace (their taps: test_locate_finds_modality_taps_and_encoder_attention)
    graphs = captured_graphs(towers_run_eagerly(fresh_copy(model)), inputs, dynamic=True) if dynamic else static_graphs
    plans = [d for d, _, _ in graphs if d]
    assert len(plans) == 1
    plan = plans[0]
    assert [layer.index for layer in plan.layers] == [0, 1, 2]
    assert plan.layers[1].input is plan.layers[0].output and plan.layers[2].input is plan.layers[1].output
    assert len(plan.per_token) == 2 and plan.mask is not None
    assert plan.positions.meta["example_value"].shape[0] == 3
    length = inputs["input_ids"].shape[1]
    if dynamic:
        assert plan.seq_len and all(isinstance(n, torch.fx.Node) for n in plan.seq_len)
    else:
        assert plan.seq_len == length
    for layer in plan.layers:
        assert layer.query.meta["example_value"].shape[2] == length


def test_locate_finds_modality_taps_and_encoder_attention(three_layer, static_graphs):
    model, _ = three_layer
    graphs = static_graphs
    taps = [t for _, t, _ in graphs if t]
    config = model.config
    assert taps and all(t.token_ids == {"image": (config.image_token_id,), "video": (config.video_token_id,),
                                        "audio": (config.audio_token_id,)} for t in taps)
    kinds = {kind for _, _, encoder in graphs for kind, _ in encoder}
    assert kinds == {"audio_lengths", "window_index", "audio_chunks", "vision_chunks"}


@pytest.mark.slow
def test_position_ids_passed_in_puts_the_merge_in_the_decoder_graph(three_layer):
    model, inputs = three_layer
    # transformers 5.17 keeps get_rope_index on the thinker, later 5.x on thinker.model: the adapter knows which
    positions, _ = adapter_for(model).multimodal.get_rope_index(inputs["input_ids"], None, inputs["video_grid_thw"],
                                              inputs["attention_mask"], True,
                                              inputs["feature_attention_mask"].sum(-1), inputs["video_second_per_grid"])
    plans = [d for d, _, _ in captured_graphs(model, inputs, position_ids=positions) if d]
    assert len(plans) == 1 and plans[0].inputs_embeds.op != "placeholder"  # the video masked_scatter


def test_sliding_window_layers_are_unsupported_with_a_reason():
    torch.manual_seed(0)
    config = tiny_qwen2_5_omni_config(TinySpec(num_layers=3))
    config.text_config.use_sliding_window = True
    config.text_config.sliding_window = 16
    config.text_config.layer_types = ["full_attention", "sliding_attention", "full_attention"]
    # the towers run eagerly: the refusal is the decoder's, and the trace is then the decoder's only
    model = towers_run_eagerly(Qwen2_5OmniThinkerForConditionalGeneration(config).eval())
    graphs = captured_graphs(model, synthetic_clip_inputs(config, ClipSpec(video_seconds=2)))
    reasons = [str(d) for d, _, _ in graphs if isinstance(d, Unsupported)]
    assert reasons and "different attention masks" in reasons[0]
