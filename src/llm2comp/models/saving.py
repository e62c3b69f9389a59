"""Writing and reading an LLM2Comp model folder (format: docs/model_format.md).

    llm2comp_config.json         backbone id/path, k, pooling, attention, max length, template
    memory_tokens.safetensors    {"memory": (k, d)}
    adapters/00, adapters/01...  one LoRA per training stage (peft layout), merged in order at load
    input_embeddings.safetensors {"weight": (V, d)}, only when the input embeddings were trained
    backbone/                    only for `save(merge=True)`: the full merged weights (safetensors)
    tokenizer files
    modules.json, config_sentence_transformers.json, llm2comp_st_module.json   (st_files.py)
    training_config.yaml ...     `extra_files` (training stages), written before the folder appears

Everything is safetensors or JSON: nothing is ever unpickled. The folder appears in one rename,
complete. Loading never takes `trust_remote_code` from the folder: only the caller grants it.

What `save(path)` replaces (`check_save_target`): nothing, an empty folder, or a model folder,
i.e. one with llm2comp_config.json that holds only files a save writes (`is_model_file`). A file
is never replaced by a folder; any other folder is refused unless `overwrite=True`, which writes
the model into it and keeps every file that is not one the model writes (in a model folder with
extra files: the old model's own files go, the extra ones stay).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic import atomic_directory, check_not_working_folder
from ..errors import CorruptFile, MissingFile, OutputError
from ..tensor_files import check_tensor_file, check_tensor_files, read_tensors
from .backbone import load_causal_lm, load_tokenizer, untie_output_embeddings
from .config import CONFIG_NAME, FORMAT_VERSION, LLM2CompConfig, is_llm2comp_folder
from .memory import MemoryTokens
from .st_files import MODULE_CONFIG_NAME, MODULES_NAME, ST_CONFIG_NAME, write_st_files

MEMORY_FILE = "memory_tokens.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
INPUT_EMBEDDINGS_FILE = "input_embeddings.safetensors"
TRAINING_CONFIG = "training_config.yaml"  # written by the training stages (`extra_files`)
# what `tokenizer.save_pretrained` writes, whatever the tokenizer's kind
TOKENIZER_FILES = frozenset({"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                             "chat_template.jinja", "chat_template.json", "vocab.json", "vocab.txt", "merges.txt",
                             "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.model"})
MODEL_FILES = frozenset({CONFIG_NAME, MEMORY_FILE, INPUT_EMBEDDINGS_FILE, MODULES_NAME, ST_CONFIG_NAME,
                         MODULE_CONFIG_NAME, TRAINING_CONFIG}) | TOKENIZER_FILES


def is_model_file(relative: str) -> bool:
    """Whether a path inside a model folder (posix, relative) is one that `save` writes: the files above,
    `adapters/NN/{adapter_config.json, adapter_model.safetensors}`, anything under `backbone/` (a merged
    Hugging Face folder, whose file names vary by model) and `additional_chat_templates/*.jinja`."""
    parts = relative.split("/")
    if parts[0] == "backbone":
        return True
    if parts[0] == "adapters":
        return (len(parts) == 1 or (parts[1].isdigit() and (len(parts) == 2 or (
            len(parts) == 3 and parts[2] in (ADAPTER_WEIGHTS, ADAPTER_CONFIG)))))
    if parts[0] == "additional_chat_templates":
        return len(parts) == 1 or (len(parts) == 2 and parts[1].endswith(".jinja"))
    return len(parts) == 1 and parts[0] in MODEL_FILES


def foreign_files(folder: Path) -> list[str]:
    """The files (and empty folders) of `folder` that no `save` writes, as relative paths, sorted."""
    found = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder).as_posix()
        is_file = path.is_symlink() or not path.is_dir()
        empty_folder = not is_file and not any(path.iterdir())
        if (is_file or empty_folder) and not is_model_file(relative):
            found.append(relative)
    return found


def _listing(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_save_target(path, overwrite: bool = False, *, way_out: str | None = None) -> None:
    """Raise `OutputError` unless `save(path, overwrite=overwrite)` may write there (module docstring).

    `way_out` replaces the advice given (training has no `overwrite`: it says what to move instead).
    """
    path = Path(path).expanduser()
    if path.is_symlink() and not path.is_dir() or path.exists() and not path.is_dir():
        raise OutputError(f"cannot save the model to {path}: it is a file and a model is a folder; choose another "
                          "path (overwrite=True never replaces a file)")
    check_not_working_folder(path)
    if not path.exists() or overwrite or not any(path.iterdir()):
        return
    foreign = foreign_files(path)
    if is_llm2comp_folder(path) and not foreign:
        return
    advice = way_out or ("save to another path, or pass overwrite=True to write the model into it (every file "
                         "that is not one a model folder holds is kept)")
    if not is_llm2comp_folder(path):
        raise OutputError(f"{path} is a folder that is not an llm2comp model folder (it holds {_listing(foreign)}); "
                          f"saving would replace it, so nothing was written: {advice}")
    raise OutputError(f"{path} is an llm2comp model folder that also holds files a model folder does not "
                      f"({_listing(foreign)}); saving would delete them, so nothing was written: {advice}")


@dataclass
class AdapterRecord:
    """A LoRA adapter's config and weights, kept after it was merged so it can still be saved."""

    config: object  # peft LoraConfig
    state: dict[str, torch.Tensor]

    @classmethod
    def capture(cls, peft_model) -> AdapterRecord:
        from peft import get_peft_model_state_dict

        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in
                 get_peft_model_state_dict(peft_model).items()}
        return cls(config=peft_model.peft_config["default"], state=state)

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save_pretrained(str(folder))
        save_file(self.state, str(folder / ADAPTER_WEIGHTS))


