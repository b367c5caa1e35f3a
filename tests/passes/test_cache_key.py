"""The Inductor cache key of the seats pieces, SeatsPassManager(config).uuid(): the same for an identical
rebuild, different when an option that changes the rewritten graph changes or when the source of a module the
passes use changes, the same when only an option read at run time changes. No compiling: default suite."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import types

import pytest

import seats_fx.passes
from seats_fx.config import SeatsConfig
from seats_fx.passes.manager import SeatsPassManager

BASE = dict(progressive_drop_layers=(3, 5), late_block_layer=7, retention=0.2)


def key(**options) -> str:
    return SeatsPassManager(SeatsConfig(**options)).uuid()


def modules_the_passes_use() -> dict[str, types.ModuleType]:
    """Every seats_fx module a pass imports, directly or through another seats_fx module (a module it names,
    or the module a function or class it names comes from), the passes themselves included."""
    found = {}
    for info in pkgutil.iter_modules(seats_fx.passes.__path__):
        module = importlib.import_module(f"seats_fx.passes.{info.name}")
        found[module.__name__] = module
    todo = list(found.values())
    while todo:
        for value in vars(todo.pop()).values():
            module = value if isinstance(value, types.ModuleType) else \
                sys.modules.get(getattr(value, "__module__", None) or "")
            if module is not None and module.__name__.startswith("seats_fx.") and module.__name__ not in found:
                found[module.__name__] = module
                todo.append(module)
    return found


def key_with_changed_source(monkeypatch, module: types.ModuleType) -> str:
    """The key computed while `module`'s source reads one comment line longer."""
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource",
                        lambda obj: real(obj) + ("\n# changed\n" if obj is module else ""))
    try:
        return key(**BASE)
    finally:
        monkeypatch.setattr(inspect, "getsource", real)


def test_an_identical_rebuild_has_the_same_key():
    assert key(**BASE) == key(**BASE)
    # the same options spelled another way are the same config
    assert key(**BASE) == SeatsPassManager(SeatsConfig.from_options(dict(BASE, progressive_drop_layers=[3, 5]))).uuid()


@pytest.mark.parametrize("field, value", [("progressive_drop_layers", (2, 4)), ("late_block_layer", 6),
                                          ("stage1", False), ("stage2", False), ("stage3", False),
                                          ("cpp_wrapper", True),  # not the graph: what Inductor makes of it
                                          ("retention", 1.0)])  # keep-everything: no stage runs at all
def test_an_option_that_changes_the_rewritten_graph_changes_the_key(field, value):
    assert key(**BASE) != key(**dict(BASE, **{field: value}))


# read only by the selection glue, which runs eagerly between the compiled pieces (or, for `strict`, only
# deciding whether a graph seats cannot rewrite raises or runs unpruned; for `cuda_graphs`, only how a
# compiled piece is called): no compiled piece depends on them
RUNTIME_ONLY = [("retention", 0.35), ("video_retention", 0.05), ("audio_retention", 0.5),
                ("encoder_ratio_scale", 2.0), ("window_temperature", 0.5), ("drop_growth", 1.5),
                ("window_seconds", 1.0), ("stage1_selector", "diversity"), ("stage2_allocation", "global"),
                ("seed", 3), ("strict", True), ("cuda_graphs", True)]


@pytest.mark.parametrize("field, value", RUNTIME_ONLY, ids=[field for field, _ in RUNTIME_ONLY])
def test_a_runtime_only_option_keeps_the_key(field, value):
    changed = dict(BASE, **{field: value})
    if field in ("video_retention", "audio_retention"):
        changed.pop("retention")
    assert key(**BASE) == key(**changed)


# passes whose graphs never reach Inductor: the backend runs them as captured (tests/e2e/test_headline_usage.py
# fails if one is ever lowered), so no compiled piece depends on them, and keying them would force misses
NOT_LOWERED = {"seats_fx.passes.segment_attention"}


def _pass_modules() -> list[str]:
    return sorted(name for name in modules_the_passes_use()
                  if name.startswith("seats_fx.passes.") and name not in NOT_LOWERED)


@pytest.mark.parametrize("name", sorted(NOT_LOWERED))
def test_a_change_in_a_pass_whose_graphs_are_not_lowered_keeps_the_key(monkeypatch, name):
    assert key_with_changed_source(monkeypatch, importlib.import_module(name)) == key(**BASE)


@pytest.mark.parametrize("name", _pass_modules())
def test_a_change_in_any_pass_module_changes_the_key(monkeypatch, name):
    assert key_with_changed_source(monkeypatch, importlib.import_module(name)) != key(**BASE)


# outside seats_fx.passes, the code that decides where the boundaries go (StagePlan.resolve, from the
# config and the family's depth fractions) and what locate matches in a decoder graph (the family adapters)
@pytest.mark.parametrize("name", ["seats_fx.passes.manager", "seats_fx.stage_plan", "seats_fx.models.qwen2_5_omni",
                                  "seats_fx.models.qwen3_omni_moe"])
def test_a_change_in_what_places_the_boundaries_changes_the_key(monkeypatch, name):
    assert key_with_changed_source(monkeypatch, importlib.import_module(name)) != key(**BASE)
