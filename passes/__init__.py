"""FX graph passes of the `seats` torch.compile backend, installed as `seats_fx.passes`.

Empty until the backend lands (issue 3): locate, select_before_llm, prune_blocks, truncate_at_fusion,
cleanup and the pass manager will live here, one pass per module.
"""
