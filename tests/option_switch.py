"""One Dynamo trace of a model serving several SEATS option sets, for the wide searches over option sets."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch

from seats_fx import SeatsBackend
from seats_fx.compile_model import compile_with_backend
from seats_fx.models import adapter_for, model_facts


def option_key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted(options.items()))


class _Raises:
    """What an option set's graph runs when its SeatsBackend refused the graph: the refusal, at the call."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, *args):
        raise self.error


class OptionSwitch:
    """`torch.compile(model, backend=...)` with a backend that hands every graph Dynamo captures to one
    SeatsBackend per option set, and runs the graphs of the option set `for_options` names.

    What Dynamo captures (graphs, guards, recompiles) does not depend on the backend, and each SeatsBackend
    rewrites a copy of the graph it is handed (never the graph itself), so each option set runs exactly the
    graphs a compile of its own would (test_backend.py checks this against one). A search over N option sets
    then pays one trace of the thinker (about 17 s here) and one recompile per new clip length (~0.5 s),
    instead of N of each; the SEATS passes (about 1 s per trace) still run once per option set.

    Without Inductor only: Inductor's compile_fx may change the graph it is handed, which the next option
    set would then see. A backend that refuses a graph (an unreachable retention target) refuses it when the
    option set runs, where its own compile would have raised the same error at its first call.

    With whole_model=True the switch compiles `model` in place as seats_fx.compile would (forward, generate()'s
    prefill and decode steps, the encoders generate() calls eagerly; each SeatsBackend with the model's
    facts): run it under `selecting(options)`.
    """

    def __init__(self, model: torch.nn.Module, option_sets: list[Mapping[str, Any]], dynamic: bool | None = True,
                 whole_model: bool = False):
        keys = [option_key(options) for options in option_sets]
        if len(set(keys)) != len(keys):
            raise ValueError("OptionSwitch: the option sets must differ")
        lowered = [options for options in option_sets if options.get("inductor", True)]
        if lowered:
            raise ValueError(f"OptionSwitch needs inductor=False in every option set, got {lowered[0]}")
        facts = model_facts(adapter_for(model).thinker) if whole_model else None
        self.backends = {key: SeatsBackend(dict(options), facts=facts) for key, options in zip(keys, option_sets)}
        self.selected: tuple | None = None
        if not whole_model:
            self.compiled = torch.compile(model, backend=self._compile_for_each, dynamic=dynamic)
            return
        configs = [backend.config for backend in self.backends.values()]
        # what compile_with_backend prepares around the compile follows these two: every set must agree
        if len({(config.keeps_everything, config.fast_encoders) for config in configs}) != 1:
            raise ValueError("OptionSwitch(whole_model=True): the option sets differ in keeping everything or in "
                             "fast_encoders, which change what seats_fx.compile prepares")
        self.compiled = compile_with_backend(model, self._compile_for_each, configs[0], dynamic=dynamic)

    def _compile_for_each(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        compiled = {}
        for key, backend in self.backends.items():
            try:
                compiled[key] = backend(gm, example_inputs)
            except Exception as error:  # noqa: BLE001 - raised again when this option set runs
                compiled[key] = _Raises(error)

        def run_selected(*args):
            return compiled[self.selected](*args)

        return run_selected

    @contextmanager
    def selecting(self, options: Mapping[str, Any]) -> Iterator[None]:
        """Every compiled graph run inside runs as compiled with `options` (e.g. a whole generate())."""
        self.selected = self._key(options)
        try:
            yield
        finally:
            self.selected = None

    def backend_for(self, options: Mapping[str, Any]) -> SeatsBackend:
        return self.backends[self._key(options)]

    def for_options(self, options: Mapping[str, Any]) -> Callable:
        """Returns the compiled model, running as compiled with `options` (one of the switch's option sets)."""
        self._key(options)  # an option set the switch does not hold: KeyError here, not at the first call

        def call(*args, **kwargs):
            with self.selecting(options):
                return self.compiled(*args, **kwargs)

        return call

    def _key(self, options: Mapping[str, Any]) -> tuple:
        key = option_key(options)
        if key not in self.backends:
            raise KeyError(f"OptionSwitch: {dict(options)} is not one of its option sets")
        return key


_switches: dict = {}


def switch_for(model: torch.nn.Module, option_sets: list[Mapping[str, Any]],
               whole_model_of: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> OptionSwitch:
    """The one OptionSwitch of `model` over `option_sets` (each run without Inductor), built on first use: a
    search's cases share its trace. whole_model_of: builds, on first use, the model a whole-model switch
    compiles in place (a copy of `model`: seats_fx.compile changes the model it compiles). The cache holds
    `model`, so its id is not reused while cached."""
    sets = [dict(options, inductor=False) for options in option_sets]
    key = (id(model), tuple(option_key(options) for options in sets), whole_model_of is not None)
    if key not in _switches:
        target = model if whole_model_of is None else whole_model_of(model)
        _switches[key] = (model, OptionSwitch(target, sets, whole_model=whole_model_of is not None))
    return _switches[key][1]
