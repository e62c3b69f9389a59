"""Checks of a saved model folder that `LLM2Comp.from_pretrained` runs around the backbone load.

Before the (large) backbone loads, from small files and safetensors headers only:

- the tokenizer: `tokenizer.json` must be JSON, and some tokenizer file must be there;
- every adapter (`adapters/NN/adapter_config.json`) must be a readable LoRA config (`peft_type` LORA);
- `config_sentence_transformers.json` must agree with `llm2comp_config.json`: the same non-empty
  prompts, none for documents, no `default_prompt_name`, so that both doors (`LLM2Comp` and
  `SentenceTransformer`) give one folder's texts the same vectors;
- the backbone (its `config.json`) must be the one the folder was saved from: its hidden size is
  `embedding_dim` and the width of the memory vectors, its vocabulary the rows of
  `input_embeddings.safetensors`.

After it loads: the window budget (`max_length` minus BOS and the k memory tokens, once the
tokenizer says whether it has a BOS) and the tokenizer's size against the embedding table.
Every error names the file and the problem (`ConfigError`, `CorruptFile`, `MissingFile`).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ..errors import ConfigError, CorruptFile, InvalidSetting, MissingFile
from ..tensor_files import check_tensor_file
from .backbone import load_backbone_config, resolve_backbone_path
from .config import CONFIG_NAME, LLM2CompConfig
from .saving import ADAPTER_CONFIG, INPUT_EMBEDDINGS_FILE, MEMORY_FILE
from .st_files import ST_CONFIG_NAME, check_prompts

TOKENIZER_JSON = "tokenizer.json"
# the files that hold a tokenizer's vocabulary, whatever its kind (tokenizer_config.json alone does not)
VOCABULARY_FILES = (TOKENIZER_JSON, "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.model",
                    "vocab.json", "vocab.txt")


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFile(f"{path} is not valid JSON ({error}); copy or save the model folder again") from None
    if not isinstance(data, dict):
        raise CorruptFile(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_tokenizer_files(folder: Path) -> None:
    """A tokenizer is there, and its `tokenizer.json` (when it has one) is JSON."""
    if (folder / TOKENIZER_JSON).is_file():
        data = _json_object(folder / TOKENIZER_JSON)
        for field, kind in (("model", dict), ("added_tokens", list)):
            if not isinstance(data.get(field), kind):
                raise CorruptFile(f"{folder / TOKENIZER_JSON}: field {field!r} is missing or not a JSON "
                                  f"{'object' if kind is dict else 'list'}; this is not a tokenizers file: copy "
                                  "the backbone's tokenizer files into the folder again")
    elif not any((folder / name).is_file() for name in VOCABULARY_FILES):
        raise MissingFile(f"{folder} has no tokenizer ({TOKENIZER_JSON}); the model folder is incomplete: copy the "
                          "backbone's tokenizer files into it, or save the model again")


def check_adapter_configs(folder: Path, adapters: list[str]) -> None:
    """Each adapter folder holds a readable LoRA `adapter_config.json` (llm2comp saves LoRA only)."""
    for name in adapters:
        path = folder / name / ADAPTER_CONFIG
        if not path.is_file():
            raise MissingFile(f"{path.parent} has no {ADAPTER_CONFIG}; the model folder is incomplete (LoRA adapter "
                              f"{name})")
        peft_type = _json_object(path).get("peft_type")
        if peft_type != "LORA":
            raise ConfigError(f"{path}: peft_type is {peft_type!r}, but llm2comp folders hold LoRA adapters only "
                              "(peft_type \"LORA\"); this adapter was not saved by llm2comp")


def _non_empty(prompts: dict) -> dict:
    return {name: text for name, text in prompts.items() if text}


def check_st_config(folder: Path, config: LLM2CompConfig) -> None:
    """`config_sentence_transformers.json` (when present) gives the prompts `llm2comp_config.json` gives."""
    path = folder / ST_CONFIG_NAME
    if not path.is_file():
        return
    data = _json_object(path)
    prompts = check_prompts(data.get("prompts") or {}, f"{path}: field 'prompts'")
    if _non_empty(prompts) != _non_empty(config.prompts):
        raise ConfigError(f"{path}: prompts {_non_empty(prompts)} differ from those of {folder / CONFIG_NAME} "
                          f"({_non_empty(config.prompts)}), so SentenceTransformer and LLM2Comp would embed queries "
                          "differently; make the two files give the same prompts")
    if data.get("default_prompt_name") is not None:
        raise ConfigError(f"{path}: default_prompt_name is {data['default_prompt_name']!r}, which SentenceTransformer "
                          "would apply to every text (documents too) and LLM2Comp.encode to none; set it to null "
                          "and pass prompts (encode_query) explicitly")


def _header_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """The shape of tensor `key` from the file's header (nothing is read), None when it has no such key."""
    with safe_open(str(check_tensor_file(path)), framework="pt") as handle:
        if key not in handle.keys():
            return None
        return tuple(handle.get_slice(key).get_shape())


