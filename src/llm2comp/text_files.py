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
# tables whose lines are not texts (a header, delimiters, quoting, or binary): refused, never embedded line by line
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".arrow", ".feather", ".xlsx", ".xls", ".npy", ".npz", ".pkl")


def read_texts(path: str | Path, field: str = "text", instruction_field: str = "instruction") -> list:
    """Return a list of str, or of (instruction, text) pairs where a JSONL row has an instruction.

    .txt (or any other name): one text per line (LF, CRLF or CR line endings), blank lines skipped.
    .jsonl: one JSON object per line with `field`. Tables (.csv, .tsv, .parquet, ...) and .json are
    refused: their lines are not texts.
    Files may be gzip/bz2 compressed; pipes and devices (`/dev/stdin`, `<(...)`) are read like
    files, and `-` reads the standard input (one text per line). Errors (a `DataError`) name the
    file and line.
    """
    path = check_file(path) if str(path) != STDIN else STDIN
    suffix = format_suffix(path) if path != STDIN else ""
    if suffix == ".json":
        raise DataError("is a .json file; give one text per line (.txt) or one JSON object per line (.jsonl, "
                        f"with a {field!r} field)", path)
    if suffix in TABLE_SUFFIXES:
        raise DataError(f"is a {suffix} file, whose lines are not texts; give one text per line (.txt) or one JSON "
                        f"object per line (.jsonl, with a {field!r} field), e.g. convert a CSV column with pandas: "
                        "df[['text']].to_json('texts.jsonl', orient='records', lines=True)", path)
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
