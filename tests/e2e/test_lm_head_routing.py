"""The lm_head of a pruned prefill computes the kept rows only, through torch.compile(backend=SeatsBackend).

`logits[:, dropped] == 0` (test_backend) holds whether or not the zero-row skip runs: zero rows give zero
logits either way. Counting the rows the lm_head really multiplies is what tells them apart.
"""

import torch

import seats_fx.logits
from seats_fx.models.synthetic import ClipSpec, synthetic_clip_inputs
from seats_fx.reference import seats_forward

from test_backend import GRAPH_OPTIONS, run_compiled

# the option set, dynamic flag and clip shape of test_backend's first partial-clip test: in a full run the
# model is compiled and traced for them already
OPTIONS = dict(GRAPH_OPTIONS[0], retention=0.2, inductor=False)
CLIP = ClipSpec(video_seconds=6, audio_seconds=0, seed=11)


def test_the_compiled_lm_head_multiplies_only_the_kept_rows(thinker_eager_towers, monkeypatch):
    model = thinker_eager_towers
    lm_head = model.lm_head.weight
    rows: list[int] = []
    linear = torch.nn.functional.linear

    class CountingFunctional:  # torch.nn.functional as seats_fx.logits sees it
        @staticmethod
        def linear(hidden, weight, bias=None):
            if weight.shape == lm_head.shape and weight.data_ptr() == lm_head.data_ptr():
                rows.append(hidden.reshape(-1, hidden.shape[-1]).shape[0])
            return linear(hidden, weight, bias)

    monkeypatch.setattr(seats_fx.logits, "F", CountingFunctional)
    inputs = synthetic_clip_inputs(model.config, CLIP)
    logits, stats, _ = run_compiled(model, inputs, OPTIONS)
    assert stats.pruned, stats.skipped
    kept = seats_forward(model, inputs, OPTIONS).kept_positions[0]
    length = inputs["input_ids"].shape[1]
    assert len(kept) < length
    assert rows == [len(kept)], f"lm_head rows computed: {rows}; kept {len(kept)} of {length}"
    assert logits.shape[1] == length
