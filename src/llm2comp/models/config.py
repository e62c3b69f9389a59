"""The small JSON config saved next to the weights of every LLM2Comp model folder.

`LLM2CompConfig.load` checks the file as strictly as training configs are checked: UTF-8 JSON
holding an object, no unknown keys, every field of its type and in its range (`max_length: "64"`,
`format_version: null` and `prompts: {"query": 5}` are refused, and so is a `long_text_overlap` >=
the window when `long_texts` cuts texts into windows), the instruction template holding `{text}`
exactly once and `{instruction}` at most once (`inputs.check_instruction_template`). Every error is
a `CorruptFile` (unreadable) or `ConfigError` (a field) naming the file and the field. What needs the
backbone or the tokenizer (`embedding_dim` against the hidden size, the exact window budget) is
checked at load (`folder_checks.py`). `LLM2Comp.from_pretrained` checks its own arguments the same way.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, CorruptFile, InvalidSetting, InvalidType
from ..inputs import DEFAULT_INSTRUCTION_TEMPLATE, check_instruction_template

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
    matryoshka_dims: list[int] = field(default_factory=list)  # prefix sizes trained (losses/matryoshka.py); [] none
    format_version: int = FORMAT_VERSION

    def save(self, folder: str | Path) -> None:
        data = asdict(self)
        if not data["matryoshka_dims"]:  # none trained: the file stays as before the field (older readers load it)
            del data["matryoshka_dims"]
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> LLM2CompConfig:
        """The config of the model folder `folder`, checked field by field (module docstring)."""
        path = Path(folder) / CONFIG_NAME
        data = read_config_file(path)
        for name in _DROPPED_FIELDS:
            data.pop(name, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CorruptFile(f"{path}: unknown fields {unknown}; known: {sorted(known)}")
        if "backbone" not in data:
            raise ConfigError(f"{path}: field 'backbone' is missing (the backbone's Hub id or path)")
        check_config_fields(data, path)
        return cls(**data)


def read_config_file(path: Path) -> dict:
    """The JSON object in `path`; `CorruptFile` naming it if it is not UTF-8 JSON holding an object."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CorruptFile(f"{path} is not UTF-8 text (byte {error.start}): not an llm2comp config") from None
    except json.JSONDecodeError as error:
        raise CorruptFile(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CorruptFile(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value) -> bool:
    """A str that is valid Unicode (JSON escapes can carry lone surrogates such as \\ud800)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_adapter_path(value) -> bool:
    """A folder inside the model folder: relative, no `..` (a config never points outside it)."""
    return (_is_text(value) and bool(value) and not PurePosixPath(value).is_absolute() and "\\" not in value
            and ".." not in PurePosixPath(value).parts and not re.match(r"^[A-Za-z]:", value))


def _field_checks() -> dict:
    """field -> (test, what it must be). Imported lazily: these modules import this one's package."""
    from .attention import ATTENTION_MODES
    from .long_texts import LONG_TEXT_MODES
    from .pooling import POOLING_MODES

    def optional_text(value):
        return value is None or _is_text(value)

    return {
        "backbone": (lambda v: _is_text(v) and bool(v.strip()), "a non-empty string (Hub id, path or 'backbone')"),
        "backbone_revision": (optional_text, "a string or null"),
        "num_memory_tokens": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
        "pooling": (lambda v: v in POOLING_MODES, f"one of {list(POOLING_MODES)}"),
        "attention": (lambda v: v in ATTENTION_MODES, f"one of {list(ATTENTION_MODES)}"),
        "max_length": (lambda v: _is_int(v) and v >= 2, "a whole number >= 2"),
        "long_texts": (lambda v: v in LONG_TEXT_MODES, f"one of {list(LONG_TEXT_MODES)}"),
        "long_text_overlap": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
        "instruction_template": (_is_text, "a string"),
        "embedding_dim": (lambda v: v is None or (_is_int(v) and v >= 1), "a whole number >= 1 or null"),
        "adapters": (lambda v: isinstance(v, list) and all(_is_adapter_path(name) for name in v),
                     "a list of folders inside the model folder (adapters/00, ...)"),
        "prompts": (lambda v: isinstance(v, dict) and all(_is_text(k) and _is_text(t) for k, t in v.items()),
                    "an object mapping prompt names to instruction strings"),
        "input_embeddings": (lambda v: isinstance(v, bool), "true or false"),
        "backbone_note": (optional_text, "a string or null"),
        "matryoshka_dims": (lambda v: isinstance(v, list) and all(_is_int(d) and d >= 1 for d in v)
                            and all(a < b for a, b in zip(v, v[1:])),
                            "a strictly increasing list of whole numbers >= 1 (the trained prefix sizes)"),
        "format_version": (lambda v: _is_int(v) and 1 <= v, f"a whole number in [1, {FORMAT_VERSION}]"),
    }


def check_config_fields(data: dict, path: Path | str) -> None:
    """Raise `ConfigError` naming `path` (the file, or the API call the values came from) and the field
    for the first value in `data` that cannot be used; absent fields count with their defaults."""
    from .pooling import check_pooling
    from .st_files import check_prompts

    if _is_int(data.get("format_version")) and data["format_version"] > FORMAT_VERSION:
        raise CorruptFile(f"{path} was written by a newer llm2comp (format {data['format_version']}); upgrade")
    for name, (holds, expected) in _field_checks().items():
        if name in data and not holds(data[name]):
            raise ConfigError(f"{path}: field {name!r} must be {expected}, got {data[name]!r}")
    values = {**{name: spec.default for name, spec in LLM2CompConfig.__dataclass_fields__.items()
                 if name not in ("adapters", "prompts", "matryoshka_dims")}, **data}
    for name, check in (("instruction_template", lambda: check_instruction_template(values[name])),
                        ("pooling", lambda: check_pooling(values[name], values["num_memory_tokens"]))):
        try:
            check()
        except (InvalidSetting, InvalidType) as error:
            raise ConfigError(f"{path}: field {name!r}: {error}") from None
    check_prompts(values.get("prompts", {}), f"{path}: field 'prompts'")
    dims, width = data.get("matryoshka_dims") or [], values["embedding_dim"]
    if dims and _is_int(width) and dims[-1] >= width:
        raise ConfigError(f"{path}: field 'matryoshka_dims' ({dims}) must all be smaller than 'embedding_dim' "
                          f"({width}), the full size")
    room = values["max_length"] - values["num_memory_tokens"] - 1  # BOS, when the tokenizer has one
    if room < 1:
        raise ConfigError(f"{path}: field 'max_length' ({values['max_length']}) leaves no room for text next to "
                          f"BOS and {values['num_memory_tokens']} memory tokens")
    if values["long_texts"] != "truncate" and values["long_text_overlap"] >= room + 1:  # windows are used
        raise ConfigError(f"{path}: field 'long_text_overlap' ({values['long_text_overlap']}) must be smaller "
                          f"than a window's text budget (max_length {values['max_length']} minus BOS and "
                          f"{values['num_memory_tokens']} memory tokens)")


def is_trained_size(config: LLM2CompConfig, size: int | None, full: int) -> bool:
    """True when embeddings cut to their first `size` components are what the model was trained for:
    no cut (None), the full size `full` (or more), or one of `config.matryoshka_dims`."""
    return size is None or size >= full or size in (config.matryoshka_dims or [])


def untrained_size_message(config: LLM2CompConfig, size: int, full: int) -> str:
    """Why cutting to `size` components is unreliable for this model (for a warning)."""
    trained = config.matryoshka_dims or []
    sizes = f"Matryoshka sizes {trained} and the full {full}" if trained else f"only its full size {full}"
    return (f"this model was trained for {sizes}, not {size}: its first {size} components were never trained "
            f"to be an embedding of their own (train with matryoshka_dims: [..., {size}, ...])")


def is_llm2comp_folder(path) -> bool:
    """True when `path` holds an `llm2comp_config.json` file; one that is not a file is refused by name."""
    if path is None:
        return False
    config = Path(path) / CONFIG_NAME
    if config.exists() and not config.is_file():
        raise CorruptFile(f"{config} is not a file (a folder?); an llm2comp model folder holds its settings in "
                          f"the file {CONFIG_NAME}: save the model again")
    return config.is_file()
