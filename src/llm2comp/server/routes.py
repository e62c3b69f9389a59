"""The HTTP endpoints.

    POST /v1/embeddings     OpenAI's embeddings API (schemas.py)     } API key, when one is set
    GET  /v1/models         the one served model                     } (middleware.ApiKeyAuth)
    GET  /v1/models/{id}    the id may hold "/" (`org/name`)         }
    GET  /health            200 once the model is loaded and serving, 503 before (and while stopping)
    GET  /metrics           Prometheus text format

`/v1/embeddings` reads its body itself: decoding and checking it (parsing.py) runs on a worker
thread, so a body of several MB does not hold up the event loop. While a request waits for its
vectors, a watcher listens for the client's disconnect: a client that hangs up cancels its request,
its rows are dropped before they reach the model (batching.py), and it is counted with status 499
(nginx's "client closed request"; nothing is sent). A request for quantised codes (`precision`) first
imports sentence-transformers' quantizer on a worker thread (seconds, once), or answers 501 when it is
not installed.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import MissingDependency
from ..models.quantization import load_quantizer
from .errors import APIError
from .metrics import CONTENT_TYPE
from .parsing import parse_embedding_request
from .schemas import EmbeddingRequest, EmbeddingResponse, ErrorBody, ModelCard, ModelList

ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 501, 503)}
CLIENT_CLOSED = 499
REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": EmbeddingRequest.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


class ClientDisconnected(Exception):
    """The client closed its connection before its answer was ready."""


def server_state(request: Request):
    return request.app.state.llm2comp


def ready_service(request: Request):
    state = server_state(request)
    if state.stopping:
        raise APIError(503, "the server is shutting down; retry on another instance", type="server_error",
                       code="server_overloaded", headers={"Retry-After": "1"})
    if state.service is None:
        raise APIError(503, "the model is still loading" if state.error is None else
                       f"the model failed to load: {state.error}", type="server_error", code="model_not_ready",
                       headers={"Retry-After": "5"})
    return state.service


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work):
    """The result of the coroutine `work`, or ClientDisconnected (and `work` cancelled) if the client
    hangs up first. Cancelling this (shutdown) cancels `work` too."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientDisconnected


router = APIRouter()


@router.post("/v1/embeddings", response_model=None, openapi_extra=REQUEST_BODY,
             responses={200: {"model": EmbeddingResponse}, **ERRORS})
async def create_embeddings(request: Request) -> Response:
    service = ready_service(request)
    body = await request.body()
    parsed, inputs = await run_in_threadpool(parse_embedding_request, body, request.headers.get("content-encoding"))
    if parsed.precision != "float32":
        await run_in_threadpool(_quantizer, parsed.precision)
    try:
        payload = await unless_disconnected(request, service.create(parsed, inputs))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; counted in /metrics
    # a large answer (thousands of vectors) takes a while to serialise: not on the event loop
    content = await run_in_threadpool(lambda: json.dumps(payload, separators=(",", ":")).encode())
    return Response(content, media_type="application/json")


def _quantizer(precision: str) -> None:
    """Import the quantizer (off the event loop); 501 naming `precision` when sentence-transformers is missing."""
    try:
        load_quantizer(precision)
    except MissingDependency as error:
        raise APIError(501, f"this server cannot answer precision {precision!r}: {error}", type="server_error",
                       param="precision", code="unsupported_precision") from None


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(request)])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    card = _card(request)
    if model_id != card.id:
        raise APIError(404, f"The model {model_id!r} does not exist", param="model", code="model_not_found")
    return card


def _card(request: Request) -> ModelCard:
    state = server_state(request)
    return ModelCard(id=state.settings.model_name, created=state.created)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = server_state(request)
    if state.error is not None:
        return JSONResponse({"status": "failed", "error": str(state.error)}, status_code=503)
    if state.service is None or state.stopping:
        return JSONResponse({"status": "stopping" if state.stopping else "loading"}, status_code=503)
    return JSONResponse({"status": "ok", "model": state.settings.model_name,
                         "queue_inputs": state.service.batcher.queued_inputs})


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(server_state(request).metrics.render(), media_type=CONTENT_TYPE)
