"""SeatsConfig: every SEATS knob in one frozen, validated, hashable dataclass."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, Mapping

from seats_fx.ops.stage_select import STAGE1_SELECTORS, STAGE2_ALLOCATIONS


# fields that change the rewritten graph (SeatsConfig.graph_key); every other field is read by the glue
GRAPH_FIELDS = ("stage1", "stage2", "stage3", "progressive_drop_layers", "late_block_layer", "inductor",
                "cpp_wrapper")


def _fail(name: str, allowed: str, value: Any) -> None:
    raise ValueError(f"SeatsConfig.{name} must be {allowed}, got {value!r}")


def _check_ratio(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < float(value) <= 1.0):
        _fail(name, "a number in (0, 1]", value)


def _check_positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0.0:
        _fail(name, "a number > 0", value)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(name, f"one of {choices}", value)


def _check_layer_list(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        _fail(name, "None or a tuple of ints (1-based decoder layer numbers)", value)
    if any(v < 1 for v in value):
        _fail(name, "layer numbers >= 1 (1-based)", value)
    if list(value) != sorted(set(value)):
        _fail(name, "strictly increasing layer numbers", value)


@dataclass(frozen=True)
class SeatsConfig:
    """Knobs of SEATS (see README "Options"). Ratios are fractions of a modality's tokens.

    `video_retention` / `audio_retention`: fraction of that modality's tokens the LLM processes,
    averaged over all decoder layers (layers after the late-block cut count as 0). Default 0.1 each.
    `retention`, when given, sets both (the paper's R=10% pair is video 0.06 / audio 0.35).
    Both at 1.0 keep everything: no stage runs and the output is the unpruned model's. Below 1.0 there is a
    ceiling: layers from `late_block_layer` on process no media, so at most (late_block_layer - 1) / depth
    is reachable (0.82 on the 28-layer 7B with the late block at 24), and stage 1 must keep enough
    (retention * encoder_ratio_scale); a target above what the resolved stages reach raises ValueError at
    compile time naming the maximum (stage3=False or a later late_block_layer give more).
    """

    video_retention: float = 0.1
    audio_retention: float = 0.1
    retention: float | None = None
    # stage 1 keeps retention * encoder_ratio_scale of each modality (capped at 1)
    encoder_ratio_scale: float = 1.4
    # 1-based decoder layers after which stage 2 drops tokens; None = the family default scaled by depth
    progressive_drop_layers: tuple[int, ...] | None = None
    # 1-based layer from which only text is processed (non-text leaves after layer late_block_layer - 1);
    # None = the family default scaled by depth
    late_block_layer: int | None = None
    # softmax temperature of the inter-window allocation
    window_temperature: float = 0.1
    # growth of the per-step drop amounts: step i drops proportionally to drop_growth ** i
    drop_growth: float = 2.718281828459045
    # temporal window length in seconds: the authors' grid_in_window=2 (2 grids of 1 s at 2 fps) and
    # sec_in_audio_window=2; windows are cut on TMRoPE time, so one number serves both modalities
    window_seconds: float = 2.0
    # stage switches (baselines and ablations are configurations of the same passes)
    stage1: bool = True
    stage2: bool = True
    stage3: bool = True
    # how stage 1 picks inside a window x modality group: "weighted_diversity" (SEATS), "diversity"
    # (DivPrune), "random" (seeded by `seed`), "uniform" (evenly spaced in time)
    stage1_selector: str = "weighted_diversity"
    # how stage 2 splits its budget: "windows" (SEATS: windows, then modalities) or "global" (FastV's top-k)
    stage2_allocation: str = "windows"
    seed: int = 0
    # raise instead of falling back to the unpruned graph when a model or graph is not understood
    strict: bool = False
    # lower the rewritten decoder's pieces with Inductor; False runs them eagerly (debugging)
    inductor: bool = True
    # Inductor's C++ wrapper for the decoder pieces (its cpp_wrapper): each piece's kernels are launched from
    # C++, not Python. A pruned decoder on a GPU is bound by the host (about 1 ms of host per layer call on
    # an H200, most of it Python around the launches); each distinct piece costs one C++ compile more at the
    # first call. Off by default until measured on a GPU (bench.gpu_check --variants compile,compile-cpp)
    cpp_wrapper: bool = False
    # replay each decoder-layer piece's kernels as a CUDA graph, recorded per input signature on its second
    # call with it and replayed from the third (passes/piece_graphs.py): one launch instead of the host's work
    # per kernel. Inputs other than weights are copied into the graph's own before each replay and outputs
    # copied out after it (a few copies per layer). Not in the graph key: the pieces are the same. Off by
    # default until measured on a GPU (bench.gpu_check --variants compile,compile-graphs); no effect on a CPU
    cuda_graphs: bool = False
    # seats_fx.compile makes the vision and audio towers attend with one variable-length call per layer
    # (seats_fx.use_fast_encoders; the last layer records stage 1's q/k); False leaves the towers as they are
    fast_encoders: bool = True

    def __post_init__(self) -> None:
        if self.retention is not None:
            _check_ratio("retention", self.retention)
            object.__setattr__(self, "video_retention", float(self.retention))
            object.__setattr__(self, "audio_retention", float(self.retention))
        _check_ratio("video_retention", self.video_retention)
        _check_ratio("audio_retention", self.audio_retention)
        if isinstance(self.encoder_ratio_scale, bool) or not isinstance(self.encoder_ratio_scale, (int, float)) \
                or not 1.0 <= float(self.encoder_ratio_scale) <= 100.0:
            _fail("encoder_ratio_scale", "a number in [1, 100]", self.encoder_ratio_scale)
        if isinstance(self.progressive_drop_layers, list):
            object.__setattr__(self, "progressive_drop_layers", tuple(self.progressive_drop_layers))
        _check_layer_list("progressive_drop_layers", self.progressive_drop_layers)
        if self.late_block_layer is not None and (
            isinstance(self.late_block_layer, bool) or not isinstance(self.late_block_layer, int)
            or self.late_block_layer < 2
        ):
            _fail("late_block_layer", "None or an int >= 2 (1-based layer number)", self.late_block_layer)
        if (self.late_block_layer is not None and self.progressive_drop_layers
                and self.progressive_drop_layers[-1] >= self.late_block_layer):
            _fail("progressive_drop_layers", f"layers before late_block_layer={self.late_block_layer}",
                  self.progressive_drop_layers)
        _check_positive_number("window_temperature", self.window_temperature)
        if isinstance(self.drop_growth, bool) or not isinstance(self.drop_growth, (int, float)) \
                or not 1.0 <= float(self.drop_growth) <= 100.0:
            _fail("drop_growth", "a number in [1, 100]", self.drop_growth)
        _check_positive_number("window_seconds", self.window_seconds)
        _check_choice("stage1_selector", self.stage1_selector, STAGE1_SELECTORS)
        _check_choice("stage2_allocation", self.stage2_allocation, STAGE2_ALLOCATIONS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            _fail("seed", "an int >= 0", self.seed)
        for name in ("stage1", "stage2", "stage3", "strict", "inductor", "cpp_wrapper", "cuda_graphs",
                     "fast_encoders"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, "a bool", getattr(self, name))

    @property
    def encoder_ratio(self) -> dict[str, float]:
        """Stage-1 keep ratio per modality ("video", "audio")."""
        scale = self.encoder_ratio_scale
        return {
            "video": min(1.0, self.video_retention * scale) if self.stage1 else 1.0,
            "audio": min(1.0, self.audio_retention * scale) if self.stage1 else 1.0,
        }

    @property
    def keeps_everything(self) -> bool:
        """True when both retentions are 1.0: every token is kept, so no stage runs (whatever the stage
        switches say) and the output is the unpruned model's."""
        return self.video_retention == 1.0 and self.audio_retention == 1.0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> "SeatsConfig":
        """Returns a config built from a `torch.compile(options=...)` dict; unknown keys are an error."""
        if options is None:
            return cls()
        if isinstance(options, SeatsConfig):
            return options
        if not isinstance(options, Mapping):
            raise ValueError(f"seats options must be a dict or SeatsConfig, got {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown seats option(s) {unknown}; known options: {sorted(known)}")
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as plain JSON-able values."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def graph_key(self) -> str:
        """Returns what of this config changes the graphs the passes write (where the boundaries go, whether
        any stage runs, whether Inductor lowers them) as a stable string; the other fields only change what
        the eager selection glue computes."""
        fields_ = {name: getattr(self, name) for name in GRAPH_FIELDS}
        fields_["keeps_everything"] = self.keeps_everything
        return json.dumps({k: (list(v) if isinstance(v, tuple) else v) for k, v in fields_.items()}, sort_keys=True)

    def stable_hash(self) -> str:
        """Returns a hex digest that depends only on field values (stable across processes)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=repr).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
