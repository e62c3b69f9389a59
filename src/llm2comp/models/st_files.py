"""The sentence-transformers files of a model folder: `SentenceTransformer(path, trust_remote_code=True)`.

    modules.json                        one input module, saved in the folder's root:
                                        [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    config_sentence_transformers.json   model type, prompts, cosine similarity, and a requirement on
                                        llm2comp (sentence-transformers checks it before importing the
                                        module, so a user without llm2comp gets an install hint)
    llm2comp_st_module.json             the module's own config: the dtype it loads the weights in

The module (`sentence_transformers_module.LLM2CompModule`) reads the llm2comp files themselves, so
these three small JSON files are all it takes; they are written without importing
sentence-transformers. Prompts are instructions, applied by the model's instruction template
(`"{instruction}: {text}"`), never prepended raw.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import ConfigError
from .config import CONFIG_NAME, FORMAT_VERSION, LLM2CompConfig

MODULE_TYPE = "llm2comp.sentence_transformers_module.LLM2CompModule"
MODULES_NAME = "modules.json"
ST_CONFIG_NAME = "config_sentence_transformers.json"
MODULE_CONFIG_NAME = "llm2comp_st_module.json"
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # what encode_document looks up


def llm2comp_requirement() -> dict[str, dict[str, str]]:
    from .. import __version__

    return {"llm2comp": {"specifier": f">={__version__}",
                         "reason": "The model's sentence-transformers module, LLM2CompModule, lives in the llm2comp "
                                   "package."}}


def check_prompts(prompts, where: str) -> dict[str, str]:
    """Prompts are `{name: instruction}`; document prompts must stay empty (documents take none)."""
    if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in prompts.items()):
        raise ConfigError(f"{where}: prompts must map names to instruction strings, got {prompts!r}")
    for name in DOCUMENT_PROMPT_NAMES:
        if prompts.get(name):
            raise ConfigError(f"{where}: prompts[{name!r}] = {prompts[name]!r}, but documents take no instruction")
    return prompts


def _installed_versions() -> dict[str, str]:
    versions = {}
    for package, key in (("sentence-transformers", "sentence_transformers"), ("transformers", "transformers"),
                         ("torch", "pytorch"), ("llm2comp", "llm2comp")):
        try:
            versions[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def st_model_config(prompts: dict[str, str]) -> dict:
    return {
        "model_type": "SentenceTransformer",
        "__version__": _installed_versions(),
        "prompts": {"query": "", "document": "", **prompts},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
        "requirements": llm2comp_requirement(),
    }


def _dump(data) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def write_st_files(folder: str | Path, config: LLM2CompConfig, *, dtype: str = "float32") -> None:
    """Write the three sentence-transformers files into `folder` (each atomically)."""
    folder = Path(folder)
    prompts = {name: text for name, text in check_prompts(config.prompts, str(folder / CONFIG_NAME)).items() if text}
    atomic_write_bytes(folder / MODULES_NAME, _dump([{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]))
    atomic_write_bytes(folder / ST_CONFIG_NAME, _dump(st_model_config(prompts)))
    atomic_write_bytes(folder / MODULE_CONFIG_NAME, _dump({"dtype": dtype}))


def add_requirement(folder: str | Path) -> None:
    """Make the `config_sentence_transformers.json` that sentence-transformers wrote declare llm2comp."""
    path = Path(folder) / ST_CONFIG_NAME
    data = json.loads(path.read_text()) if path.is_file() else st_model_config({})
    data["requirements"] = {**(data.get("requirements") or {}), **llm2comp_requirement()}
    atomic_write_bytes(path, _dump(data))


def upgrade_folder(folder: str | Path) -> bool:
    """Bring a model folder of an older format up to the current one, in place; False if it already is.

    Format 1 -> 2: adds the sentence-transformers files and the (empty) `prompts` field. The weights
    are not touched; the config is rewritten last, so an interrupted upgrade is simply redone.
    """
    folder = Path(folder)
    config = LLM2CompConfig.load(folder)
    if config.format_version >= FORMAT_VERSION and (folder / MODULES_NAME).is_file():
        return False
    write_st_files(folder, config)
    config.format_version = FORMAT_VERSION
    atomic_write_bytes(folder / CONFIG_NAME, _dump(asdict(config)))
    return True
