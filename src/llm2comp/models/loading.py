"""One way to load a model for use, shared by `encode`, `search`, `eval` and `evaluate()`.

- a saved LLM2Comp folder (its own k, pooling and attention);
- a backbone (Hub id, folder or the default) wrapped with fresh memory tokens (`pooling` None or
  `memory_mean`): the untrained LLM2Comp layout;
- an untrained token-pooling baseline (`pooling` `mean` / `last`): no memory tokens, causal attention.
"""

from __future__ import annotations

from ..errors import InvalidSetting
from .pooling import POOLING_MODES


def load_for_use(name_or_path, pooling: str | None = None, *, dtype: str = "float32", device: str | None = None,
                 trust_remote_code: bool = False):
    """Return an `LLM2Comp` for `name_or_path` (module docstring); `trust_remote_code` only from the caller."""
    from .config import is_llm2comp_folder
    from .encoder import LLM2Comp

    if pooling not in (None, *POOLING_MODES):
        raise InvalidSetting(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    if pooling in ("mean", "last"):
        if is_llm2comp_folder(name_or_path):
            raise InvalidSetting(f"pooling {pooling!r} is for plain backbones; {name_or_path} is a trained "
                                 "LLM2Comp model")
        return LLM2Comp.from_pretrained(name_or_path, num_memory_tokens=0, pooling=pooling, attention="causal",
                                        dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return LLM2Comp.from_pretrained(name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
