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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic import atomic_directory
from ..errors import CorruptFile, MissingFile
from ..tensor_files import check_tensor_file, check_tensor_files, read_tensors
from .backbone import load_causal_lm, load_tokenizer
from .config import FORMAT_VERSION, LLM2CompConfig
from .memory import MemoryTokens
from .st_files import write_st_files

MEMORY_FILE = "memory_tokens.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INPUT_EMBEDDINGS_FILE = "input_embeddings.safetensors"


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


def save_model(model, path, merge: bool = False, extra_files: dict[str, str | bytes] | None = None) -> None:
    """Write the model folder at `path` atomically; `extra_files` (name -> content) go into it too."""
    config = LLM2CompConfig(**vars(model.config))
    config.format_version = FORMAT_VERSION
    with atomic_directory(path) as tmp:
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
