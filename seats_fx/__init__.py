"""seats_fx: SEATS token selection for omni-modal LLMs (Qwen2.5-Omni, Qwen3-Omni) on top of torch.compile."""

from seats_fx.config import SeatsConfig

__all__ = ["SeatsConfig"]
__version__ = "0.1.0"
