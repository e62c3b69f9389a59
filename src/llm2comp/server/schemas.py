"""Request and response bodies, in the shape of OpenAI's embeddings API (plus two extension fields).

    POST /v1/embeddings
      input            str | list[str] | list[int] | list[list[int]]   (token ids: the model's tokenizer)
      model            the served model's name
      encoding_format  "float" (default) | "base64" (little-endian float32 bytes)
      dimensions       keep the first n dimensions, then renormalise to unit length
      user             accepted and ignored
      input_type       "query" | "document"   (extension: the query/document rule)
      instruction      the query's instruction, applied as "{instruction}: {text}" (extension)
      long_texts       "truncate" | "segments" (extension: inputs beyond the model's max_length)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SERVED_LONG_TEXT_MODES = ("truncate", "segments")  # `multivector` has no one-vector-per-input shape


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None
    input_type: Literal["query", "document"] | None = None
    instruction: str | None = None
    long_texts: Literal["truncate", "segments"] | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


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
