"""Fast encoder towers: one variable-length attention call per encoder layer instead of one per segment.

Qwen-Omni's vision and audio towers attend within segments given by `cu_seqlens` (vision windows and frames,
audio chunks). Under "sdpa" every layer splits q/k/v per segment and calls SDPA once per segment (16,320
calls in one 7B-shaped 60 s prefill); when the tower's attention implementation has "flash" in its name,
transformers makes one call per layer with `cu_seq_lens_q/k` and `max_length_q/k` instead. We register our
own implementation under such a name with transformers' `AttentionInterface` (the supported extension point:
no model code edited) and set it on the two towers' configs only, never on the decoder's.

That call is one opaque op, `torch.ops.seats_fx.encoder_attention`: on CUDA in half precision torch's
`varlen_attn` (flash, torch >= 2.10); elsewhere one SDPA call over the segments padded to the longest one,
padding keys masked out. Masked keys add exact zeros, so each segment's result is its own attention (the
per-segment path up to float rounding), and the cost stays that of the segments, not of the packed length
squared (a block-diagonal mask over all N tokens would cost N^2: 1.2e9 entries per layer for a 60 s clip).

Stage 1 of SEATS needs the last encoder layer's q/k. The op records them itself when it runs (so it works
whether the towers run inside a compiled forward or eagerly, as generate() runs them), for the one attention
module per tower that `use_fast_encoders(model, stage1_taps=True)` marks: the last layer's. A forward
pre-hook on the vision tower then starts the tower's run in the runtime (with Qwen2.5-Omni's window
permutation) before any of its code runs. Another one on the audio tower cuts the mel features into chunks
eagerly, so that no Dynamo graph depends on the number of chunks (one recompile per audio length before).
"""

from __future__ import annotations

import copy
import functools
import inspect
import sys
import weakref
from collections.abc import Sequence
from typing import Iterator

import torch
from torch import nn
from transformers import AttentionInterface

from seats_fx import runtime

# transformers routes the towers to their one-call-per-layer branch when this name contains "flash"
ATTENTION_NAME = "seats_encoder_flash"
# attribute set on the last attention module of a tower whose q/k stage 1 needs: "audio" or "vision"
TAP_ATTRIBUTE = "seats_stage1_tap"


# ---- the op ---------------------------------------------------------------------------------------------
@functools.cache
def _varlen_attn():
    """Returns torch.nn.attention.varlen.varlen_attn, or None where this torch has none (< 2.10)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@functools.cache
def _varlen_takes_scale() -> bool:
    return "scale" in inspect.signature(_varlen_attn()).parameters


def _uses_varlen(query: torch.Tensor) -> bool:
    """True where torch's flash varlen kernel serves these inputs: CUDA at sm80+ (flash), half precision,
    a head dim flash has (a multiple of 8 up to 256), and a torch that has varlen_attn."""
    head_dim = query.shape[-1]
    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0
            and head_dim <= 256 and _varlen_attn() is not None
            and torch.cuda.get_device_capability(query.device) >= (8, 0))


def _flash_varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                  max_seqlen: int, scale: float) -> torch.Tensor:
    """Returns (N, H, hd) from torch's varlen flash attention over packed (N, H, hd) inputs."""
    varlen_attn = _varlen_attn()
    cu = cu_seqlens.to(torch.int32)
    # Qwen3-Omni's v is a strided slice of one qkv projection; the kernels want dense rows
    query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    if _varlen_takes_scale():
        return varlen_attn(query, key, value, cu, cu, max_seqlen, max_seqlen, scale=scale)
    # a varlen_attn without a scale argument scales by head_dim ** -0.5
    query = query * (scale * query.shape[-1] ** 0.5)
    return varlen_attn(query, key, value, cu, cu, max_seqlen, max_seqlen)


