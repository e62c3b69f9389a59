"""The small JSON config saved next to the weights of every LLM2Comp model folder."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CorruptFile
from ..inputs import DEFAULT_INSTRUCTION_TEMPLATE

CONFIG_NAME = "llm2comp_config.json"
# 1: the llm2comp files only. 2: also `prompts`, and the sentence-transformers files
# (modules.json, ...; see st_files.py). 3: `trust_remote_code` is no longer stored (only the caller
# grants it); `input_embeddings` and `backbone_note` added. Folders of formats 1 and 2 still load.
FORMAT_VERSION = 3
_DROPPED_FIELDS = ("trust_remote_code",)  # formats 1-2 wrote it; never read: a file does not grant trust


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
    prompts: dict[str, str] = field(default_factory=dict)  # {"query": default instruction}, set by training
    input_embeddings: bool = False  # the folder holds the trained input-embedding matrix (replaces the backbone's)
    backbone_note: str | None = None  # where the backbone weights came from, when it matters (e.g. quantised)
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LLM2CompConfig:
        path = Path(folder) / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CorruptFile(f"{path} is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise CorruptFile(f"{path}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise CorruptFile(f"{path} was written by a newer llm2comp (format {data['format_version']}); upgrade")
        for name in _DROPPED_FIELDS:
            data.pop(name, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorruptFile(f"{path}: unknown fields {unknown}")
        return cls(**data)


def is_llm2comp_folder(path) -> bool:
    return path is not None and (Path(path) / CONFIG_NAME).is_file()
