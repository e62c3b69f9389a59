"""Writing and reading an LLM2Comp model folder (format: docs/model_format.md).

    llm2comp_config.json         backbone id/path, k, pooling, attention, max length, template
    memory_tokens.safetensors    {"memory": (k, d)}
    adapters/00, adapters/01...  one LoRA per training stage (peft layout), merged in order at load
    backbone/                    only for `save(merge=True)`: the full merged weights (safetensors)
    tokenizer files
    modules.json, config_sentence_transformers.json, llm2comp_st_module.json   (st_files.py)

Everything is safetensors or JSON: nothing is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_directory
from .backbone import load_causal_lm, load_tokenizer
from .config import FORMAT_VERSION, LLM2CompConfig
from .memory import MemoryTokens
from .st_files import write_st_files

MEMORY_FILE = "memory_tokens.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


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


def save_model(model, path, merge: bool = False) -> None:
    config = LLM2CompConfig(**vars(model.config))
    config.format_version = FORMAT_VERSION
    with atomic_directory(path) as tmp:
        if merge:
            model.merge_adapter()
            model.model.save_pretrained(tmp / "backbone", safe_serialization=True)
            model.tokenizer.save_pretrained(str(tmp / "backbone"))  # a complete HF folder on its own
            config.backbone, config.adapters = "backbone", []
        else:
            records = list(model.merged_adapters)
            if model.has_adapter:
                records.append(AdapterRecord.capture(model.model))
            config.adapters = []
            for index, record in enumerate(records):
                name = f"adapters/{index:02d}"
                record.write(tmp / name)
                config.adapters.append(name)
        if model.memory is not None:
            save_file({"memory": model.memory.weight.detach().float().cpu().contiguous()}, str(tmp / MEMORY_FILE))
        model.tokenizer.save_pretrained(str(tmp))
        write_st_files(tmp, config)
        config.save(tmp)


def load_model(cls, path, **load_args):
    from peft import PeftModel

    path = Path(path)
    config = LLM2CompConfig.load(path)
    backbone = str(path / "backbone") if config.backbone == "backbone" else config.backbone
    for name in config.adapters:
        if not (path / name / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"{path / name} has no {ADAPTER_WEIGHTS}; the model folder is incomplete")
    if config.num_memory_tokens and not (path / MEMORY_FILE).is_file():
        raise FileNotFoundError(f"{path} has no {MEMORY_FILE}; the model folder is incomplete")
    causal_lm, _, _ = load_causal_lm(backbone, revision=config.backbone_revision,
                                     trust_remote_code=config.trust_remote_code, **load_args)
    records = []
    for name in config.adapters:
        peft_model = PeftModel.from_pretrained(causal_lm, str(path / name))
        records.append(AdapterRecord.capture(peft_model))
        causal_lm = peft_model.merge_and_unload()
    memory = None
    if config.num_memory_tokens:
        weight = load_file(str(path / MEMORY_FILE))["memory"]
        memory = MemoryTokens(weight.shape[0], weight.shape[1])
        memory.weight.data.copy_(weight)
        memory.to(causal_lm.device)
    tokenizer = load_tokenizer(str(path), trust_remote_code=config.trust_remote_code)
    config.adapters = []
    model = cls(causal_lm, tokenizer, config, memory)
    model.merged_adapters = records
    return model
