"""Reading texts to embed from .txt (one per line) or .jsonl (a `text` field) files."""

from __future__ import annotations

from pathlib import Path

from .data.reading import DataError, format_suffix, iter_jsonl, iter_lines, require_text


def read_texts(path: str | Path, field: str = "text", instruction_field: str = "instruction") -> list:
    """Return a list of str, or of (instruction, text) pairs where a JSONL row has an instruction.

    .txt: one text per line, blank lines skipped. .jsonl: one JSON object per line with `field`.
    Files may be gzip/bz2 compressed. Errors (a `DataError`) name the file and line.
    """
    path = Path(path)
    items: list = []
    if format_suffix(path) in (".jsonl", ".ndjson"):
        for number, row in iter_jsonl(path):
            text = require_text(row, field, path, number)
            instruction = row.get(instruction_field)
            if instruction is not None and not isinstance(instruction, str):
                raise DataError(f"field {instruction_field!r} must be a string (or absent), got "
                                f"{type(instruction).__name__}", path, number)
            items.append((instruction, text) if instruction and instruction.strip() else text)
    else:
        items = [line for _, line in iter_lines(path) if line.strip()]
    if not items:
        raise DataError("holds no texts", path)
    return items
