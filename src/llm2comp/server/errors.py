"""OpenAI-style error bodies for every failure: `{"error": {"message", "type", "param", "code"}}`.

Every 4xx/5xx the server sends, its own or the framework's (bad JSON, unknown route, wrong
method), goes through here, so clients parse one shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import INPUT_TYPES, ErrorBody, ErrorDetail

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = INVALID_REQUEST, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def error_response(status: int, message: str, *, type: str = INVALID_REQUEST, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The OpenAI-shaped answer; a lone surrogate echoed from the request is written as `\\udXXX`."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    body = ErrorBody(error=ErrorDetail(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(error: dict) -> str | None:
    """The top-level body field an error is about (`input`, `model`, ...), or None."""
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    return location[0] if location and not location[0].isdigit() else None


def validation_error_body(problems: list[dict]) -> tuple[str, str | None]:
    """(message, param) for pydantic's errors: one sentence per field, `input`'s union explained once."""
    if any(problem.get("type") == "json_invalid" for problem in problems):
        detail = next(p for p in problems if p.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON{': ' + detail if detail else ''}", None
    messages, first_field = {}, None
    for problem in problems:
        field = _field(problem)
        first_field = first_field or field
        if field == "input" and problem.get("type") != "missing":
            messages[field] = f"'input' must be {INPUT_TYPES}"
        elif field is not None:
            messages.setdefault(field, f"'{field}': {problem['msg']}")
        else:
            messages.setdefault(None, problem["msg"])
    return "; ".join(messages.values()) or "invalid request", first_field


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return error_response(error.status, error.message, type=error.type, param=error.param, code=error.code,
                              headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        message, param = validation_error_body(list(error.errors()))
        return error_response(400, message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {400: "invalid_value", 404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return error_response(error.status_code, str(error.detail), code=code, headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        return error_response(500, f"internal error: {type(error).__name__}", type="server_error",
                              code="internal_error")