def save_model(model, path, merge: bool = False, extra_files: dict[str, str | bytes] | None = None,
               overwrite: bool = False) -> None:
    """Write the model folder at `path` atomically; `extra_files` (name -> content) go into it too.

    An existing `path` is replaced only as the module docstring says (`check_save_target`).
    """
    check_save_target(path, overwrite)
    config = LLM2CompConfig(**vars(model.config))
    config.format_version = FORMAT_VERSION
    keep = None
    if overwrite and Path(path).expanduser().is_dir():  # keep what is not the model's
        keep = (lambda relative: not is_model_file(relative)) if is_llm2comp_folder(path) else (lambda relative: True)
    with atomic_directory(path, keep=keep) as tmp:
        if merge:
            model.merge_adapter()
            model.model.save_pretrained(tmp / "backbone", safe_serialization=True)
            model.tokenizer.save_pretrained(str(tmp / "backbone"))  # a complete HF folder on its own
            config.backbone, config.adapters = "backbone", []
            config.input_embeddings = False  # the merged backbone holds them
        else:
            records = list(model.merged_adapters)
            if model.has_adapter:
                records.append(AdapterRecord.capture(model.model))
            config.adapters = []
            for index, record in enumerate(records):
                name = f"adapters/{index:02d}"
                record.write(tmp / name)
                config.adapters.append(name)
        if config.input_embeddings:
            weight = model.model.get_input_embeddings().weight
            save_file({"weight": weight.detach().cpu().contiguous()}, str(tmp / INPUT_EMBEDDINGS_FILE))
        if model.memory is not None:
            save_file({"memory": model.memory.weight.detach().float().cpu().contiguous()}, str(tmp / MEMORY_FILE))
        model.tokenizer.save_pretrained(str(tmp))
        write_st_files(tmp, config)
        config.save(tmp)
        for name, content in (extra_files or {}).items():
            target = tmp / name
            target.write_bytes(content.encode() if isinstance(content, str) else content)


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingFile(f"{path.parent} has no {path.name}; the model folder is incomplete ({what})")
    return check_tensor_file(path)


def _tensor(path: Path, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    tensors = read_tensors(path)
    if key not in tensors or (shape is not None and tuple(tensors[key].shape) != shape):
        found = {name: tuple(value.shape) for name, value in tensors.items()}
        raise CorruptFile(f"{path}: expected tensor {key!r}{f' of shape {shape}' if shape else ''}, found {found}")
    return tensors[key]


def load_model(cls, path, *, trust_remote_code: bool = False, **load_args):
    """Load a model folder. `trust_remote_code` comes from the caller only, never from the folder."""
    from peft import PeftModel

    path = Path(path)
    config = LLM2CompConfig.load(path)
    backbone = str(path / "backbone") if config.backbone == "backbone" else config.backbone
    for name in config.adapters:  # every file checked before the (large) backbone loads
        _require(path / name / ADAPTER_WEIGHTS, f"LoRA adapter {name}")
    if config.num_memory_tokens:
        _require(path / MEMORY_FILE, "memory vectors")
    if config.input_embeddings:
        _require(path / INPUT_EMBEDDINGS_FILE, "trained input embeddings")
    if config.backbone == "backbone":
        check_tensor_files(backbone)
    causal_lm, _, _ = load_causal_lm(backbone, revision=config.backbone_revision,
                                     trust_remote_code=trust_remote_code, **load_args)
    records = []
    for name in config.adapters:
        peft_model = PeftModel.from_pretrained(causal_lm, str(path / name))
        records.append(AdapterRecord.capture(peft_model))
        causal_lm = peft_model.merge_and_unload()
    if config.input_embeddings:
        untie_output_embeddings(causal_lm)  # only the input table was trained: a tied LM head stays the backbone's
        table = causal_lm.get_input_embeddings().weight
        with torch.no_grad():
            table.copy_(_tensor(path / INPUT_EMBEDDINGS_FILE, "weight", tuple(table.shape)))
    memory = None
    if config.num_memory_tokens:
        hidden = causal_lm.get_input_embeddings().weight.shape[1]
        weight = _tensor(path / MEMORY_FILE, "memory", (config.num_memory_tokens, hidden))
        memory = MemoryTokens(weight.shape[0], weight.shape[1])
        memory.weight.data.copy_(weight)
        memory.to(causal_lm.device)
    tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
    config.adapters = []
    model = cls(causal_lm, tokenizer, config, memory)
    model.merged_adapters = records
    return model
