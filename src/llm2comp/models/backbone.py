"""Loading a causal LM and its tokenizer from a Hub id, a local folder or the embedded default.

Only transformers' Auto classes and public `from_pretrained` arguments are used, so any causal
LM that transformers supports works (Llama, Mistral, Qwen2/3, Gemma/Gemma3, GPT-2, Phi, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .default_model import DEFAULT_MODEL_NAME, is_default_model_name, resolve_default_model

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'")
    return DTYPES[dtype]


def resolve_backbone_path(name_or_path: str | os.PathLike | None) -> str:
    """Map the default alias to its cached folder; check that a local folder holds weights.

    A string that is neither an existing path nor the default alias is passed on as a Hub id.
    """
    if is_default_model_name(name_or_path):
        return str(resolve_default_model())
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is a file; expected a model folder or a Hub model id")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a transformers model folder")
        if not any((path / name).is_file() for name in _WEIGHT_FILES):
            raise FileNotFoundError(f"{path} holds no model weights ({', '.join(_WEIGHT_FILES[:2])})")
        return str(path)
    if str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"model folder {name_or_path} does not exist")
    return str(name_or_path)


_ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")


def attention_dropout_override(name_or_path: str | os.PathLike | None, probability: float,
                               trust_remote_code: bool = False) -> dict:
    """`{config_key: p}` for the backbone's attention-dropout setting, whatever the architecture calls it.

    Dropout is active only in training mode, so the same loaded weights encode deterministically
    after `model.eval()`.
    """
    from transformers import AutoConfig

    from .config import LLM2CompConfig, is_llm2comp_folder

    if is_llm2comp_folder(name_or_path):
        saved = LLM2CompConfig.load(name_or_path)
        name_or_path = Path(name_or_path) / "backbone" if saved.backbone == "backbone" else saved.backbone
    config = AutoConfig.from_pretrained(resolve_backbone_path(name_or_path), trust_remote_code=trust_remote_code)
    for key in _ATTENTION_DROPOUT_KEYS:
        if hasattr(config, key):
            return {key: probability}
    raise ValueError(f"{type(config).__name__} has no attention-dropout setting ({', '.join(_ATTENTION_DROPOUT_KEYS)})")


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)


def load_causal_lm(
    name_or_path: str | os.PathLike | None = DEFAULT_MODEL_NAME,
    *,
    dtype: str | torch.dtype | None = torch.float32,
    device: str | torch.device | None = None,
    attn_implementation: str | None = "sdpa",
    revision: str | None = None,
    trust_remote_code: bool = False,
    **config_overrides,
):
    """Return `(model, tokenizer, resolved_path)` for a causal LM.

    `config_overrides` are public config attributes (e.g. `attention_dropout=0.2`).
    Weights load from safetensors only (`use_safetensors=True`): no pickle is ever read.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_backbone_path(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=parse_dtype(dtype),
            attn_implementation=attn_implementation,
            revision=revision,
            trust_remote_code=trust_remote_code,
            use_safetensors=True,
            **config_overrides,
        )
    except OSError as error:
        raise OSError(
            f"could not load a causal LM from {name_or_path!r}: {error}\n"
            f"Use a Hub model id, a local folder with safetensors weights, or '{DEFAULT_MODEL_NAME}'."
        ) from error
    tokenizer = load_tokenizer(path, revision=revision, trust_remote_code=trust_remote_code)
    if device is not None:
        model.to(device)
    return model, tokenizer, path


def body_of(causal_lm):
    """The transformer stack without the LM head (hidden states only, no logits).

    Works on a plain `*ForCausalLM` and on a peft-wrapped one (LoRA layers are injected in place).
    """
    model = causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm
    return model.base_model
