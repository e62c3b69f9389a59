"""What evaluation needs from a model: the `TextEncoder` protocol, and an adapter for the others.

`TextEncoder` is the interface the evaluation runs natively. `LLM2Comp` satisfies it as it is; so
does any object with the same two methods:

- `encode(texts, *, batch_size, show_progress_bar, convert_to_numpy, instruction, long_texts, overlap)`:
  `texts` is a list of str or `(instruction, text)` pairs (the instruction hook: the encoder applies
  an instruction its own way, e.g. LLM2Comp's `instruction_template`); returns float (n, d).
- `encode_windows(texts, *, batch_size, show_progress_bar, overlap)`: every window of every text, an
  object with `weighted_mean()` (n, d) and `split()` (one (windows, d) per text): the multivector
  view of long texts.

Encoders that only have a sentence-transformers-like `encode(list[str]) -> array` (a
SentenceTransformer, a TF-IDF baseline) are wrapped by `SentenceEncoder`, which writes instructions
as `"{instruction}: {text}"` and reads every text whole (long_texts `truncate` only). `as_encoder`
chooses; anything without an `encode` method is refused (`InvalidType`).
"""

from __future__ import annotations

import inspect
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidSetting, InvalidType
from ..inputs import DEFAULT_INSTRUCTION_TEMPLATE
from ..models.long_texts import LONG_TEXT_MODES


@runtime_checkable
class TextEncoder(Protocol):
    """An encoder the evaluation runs natively (module docstring); `LLM2Comp` is one."""

    def encode(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True, instruction: str | None = None, long_texts: str | None = None,
               overlap: int | None = None):
        """Embed str or (instruction, text) items; float (n, d)."""

    def encode_windows(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
                       overlap: int | None = None):
        """Every window of every text (`weighted_mean()`, `split()`)."""


class SentenceEncoder:
    """A sentence-transformers-like model (`encode(list[str]) -> array`) as a `TextEncoder`.

    Instructions are prepended as `"{instruction}: {text}"`; `batch_size`, `show_progress_bar` and
    `convert_to_numpy=True` are passed on only where the wrapped `encode` accepts them (a plain
    `encode(texts)` gets the texts alone). Texts are read whole: `long_texts` other than `truncate`,
    `overlap` and `encode_windows` raise `InvalidSetting`.
    """

    long_text_modes = ("truncate",)

    def __init__(self, model):
        if not callable(getattr(model, "encode", None)):
            raise InvalidType(f"{type(model).__name__} has no encode(texts) method; {_WHAT_IS_AN_ENCODER}")
        self.model = model
        self._accepted = _keyword_arguments(model.encode)

    def encode(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True, instruction: str | None = None, long_texts: str | None = None,
               overlap: int | None = None) -> np.ndarray:
        """float32 (n, d) from the wrapped model, instructions written into the texts."""
        if long_texts not in (None, "truncate"):
            raise InvalidSetting(f"long_texts={long_texts!r} needs an encoder that reads long texts in windows "
                                 f"(an LLM2Comp model); {self.name} truncates")
        if overlap is not None:
            raise InvalidSetting(f"overlap={overlap!r} needs an encoder that reads long texts in windows (an "
                                 f"LLM2Comp model); {self.name} reads each text whole")
        prompts = [_with_instruction(item, instruction) for item in texts]
        options = {"batch_size": batch_size, "show_progress_bar": show_progress_bar, "convert_to_numpy": True}
        if self._accepted is not None:
            options = {key: value for key, value in options.items() if key in self._accepted}
        out = self.model.encode(prompts, **options)
        if hasattr(out, "detach"):  # a tensor from an encode without convert_to_numpy
            out = out.detach().float().cpu().numpy()
        out = np.asarray(out, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(prompts):
            raise InvalidType(f"{self.name}.encode returned shape {out.shape} for {len(prompts)} texts; expected "
                              "(n_texts, dimension)")
        return out

    def encode_windows(self, texts, *, batch_size: int = 32, show_progress_bar: bool | None = None,
                       overlap: int | None = None):
        raise InvalidSetting(f"long_texts='multivector' needs an encoder that reads long texts in windows (an "
                             f"LLM2Comp model); {self.name} reads each text whole")

    @property
    def name(self) -> str:
        return type(self.model).__name__

    def get_sentence_embedding_dimension(self) -> int | None:
        getter = getattr(self.model, "get_sentence_embedding_dimension", None)
        return getter() if callable(getter) else None


_WHAT_IS_AN_ENCODER = ("evaluation takes an LLM2Comp (or any TextEncoder: llm2comp.evaluation.encoders), an object "
                       "with a sentence-transformers-like encode(texts) -> array, or a model name or path to load")


def as_encoder(model) -> TextEncoder:
    """`model` itself when it is a `TextEncoder`, else a `SentenceEncoder` around it; `InvalidType` when it
    has no `encode` method (a results dict, a path object of the wrong kind, ...)."""
    if isinstance(model, TextEncoder):
        return model
    if callable(getattr(model, "encode", None)):
        return SentenceEncoder(model)
    raise InvalidType(f"model is a {type(model).__name__}, not a text encoder; {_WHAT_IS_AN_ENCODER}")


def long_text_modes(encoder) -> tuple[str, ...]:
    """The long_texts modes `encoder` can run (a `SentenceEncoder`: truncate only)."""
    return tuple(getattr(encoder, "long_text_modes", LONG_TEXT_MODES))


def default_long_texts(encoder) -> str:
    """The encoder's own long_texts mode (an LLM2Comp's `config.long_texts`), else truncate."""
    return getattr(getattr(encoder, "config", None), "long_texts", None) or "truncate"


def window_budget_of(encoder) -> int | None:
    """Text tokens per window where the encoder says (LLM2Comp: max_length minus prefix and memory), else None."""
    from ..models.layout import text_budget

    config = getattr(encoder, "config", None)
    prefix_ids = getattr(encoder, "prefix_ids", None)
    if config is None or not callable(prefix_ids) or not hasattr(config, "max_length"):
        return None
    return text_budget(config.max_length, len(prefix_ids()), getattr(config, "num_memory_tokens", 0))


def embedding_dimension(encoder) -> int | None:
    """d where the encoder tells it without encoding (`hidden_size` / `get_sentence_embedding_dimension()`)."""
    size = getattr(encoder, "hidden_size", None)
    if isinstance(size, int):
        return size
    getter = getattr(encoder, "get_sentence_embedding_dimension", None)
    return getter() if callable(getter) else None


def _with_instruction(item, instruction: str | None) -> str:
    if isinstance(item, str):
        return DEFAULT_INSTRUCTION_TEMPLATE.format(instruction=instruction, text=item) if instruction else item
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(part, str) for part in item):
        item_instruction, text = item
        item_instruction = item_instruction or instruction
        return DEFAULT_INSTRUCTION_TEMPLATE.format(instruction=item_instruction, text=text) if item_instruction \
            else text
    raise InvalidType(f"texts must be str or (instruction, text) pairs, got {type(item).__name__} {item!r:.60}")


def _keyword_arguments(function) -> set[str] | None:
    """The keyword names `function` accepts, or None when it takes any (**kwargs) or cannot be read."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                    inspect.Parameter.KEYWORD_ONLY)}
