"""Validating what users pass to `encode`: strings, or `(instruction, text)` pairs.

    "text"                              one text (a 1-D embedding)
    ("instruction", "text")             one query with its instruction (a tuple is always one pair)
    ["a", ("instruction", "b"), ...]    several (a list, or any non-tuple sequence)

Every error names the offending index, so a bad row in a 100k-item list is found at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidSetting, InvalidType

DEFAULT_INSTRUCTION_TEMPLATE = "{instruction}: {text}"


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidType(f"{where} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise InvalidSetting(f"{where} is empty or whitespace only; embeddings of empty text are undefined")
    return value


def _pair(item, where: str) -> tuple[str | None, str]:
    """A checked `(instruction or None, text)`; None or "" as the instruction means none."""
    instruction = None if item[0] is None or item[0] == "" else _check_text(item[0], f"{where}[0] (instruction)")
    return instruction, _check_text(item[1], f"{where}[1] (text)")


def normalize_inputs(texts, instruction: str | None = None) -> tuple[list[tuple[str | None, str]], bool]:
    """Return `[(instruction or None, text), ...]` and whether a single text was given.

    `texts` is a str, an `(instruction, text)` tuple (one input), or a list (sequence) of those.
    `instruction`, when given, applies to every plain-str item (pairs keep their own).
    """
    if texts is None:
        raise InvalidType("texts is None; pass a str or a list of str / (instruction, text) pairs")
    if instruction is not None:
        _check_text(instruction, "instruction")
    if isinstance(texts, str):
        return [(instruction, _check_text(texts, "text"))], True
    if isinstance(texts, tuple):  # one (instruction, text) pair, never two texts
        if len(texts) != 2:
            raise InvalidSetting(f"a tuple is one (instruction, text) pair, got {len(texts)} items; pass several "
                                 "texts as a list")
        return [_pair(texts, "texts")], True
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


def apply_instruction(instruction: str | None, text: str, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    return text if not instruction else template.format(instruction=instruction, text=text)
