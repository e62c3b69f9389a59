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
                 trust_remote_code: bool = False, backend: str = "torch"):
    """Return an `LLM2Comp` for `name_or_path` (module docstring); `trust_remote_code` only from the caller.

    `backend` onnx / onnx-int8: the saved folder's ONNX export (backends/), which fixes dtype and device."""
    from ..backends.onnx_model import check_backend
    from .config import is_llm2comp_folder
    from .encoder import LLM2Comp

    if pooling not in (None, *POOLING_MODES):
        raise InvalidSetting(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    if check_backend(backend) != "torch":
        if pooling in ("mean", "last") or dtype != "float32" or device not in (None, "cpu"):
            raise InvalidSetting(f"backend {backend!r} runs the exported graph as it was exported (memory-mean "
                                 "pooling, float32 inputs, CPU); drop --pooling / --dtype / --device, or use "
                                 "--backend torch")
        return LLM2Comp.from_pretrained(name_or_path, backend=backend)
    if pooling in ("mean", "last"):
        if is_llm2comp_folder(name_or_path):
            raise InvalidSetting(f"pooling {pooling!r} is for plain backbones; {name_or_path} is a trained "
                                 "LLM2Comp model")
        return LLM2Comp.from_pretrained(name_or_path, num_memory_tokens=0, pooling=pooling, attention="causal",
                                        dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    return LLM2Comp.from_pretrained(name_or_path, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
