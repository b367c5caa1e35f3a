"""seats_fx: SEATS token selection for omni-modal LLMs (Qwen2.5-Omni, Qwen3-Omni) on top of torch.compile."""

from seats_fx.backend import SeatsBackend, backend
from seats_fx.compile_model import compile_model
from seats_fx.config import SeatsConfig
from seats_fx.encoder_attention import use_fast_encoders
from seats_fx.qwen3_rope_index import use_fast_qwen3_rope_index
from seats_fx.rope_index import use_fast_rope_index
from seats_fx.runtime import SeatsStats, last_stats

compile = compile_model  # seats_fx.compile(model, options): forward() and generate() pruned

__all__ = ["SeatsBackend", "SeatsConfig", "SeatsStats", "backend", "compile", "compile_model", "last_stats",
           "use_fast_encoders", "use_fast_qwen3_rope_index", "use_fast_rope_index"]
__version__ = "0.1.0"
