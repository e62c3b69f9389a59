"""Supervised contrastive data (stage 3): query / positive / hard-negative rows from JSONL files.

One row per line::

    {"query": "how do bees fly", "positive": "Bees flap ...", "negative": "Birds ...",
     "task": "msmarco_passage"}

- ``query`` and ``positive``: non-empty strings (required).
- ``negative``: a string or a list of strings (optional; ``negatives`` is accepted too).
- ``instruction``: the query's instruction (optional), or ``task``: a name from the instruction
  table (`instructions.py`); a row's own instruction wins over its task's. A file-level `task` /
  `instruction` argument fills in rows that give neither.

The E5 public mix as LLM2Vec publishes it is a *folder* of such files, one per dataset, named
after the task (``allnli_split1.jsonl``, ``msmarco_passage.jsonl``, ...), rows holding
``query`` / ``positive`` / ``negative``; `read_e5_mix` reads it with each file's task
instruction. Errors name the file and line. Rows repeating an earlier (query, positive) pair,
compared after collapsing white space, are dropped and counted.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, UnknownName
from ..inputs import DEFAULT_INSTRUCTION_TEMPLATE, apply_instruction
from .instructions import E5_INSTRUCTIONS, instruction_table
from .reading import DataError, MissingDataError, iter_jsonl, require_text

MAX_DUPLICATES_REPORTED = 20


@dataclass(frozen=True)
class PairExample:
    """One training row. `origin` ("file:line") is kept for messages and duplicate reports."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str | None = None
    task: str | None = None
    origin: str = ""

    def query_text(self, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
        """The query as the encoder sees it, instruction included; documents stay plain."""
        return apply_instruction(self.instruction, self.query, template)

    @property
    def group(self) -> str | None:
        """The dataset a row belongs to, halves merged (``allnli_split2`` -> ``allnli``); for batching."""
        if self.task is None:
            return None
        head, sep, tail = self.task.rpartition("_split")
        return head if sep and tail.isdigit() else self.task


@dataclass
class PairSet:
    """Rows kept after validation and de-duplication, with counts."""

    examples: list[PairExample]
    stats: dict = field(default_factory=dict)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (duplicate origin, first origin)

    def __len__(self) -> int:
        return len(self.examples)

    def summary(self) -> str:
        s = self.stats
        text = f"read {s.get('read', 0)} pairs, dropped {s.get('duplicates', 0)} duplicates, kept {len(self)}"
        if self.duplicates:
            shown = "; ".join(f"{dup} repeats {first}" for dup, first in self.duplicates[:3])
            text += f" (e.g. {shown})"
        return text


def _negatives(row: dict, path: Path, line: int) -> tuple[str, ...]:
    key = "negative" if "negative" in row else "negatives"
    value = row.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise DataError(f"field {key!r} must be a string or a list of strings, got {type(value).__name__}",
                        path, line)
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{key}[{position}] must be a non-empty string, got {item!r}", path, line)
    return tuple(item.strip() for item in value)


def _instruction(row: dict, table: Mapping[str, str], default_task: str | None, default_instruction: str | None,
                 path: Path, line: int) -> tuple[str | None, str | None]:
    """Return (instruction, task) for a row, by the precedence in the module docstring."""
    task = row.get("task")
    own_task = task is not None
    if not own_task:
        task = default_task
    if task is not None:
        if not isinstance(task, str) or task not in table:
            raise DataError(f"unknown task {task!r}; known tasks: {', '.join(sorted(table))} "
                            "(or give the row an 'instruction')", path, line)
    if row.get("instruction") is not None:
        return require_text(row, "instruction", path, line).strip(), task
    if task is not None and (own_task or default_instruction is None):
        return table[task], task
    return default_instruction, task


PAIR_SOURCES = {"pairs": ("path", "task", "instruction"), "e5": ("path", "tasks"), "wiki_demo": (),
                "wiki_cloze": ()}  # type -> keys


def check_pair_source(spec) -> str:
    """The type of a stage-3 `data:` block, after checking its keys; `ConfigError` naming the key."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in PAIR_SOURCES:
        raise ConfigError(f"data: supervised data type must be one of {list(PAIR_SOURCES)}, got {kind!r} "
                          f"(data: {spec})")
    unknown = sorted(set(spec) - {"type", *PAIR_SOURCES[kind]})
    if unknown:
        raise ConfigError(f"data: unknown key(s) {unknown} for type {kind!r}; allowed: {list(PAIR_SOURCES[kind])}")
    if "path" in PAIR_SOURCES[kind] and not spec.get("path"):
        raise ConfigError(f"data: type {kind!r} needs 'path'")
    return kind


def read_pair_rows(path: str | os.PathLike, *, task: str | None = None, instruction: str | None = None,
                   instructions: Mapping[str, str] | None = None) -> list[PairExample]:
    """Validate and read every row of one JSONL file (no de-duplication)."""
    path = Path(path)
    table = instruction_table(instructions)
    if task is not None and task not in table:
        raise UnknownName(f"unknown task {task!r} for {path}; known tasks: {', '.join(sorted(table))}")
    rows = []
    for line, row in iter_jsonl(path):
        query = require_text(row, "query", path, line).strip()
        positive = require_text(row, "positive", path, line).strip()
        row_instruction, row_task = _instruction(row, table, task, instruction, path, line)
        rows.append(PairExample(query, positive, _negatives(row, path, line), row_instruction, row_task,
                                f"{path}:{line}"))
    if not rows:
        raise DataError("holds no rows", path)
    return rows


def _normalised(text: str) -> str:
    return " ".join(text.split())


def drop_duplicates(examples: Iterable[PairExample]) -> PairSet:
    """Keep the first row of every (query, positive) pair; count and report the others."""
    first_seen: dict[tuple[str, str], str] = {}
    kept: list[PairExample] = []
    duplicates: list[tuple[str, str]] = []
    read = 0
    for example in examples:
        read += 1
        key = (_normalised(example.query), _normalised(example.positive))
        if key in first_seen:
            if len(duplicates) < MAX_DUPLICATES_REPORTED:
                duplicates.append((example.origin, first_seen[key]))
            continue
        first_seen[key] = example.origin
        kept.append(example)
    per_task = Counter(example.task for example in kept)
    stats = {"read": read, "duplicates": read - len(kept), "kept": len(kept),
             "per_task": {str(task): count for task, count in sorted(per_task.items(), key=lambda kv: str(kv[0]))}}
    return PairSet(kept, stats, duplicates)


def read_pairs(paths: str | os.PathLike | Iterable[str | os.PathLike], *, task: str | None = None,
               instruction: str | None = None, instructions: Mapping[str, str] | None = None,
               dedupe: bool = True) -> PairSet:
    """Read one or more pair files (see the module docstring) into a PairSet."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ConfigError("no pair files given")
    examples = [ex for p in paths for ex in read_pair_rows(p, task=task, instruction=instruction,
                                                           instructions=instructions)]
    if dedupe:
        return drop_duplicates(examples)
    return PairSet(examples, {"read": len(examples), "duplicates": 0, "kept": len(examples)})


def read_e5_mix(folder: str | os.PathLike, *, tasks: Iterable[str] | None = None,
                instructions: Mapping[str, str] | None = None, dedupe: bool = True) -> PairSet:
    """Read the E5 mix folder layout: ``<folder>/<task>.jsonl``, the task taken from the file name.

    tasks: the file stems to read (each must exist); by default every ``*.jsonl`` in the folder,
           each of which must be a known task (or be named in `instructions`).
    stats gain ``missing_tasks``: the E5 tasks with no file in the folder (a subset is allowed).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingDataError("no such folder (expected a folder of <task>.jsonl files)", folder)
    table = instruction_table(instructions)
    if tasks is None:
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise DataError(f"holds no .jsonl files; expected the E5 layout ({', '.join(E5_INSTRUCTIONS)})", folder)
    else:
        files = [folder / f"{name}.jsonl" for name in tasks]
        for path in files:
            if not path.is_file():
                raise MissingDataError("no such task file in the E5 folder", path)
    for path in files:
        if path.stem not in table:
            raise DataError(f"file name {path.stem!r} is not a known task; known: {', '.join(sorted(table))}. "
                            "Rename it or pass instructions={name: ...}", path)
    examples = [ex for path in files for ex in read_pair_rows(path, task=path.stem, instructions=instructions)]
    pairs = drop_duplicates(examples) if dedupe else PairSet(examples, {"read": len(examples), "duplicates": 0,
                                                                        "kept": len(examples)})
    present = {path.stem for path in files}
    pairs.stats["missing_tasks"] = [name for name in E5_INSTRUCTIONS if name not in present]
    return pairs
