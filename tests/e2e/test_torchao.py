"""torchao int8 weight-only quantization, then the seats backend: the same kept tokens as the eager reference
run on the quantized model, logits within tolerance."""

import pytest
import torch

# the compat venvs (make test-compat) install the smoke extra only, without torchao
pytest.importorskip("torchao")
from torchao.quantization import Int8WeightOnlyConfig, quantize_  # noqa: E402
from transformers import Qwen2_5OmniThinkerForConditionalGeneration

from seats_fx.models.configs import tiny_qwen2_5_omni_config
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs

from eager_towers import towers_run_eagerly
from test_backend import assert_matches_reference


@pytest.fixture(scope="module")
def quantized_thinker():
    torch.manual_seed(0)
    model = Qwen2_5OmniThinkerForConditionalGeneration(tiny_qwen2_5_omni_config()).eval()
    quantize_(model, Int8WeightOnlyConfig())
    return towers_run_eagerly(model)  # the quantized linears are the decoder's: its trace is what matters


def test_weights_are_quantized(quantized_thinker):
    layer = quantized_thinker.model.language_model.layers[0]
    assert type(layer.self_attn.q_proj.weight).__name__ == "Int8Tensor"
    assert type(quantized_thinker.lm_head.weight).__name__ == "Int8Tensor"


@pytest.mark.parametrize("inductor", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_quantized_thinker_matches_its_eager_reference(quantized_thinker, inductor):
    inputs = synthetic_clip_inputs(quantized_thinker.config, ClipSpec(video_seconds=4, seed=3))
    stats = assert_matches_reference(quantized_thinker, inputs, {"retention": 0.2, "inductor": inductor},
                                     atol=1e-4 if not inductor else 1e-3, dynamic=True)
    assert stats.pruned and stats.mean_fraction("video") < 0.3
