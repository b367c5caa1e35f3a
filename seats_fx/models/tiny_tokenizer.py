"""A tiny byte-level tokenizer with the Qwen-Omni special tokens, for tiny checkpoints (no hub download here).

It is transformers' own `Qwen2Tokenizer` (byte-level BPE with Qwen's pre-tokenizer) over a vocabulary of the
256 byte symbols and no merges, so any text round-trips; the special tokens keep their real names and sit
where `configs.token_ids_for_vocab` puts them, so a tiny thinker config and this tokenizer agree."""

from __future__ import annotations

from tokenizers.pre_tokenizers import ByteLevel
from transformers import AddedToken, Qwen2Tokenizer

from seats_fx.models.configs import REAL_TOKEN_IDS, token_ids_for_vocab

# Qwen-Omni's added tokens, in id order from <|endoftext|> (151643); the names the processor looks up are
# those in SPECIAL_TOKEN_ATTRIBUTES
_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
]
SPECIAL_TOKEN_ATTRIBUTES = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
}

# A chat template written for the tiny checkpoints: the layout of Qwen-Omni's (ChatML turns; a video is
# <|vision_bos|><|VIDEO|><|vision_eos|>, which the processor expands into interleaved video and audio tokens)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}{{ '<|vision_bos|><|VIDEO|><|vision_eos|>' }}"
    "{% elif item['type'] == 'image' %}{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{% elif item['type'] == 'audio' %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer(vocab_size: int = 1024) -> Qwen2Tokenizer:
    """Returns a byte-level Qwen2 tokenizer whose special-token ids match a tiny config of `vocab_size`."""
    ids = token_ids_for_vocab(vocab_size)
    first_special = ids["pad"]
    if first_special < 256:
        raise ValueError(f"vocab_size must leave room for the 256 byte symbols below the special tokens, got {vocab_size}")
    vocab = {symbol: index for index, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    # ids between the bytes and the special tokens are reserved: never produced by this tokenizer
    vocab.update({f"<|reserved_{index}|>": index for index in range(256, first_special)})
    offset = first_special - REAL_TOKEN_IDS["pad"]
    for position, token in enumerate(_ADDED_TOKENS):
        vocab[token] = REAL_TOKEN_IDS["pad"] + offset + position
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE, **SPECIAL_TOKEN_ATTRIBUTES)
    tokenizer.add_special_tokens({"extra_special_tokens": [AddedToken(t, special=True) for t in _ADDED_TOKENS]})
    for name, token in (("audio", "<|AUDIO|>"), ("video", "<|VIDEO|>"), ("image", "<|IMAGE|>"),
                        ("audio_bos", "<|audio_bos|>"), ("vision_bos", "<|vision_bos|>"), ("im_end", "<|im_end|>")):
        if tokenizer.convert_tokens_to_ids(token) != ids[name]:
            raise AssertionError(f"tiny tokenizer puts {token} at {tokenizer.convert_tokens_to_ids(token)}, "
                                 f"the config expects {ids[name]}")
    return tokenizer
