"""Eager SEATS: the decoder run layer by layer with the model's own modules and plain-PyTorch selection.

This is the oracle every compiled rewrite is tested against, and the eager mode for researchers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from seats_fx.config import SeatsConfig
from seats_fx.models import EncodedPrompt, adapter_for
from seats_fx.models.layout import TEXT
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.ops.gather import gather_tokens
from seats_fx.ops.relevance import text_query_relevance
from seats_fx.ops.stage_select import stage1_keep_index, stage2_keep_index
from seats_fx.stage_plan import StagePlan

MODALITY_NAMES = {TEXT: "text", VIDEO: "video", AUDIO: "audio"}


@dataclass
class StageRecord:
    """One selection: `stage` ("stage1", "stage2", "stage3"), the 1-based layer it acts after (0 = before
    the LLM), the original positions it keeps, (B, K), and for stage 2 the relevance scores it ranked
    the tokens of the sequence entering that layer with, (B, L_before)."""

    stage: str
    after_layer: int
    kept_positions: torch.Tensor
    counts: dict[str, int]
    relevance: torch.Tensor | None = None


@dataclass
class SeatsResult:
    """Output of eager SEATS.

    logits: (B, K, V) for the K tokens the last layer processed; kept_positions: (B, K) their original
    positions; layer_positions[l]: original positions decoder layer l (0-based) processed;
    layer_counts[l]: tokens of each modality layer l processed; stages: every selection in order.
    """

    logits: torch.Tensor
    kept_positions: torch.Tensor
    layer_positions: list[torch.Tensor] = field(default_factory=list)
    layer_counts: list[dict[str, int]] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    plan: StagePlan | None = None

    @property
    def last_logits(self) -> torch.Tensor:
        """Returns (B, V) logits of the last token (what generation samples from)."""
        return self.logits[:, -1]


def _counts(modality: torch.Tensor) -> dict[str, int]:
    return {name: int((modality == code).sum()) for code, name in MODALITY_NAMES.items()}


class _DecoderState:
    """Per-token tensors of the current (pruned) sequence, all gathered with one index."""

    def __init__(self, encoded: EncodedPrompt, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        layout = encoded.layout
        self.hidden, self.cos, self.sin = hidden, cos, sin
        self.additions = list(encoded.layer_additions)
        self.attention_mask = encoded.attention_mask
        self.modality, self.window = layout.modality, layout.window
        self.positions = torch.arange(hidden.shape[1], device=hidden.device).expand(hidden.shape[0], -1)

    def keep(self, keep_index: torch.Tensor) -> None:
        self.hidden = gather_tokens(self.hidden, keep_index, 1)
        self.cos = gather_tokens(self.cos, keep_index, 1)
        self.sin = gather_tokens(self.sin, keep_index, 1)
        self.additions = [gather_tokens(a, keep_index, 1) for a in self.additions]
        for name in ("attention_mask", "modality", "window", "positions"):
            setattr(self, name, gather_tokens(getattr(self, name), keep_index, 1))


@torch.no_grad()
def _encode(adapter, inputs: dict, config: SeatsConfig, unweighted: tuple[str, ...]) -> EncodedPrompt:
    """Returns the encoded prompt; the stage-1 weights of the modalities in `unweighted` ("video" (images
    included), "audio") are uniform, as the backend uses them when an encoder's attention was not seen."""
    encoded = adapter.encode(inputs, config.window_seconds)
    codes = [{"video": VIDEO, "audio": AUDIO}[name] for name in unweighted]
    for code in codes:
        members = encoded.layout.modality == code
        encoded.token_weights = torch.where(members, torch.ones_like(encoded.token_weights), encoded.token_weights)
    return encoded


@torch.no_grad()
def seats_forward(model: nn.Module, inputs: dict, config: SeatsConfig | dict | None = None,
                  unweighted: tuple[str, ...] = ()) -> SeatsResult:
    """Returns SEATS logits and the record of kept tokens for one forward() call of an omni thinker.
    unweighted: modalities whose stage-1 selection ignores the encoder attention (uniform weights)."""
    config = SeatsConfig.from_options(config)
    adapter = adapter_for(model)
    return seats_decode(adapter, _encode(adapter, inputs, config, unweighted), config)


