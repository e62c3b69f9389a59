"""Reading texts to embed from .txt (one per line) or .jsonl (a `text` field) files."""

from __future__ import annotations

import json
from pathlib import Path


def read_texts(path: str | Path, field: str = "text", instruction_field: str = "instruction") -> list:
    """Return a list of str, or of (instruction, text) pairs where a JSONL row has an instruction.

    .txt: one text per line, blank lines skipped. .jsonl: one JSON object per line with `field`.
    Errors name the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from error
    items: list = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            items.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: invalid JSON ({error.msg})") from error
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        text = row.get(field)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{number}: field {field!r} is missing, empty or not a string")
        instruction = row.get(instruction_field)
        items.append((instruction, text) if instruction else text)
    if not items:
        raise ValueError(f"{path} holds no texts")
    return items
