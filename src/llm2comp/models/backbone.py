"""Loading a causal LM and its tokenizer from a Hub id, a local folder or the embedded default.

Only transformers' Auto classes and public `from_pretrained` arguments are used, so any causal
LM that transformers supports works (Llama, Mistral, Qwen2/3, Gemma/Gemma3, GPT-2, Phi, ...);
families that cannot (recurrent layers, see `attention.attention_layout`) are refused by name
before their weights load.

Trust. A model folder's `config.json` or `tokenizer_config.json` can name Python files of its own
(`auto_map`) for a model type transformers does not know; loading it runs that code. Only the
caller can allow that (`trust_remote_code=True`, `--trust-remote-code`): nothing read from a file
(an `llm2comp_config.json` included) ever does, and such a folder is refused with a message saying
so. Weights are read from safetensors only, never unpickled.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from ..errors import CorruptFile, InvalidSetting, MissingFile, ModelLoadError, UnsupportedModel, UntrustedCode
from ..tensor_files import check_tensor_files
from .attention import attention_layout
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
        raise InvalidSetting(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'")
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
            raise MissingFile(f"{path} is a file; expected a model folder or a Hub model id")
        if not (path / "config.json").is_file():
            raise MissingFile(f"{path} has no config.json: not a transformers model folder")
        if not any((path / name).is_file() for name in _WEIGHT_FILES):
            raise MissingFile(f"{path} holds no model weights ({', '.join(_WEIGHT_FILES[:2])})")
        return str(path)
    if str(name_or_path).startswith((".", "/", "~")):
        raise MissingFile(f"model folder {name_or_path} does not exist")
    return str(name_or_path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFile(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CorruptFile(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _custom_code_reference(folder: Path) -> tuple[Path, dict] | None:
    """(file, auto_map) when loading `folder` would run Python code shipped in it, else None."""
    import transformers

    for name in ("config.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        data = _read_json(file)
        auto_map = data.get("auto_map")
        if not auto_map:
            continue
        if name == "config.json":
            built_in = data.get("model_type") in transformers.CONFIG_MAPPING  # then transformers' own class is used
        else:
            tokenizer_class = data.get("tokenizer_class")
            built_in = tokenizer_class is None or hasattr(transformers, str(tokenizer_class))
        if not built_in:
            return file, auto_map
    return None


def refuse_untrusted_code(name_or_path, trust_remote_code: bool) -> None:
    """Raise `UntrustedCode` if loading the local folder `name_or_path` would run code it ships,
    unless the caller passed `trust_remote_code=True` (module docstring)."""
    if trust_remote_code or name_or_path is None or not Path(name_or_path).is_dir():
        return
    found = _custom_code_reference(Path(name_or_path))
    if found is not None:
        file, auto_map = found
        raise UntrustedCode(
            f"{file} asks to run Python code shipped with the model (auto_map: {json.dumps(auto_map)}); "
            "llm2comp never runs code from a model folder on the folder's say-so. If you trust its author, "
            "pass trust_remote_code=True (command line: --trust-remote-code)")


def _untrusted_hub_code(error: ValueError, name) -> UntrustedCode | None:
    """transformers' own refusal (a Hub model with custom code), reworded; None for other errors."""
    if "trust_remote_code" not in str(error):
        return None
    return UntrustedCode(f"{name} needs Python code shipped with the model, which llm2comp only runs when you "
                         "pass trust_remote_code=True (command line: --trust-remote-code)")


def load_backbone_config(path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    """The backbone's transformers config, after the trust check; refuses families that cannot work."""
    from transformers import AutoConfig

    refuse_untrusted_code(path, trust_remote_code)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except ValueError as error:
        raise _untrusted_hub_code(error, path) or error
    except OSError as error:
        raise ModelLoadError(
            f"could not load a causal LM from {path!r}: {error}\n"
            f"Use a Hub model id, a local folder with safetensors weights, or '{DEFAULT_MODEL_NAME}'."
        ) from error
    attention_layout(config)
    return config


_ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")


def attention_dropout_override(name_or_path: str | os.PathLike | None, probability: float,
                               trust_remote_code: bool = False) -> dict:
    """`{config_key: p}` for the backbone's attention-dropout setting, whatever the architecture calls it.

    Dropout is active only in training mode, so the same loaded weights encode deterministically
    after `model.eval()`.
    """
    from .config import LLM2CompConfig, is_llm2comp_folder

    if is_llm2comp_folder(name_or_path):
        saved = LLM2CompConfig.load(name_or_path)
        name_or_path = Path(name_or_path) / "backbone" if saved.backbone == "backbone" else saved.backbone
    config = load_backbone_config(resolve_backbone_path(name_or_path), trust_remote_code=trust_remote_code)
    for key in _ATTENTION_DROPOUT_KEYS:
        if hasattr(config, key):
            return {key: probability}
    raise UnsupportedModel(f"{type(config).__name__} has no attention-dropout setting ({', '.join(_ATTENTION_DROPOUT_KEYS)})")


def load_tokenizer(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    refuse_untrusted_code(name_or_path, trust_remote_code)
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, json.JSONDecodeError) as error:
        untrusted = _untrusted_hub_code(error, name_or_path) if isinstance(error, ValueError) else None
        raise untrusted or ModelLoadError(f"could not load the tokenizer of {name_or_path}: {error}") from error


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
    Weights load from safetensors only (`use_safetensors=True`): no pickle is ever read. A local
    folder that would run its own code is refused unless `trust_remote_code` (module docstring).
    """
    from transformers import AutoModelForCausalLM

    path = resolve_backbone_path(name_or_path)
    load_backbone_config(path, revision=revision, trust_remote_code=trust_remote_code)
    if Path(path).is_dir():
        check_tensor_files(path)  # a truncated shard names itself
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
        raise ModelLoadError(
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


def _unwrapped(causal_lm):
    return causal_lm.get_base_model() if hasattr(causal_lm, "get_base_model") else causal_lm


def has_tied_embeddings(causal_lm) -> bool:
    """Whether the LM head is the input-embedding table itself (one parameter, e.g. SmolLM2, Gemma)."""
    head = causal_lm.get_output_embeddings()
    return head is not None and head.weight is causal_lm.get_input_embeddings().weight


def untie_output_embeddings(causal_lm) -> bool:
    """Give a tied LM head its own frozen copy of the table, so that training (or replacing) the input
    embeddings leaves the head the backbone's; True if it was tied. The configs say
    `tie_word_embeddings=False` from then on, so a save writes the head and a load does not re-tie it."""
    if not has_tied_embeddings(causal_lm):
        return False
    head = causal_lm.get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    model = _unwrapped(causal_lm)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    if hasattr(model, "get_expanded_tied_weights_keys"):  # transformers 5: its record of what is tied
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    return True


def frozen_input_embeddings(causal_lm) -> torch.nn.Module:
    """A frozen copy of the input-embedding module (same class: a scaled embedding stays scaled).

    Shares its table with an untied head that is still the original (no second copy), else copies it."""
    embed = causal_lm.get_input_embeddings()
    head = causal_lm.get_output_embeddings()
    if head is not None and head.weight is not embed.weight and not head.weight.requires_grad \
            and head.weight.shape == embed.weight.shape and torch.equal(head.weight, embed.weight):
        table = head.weight
    else:
        table = torch.nn.Parameter(embed.weight.detach().clone(), requires_grad=False)
    frozen = copy.deepcopy(embed, memo={id(embed.weight): table})
    return frozen.requires_grad_(False)