@torch.no_grad()
def seats_decode(adapter, encoded: EncodedPrompt, config: SeatsConfig, cache=None) -> SeatsResult:
    """Returns SEATS over the decoder for an already encoded prompt (stages 1-3, then norm + lm_head);
    with a transformers Cache, each layer appends the keys/values of the tokens it processed."""
    batch = encoded.inputs_embeds.shape[0]
    if batch != 1:
        raise NotImplementedError(f"the eager SEATS reference runs one sample at a time for now, got batch {batch}")
    plan = StagePlan.resolve(config, adapter.depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
    layout = encoded.layout
    video_count, audio_count = layout.count(VIDEO), layout.count(AUDIO)
    num_windows = layout.num_windows(0)
    cos, sin = adapter.rotary(encoded.inputs_embeds, encoded.position_ids)
    state = _DecoderState(encoded, encoded.inputs_embeds, cos, sin)
    result = SeatsResult(logits=torch.empty(0), kept_positions=state.positions, plan=plan)

    def record(stage: str, after_layer: int, relevance: torch.Tensor | None = None) -> None:
        result.stages.append(StageRecord(stage, after_layer, state.positions, _counts(state.modality), relevance))

    if config.stage1 and video_count + audio_count:
        levels = {VIDEO: plan.video.encoder_level, AUDIO: plan.audio.encoder_level}
        index = stage1_keep_index(state.hidden[0], encoded.token_weights[0], state.modality[0], state.window[0],
                                  levels, config.stage1_selector, config.seed)
        state.keep(index[None])
        record("stage1", 0)

    for layer in range(plan.depth):
        number = layer + 1
        if plan.late_block_layer is not None and number == plan.late_block_layer:
            state.keep(torch.nonzero(state.modality[0] == TEXT).flatten()[None])
            record("stage3", number - 1)
        relevance = None
        if number in plan.drop_layers and bool((state.modality != TEXT).any()):
            # scores come from this layer's own q/k on its input: the last text token's attention row
            query_row = torch.full((batch, 1), state.hidden.shape[1] - 1, device=state.hidden.device)
            q, k, scaling = adapter.text_query_parts(layer, state.hidden, state.cos, state.sin, query_row)
            relevance = text_query_relevance(q, k, state.attention_mask.bool(), scaling)
        mask = adapter.causal_mask(state.hidden, state.attention_mask)
        result.layer_positions.append(state.positions)
        result.layer_counts.append(_counts(state.modality))
        state.hidden = adapter.run_layer(layer, state.hidden, mask, state.cos, state.sin, cache)
        if layer < len(state.additions):
            state.hidden = state.hidden + state.additions[layer]  # deepstack (Qwen3-Omni)
        if relevance is not None:
            step = plan.drop_layers.index(number)
            video_keep, audio_keep = plan.stage2_keep(step, video_count, audio_count)
            index = stage2_keep_index(relevance[0], state.modality[0], state.window[0], num_windows,
                                      video_keep, audio_keep, config.window_temperature, config.stage2_allocation)
            state.keep(index[None])
            record("stage2", number, relevance)

    result.logits = adapter.logits(state.hidden)
    result.kept_positions = state.positions
    return result


@dataclass
class GenerationResult:
    """Greedy decoding after a SEATS prefill: tokens (B, N) generated, the prefill's record, the KV cache
    (each layer holds what it processed in the prefill, then every generated token but the last), and
    logits[t]: the (B, V) logits token t was chosen from (t = 0: the prefill's last row), as generate()
    reports them with output_logits=True."""

    tokens: torch.Tensor
    prefill: SeatsResult
    cache: object
    logits: tuple[torch.Tensor, ...] = ()


@torch.no_grad()
def seats_generate(model: nn.Module, inputs: dict, config: SeatsConfig | dict | None = None,
                   max_new_tokens: int = 8, eos_token_ids: tuple[int, ...] = (),
                   unweighted: tuple[str, ...] = ()) -> GenerationResult:
    """Returns greedy tokens after a SEATS prefill, decoding one token at a time with the model's layers.

    Generated token t (0-based) gets TMRoPE position max(prompt positions) + 1 + t on all three axes, as the
    unpruned model gives it; decoding stops after max_new_tokens or once every sample produced an eos id.
    """
    config = SeatsConfig.from_options(config)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    adapter = adapter_for(model)
    encoded = _encode(adapter, inputs, config, unweighted)
    cache = adapter.new_cache()
    prefill = seats_decode(adapter, encoded, config, cache)
    real = encoded.attention_mask[None].bool()
    next_position = encoded.position_ids.masked_fill(~real, -1).amax(dim=(0, 2)) + 1
    step_logits = [prefill.last_logits]
    token = prefill.last_logits.argmax(-1)
    tokens, finished = [token], torch.isin(token, torch.tensor(eos_token_ids, dtype=token.dtype))
    for step in range(1, max_new_tokens):
        if bool(finished.all()):
            break
        hidden = adapter.embed(token[:, None])
        positions = (next_position + step - 1).view(1, -1, 1).expand(3, -1, 1)
        cos, sin = adapter.rotary(hidden, positions)
        for layer in range(adapter.depth):
            hidden = adapter.run_layer(layer, hidden, None, cos, sin, cache)
        step_logits.append(adapter.logits(hidden)[:, -1])
        token = step_logits[-1].argmax(-1)
        tokens.append(token)
        finished |= torch.isin(token, torch.tensor(eos_token_ids, dtype=token.dtype))
    return GenerationResult(torch.stack(tokens, dim=1), prefill, cache, tuple(step_logits))
