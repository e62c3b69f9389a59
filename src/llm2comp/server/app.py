"""The app factory: `create_app(settings)` -> a FastAPI app that loads the model and serves it.

Life of a server:
    start     the port opens at once; the model loads on a background thread (GET /health: 503
              "loading", then 200); a load failure is reported by /health and `on_fatal` (the CLI
              then stops and exits with status 2)
    serve     routes.py; middlewares, outermost first: request metrics, API key, body size cap
    stop      (SIGTERM / SIGINT, handled by uvicorn) no new connections; in-flight requests finish
              (up to --graceful-timeout); then the batcher drains its queue and its thread ends
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import ApiKeyAuth, BodySizeLimit, RequestMetrics
from .routes import router
from .service import EmbeddingService
from .settings import ServerSettings

log = logging.getLogger("llm2comp.server")


def load_model(settings: ServerSettings):
    from ..models.encoder import LLM2Comp

    return LLM2Comp.from_pretrained(settings.model, dtype=settings.dtype, device=settings.device)


class ServerState:
    """What the routes read: settings, metrics, and the service once the model is ready."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.metrics = Metrics()
        self.api_key = settings.api_key()
        self.created = int(time.time())
        self.service: EmbeddingService | None = None
        self.error: BaseException | None = None
        self.stopping = False

    def prepare(self, model) -> EmbeddingService:
        """The service over `model` (checks the settings against the model: a ValueError names the flag)."""
        return EmbeddingService(model, self.settings, self.metrics)

    def serve(self, service: EmbeddingService) -> None:
        service.start()
        self.service = service
        self.metrics.set("model_ready", 1)
        log.info("model %s ready (dimension %d, max %d tokens per input)", self.settings.model_name,
                 service.dimension, service.max_input_tokens)


def create_app(settings: ServerSettings, *, model=None, loader: Callable[[ServerSettings], object] = load_model,
               on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """A ready-to-run app. `model`: an LLM2Comp already in memory (else `loader(settings)` runs on a
    background thread at start-up). `on_fatal(error)` is called if loading fails."""
    state = ServerState(settings)
    prepared = state.prepare(model) if model is not None else None

    def load_in_background(loop: asyncio.AbstractEventLoop) -> None:
        try:
            state.serve(state.prepare(loader(settings)))
        except BaseException as error:  # reported by /health; the CLI stops the server
            log.exception("could not load the model %s", settings.model)
            state.error = error
            if on_fatal is not None:
                loop.call_soon_threadsafe(on_fatal, error)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if prepared is not None:
            state.serve(prepared)
        else:
            threading.Thread(target=load_in_background, args=(asyncio.get_running_loop(),),
                             name="llm2comp-load", daemon=True).start()
        yield
        state.stopping = True
        if state.service is not None:
            await run_in_threadpool(state.service.stop)

    app = FastAPI(title="llm2comp embeddings", version="1", lifespan=lifespan,
                  summary="OpenAI-compatible embeddings from an LLM2Comp model")
    app.state.llm2comp = state
    install_error_handlers(app)
    app.include_router(router)
    # added innermost first: the last one added sees a request first
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if state.api_key is not None:
        app.add_middleware(ApiKeyAuth, key=state.api_key)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app
