"""The small JSON config saved next to the weights of every LLM2Comp model folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..inputs import DEFAULT_INSTRUCTION_TEMPLATE

CONFIG_NAME = "llm2comp_config.json"
# 1: the llm2comp files only. 2: also `prompts`, and the sentence-transformers files
# (modules.json, ...; see st_files.py). A version-1 folder still loads; `llm2comp upgrade` adds the files.
FORMAT_VERSION = 2


@dataclass
class LLM2CompConfig:
    backbone: str  # Hub id, absolute path, the default alias, or "backbone" (merged copy in the folder)
    backbone_revision: str | None = None
    num_memory_tokens: int = 8  # k; 0 only for the untrained token-pooling baselines
    pooling: str = "memory_mean"  # memory_mean | mean | last
    attention: str = "bidirectional"  # bidirectional | causal
    max_length: int = 512  # BOS + text + memory; the text is cut, never the memory
    long_texts: str = "truncate"  # beyond max_length: truncate | segments | multivector (long_texts.py)
    long_text_overlap: int = 32  # tokens shared by consecutive windows (segments / multivector)
    instruction_template: str = DEFAULT_INSTRUCTION_TEMPLATE
    embedding_dim: int | None = None
    adapters: list[str] = field(default_factory=list)  # LoRA folders, merged in order at load time
    trust_remote_code: bool = False
    prompts: dict[str, str] = field(default_factory=dict)  # {"query": default instruction}, set by training
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LLM2CompConfig:
        path = Path(folder) / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path} was written by a newer llm2comp (format {data['format_version']}); upgrade")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown fields {unknown}")
        return cls(**data)


def is_llm2comp_folder(path) -> bool:
    return path is not None and (Path(path) / CONFIG_NAME).is_file()
