"""Reading texts to embed from .txt (one per line) or .jsonl (a `text` field) files."""

from __future__ import annotations

from pathlib import Path

from .data.reading import (
    STDIN,
    DataError,
    check_file,
    display_name,
    format_suffix,
    iter_jsonl,
    iter_lines,
    require_text,
)

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_texts(path: str | Path, field: str = "text", instruction_field: str = "instruction") -> list:
    """Return a list of str, or of (instruction, text) pairs where a JSONL row has an instruction.

    .txt: one text per line (LF, CRLF or CR line endings), blank lines skipped. .jsonl: one JSON
    object per line with `field`.
    Files may be gzip/bz2 compressed; pipes and devices (`/dev/stdin`, `<(...)`) are read like
    files, and `-` reads the standard input (one text per line). Errors (a `DataError`) name the
    file and line.
    """
    path = check_file(path) if str(path) != STDIN else STDIN
    suffix = format_suffix(path) if path != STDIN else ""
    if suffix == ".json":
        raise DataError("is a .json file; give one text per line (.txt) or one JSON object per line (.jsonl, "
                        f"with a {field!r} field)", path)
    items: list = []
    if suffix in JSONL_SUFFIXES:
        for number, row in iter_jsonl(path):
            text = require_text(row, field, path, number)
            instruction = row.get(instruction_field)
            if instruction is not None and not isinstance(instruction, str):
                raise DataError(f"field {instruction_field!r} must be a string (or absent), got "
                                f"{type(instruction).__name__}", path, number)
            items.append((instruction, text) if instruction and instruction.strip() else text)
    else:
        # a lone CR ends a line too (classic Mac files; universal newlines), as in Python's text mode
        items = [part for _, line in iter_lines(path) for part in line.split("\r") if part.strip()]
    if not items:
        raise DataError("holds no texts (it is empty or holds only blank lines)", display_name(path))
    return items
