"""Reading lines and JSONL rows so that every problem names its file and line.

All data readers go through here, so bad input stops *before* training starts with a message
like ``data/train.jsonl:17: field 'text' is missing``. Files may be gzip or bz2 compressed
(``.gz`` / ``.bz2``); a UTF-8 byte-order mark on the first line is ignored, and so are CRLF line
endings. Any file that is not a folder can be read: regular files, but also pipes and devices
(``/dev/stdin``, a shell's ``<(...)``, ``/dev/null``); ``-`` names the standard input.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import os
import sys
import zlib
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


STDIN = "-"  # the path that names the standard input


def check_file(path: str | os.PathLike) -> Path:
    """Return `path` as a Path, or raise MissingDataError naming it (DataError if it is a folder).

    Anything else that exists is accepted: a pipe or a device (``/dev/stdin``, ``<(...)``) reads like
    a file. `STDIN` (``-``) is returned as is.
    """
    if str(path) == STDIN:
        return Path(STDIN)
    if not str(path).strip():
        raise MissingDataError("the file name is empty; name a file (or - for the standard input)")
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError("is a folder; expected a file", path)
    if not path.exists():
        raise MissingDataError("no such file", path)
    return path


def display_name(path: str | os.PathLike) -> str:
    """How messages name `path`: ``<stdin>`` for `STDIN`."""
    return "<stdin>" if str(path) == STDIN else str(path)


def format_suffix(path: str | os.PathLike) -> str:
    """The suffix that names the format, lower-case, past a compression suffix: `a.JSONL.gz` -> `.jsonl`."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


COMPRESSION = {".gz": ("gzip", gzip.open), ".bz2": ("bz2", bz2.open)}


def _open_binary(path: Path):
    if str(path) == STDIN:
        return contextlib.nullcontext(sys.stdin.buffer)  # never closed here: the caller's stream
    try:
        opener = COMPRESSION.get(path.suffix.lower(), (None, open))[1]
        return opener(path, "rb")
    except OSError as error:  # permission denied, a socket, ...
        raise DataError(f"cannot be read: {error.strerror or error}", path) from error


def _decode(raw: bytes, path: Path, number: int) -> str:
    if number == 1 and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("is UTF-16 text (it starts with a UTF-16 byte-order mark); re-encode it as UTF-8 "
                        "(e.g. `iconv -f utf-16 -t utf-8`)", display_name(path), number)
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"bytes that are not UTF-8 at column {error.start + 1} ({raw[error.start:error.end]!r}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)", display_name(path), number
        ) from error
    if "\x00" in text:
        raise DataError(f"a NUL byte at column {text.index(chr(0)) + 1}: this looks like a binary file, not text",
                        display_name(path), number)
    return text.rstrip("\r\n")


def _bad_stream(error: Exception, path: Path, lines_read: int) -> DataError:
    """A DataError for a compressed file that cannot be decompressed (not that format, or truncated)."""
    kind = COMPRESSION.get(path.suffix.lower(), (None,))[0]
    where = f" after line {lines_read}" if lines_read else ""
    if kind is None:
        return DataError(f"cannot be read{where}: {getattr(error, 'strerror', None) or error}", path)
    if isinstance(error, EOFError):
        return DataError(f"is a truncated {kind} file (it ends{where} before the end of its compressed data); "
                         "copy or download it again", path)
    return DataError(f"is not valid {kind} data ({error}){where}: its name ends in {path.suffix} but its content "
                     f"is not {kind}-compressed; compress it, or rename it without {path.suffix}", path)


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line, without its line ending; decoding is strict UTF-8.

    Undecodable bytes raise a DataError naming the line and the byte's column; so do NUL bytes (a
    binary file) and a UTF-16 byte-order mark. A `.gz` / `.bz2` file that is not compressed that way,
    or is truncated, raises a DataError naming the file.
    """
    path = check_file(path)
    number = 0
    with _open_binary(path) as stream:
        lines = iter(stream)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as error:
                raise _bad_stream(error, path, number) from error
            number += 1
            yield number, _decode(raw, path, number)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, row)`` for every non-blank line; each must hold one JSON object."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"invalid JSON at column {error.colno}: {error.msg}", display_name(path),
                            number) from error
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", display_name(path), number)
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
