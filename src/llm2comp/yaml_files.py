"""Reading YAML files so that every problem names the file and the line.

A key written twice in one mapping is an error naming both lines (YAML alone keeps the last).
`read_yaml_with_lines` also returns the line of every mapping key (by its path of keys, e.g.
`("stages", "pretrain", "lr")`), so that a bad value found later can be reported where it was
written: ``configs/run.yaml:7: max_steps must be an int, got 'ten'``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import ConfigError, MissingFile

KeyLines = dict[tuple[str, ...], int]


def _key_lines(node, prefix: tuple[str, ...], out: KeyLines, file: Path) -> None:
    """Record every mapping key's line; a key written twice in one mapping is an error (YAML would keep
    the last silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen and key.tag != "tag:yaml.org,2002:merge":
                where = ".".join((*prefix, name))
                raise ConfigError(f"{file}:{line}: key {where!r} is given twice (first at line {seen[name]}); "
                                  "keep one")
            seen[name] = line
            path = (*prefix, name)
            out[path] = line
            _key_lines(value, path, out, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _key_lines(item, (*prefix, str(index)), {}, file)  # duplicates inside list items too


def read_yaml_with_lines(path: str | os.PathLike, what: str = "config file") -> tuple[object, KeyLines]:
    """The parsed content of `path` and the 1-based line of every mapping key; errors name file and line."""
    path = Path(path)
    if path.is_dir() or not path.exists():  # a pipe (`<(...)`) reads like a file
        raise MissingFile(f"{what} {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error})") from error
    try:
        data = yaml.safe_load(text)
        lines: KeyLines = {}
        _key_lines(yaml.compose(text), (), lines, path)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(part) for part in (error.context, error.problem) if part)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from error
    return data, lines


def read_yaml(path: str | os.PathLike, what: str = "config file") -> object:
    """The parsed content of a YAML (or JSON) file; errors name the file and line."""
    return read_yaml_with_lines(path, what)[0]
