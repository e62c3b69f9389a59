"""llm2comp: turn any decoder-only LLM into a text-embedding model by learning to compress."""

from .models.config import LLM2CompConfig
from .models.default_model import DEFAULT_MODEL_NAME
from .models.encoder import LLM2Comp
from .models.lora import LoraSettings

__all__ = ["LLM2Comp", "LLM2CompConfig", "LoraSettings", "DEFAULT_MODEL_NAME", "to_sentence_transformer"]
__version__ = "0.1.0"


def to_sentence_transformer(model_or_path, **kwargs):
    """A `sentence_transformers.SentenceTransformer` over an LLM2Comp model or folder (see
    `llm2comp.sentence_transformers_module`); sentence-transformers is imported only here."""
    from .sentence_transformers_module import to_sentence_transformer as build

    return build(model_or_path, **kwargs)
