"""Reading safetensors files so that a missing, truncated or corrupt one names itself.

safetensors reports a truncated file as "Error while deserializing header: incomplete metadata,
file not fully covered", without saying which file; a model folder or checkpoint holds several.
Checking a file opens its header only (the header lists every tensor's byte range, so truncation
shows there): cheap even for a 13 GB backbone shard.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import CorruptFile, MissingFile

_HINT = "the file is truncated or corrupt (an interrupted copy or download?); copy or save it again"


def check_tensor_file(path: str | os.PathLike) -> Path:
    """Raise `MissingFile` / `CorruptFile` naming `path` unless its header describes the whole file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise CorruptFile(f"{path}: not a readable safetensors file ({error}); {_HINT}") from error
    return path


def check_tensor_files(folder: str | os.PathLike) -> None:
    """`check_tensor_file` on every `*.safetensors` directly inside `folder`."""
    for path in sorted(Path(folder).glob("*.safetensors")):
        check_tensor_file(path)


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (on CPU); a missing or unreadable file raises naming it."""
    path = check_tensor_file(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CorruptFile(f"{path}: not a readable safetensors file ({error}); {_HINT}") from error