def padded_segment_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             cu_seqlens: torch.Tensor, max_seqlen: int, scale: float) -> torch.Tensor:
    """Returns (N, H, hd): attention within each segment [cu[i], cu[i+1]) of packed (N, H, hd) inputs, as one
    SDPA call over the segments padded to `max_seqlen` (padding keys masked), or read in place when all
    segments are `max_seqlen` long."""
    total, heads, _ = query.shape
    segments = cu_seqlens.numel() - 1
    if total == segments * max_seqlen:
        # every segment is full (the frames of a video, the windows of a frame that tiles evenly): the packed
        # rows already are (S, L) segments, so SDPA reads them in place, nothing padded or masked
        as_batch = [x.view(segments, max_seqlen, heads, x.shape[-1]).transpose(1, 2) for x in (query, key, value)]
        out = torch.nn.functional.scaled_dot_product_attention(*as_batch, scale=scale)
        return out.transpose(1, 2).reshape(total, heads, value.shape[-1])
    cu = cu_seqlens.to(device=query.device, dtype=torch.long)
    lengths = cu[1:] - cu[:-1]
    segment_of = torch.repeat_interleave(torch.arange(segments, device=query.device), lengths, output_size=total)
    offset = torch.arange(total, device=query.device) - cu[:-1][segment_of]

    def padded(x: torch.Tensor) -> torch.Tensor:
        # (S, H, L, hd): SDPA's layout, one "batch" entry per segment
        out = x.new_zeros(segments, max_seqlen, heads, x.shape[-1])
        out[segment_of, offset] = x
        return out.transpose(1, 2)

    # some segment is shorter than the longest: its padding keys are masked (they add exact zeros)
    mask = (torch.arange(max_seqlen, device=query.device) < lengths[:, None])[:, None, None, :]
    out = torch.nn.functional.scaled_dot_product_attention(padded(query), padded(key), padded(value),
                                                           attn_mask=mask, scale=scale)
    return out.transpose(1, 2)[segment_of, offset]


def segment_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                      max_seqlen: int, scale: float) -> torch.Tensor:
    """Returns (N, H, hd) attention within each cu_seqlens segment of packed (N, H, hd) q, k, v (one call)."""
    if _uses_varlen(query):
        return _flash_varlen(query, key, value, cu_seqlens, max_seqlen, scale)
    return padded_segment_attention(query, key, value, cu_seqlens, max_seqlen, scale)


