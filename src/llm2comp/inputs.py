"""Validating what users pass to `encode`: strings, or `(instruction, text)` pairs.

    "text"                              one text (a 1-D embedding)
    ["a", ("instruction", "b"), ...]    several (a list, or any non-tuple sequence): one row each

A top-level tuple is refused: `("doc a", "doc b")` could be two documents or one (instruction, text)
pair, and reading it either way silently gives the wrong number of vectors. Pass a list instead
(`["doc a", "doc b"]`, or `[("instruction", "text")]` for one query with its instruction). Texts
must be valid Unicode (a lone surrogate such as "\\ud800" cannot be tokenised).

Every error names the offending index, so a bad row in a 100k-item list is found at once.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from .errors import InvalidSetting, InvalidType

DEFAULT_INSTRUCTION_TEMPLATE = "{instruction}: {text}"


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"{where} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidSetting(f"{where} is empty or whitespace only; embeddings of empty text are undefined")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidSetting(f"{where} is not valid Unicode text: {value[error.start]!r} at character {error.start} "
                             "is a lone surrogate; decode the input properly (e.g. errors='replace') or remove "
                             "that character") from None
    return value


def _pair(item, where: str) -> tuple[str | None, str]:
    """A checked `(instruction or None, text)`; None or "" as the instruction means none."""
    instruction = None if item[0] is None or item[0] == "" else _check_text(item[0], f"{where}[0] (instruction)")
    return instruction, _check_text(item[1], f"{where}[1] (text)")


def normalize_inputs(texts, instruction: str | None = None) -> tuple[list[tuple[str | None, str]], bool]:
    """Return `[(instruction or None, text), ...]` and whether a single text was given.

    `texts` is a str, or a list (any non-tuple sequence) of str / `(instruction, text)` pairs; a
    top-level tuple is refused (module docstring). `instruction`, when given, applies to every
    plain-str item (pairs keep their own).
    """
    if texts is None:
        raise InvalidType("texts is None; pass a str or a list of str / (instruction, text) pairs")
    if instruction is not None:
        _check_text(instruction, "instruction")
    if isinstance(texts, str):
        return [(instruction, _check_text(texts, "text"))], True
    if isinstance(texts, tuple):  # two documents, or one (instruction, text) pair? never guessed
        raise InvalidType(f"texts is a tuple of {len(texts)} items, which is ambiguous (several texts, or one "
                          "(instruction, text) pair?); pass a list: [\"doc a\", \"doc b\"] for several texts, or "
                          "[(\"instruction\", \"text\")] for one query with its instruction")
    if not isinstance(texts, Sequence):
        raise InvalidType(f"texts must be a str or a sequence, got {type(texts).__name__}")
    items: list[tuple[str | None, str]] = []
    for index, item in enumerate(texts):
        if isinstance(item, str):
            items.append((instruction, _check_text(item, f"texts[{index}]")))
        elif isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise InvalidSetting(f"texts[{index}] must be an (instruction, text) pair, got {len(item)} items")
            items.append(_pair(item, f"texts[{index}]"))
        else:
            raise InvalidType(f"texts[{index}] must be a str or an (instruction, text) pair, "
                            f"got {type(item).__name__}")
    return items, False


def check_instruction_template(template) -> str:
    """A template holds the field `{text}` exactly once and `{instruction}` at most once, nothing else
    (no positional `{0}`, other names, conversions or format specs); raises `InvalidSetting` if not."""
    if not isinstance(template, str):
        raise InvalidType(f"the instruction template must be a str, got {type(template).__name__}")
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as error:
        raise InvalidSetting(f"instruction template {template!r} is not a valid format string: {error}") from None
    names = [name for name, _, _ in fields]
    odd = [name for name in names if name not in ("text", "instruction")]
    if odd:
        raise InvalidSetting(f"instruction template {template!r} has the field {{{odd[0]}}}; only {{instruction}} "
                             "and {text} are allowed (write a literal brace as {{ or }})")
    if names.count("text") != 1 or names.count("instruction") > 1:
        raise InvalidSetting(f"instruction template {template!r} must hold {{text}} exactly once and {{instruction}} "
                             f"at most once (found {names.count('text')} and {names.count('instruction')}), e.g. "
                             f"{DEFAULT_INSTRUCTION_TEMPLATE!r}")
    if any(spec or conversion for _, spec, conversion in fields):
        raise InvalidSetting(f"instruction template {template!r}: write plain {{text}} and {{instruction}}, without "
                             "conversions or format specs")
    return template


def apply_instruction(instruction: str | None, text: str, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    return text if not instruction else template.format(instruction=instruction, text=text)
