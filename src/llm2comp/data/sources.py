"""Where texts come from: one small spec that a YAML config can write, and one reader per type.

A source is a dict (or a `SourceSpec`) with a ``type`` and the keys that type uses::

    {"type": "text", "path": "corpus.txt", "separator": "line"}      # one document per line
    {"type": "text", "path": ["a.txt", "b.txt"], "separator": "blank_line"}  # paragraphs
    {"type": "jsonl", "path": "corpus.jsonl", "field": "text"}
    {"type": "hf", "name": "wikitext", "config": "wikitext-103-raw-v1", "split": "train"}
    {"type": "hf", "path": "saved_dataset/", "split": "train"}        # save_to_disk or data folder
    {"type": "hf", "name": "json", "data_files": "rows/*.json"}         # any datasets builder
    {"type": "wiki_default"}                                           # bundled Wikipedia excerpt

A bare string is shorthand: ``"wiki_default"``, or a file path (``.jsonl`` -> jsonl, else text).

`load_documents(spec)` returns the documents as a list of str, stripped, in file order. Readers
never filter by length (see `filters.py`); blank lines / empty dataset rows are skipped, while a
JSONL row without a usable text field is an error naming file and line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import ConfigError, MissingDependency
from .reading import DataError, MissingDataError, check_file, iter_jsonl, iter_lines, require_text

SOURCE_TYPES = ("text", "jsonl", "hf", "wiki_default")
SEPARATORS = ("line", "blank_line", "file")
_DATASETS_HINT = "pip install 'llm2comp[data]'  (or: pip install datasets)"


@dataclass(frozen=True)
class SourceSpec:
    """One data source. Unused keys of a type must stay at their defaults.

    type:       "text" | "jsonl" | "hf" | "wiki_default".
    path:       text/jsonl: a file or a list of files; hf: a local folder (``save_to_disk`` output,
                or a folder of parquet/json/csv files laid out as on the Hub).
    name:       hf: a Hub dataset id (``wikitext``) or a builder name (``json``, ``parquet``).
    config:     hf: the configuration (``wikitext-103-raw-v1``).
    split:      hf: the split to read (default ``train``).
    field:      jsonl / hf: the column or key holding the text (default ``text``).
    separator:  text: ``line`` (one document per line), ``blank_line`` (paragraphs separated by
                blank lines; their lines joined by a space) or ``file`` (a whole file per document).
    data_files, revision, cache_dir: hf: passed to `datasets.load_dataset`.
    min_chars:  wiki_default: the shortest paragraph kept by the markup stripper (default 100).
    """

    type: str
    path: str | tuple[str, ...] | None = None
    name: str | None = None
    config: str | None = None
    split: str = "train"
    field: str = "text"
    separator: str = "line"
    data_files: str | tuple[str, ...] | dict | None = None
    revision: str | None = None
    cache_dir: str | None = None
    min_chars: int | None = None

    def __post_init__(self):
        if self.type not in SOURCE_TYPES:
            raise ConfigError(f"unknown data source type {self.type!r}; choose one of {', '.join(SOURCE_TYPES)}")
        if self.separator not in SEPARATORS:
            raise ConfigError(f"unknown separator {self.separator!r}; choose one of {', '.join(SEPARATORS)}")
        if isinstance(self.path, list):
            object.__setattr__(self, "path", tuple(str(p) for p in self.path))
        elif isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", str(self.path))
        if isinstance(self.data_files, list):
            object.__setattr__(self, "data_files", tuple(self.data_files))
        if self.type in ("text", "jsonl") and not self.path:
            raise ConfigError(f"a {self.type!r} source needs 'path' (a file or a list of files)")
        if self.type == "hf" and not (self.name or self.path):
            raise ConfigError("an 'hf' source needs 'name' (a Hub dataset id or builder) or 'path' (a local folder)")
        if self.type == "hf" and self.path is not None and not isinstance(self.path, str):
            raise ConfigError("an 'hf' source's 'path' is one local folder; use 'data_files' for several files")

    @classmethod
    def from_config(cls, value: str | os.PathLike | Mapping | SourceSpec) -> SourceSpec:
        """Build a spec from a YAML-style dict, a shorthand string, or return a spec unchanged."""
        if isinstance(value, SourceSpec):
            return value
        if isinstance(value, (str, os.PathLike)):
            text = str(value)
            if text in ("wiki_default", "default"):
                return cls(type="wiki_default")
            return cls(type="jsonl" if text.endswith((".jsonl", ".jsonl.gz")) else "text", path=text)
        if not isinstance(value, Mapping):
            raise ConfigError(f"a data source is a dict or a path string, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown data source key(s) {unknown}; allowed: {sorted(known)}")
        if "type" not in value:
            raise ConfigError(f"a data source needs 'type' ({', '.join(SOURCE_TYPES)}); got {dict(value)}")
        return cls(**value)

    def paths(self) -> list[Path]:
        if self.path is None:
            return []
        return [Path(p).expanduser() for p in ((self.path,) if isinstance(self.path, str) else self.path)]

    def describe(self) -> str:
        """A short human-readable name for logs and error messages."""
        if self.type == "wiki_default":
            return "bundled Wikipedia excerpt"
        if self.type == "hf":
            parts = [self.name or str(self.path), self.config, self.split]
            return "hf:" + "/".join(p for p in parts if p)
        return ", ".join(map(str, self.paths()))

    def to_dict(self) -> dict:
        """The keys that differ from their defaults (plus ``type``), YAML-ready, for saving with a checkpoint."""
        defaults = {f.name: f.default for f in fields(self)}
        out = {k: v for k, v in asdict(self).items() if k == "type" or v != defaults[k]}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def read_text_file(path: str | os.PathLike, separator: str = "line") -> list[str]:
    """Documents of a plain text file: one per line, per blank-line separated paragraph, or the whole file."""
    lines = [line for _, line in iter_lines(path)]
    if separator == "file":
        whole = "\n".join(lines).strip()
        return [whole] if whole else []
    if separator == "line":
        return [line.strip() for line in lines if line.strip()]
    docs: list[str] = []
    block: list[str] = []
    for line in lines + [""]:  # the sentinel blank line closes the last paragraph
        if line.strip():
            block.append(line.strip())
        elif block:
            docs.append(" ".join(block))
            block = []
    return docs


def read_jsonl_file(path: str | os.PathLike, field: str = "text") -> list[str]:
    """The `field` of every row of a JSONL file; a row without a non-empty string there is an error."""
    return [require_text(row, field, path, number).strip() for number, row in iter_jsonl(path)]


def _import_datasets():
    try:
        import datasets
    except ImportError as error:
        raise MissingDependency(f"Hugging Face dataset sources need the datasets package: {_DATASETS_HINT}") from error
    return datasets


def _is_saved_to_disk(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def load_hf_dataset(spec: SourceSpec):
    """Open the `datasets.Dataset` a spec names: a ``save_to_disk`` folder, else `datasets.load_dataset`.

    The Hub path (``name`` = ``wikitext``) and a local folder laid out like a Hub repository
    (parquet/json files, optionally a README with ``configs``) both go through `load_dataset`.
    """
    datasets = _import_datasets()
    folder = Path(str(spec.path)).expanduser() if isinstance(spec.path, str) else None
    if folder is not None and not folder.exists():
        raise MissingDataError("no such dataset folder", folder)
    if folder is not None and _is_saved_to_disk(folder):
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise DataError(f"no split {spec.split!r}; splits: {', '.join(loaded)}", folder)
            loaded = loaded[spec.split]
        return loaded
    target = str(folder) if folder is not None else spec.name
    try:
        return datasets.load_dataset(target, spec.config, split=spec.split, data_files=spec.data_files,
                                     revision=spec.revision, cache_dir=spec.cache_dir)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise DataError(f"could not load dataset ({type(error).__name__}: {error})", spec.describe()) from error


def read_hf_dataset(spec: SourceSpec) -> list[str]:
    """The `field` column of a Hugging Face dataset split; empty / None rows are skipped."""
    dataset = load_hf_dataset(spec)
    where = spec.describe()
    if spec.field not in dataset.column_names:
        raise DataError(f"no column {spec.field!r}; columns: {', '.join(dataset.column_names)}", where)
    docs: list[str] = []
    for index, value in enumerate(dataset[spec.field]):
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"row {index}: column {spec.field!r} must hold strings, got {type(value).__name__}", where)
        if value.strip():
            docs.append(value.strip())
    return docs


def load_documents(source: str | os.PathLike | Mapping | SourceSpec) -> list[str]:
    """Read every document of a source (see the module docstring); raise DataError if there are none."""
    spec = SourceSpec.from_config(source)
    if spec.type == "wiki_default":
        from .wikipedia import DEFAULT_MIN_PARAGRAPH_CHARS, wiki_paragraphs

        min_chars = DEFAULT_MIN_PARAGRAPH_CHARS if spec.min_chars is None else spec.min_chars
        docs = wiki_paragraphs(min_chars)
    elif spec.type == "hf":
        docs = read_hf_dataset(spec)
    else:
        docs = []
        for path in spec.paths():
            before = len(docs)
            if spec.type == "text":
                docs.extend(read_text_file(path, spec.separator))
            else:
                docs.extend(read_jsonl_file(path, spec.field))
            if len(docs) == before:
                raise DataError("holds no documents (the file is empty or blank)", check_file(path))
    if not docs:
        raise DataError("no documents (every row is empty)", spec.describe())
    return docs