class SegmentChunks(Sequence):
    """The per-segment (q, k) of one attention call, each (1, H, n, hd) as runtime.record_attention_chunks
    takes them, split only when read: recording costs no host sync and no copy per call.

    The segment bounds are the call's cu_seqlens, on the device. The selection learns them in begin's one
    host transfer and hands them back with set_host_bounds; reading the chunks before that reads the bounds
    (one host read, a GPU stall on CUDA)."""

    def __init__(self, query: torch.Tensor, key: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
        self.query, self.key, self.cu_seqlens = query, key, cu_seqlens
        self._host_bounds: list[int] | None = None
        self._chunks: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def set_host_bounds(self, bounds: Sequence[int]) -> None:
        """Gives the values of cu_seqlens, read on the host elsewhere (in a transfer that was made anyway)."""
        bounds = [int(b) for b in bounds]
        total = self.query.shape[2]
        if (len(bounds) != self.cu_seqlens.numel() or bounds[0] != 0 or bounds[-1] != total
                or any(end < start for start, end in zip(bounds[:-1], bounds[1:]))):
            raise ValueError(f"expected the {self.cu_seqlens.numel()} non-decreasing segment bounds of this call, "
                             f"from 0 to its {total} tokens, got {bounds}")
        self._host_bounds, self._chunks = bounds, None

    def bounds(self) -> list[int]:
        """Returns cu_seqlens as host integers: those given to set_host_bounds, else read (one host read)."""
        if self._host_bounds is None:
            self._host_bounds = self.cu_seqlens.tolist()
        return self._host_bounds

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (query, key), each (N, H, hd) over all segments (views, no copy)."""
        return self.query[0].transpose(0, 1), self.key[0].transpose(0, 1)

    def _split(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._chunks is None:
            bounds = self.bounds()
            lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
            self._chunks = list(zip(self.query.split(lengths, dim=2), self.key.split(lengths, dim=2)))
        return self._chunks

    def __len__(self) -> int:
        return self.cu_seqlens.numel() - 1

    def __getitem__(self, index):
        return self._split()[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self._split())


@torch.library.custom_op("seats_fx::encoder_attention", mutates_args=())
def encoder_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                      max_seqlen: int, scale: float, tap: str) -> torch.Tensor:
    """Returns (N, H, hd) attention within the cu_seqlens segments of (1, H, N, hd) q, k, v (the layout the
    towers hand to an attention function). tap "audio" / "vision" records this call's q/k for stage 1."""
    if tap:
        # The recorded q/k must outlive this call: under Inductor the buffers of the op's inputs are reused
        # by later kernels of the same graph, so the one tapped layer per tower keeps its own copy.
        runtime.record_attention_chunks(tap, SegmentChunks(query.clone(), key.clone(), cu_seqlens), scale)
    packed = [x[0].transpose(0, 1) for x in (query, key, value)]  # (N, H, hd)
    return segment_attention(*packed, cu_seqlens, max_seqlen, scale).contiguous()


@encoder_attention.register_fake
def _(query, key, value, cu_seqlens, max_seqlen, scale, tap):
    _, heads, total, _ = query.shape
    return query.new_empty(total, heads, value.shape[-1])


# ---- the transformers attention function -----------------------------------------------------------------
def encoder_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                              attention_mask: torch.Tensor | None, dropout: float = 0.0,
                              scaling: float | None = None, is_causal: bool | None = None,
                              cu_seq_lens_q: torch.Tensor | None = None, cu_seq_lens_k: torch.Tensor | None = None,
                              max_length_q: int | None = None, max_length_k: int | None = None,
                              **kwargs) -> tuple[torch.Tensor, None]:
    """Returns ((1, N, H, hd), None): what transformers expects of a "flash" attention function, for the
    vision and audio towers' calls (q/k/v (1, H, N, hd), segments in cu_seq_lens_q == cu_seq_lens_k)."""
    if cu_seq_lens_q is None:
        raise ValueError(f"{ATTENTION_NAME} serves the Qwen-Omni encoder towers' variable-length calls, which pass "
                         f"cu_seq_lens_q; {type(module).__name__} called it without (set it on the towers only)")
    if cu_seq_lens_k is not None and cu_seq_lens_k is not cu_seq_lens_q:
        raise ValueError(f"{ATTENTION_NAME} expects self-attention segments (cu_seq_lens_k is cu_seq_lens_q), "
                         f"got other key segments in {type(module).__name__}")
    if is_causal or attention_mask is not None or dropout:
        raise ValueError(f"{ATTENTION_NAME} expects non-causal attention without mask or dropout, got "
                         f"is_causal={is_causal}, mask={attention_mask is not None}, dropout={dropout}")
    if query.shape[0] != 1:
        raise ValueError(f"{ATTENTION_NAME} expects packed (1, H, N, hd) inputs, got query {tuple(query.shape)}")
    scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
    max_seqlen = max_length_q
    if max_seqlen is None:  # the towers pass it (computed once per tower call); a direct call may not
        max_seqlen = int((cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]).max())
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
        # training: the same math through differentiable ops (the op has no backward), nothing recorded
        packed = [x[0].transpose(0, 1) for x in (query, key, value)]
        return segment_attention(*packed, cu_seq_lens_q, max_seqlen, scale).unsqueeze(0), None
    tap = getattr(module, TAP_ATTRIBUTE, "")
    out = torch.ops.seats_fx.encoder_attention(query, key, value, cu_seq_lens_q, max_seqlen, scale, tap)
    return out.unsqueeze(0), None


