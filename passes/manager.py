"""The pass manager: runs the SEATS passes in order on a decoder graph; its uuid() is part of every
Inductor piece's cache key."""

from __future__ import annotations

import hashlib
import inspect

from torch.fx import GraphModule

from seats_fx import call, decode_step as decode_glue, logits, stage_plan
from seats_fx.config import SeatsConfig
from seats_fx.ops import budget, diversity, gather, relevance, sampling, schedule, stage_select
from seats_fx.passes import (align_cache, boundary, cleanup, decode_step, kept_row_logits, locate, partition,
                             prune_blocks, select_before_llm, truncate_at_fusion)
from seats_fx.passes.plan import GraphPlan
from seats_fx.stage_plan import StagePlan

# everything whose change can change a rewritten graph or what its selection nodes compute
_SOURCES = (locate, boundary, align_cache, kept_row_logits, logits, select_before_llm, prune_blocks, truncate_at_fusion, decode_step, cleanup, partition,
            call, decode_glue, stage_plan, budget, diversity, gather, relevance, sampling, schedule, stage_select)


class SeatsPassManager:
    """locate's plan in, rewritten and partitioned GraphModule out. One object per backend instance."""

    def __init__(self, config: SeatsConfig) -> None:
        self.config = config
        self._uuid: str | None = None

    def __call__(self, gm: GraphModule, plan: GraphPlan) -> GraphModule:
        stages = StagePlan.resolve(self.config, len(plan.layers), plan.adapter.drop_layer_fractions,
                                   plan.adapter.late_block_fraction)
        gm = select_before_llm.insert_begin(gm, plan)
        gm = select_before_llm.select_before_llm(gm, plan, self.config)
        gm = prune_blocks.prune_blocks(gm, plan, stages)
        gm = truncate_at_fusion.truncate_at_fusion(gm, plan, stages)
        gm = truncate_at_fusion.restore_output_length(gm, plan)
        gm = align_cache.align_cache(gm, plan)
        kept_row_logits.route_lm_head(gm)
        gm = cleanup.cleanup(gm)
        return partition.partition(gm, self.config.inductor, self.uuid())

    def logits_graph(self, gm: GraphModule) -> GraphModule | None:
        """Returns a graph holding an lm_head (outside the decoder graph) with the lm_head as eager glue
        that skips zero rows, partitioned; None when gm has no such lm_head (then it is lowered as is)."""
        if not kept_row_logits.route_lm_head(gm):
            return None
        return partition.partition(cleanup.cleanup(gm), self.config.inductor, self.uuid())

    def decode_step(self, gm: GraphModule, plan: GraphPlan) -> GraphModule:
        """Rewrites a one-token decoder graph over a KV cache (positions and per-layer masks that fit a
        pruned cache) and partitions it; raises locate.Unsupported when its shape is not understood."""
        gm = decode_step.rewrite_decode_step(gm, plan)
        gm = cleanup.cleanup(gm)
        return partition.partition(gm, self.config.inductor, self.uuid())

    def uuid(self) -> str:
        """Returns a key that changes with any config field or any pass's source; every Inductor piece
        carries it in its cache key (passes.partition.SeatsCacheKey)."""
        if self._uuid is None:
            digest = hashlib.sha256(self.config.stable_hash().encode())
            for module in _SOURCES:
                digest.update(inspect.getsource(module).encode())
            self._uuid = digest.hexdigest()
        return self._uuid
