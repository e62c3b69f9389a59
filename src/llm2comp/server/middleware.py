"""ASGI middlewares: the API key check, a cap on request body size, request counting for /metrics,
and an OpenAI-shaped 503 for requests that shutdown cuts short.

The key check runs first, before a byte of the body is read: `Authorization: Bearer KEY` on every
path under /v1/ (and /docs, /redoc, /openapi.json when --enable-docs turns them on), compared in
constant time (`hmac.compare_digest`). /health and /metrics stay open (probes and scrapers); keep
them off the public network.

When shutdown outlasts --graceful-timeout, uvicorn cancels the requests still running; without
`ShutdownAnswer` their clients would get uvicorn's plain-text 500 and the log a CancelledError
traceback. They get a 503 `server_overloaded` with `Retry-After: 1` instead (retry elsewhere).

The body cap reads a request's body before the app sees it: a declared `Content-Length` over the
cap is refused before a byte is read, and a chunked body is refused as soon as it passes the cap,
so an oversized request never costs more than the cap in memory.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from .errors import error_response
from .metrics import Metrics

TIMED_PATH = "/v1/embeddings"


DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


class ApiKeyAuth:
    def __init__(self, app, key: str, protected_prefix: str = "/v1/", protected_paths: tuple[str, ...] = DOCS_PATHS):
        self.app, self.key, self.prefix, self.paths = app, key.encode(), protected_prefix, protected_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (scope["path"].startswith(self.prefix) or scope["path"] in self.paths):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                response = error_response(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'",
                                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class BodySizeLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str):
        return error_response(413, f"request body is {size} bytes; the limit is {self.max_bytes} "
                              "(--max-request-bytes)", code="request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(declared.decode())(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        return await self.app(scope, replay, send)


class RequestMetrics:
    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def record_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            path = scope["path"]
            known = path in ("/v1/embeddings", "/v1/models", "/health", "/metrics") or path.startswith("/v1/models/")
            endpoint = "/v1/models/{id}" if path.startswith("/v1/models/") else path if known else "other"
            self.metrics.inc("requests_total", endpoint=endpoint, status=str(status))
            if path == TIMED_PATH:
                self.metrics.observe("request_seconds", time.perf_counter() - started)


class ShutdownAnswer:
    """A request cancelled by shutdown (past --graceful-timeout) is answered 503 + Retry-After, not 500."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watch(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if started:  # half an answer went out; the connection closes
                return
            response = error_response(503, "the server is shutting down and stopped this request (past "
                                      "--graceful-timeout); retry", type="server_error", code="server_overloaded",
                                      headers={"Retry-After": "1", "Connection": "close"})
            await response(scope, receive, send)