AttentionInterface.register(ATTENTION_NAME, encoder_attention_forward)


# ---- turning it on ----------------------------------------------------------------------------------------
def _thinker(model: nn.Module) -> nn.Module:
    thinker = getattr(model, "thinker", None)
    return thinker if isinstance(thinker, nn.Module) else model


def encoder_towers(model: nn.Module) -> dict[str, nn.Module]:
    """Returns {"vision": tower, "audio": tower} (those the model has) of a Qwen-Omni thinker or full model.
    transformers >= 5.18 keeps them on thinker.model, 5.17 on the thinker itself."""
    thinker = _thinker(model)
    towers: dict[str, nn.Module] = {}
    for holder in (getattr(thinker, "model", None), thinker):
        if not isinstance(holder, nn.Module):
            continue
        for kind, name in (("vision", "visual"), ("audio", "audio_tower")):
            tower = getattr(holder, name, None)
            if isinstance(tower, nn.Module) and kind not in towers:
                towers[kind] = tower
    return towers


def tower_attention_modules(tower: nn.Module, kind: str) -> list[nn.Module]:
    """Returns a tower's attention modules in layer order (vision: blocks[i].attn, audio: layers[i].self_attn)."""
    layers, attribute = (getattr(tower, "blocks", None), "attn") if kind == "vision" else \
        (getattr(tower, "layers", None), "self_attn")
    modules = [getattr(layer, attribute, None) for layer in (layers or [])]
    if not modules or any(m is None or not hasattr(m, "config") for m in modules):
        raise ValueError(f"expected a Qwen-Omni {kind} tower with per-layer attention modules "
                         f"({'blocks[i].attn' if kind == 'vision' else 'layers[i].self_attn'}), "
                         f"got {type(tower).__name__}")
    return modules


# per tower: the implementation its config had before use_fast_encoders (restored by enabled=False)
_previous_implementation: "weakref.WeakKeyDictionary[nn.Module, str | None]" = weakref.WeakKeyDictionary()
# per vision tower with stage-1 taps: the handle of its run-start hook; per audio tower: its chunking hook
_run_hooks: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()
_chunk_hooks: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


