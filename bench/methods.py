"""SEATS and the baselines, each a configuration of the same seats_fx ops and passes.

Every method takes a target retention R (the fraction of video and audio tokens the LLM processes,
averaged over decoder layers, as SeatsConfig defines it) and a decoder depth, and returns seats options.
Where a method cannot reach R (FastV on a shallow decoder), the tables report what it does reach.
"""

from __future__ import annotations

from typing import Callable

from seats_fx.config import SeatsConfig
from seats_fx.ops.schedule import scaled_layers

# FastV prunes once, after layer K=2 of its 32-layer models; scaled by depth like SEATS's own layers
FASTV_LAYER_FRACTION = 2 / 28
# the Qwen2.5-Omni 7B late-block layer 24 of 28, as a fraction (SEATS's own default)
LATE_FRACTION = 24 / 28
DEFAULT_ENCODER_RATIO_SCALE = SeatsConfig().encoder_ratio_scale


def _late_layer(depth: int) -> int:
    return max(2, min(depth, round(LATE_FRACTION * depth)))


def seats(r: float, depth: int) -> dict:
    # stage 1 keeps R x encoder_ratio_scale (1.4 by default) in the layers before the late block; on a shallow
    # decoder (the CPU benchmark's 6 layers: late block at 5) that is below R on average, and SeatsConfig
    # refuses the target: stage 1 then keeps enough to carry R up to the cut
    needed = depth / (_late_layer(depth) - 1)
    return {"retention": r} if needed <= DEFAULT_ENCODER_RATIO_SCALE else \
        {"retention": r, "encoder_ratio_scale": min(1.0 / r, needed)}


def seats_without_stage2(r: float, depth: int) -> dict:
    # stage 1 alone must then carry the budget up to the cut: level * (late - 1) / depth = R
    scale = min(1.0 / r, depth / (_late_layer(depth) - 1))
    return {"retention": r, "stage2": False, "encoder_ratio_scale": max(1.0, scale)}


def seats_without_truncation(r: float, depth: int) -> dict:
    return {"retention": r, "stage3": False}


def fastv(r: float, depth: int) -> dict:
    layer = scaled_layers((FASTV_LAYER_FRACTION,), depth)
    return {"retention": r, "stage1": False, "stage3": False, "progressive_drop_layers": layer,
            "stage2_allocation": "global"}


def _pre_llm_only(selector: str) -> Callable[[float, int], dict]:
    def options(r: float, depth: int) -> dict:
        return {"retention": r, "stage2": False, "stage3": False, "encoder_ratio_scale": 1.0,
                "stage1_selector": selector}
    return options


METHODS: dict[str, Callable[[float, int], dict]] = {
    "SEATS": seats,
    "SEATS w/o stage 2": seats_without_stage2,
    "SEATS w/o fusion truncation": seats_without_truncation,
    "FastV": fastv,
    "DivPrune": _pre_llm_only("diversity"),
    "random": _pre_llm_only("random"),
    "uniform temporal": _pre_llm_only("uniform"),
}
