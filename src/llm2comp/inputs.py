"""Validating what users pass to `encode`: strings, or `(instruction, text)` pairs.

Every error names the offending index, so a bad row in a 100k-item list is found at once.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_INSTRUCTION_TEMPLATE = "{instruction}: {text}"

TextInput = str | tuple[str, str] | list[str]


def _check_text(value, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a str, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{where} is empty or whitespace only; embeddings of empty text are undefined")
    return value


def normalize_inputs(texts, instruction: str | None = None) -> tuple[list[tuple[str | None, str]], bool]:
    """Return `[(instruction or None, text), ...]` and whether a single text was given.

    `texts` is a str, an `(instruction, text)` pair, or a sequence of those. `instruction`, when
    given, applies to every plain-str item (pairs keep their own).
    """
    if texts is None:
        raise TypeError("texts is None; pass a str or a list of str / (instruction, text) pairs")
    if instruction is not None:
        _check_text(instruction, "instruction")
    if isinstance(texts, str):
        return [(instruction, _check_text(texts, "text"))], True
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a str or a sequence, got {type(texts).__name__}")
    items: list[tuple[str | None, str]] = []
    for index, item in enumerate(texts):
        if isinstance(item, str):
            items.append((instruction, _check_text(item, f"texts[{index}]")))
        elif isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise ValueError(f"texts[{index}] must be an (instruction, text) pair, got {len(item)} items")
            pair_instruction = _check_text(item[0], f"texts[{index}][0] (instruction)") if item[0] else None
            items.append((pair_instruction, _check_text(item[1], f"texts[{index}][1] (text)")))
        else:
            raise TypeError(f"texts[{index}] must be a str or an (instruction, text) pair, "
                            f"got {type(item).__name__}")
    return items, False


def apply_instruction(instruction: str | None, text: str, template: str = DEFAULT_INSTRUCTION_TEMPLATE) -> str:
    return text if not instruction else template.format(instruction=instruction, text=text)