@torch.compiler.disable
def _chunk_audio_features(tower: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook of a fast audio tower: cuts the mel features into the tower's chunks before it runs,
    with transformers' own chunk_and_pad_features, and hands them in as the precomputed `padded_feature` /
    `chunk_lengths` the tower accepts. Inside the tower that step splits by a Python list of chunk lengths,
    so Dynamo traced a new graph for every new number of chunks, i.e. for every new audio length; here it
    runs eagerly (torch.compiler.disable) and the tower's graphs take the chunks as tensors of any size."""
    if "padded_feature" in kwargs or "chunk_lengths" in kwargs:
        return None
    chunk_and_pad = getattr(sys.modules[type(tower).__module__], "chunk_and_pad_features", None)
    features = kwargs.get("input_features", args[0] if args else None)
    lengths = kwargs.get("feature_lens", args[1] if len(args) > 1 else None)
    if chunk_and_pad is None or features is None or lengths is None or not hasattr(tower, "n_window"):
        return None  # not the layout this hook knows: the tower chunks as usual
    padded, chunk_lengths = chunk_and_pad(features, lengths, tower.n_window)
    # the number of chunks follows the audio length: dynamic from the first call (else the second and third
    # lengths each recompiled the tower's graph). A chunk's frames (n_window * 2) never change: static, so
    # no other size of the same value is tied to it by duck sizing (a 4 s clip's 200 valid frames were, and
    # the next length recompiled)
    padded = padded.contiguous()  # a view's marks would not reach its base, which Dynamo guards by
    torch._dynamo.maybe_mark_dynamic(padded, 0)
    torch._dynamo.maybe_mark_dynamic(chunk_lengths, 0)
    torch._dynamo.mark_static(padded, 2)
    return args, {**kwargs, "padded_feature": padded, "chunk_lengths": chunk_lengths}


@torch.compiler.disable
def _start_vision_run(tower: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of a tapped vision tower: starts this call's vision run in the runtime before any
    of the tower's code runs, so its last layer's q/k (recorded by the op) land in it, whether the tower
    runs eagerly (generate() encodes videos before the prefill) or in compiled graphs (whose run-start taps
    fire after the graph, i.e. after the op). Qwen2.5-Omni's run carries the window permutation its patch
    order follows, from transformers' own get_vision_window_index; a tower without one (Qwen3-Omni) is
    marked by its input pixels. Runs eagerly (torch.compiler.disable): a host-side record."""
    if getattr(tower, "window_size", None) is not None:
        window_index = kwargs.get("window_index")
        if window_index is None:
            from transformers.vision_utils import get_vision_window_index

            grid_thw = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
            window_index, _ = get_vision_window_index(grid_thw, tower.spatial_merge_size, tower.window_size,
                                                      tower.patch_size)
    else:
        window_index = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    runtime.record_window_index(window_index)


def _own_config(tower: nn.Module, modules: list[nn.Module]):
    """Returns the tower's config, first made the tower's own: models built from one config object (e.g. a
    copy made with type(model)(model.config)) share their towers' configs, and switching one model's towers
    must not switch the other's."""
    if tower in _previous_implementation:
        return tower.config
    shared = tower.config
    own = copy.copy(shared)
    for module in [tower, *tower.modules(), *modules]:
        if getattr(module, "config", None) is shared:
            module.config = own
    return own


def use_fast_encoders(model: nn.Module, enabled: bool = True, *, stage1_taps: bool = False) -> nn.Module:
    """Makes the vision and audio towers of a Qwen-Omni thinker (or full model) attend with one variable-length
    call per layer, in place, and returns `model`. The decoder is left as it is.

    The towers' configs are made their own first (models built from one config object would otherwise
    switch together), and the audio tower gets a pre-hook that chunks its features eagerly (see
    _chunk_audio_features). enabled=False restores the previous implementation and removes the hooks.
    stage1_taps=True (what seats_fx.compile sets) makes the last layer of each tower record its q/k for
    SEATS stage 1 whenever it runs, and the vision tower start a run in the runtime; leave it off where
    nothing consumes the record (a plain, unpruned model: the records would pile up).
    """
    towers = encoder_towers(model)
    if not towers:
        raise ValueError(f"expected a Qwen-Omni thinker or full model with a vision and/or audio tower "
                         f"(visual, audio_tower), got {type(model).__name__}")
    for kind, tower in towers.items():
        modules = tower_attention_modules(tower, kind)
        config = _own_config(tower, modules)
        if tower not in _previous_implementation:
            _previous_implementation[tower] = config._attn_implementation
        config._attn_implementation = ATTENTION_NAME if enabled else _previous_implementation[tower]
        taps = enabled and stage1_taps
        for index, module in enumerate(modules):
            if taps and index == len(modules) - 1:
                setattr(module, TAP_ATTRIBUTE, kind)
            elif hasattr(module, TAP_ATTRIBUTE):
                delattr(module, TAP_ATTRIBUTE)
        hook, handles = (_start_vision_run, _run_hooks) if kind == "vision" else (_chunk_audio_features, _chunk_hooks)
        handle = handles.pop(tower, None)
        if handle is not None:
            handle.remove()
        if taps or (enabled and kind == "audio"):
            handles[tower] = tower.register_forward_pre_hook(hook, with_kwargs=True)
    return model


def uses_fast_encoders(model: nn.Module) -> bool:
    """True when every tower of `model` attends with the fast encoder implementation."""
    towers = encoder_towers(model)
    return bool(towers) and all(t.config._attn_implementation == ATTENTION_NAME for t in towers.values())