def check_backbone_fit(folder: Path, config: LLM2CompConfig, backbone_config, backbone: str) -> None:
    """The backbone's hidden size and vocabulary are those the folder's files were saved with."""
    text_config = backbone_config.get_text_config() if hasattr(backbone_config, "get_text_config") else backbone_config
    hidden = getattr(text_config, "hidden_size", None)
    vocab = getattr(text_config, "vocab_size", None)
    if not isinstance(hidden, int):
        return
    mismatch = f"the backbone {backbone} has hidden size {hidden}: the folder was not saved from this backbone"
    if config.embedding_dim is not None and config.embedding_dim != hidden:
        raise ConfigError(f"{folder / CONFIG_NAME}: field 'embedding_dim' is {config.embedding_dim}, but {mismatch}")
    memory = folder / MEMORY_FILE
    if config.num_memory_tokens and memory.is_file():
        shape = _header_shape(memory, "memory")
        if shape is not None and shape != (config.num_memory_tokens, hidden):
            raise CorruptFile(f"{memory}: memory vectors of shape {shape}, expected ({config.num_memory_tokens}, "
                              f"{hidden}) (num_memory_tokens {config.num_memory_tokens}); {mismatch}")
    table = folder / INPUT_EMBEDDINGS_FILE
    if config.input_embeddings and table.is_file() and isinstance(vocab, int):
        shape = _header_shape(table, "weight")
        if shape is not None and shape != (vocab, hidden):
            raise CorruptFile(f"{table}: input embeddings of shape {shape} (vocabulary x width), but the backbone "
                              f"{backbone} has a vocabulary of {vocab} and hidden size {hidden}: the folder was not "
                              "saved from this backbone")


def check_folder_before_load(folder, config: LLM2CompConfig, *, trust_remote_code: bool = False) -> None:
    """Everything that can be checked before the backbone's weights load (module docstring)."""
    folder = Path(folder)
    check_tokenizer_files(folder)
    check_adapter_configs(folder, config.adapters)
    check_st_config(folder, config)
    backbone = str(folder / "backbone") if config.backbone == "backbone" else config.backbone
    backbone_config = load_backbone_config(resolve_backbone_path(backbone), revision=config.backbone_revision,
                                           trust_remote_code=trust_remote_code)
    check_backbone_fit(folder, config, backbone_config, backbone)


def check_folder_after_load(model, folder) -> None:
    """The window budget (the tokenizer decides BOS) and the tokenizer against the embedding table."""
    from .layout import model_text_budget
    from .long_texts import check_overlap

    config, where = model.config, Path(folder) / CONFIG_NAME
    try:
        budget = model_text_budget(model)
    except InvalidSetting as error:
        raise ConfigError(f"{where}: field 'max_length': {error}") from None
    if config.long_texts != "truncate":
        try:
            check_overlap(config.long_text_overlap, budget)
        except InvalidSetting:
            raise ConfigError(f"{where}: field 'long_text_overlap' ({config.long_text_overlap}) must be smaller "
                              f"than a window's text budget, {budget} tokens (max_length {config.max_length} minus "
                              f"BOS and {model.num_memory_tokens} memory tokens)") from None
    rows = model.model.get_input_embeddings().weight.shape[0]
    if len(model.tokenizer) > rows:
        raise CorruptFile(f"{folder}: the tokenizer has {len(model.tokenizer)} tokens, but the backbone's embedding "
                          f"table has {rows} rows: the tokenizer is not the backbone's")
