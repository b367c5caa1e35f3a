"""The pass manager: runs the SEATS passes in order on a decoder graph; its uuid() keys caches."""

from __future__ import annotations

import hashlib
import inspect

from torch.fx import GraphModule

from seats_fx import call, decode_step as decode_glue, stage_plan
from seats_fx.config import SeatsConfig
from seats_fx.ops import budget, diversity, gather, relevance, schedule, stage_select
from seats_fx.passes import (align_cache, boundary, cleanup, decode_step, locate, partition, prune_blocks,
                             select_before_llm, truncate_at_fusion)
from seats_fx.passes.plan import GraphPlan
from seats_fx.stage_plan import StagePlan

# everything whose change can change a rewritten graph or what its selection nodes compute
_SOURCES = (locate, boundary, align_cache, select_before_llm, prune_blocks, truncate_at_fusion, decode_step, cleanup, partition,
            call, decode_glue, stage_plan, budget, diversity, gather, relevance, schedule, stage_select)


class SeatsPassManager:
    """locate's plan in, rewritten and partitioned GraphModule out. One object per backend instance."""

    def __init__(self, config: SeatsConfig) -> None:
        self.config = config

    def __call__(self, gm: GraphModule, plan: GraphPlan) -> GraphModule:
        stages = StagePlan.resolve(self.config, len(plan.layers), plan.adapter.drop_layer_fractions,
                                   plan.adapter.late_block_fraction)
        gm = select_before_llm.insert_begin(gm, plan)
        gm = select_before_llm.select_before_llm(gm, plan, self.config)
        gm = prune_blocks.prune_blocks(gm, plan, stages)
        gm = truncate_at_fusion.truncate_at_fusion(gm, plan, stages)
        gm = truncate_at_fusion.restore_output_length(gm, plan)
        gm = align_cache.align_cache(gm, plan)
        gm = cleanup.cleanup(gm)
        return partition.partition(gm, use_inductor=self.config.inductor)

    def decode_step(self, gm: GraphModule, plan: GraphPlan) -> GraphModule:
        """Rewrites a one-token decoder graph over a KV cache (positions and per-layer masks that fit a
        pruned cache) and partitions it; raises locate.Unsupported when its shape is not understood."""
        gm = decode_step.rewrite_decode_step(gm, plan)
        gm = cleanup.cleanup(gm)
        return partition.partition(gm, use_inductor=self.config.inductor)

    def uuid(self) -> str:
        """Returns a key that changes with any config field or any pass's source."""
        digest = hashlib.sha256(self.config.stable_hash().encode())
        for module in _SOURCES:
            digest.update(inspect.getsource(module).encode())
        return digest.hexdigest()
