"""The pass manager: runs the SEATS passes in order on a graph; its uuid() is part of every Inductor
piece's cache key.

Every rewrite pass is a function `(gm, ctx) -> gm` (ctx: passes.plan.PassContext). The order matters:

- prefill (a decoder graph over a prompt):
  1. `insert_begin`: reads this call's layout before the first layer (every later step needs it);
  2. `select_before_llm`, 3. `prune_blocks`, 4. `truncate_at_fusion`: the stage boundaries, in layer
     order (each re-points the later layers at what it gathered, so an earlier boundary goes first);
  5. `restore_output_length`: the final hidden states back at the prompt's length (after every boundary);
  6. `align_cache`: KV-cache writes of one width for padded batches (reads the lengths the boundaries set);
  7. `route_lm_head`: the lm_head as eager glue over the kept rows (after 5: it reads restored rows);
  8. `cleanup`: dead code out, lint, recompile; 9. `partition`: Inductor pieces and glue (always last).
- decode step (one token over a KV cache): `rewrite_decode_step`, `cleanup`, `partition_whole` (its layers
  one piece: no boundary between them).
- logits graph (the thinker's lm_head in a graph of its own): `route_lm_head`, `cleanup`, `partition`.
- layer piece (one decoder layer Dynamo compiled from its own frame): `rewrite_layer_piece` (entry gathers,
  the boundary after the layer, full length at exit, the KV-cache hand-over), `cleanup`, `partition`.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types

from torch.fx import GraphModule

from seats_fx.config import SeatsConfig
from seats_fx.passes.align_cache import align_cache
from seats_fx.passes.cleanup import cleanup
from seats_fx.passes.decode_step import rewrite_decode_step
from seats_fx.passes.kept_row_logits import route_lm_head
from seats_fx.passes.layer_piece import rewrite_layer_piece
from seats_fx.passes.locate_piece import locate_layer_piece
from seats_fx.passes.partition import partition, partition_whole
from seats_fx.passes.piece_graphs import DecoderGraphs
from seats_fx.passes.plan import GraphPlan, PassContext
from seats_fx.passes.prune_blocks import prune_blocks
from seats_fx.passes.select_before_llm import insert_begin, select_before_llm
from seats_fx.passes.truncate_at_fusion import restore_output_length, truncate_at_fusion
from seats_fx.stage_plan import StagePlan

LAYER_PIECE_PASSES = (rewrite_layer_piece, cleanup, partition)
PREFILL_PASSES = (insert_begin, select_before_llm, prune_blocks, truncate_at_fusion, restore_output_length,
                  align_cache, route_lm_head, cleanup, partition)
DECODE_STEP_PASSES = (rewrite_decode_step, cleanup, partition_whole)
LOGITS_PASSES = (route_lm_head, cleanup, partition)
_PACKAGE = "seats_fx"


def source_modules() -> list[types.ModuleType]:
    """Returns every seats_fx module the passes depend on: this module (the pass order), the passes' own
    modules and, transitively, every seats_fx module whose functions, classes or submodules those modules'
    globals hold (locate and the family adapters it matches, the stage plan that places the boundaries,
    the glue the graphs call). Derived, so a new dependency is never missed."""
    found: dict[str, types.ModuleType] = {}
    stack = [sys.modules[__name__]]
    while stack:
        module = stack.pop()
        if module.__name__ in found:
            continue
        found[module.__name__] = module
        for value in vars(module).values():
            name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if isinstance(name, str) and name.split(".")[0] == _PACKAGE and name not in found \
                    and name in sys.modules:
                stack.append(sys.modules[name])
    return [found[name] for name in sorted(found)]


class SeatsPassManager:
    """locate's plan in, rewritten and partitioned GraphModule out. One object per backend instance."""

    def __init__(self, config: SeatsConfig) -> None:
        self.config = config
        self._uuid: str | None = None
        # one memory pool for the CUDA graphs of every graph this backend partitions (passes.piece_graphs)
        self.piece_graphs = DecoderGraphs() if config.cuda_graphs else None

    def _run(self, gm: GraphModule, passes, ctx: PassContext) -> GraphModule:
        ctx.cache_key = self.uuid()
        ctx.piece_graphs = self.piece_graphs
        for rewrite in passes:
            gm = rewrite(gm, ctx)
        return gm

    def stage_plan(self, plan: GraphPlan) -> StagePlan:
        """Returns the config resolved for this decoder's depth (raises ValueError for a bad layer choice
        or an unreachable retention)."""
        return StagePlan.resolve(self.config, len(plan.layers), plan.adapter.drop_layer_fractions,
                                 plan.adapter.late_block_fraction)

    def __call__(self, gm: GraphModule, plan: GraphPlan, output_weight=lambda: None) -> GraphModule:
        ctx = PassContext(plan, self.config, self.stage_plan(plan), output_weight)
        return self._run(gm, PREFILL_PASSES, ctx)

    def layer_piece(self, gm: GraphModule, adapter, depth: int) -> tuple[GraphModule, GraphPlan]:
        """Locates the one decoder layer of a graph compiled from that layer's own frame (raises
        locate.Unsupported when it does not fit), rewrites it (passes.layer_piece) and partitions it. Returns
        the rewritten graph and the plan. The stage plan is resolved for the whole decoder (ValueError for an
        unreachable retention, as for a whole decoder graph)."""
        plan = locate_layer_piece(gm, adapter)
        stages = StagePlan.resolve(self.config, depth, adapter.drop_layer_fractions, adapter.late_block_fraction)
        return self._run(gm, LAYER_PIECE_PASSES, PassContext(plan, self.config, stages)), plan

    def logits_graph(self, gm: GraphModule, output_weight) -> GraphModule | None:
        """Returns a graph holding the model's lm_head (outside the decoder graph) with the lm_head as eager
        glue that skips zero rows, partitioned; None when gm has no such lm_head (lower it as is)."""
        ctx = PassContext(None, self.config, None, output_weight)
        if not route_lm_head(gm, ctx).meta["seats_lm_head_routed"]:
            return None
        return self._run(gm, LOGITS_PASSES[1:], ctx)

    def decode_step(self, gm: GraphModule, plan: GraphPlan) -> GraphModule:
        """Rewrites a one-token decoder graph over a KV cache (positions and per-layer masks that fit a
        pruned cache) and partitions it; raises locate.Unsupported when its shape is not understood."""
        return self._run(gm, DECODE_STEP_PASSES, PassContext(plan, self.config))

    def uuid(self) -> str:
        """Returns a key that changes with any option that changes a rewritten graph (SeatsConfig.graph_key)
        or with the source of any module the passes depend on (source_modules); every Inductor piece carries
        it in its cache key (passes.partition.SeatsCacheKey). Options only the eager glue reads (retention,
        temperature, selectors, ...) leave it alone: no compiled piece depends on them. A change to the
        glue's code does change it: a needless recompile costs time, a stale piece would cost correctness."""
        if self._uuid is None:
            digest = hashlib.sha256(self.config.graph_key().encode())
            for module in source_modules():
                digest.update(module.__name__.encode())
                digest.update(inspect.getsource(module).encode())
            self._uuid = digest.hexdigest()
        return self._uuid
