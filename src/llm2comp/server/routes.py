"""The HTTP endpoints.

    POST /v1/embeddings     OpenAI's embeddings API (schemas.py)     } API key, when one is set
    GET  /v1/models         the one served model                     } (middleware.ApiKeyAuth)
    GET  /v1/models/{id}                                             }
    GET  /health            200 once the model is loaded and serving, 503 before (and while stopping)
    GET  /metrics           Prometheus text format
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from .errors import APIError
from .metrics import CONTENT_TYPE
from .schemas import EmbeddingRequest, EmbeddingResponse, ErrorBody, ModelCard, ModelList

ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 503)}


def server_state(request: Request):
    return request.app.state.llm2comp


def ready_service(request: Request):
    state = server_state(request)
    if state.service is None:
        raise APIError(503, "the model is still loading" if state.error is None else
                       f"the model failed to load: {state.error}", type="server_error", code="model_not_ready",
                       headers={"Retry-After": "5"})
    return state.service


router = APIRouter()


@router.post("/v1/embeddings", response_model=None, responses={200: {"model": EmbeddingResponse}, **ERRORS})
async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    payload = await ready_service(request).create(body)
    # a large answer (thousands of vectors) takes a while to serialise: not on the event loop
    content = await run_in_threadpool(lambda: json.dumps(payload, separators=(",", ":")).encode())
    return Response(content, media_type="application/json")


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(request)])


@router.get("/v1/models/{model_id}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    card = _card(request)
    if model_id != card.id:
        raise APIError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
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
