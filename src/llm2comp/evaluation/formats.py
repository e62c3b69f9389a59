"""Reading local evaluation files: TSV, CSV or JSONL with a header / named fields.

- `.tsv` / `.tab`: tab-separated, first line = column names, no quoting (a cell never holds a tab).
- `.csv`: comma-separated, first line = column names, standard double-quote quoting.
- `.jsonl` / `.ndjson`: one JSON object per line; fields may hold lists (reranking candidates).

Each task type names the *roles* it needs (e.g. `text1`, `text2`, `score`) and the caller maps roles to
column names. Every error names the file, the column and, for a bad cell, the line.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

from ..data.reading import DataError, format_suffix, iter_jsonl, iter_lines
from ..errors import MissingFile
from .base import EvalDataError

TABLE_SUFFIXES = {".tsv": "\t", ".tab": "\t", ".csv": ","}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}


def _raw_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """Return (column names, [(line number, row dict), ...]); gzip/bz2 files are read compressed."""
    suffix = format_suffix(path)
    if suffix in JSONL_SUFFIXES:
        rows, columns = [], {}
        try:
            for number, row in iter_jsonl(path):
                columns.update(dict.fromkeys(row))
                rows.append((number, row))
        except DataError as error:
            raise EvalDataError(str(error)) from error
        return list(columns), rows
    if suffix in TABLE_SUFFIXES:
        try:
            text_lines = [line + "\n" for _, line in iter_lines(path)]  # the reader keeps a quoted cell's newlines
        except DataError as error:
            raise EvalDataError(str(error)) from error
        lines = _csv_records(text_lines, TABLE_SUFFIXES[suffix], path)
        if not lines:
            return [], []
        header = [name.strip() for name in lines[0][1]]
        rows = []
        for number, cells in lines[1:]:
            if len(cells) != len(header):
                raise EvalDataError(f"{path}:{number}: {len(cells)} cells, but the header has {len(header)} "
                                    f"columns {header}")
            rows.append((number, dict(zip(header, cells))))
        return header, rows
    raise EvalDataError(f"{path}: unsupported file type {suffix!r}; use .tsv, .csv or .jsonl")


def _csv_records(text_lines: list[str], delimiter: str, path: Path) -> list[tuple[int, list[str]]]:
    """`[(first line, cells)]` of the non-blank records; a quoted CSV cell may span lines."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(text_lines, delimiter=delimiter, quoting=quoting)
    records, start = [], 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as error:
        raise EvalDataError(f"{path}:{start}: {error} (a quoted cell that never closes?)") from error
    return records


def read_table(path: str | Path, columns: dict[str, str], optional: dict[str, str] | None = None
               ) -> list[tuple[int, dict]]:
    """Read `path` and return `[(line, {role: value})]` for the required and present optional roles.

    `columns` maps each required role to its column name; `optional` maps roles that may be absent.
    Missing columns, an empty file and empty required cells raise `EvalDataError`.
    """
    path = check_table_file(path)
    return select_columns(path, *_raw_rows(path), columns, optional)


def check_table_file(path: str | Path) -> Path:
    """`path` as a Path, if it names a file (a pipe or device counts); else an error naming it."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise EvalDataError(f"evaluation file {path} is a folder; expected a .tsv, .csv or .jsonl file")
    if not path.exists():  # pipes and devices (`<(...)`) are read like files
        raise MissingFile(f"evaluation file {path} does not exist")
    return path


def read_raw_table(path: str | Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(column names, [(line, row)]) of a table file, read once (a pipe can be read only once)."""
    return _raw_rows(check_table_file(path))


def select_columns(path: Path, header: list[str], rows: list[tuple[int, dict]], columns: dict[str, str],
                   optional: dict[str, str] | None = None) -> list[tuple[int, dict]]:
    """`read_table` on rows already read: `[(line, {role: value})]`, with the same errors."""
    if not rows:
        raise EvalDataError(f"{path} is empty: no data rows")
    for role, column in columns.items():
        if column not in header:
            raise EvalDataError(f"{path}: column {column!r} ({role}) is missing; the file has columns {header}. "
                                f"Name the right column with {role}=... (YAML: columns: {{{role}: NAME}})")
    present = {role: column for role, column in (optional or {}).items() if column in header}
    out = []
    for number, row in rows:
        values = {}
        for role, column in columns.items():
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise EvalDataError(f"{path}:{number}: column {column!r} ({role}) is empty")
            values[role] = value
        for role, column in present.items():
            values[role] = row.get(column)
        out.append((number, values))
    return out


def as_float(value, path, number: int, column: str) -> float:
    """A finite number: NaN and infinity (`nan`, `inf`, JSON `NaN`) are refused, as are booleans."""
    if isinstance(value, bool):
        raise EvalDataError(f"{path}:{number}: column {column!r} must be a number, got {value!r}")
    try:
        number_value = float(value)
    except (TypeError, ValueError):
        raise EvalDataError(f"{path}:{number}: column {column!r} must be a number, got {value!r}") from None
    if not math.isfinite(number_value):
        raise EvalDataError(f"{path}:{number}: column {column!r} must be a finite number, got {value!r}; fill in "
                            "the value or remove the row")
    return number_value


def as_text(value, path, number: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EvalDataError(f"{path}:{number}: column {column!r} must be non-empty text, got {value!r}")
    return value


def as_text_list(value, path, number: int, column: str) -> list[str]:
    """A JSONL list of strings, or one string (a single candidate)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise EvalDataError(f"{path}:{number}: column {column!r} must be a list of texts, got {type(value).__name__}")
    return [as_text(item, path, number, column) for item in value]


def as_binary_label(value, path, number: int, column: str) -> int:
    """0/1 labels; also accepts true/false and yes/no."""
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return 1
    if text in ("0", "0.0", "false", "no"):
        return 0
    raise EvalDataError(f"{path}:{number}: column {column!r} must be 0 or 1, got {value!r}")
