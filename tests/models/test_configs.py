import torch
from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration

from seats_fx.models.configs import (REAL_TOKEN_IDS, TinySpec, real_qwen2_5_omni_config, real_qwen3_omni_moe_config,
                                     tiny_qwen3_omni_moe_config, token_ids_for_vocab)


def test_real_configs_build_on_meta_with_real_depths():
    with torch.device("meta"):
        seven = Qwen2_5OmniThinkerForConditionalGeneration(real_qwen2_5_omni_config("7B"))
        three = Qwen2_5OmniThinkerForConditionalGeneration(real_qwen2_5_omni_config("3B"))
        moe = Qwen3OmniMoeThinkerForConditionalGeneration(real_qwen3_omni_moe_config())
    assert len(seven.model.language_model.layers) == 28 and seven.config.text_config.hidden_size == 3584
    assert len(three.model.language_model.layers) == 36 and three.config.text_config.hidden_size == 2048
    assert len(moe.model.language_model.layers) == 48 and moe.config.text_config.num_experts == 128
    assert seven.config.vision_start_token_id == REAL_TOKEN_IDS["vision_bos"]


def test_small_vocab_moves_special_ids_to_its_top_and_large_keeps_real_ones():
    small = token_ids_for_vocab(1024)
    assert max(small.values()) < 1024 and len(set(small.values())) == len(small)
    assert token_ids_for_vocab(152064) == REAL_TOKEN_IDS


def test_tiny_qwen3_omni_moe_thinker_runs_text():
    torch.manual_seed(0)
    model = Qwen3OmniMoeThinkerForConditionalGeneration(tiny_qwen3_omni_moe_config(TinySpec(num_layers=4))).eval()
    ids = torch.randint(0, 900, (1, 12))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (1, 12, 1024) and torch.isfinite(logits).all()
