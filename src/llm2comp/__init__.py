"""llm2comp: turn any decoder-only LLM into a text-embedding model by learning to compress."""

from .models.config import LLM2CompConfig
from .models.default_model import DEFAULT_MODEL_NAME
from .models.encoder import LLM2Comp
from .models.lora import LoraSettings

__all__ = ["LLM2Comp", "LLM2CompConfig", "LoraSettings", "DEFAULT_MODEL_NAME"]
__version__ = "0.1.0"
