"""Request and response bodies, in the shape of OpenAI's embeddings API (plus extension fields).

    POST /v1/embeddings
      input            str | list[str] | list[int] | list[list[int]]   (token ids: the model's tokenizer)
      model            the served model's name
      encoding_format  "float" (default) | "base64" (little-endian float32 bytes)
      dimensions       keep the first n dimensions, then renormalise to unit length
      user             accepted and ignored
      input_type       "query" | "document"   (extension: the query/document rule)
      instruction      the query's instruction, applied as "{instruction}: {text}" (extension)
      long_texts       "truncate" | "segments" (extension: inputs beyond the model's max_length)
      overlap          tokens shared by consecutive windows with "segments" (extension)
      precision        "float32" (default) | "binary" | "ubinary" (extension: sentence-transformers' codes,
                       the sign bits packed 8 to a byte as int8 (minus 128) / uint8, ceil(d / 8) values;
                       "float": JSON integers, "base64": the raw bytes, one per value)

int8 / uint8 are not served: their codes need per-dimension ranges, and ranges taken from a request's
own texts would make a text's code depend on the texts sent with it (models/quantization.py).

Types are strict, as JSON has them: `true` is not 1, `3.0` and `"3"` are not 3, `[true, false]`
and `[1.0, 2.0]` are not token ids (a 400 each). `input` is checked by `check_input` (one pass
over the values, naming the first bad `input[i]`) rather than by a pydantic union, whose failed
branches would build one error per element of a million-id list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, WithJsonSchema

SERVED_LONG_TEXT_MODES = ("truncate", "segments")  # `multivector` has no one-vector-per-input shape
SERVED_PRECISIONS = ("float32", "binary", "ubinary")  # int8 / uint8 need calibration ranges (module docstring)
INPUT_TYPES = "a string, an array of strings, an array of token ids, or an array of token-id arrays"
INPUT_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}},
                          {"type": "array", "items": {"type": "integer"}},
                          {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}]}


class InputTypeError(ValueError):
    """`input` is not one of the four shapes; the message names the first bad item."""


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: Annotated[Any, WithJsonSchema(INPUT_SCHEMA)]
    model: StrictStr
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: StrictInt | None = Field(default=None, ge=1)
    user: StrictStr | None = None
    input_type: Literal["query", "document"] | None = None
    instruction: StrictStr | None = None
    long_texts: Literal["truncate", "segments"] | None = None
    overlap: StrictInt | None = Field(default=None, ge=0)
    precision: Literal["float32", "binary", "ubinary"] = "float32"


CHUNK = 1 << 16  # items checked per C-level call: the GIL is free between chunks for the event loop


def _only(items: list, kind: type) -> bool:
    """Every item is exactly of `kind` (bool is a subclass of int; JSON's true is not a token id), in
    C-level passes over chunks, so a million-id list never holds the GIL for long in one piece."""
    return all(set(map(type, items[start:start + CHUNK])) <= {kind} for start in range(0, len(items), CHUNK))


def _first_not(items: list, kind: type) -> int:
    return next(index for index, item in enumerate(items) if type(item) is not kind)


def check_input(value) -> list[str] | list[list[int]]:
    """The request's `input` as a list of texts or of token-id rows; InputTypeError otherwise."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InputTypeError(f"'input' must be {INPUT_TYPES}; got a JSON {_json_type(value)}")
    if not value:
        return []
    first = value[0]
    if type(first) is str:
        if not _only(value, str):
            _refuse(_first_not(value, str), value, "a string (the array holds strings)")
        return value
    if type(first) is int:
        if not _only(value, int):
            _refuse(_first_not(value, int), value, "an integer token id (the array holds token ids)")
        return [value]
    if type(first) is list:
        if not _only(value, list):
            _refuse(_first_not(value, list), value, "an array of token ids (the array holds token-id arrays)")
        for index, row in enumerate(value):
            if not _only(row, int):
                inner = _first_not(row, int)
                raise InputTypeError(f"input[{index}][{inner}] must be an integer token id, got a JSON "
                                     f"{_json_type(row[inner])}")
        return value
    raise InputTypeError(f"'input' must be {INPUT_TYPES}; input[0] is a JSON {_json_type(first)}")


def _refuse(index: int, value: list, wanted: str) -> None:
    raise InputTypeError(f"input[{index}] must be {wanted}, got a JSON {_json_type(value[index])}")


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str  # int codes with `precision`; base64 of the raw bytes


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llm2comp"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
