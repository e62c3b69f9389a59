"""Reading lines and JSONL rows so that every problem names its file and line.

All data readers go through here, so bad input stops *before* training starts with a message
like ``data/train.jsonl:17: field 'text' is missing``. Files may be gzip or bz2 compressed
(``.gz`` / ``.bz2``); a UTF-8 byte-order mark on the first line is ignored.
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import LLM2CompError


class DataError(LLM2CompError, ValueError):
    """Bad training data. `path` and `line` (1-based) say where, when known."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = self.path or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message)


class MissingDataError(DataError, FileNotFoundError):
    """A data file or folder that does not exist (catchable as DataError or FileNotFoundError)."""


def check_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path, or raise MissingDataError naming it (and saying if it is a folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError("is a folder; expected a file", path)
    if not path.is_file():
        raise MissingDataError("no such file", path)
    return path


def format_suffix(path: str | os.PathLike) -> str:
    """The suffix that names the format, lower-case, past a compression suffix: `a.JSONL.gz` -> `.jsonl`."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open_binary(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line, without its line ending; decoding is strict UTF-8.

    Undecodable bytes raise a DataError naming the line and the byte's column.
    """
    path = check_file(path)
    with _open_binary(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"bytes that are not UTF-8 at column {error.start + 1} ({raw[error.start:error.end]!r}); "
                    "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", path, number
                ) from error
            yield number, text.rstrip("\r\n")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for every non-blank line; each must hold one JSON object."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"invalid JSON at column {error.colno}: {error.msg}", path, number) from error
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", path, number)
        yield number, row


def require_text(row: dict, field: str, path: str | os.PathLike | None, line: int | None) -> str:
    """Return ``row[field]`` if it is a non-blank string, else raise a DataError naming file and line."""
    if field not in row:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"field {field!r} is missing (fields present: {keys})", path, line)
    value = row[field]
    if not isinstance(value, str):
        raise DataError(f"field {field!r} must be a string, got {type(value).__name__}", path, line)
    if not value.strip():
        raise DataError(f"field {field!r} is empty", path, line)
    return value
