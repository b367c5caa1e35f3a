"""A CPU stand-in for CUDA graphs (pytest puts tests/ on sys.path): the decoder pieces' graph logic
(passes/piece_graphs.py) runs here with it exactly as it runs with CUDA graphs on a GPU."""

from __future__ import annotations

import torch

from seats_fx.passes import piece_graphs


class RerunRecorder:
    """A CUDA-graph stand-in: record keeps run's outputs (its 'pool'), replay reruns run on the recorded
    inputs (the graph's copies) and writes the results into those outputs, after spoiling the outputs of
    every other graph of this recorder."""

    def __init__(self, device: torch.device) -> None:
        self.pool: list[list[torch.Tensor]] = []
        self.replays = 0

    def warm_up(self, run, inputs):
        return run(*inputs)

    def record(self, run, inputs):
        outputs = run(*inputs)
        mine = piece_graphs._tensors(outputs)
        self.pool.append(mine)

        def replay():
            self.replays += 1
            fresh = piece_graphs._tensors(run(*inputs))
            # a graph's kernels write its pool whatever the tensors' inference flags; ops here need the mode
            with torch.inference_mode():
                for other in self.pool:
                    if other is not mine:
                        for tensor in other:
                            tensor.fill_(float("nan") if tensor.is_floating_point() else -1)
                for kept, new in zip(mine, fresh):
                    kept.copy_(new)

        return replay, outputs


def register_rerun_recorder(monkeypatch) -> list[RerunRecorder]:
    """Registers RerunRecorder for pieces on the CPU; returns the list of recorders it makes."""
    made: list[RerunRecorder] = []

    def factory(device):
        made.append(RerunRecorder(device))
        return made[-1]

    monkeypatch.setitem(piece_graphs.RECORDERS, "cpu", factory)
    return made
