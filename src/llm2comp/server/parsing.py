"""A `POST /v1/embeddings` body -> `EmbeddingRequest`, or an APIError (400 `invalid_value`).

Runs on a worker thread (routes.py), not the event loop: a body of several MB (a long token-id
list) takes a while to decode and check, and /health must keep answering meanwhile. Every failure
is a 400 with code `invalid_value` and OpenAI's error body: compressed or non-UTF-8 bytes, bad
JSON, a body that is not an object, wrong types (strict), unknown fields.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from .errors import APIError, validation_error_body
from .schemas import EmbeddingRequest, InputTypeError, check_input


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def parse_embedding_request(body: bytes, content_encoding: str | None = None) -> tuple[EmbeddingRequest, list]:
    """(the checked request, its inputs as a list of texts or of token-id rows)."""
    if content_encoding not in (None, "", "identity"):
        raise _bad(f"Content-Encoding {content_encoding!r} is not accepted; send the JSON body uncompressed")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _bad(f"the request body is not UTF-8 (byte {error.start}: {body[error.start:error.start + 1]!r}); "
                   "send JSON encoded as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _bad(f"the request body is not valid JSON: {error.msg} (line {error.lineno}, column "
                   f"{error.colno})") from None
    if not isinstance(data, dict):
        raise _bad("the request body must be a JSON object such as {\"model\": ..., \"input\": ...}")
    try:
        request = EmbeddingRequest.model_validate(data)
    except ValidationError as error:
        message, param = validation_error_body(list(error.errors(include_url=False)))
        raise _bad(message, param) from None
    try:
        return request, check_input(request.input)
    except InputTypeError as error:
        raise _bad(str(error), "input") from None
