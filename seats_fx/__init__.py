"""seats_fx: SEATS token selection for omni-modal LLMs (Qwen2.5-Omni, Qwen3-Omni) on top of torch.compile."""

from seats_fx.backend import SeatsBackend, backend
from seats_fx.config import SeatsConfig
from seats_fx.runtime import SeatsStats, last_stats

__all__ = ["SeatsBackend", "SeatsConfig", "SeatsStats", "backend", "last_stats"]
__version__ = "0.1.0"
