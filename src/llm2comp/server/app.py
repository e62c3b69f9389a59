"""The app factory: `create_app(settings)` -> a FastAPI app that loads the model and serves it.

Life of a server:
    start     the port opens at once; the model loads on a background thread (GET /health: 503
              "loading", then 200); a load failure is reported by /health and `on_fatal` (the CLI
              then stops and exits with status 2)
    serve     routes.py; middlewares, outermost first: request metrics, shutdown answer, API key,
              body size cap; uvicorn's connection limits from `uvicorn_config`
    stop      (SIGTERM / SIGINT, handled by `EmbeddingServer`, uvicorn's server) /health says
              "stopping" at once and new /v1/embeddings requests get 503; no new connections;
              in-flight requests finish (up to --graceful-timeout; past it they get a 503); then the
              batcher drains its queue and its thread ends
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

from ..errors import LLM2CompError
from .errors import install_error_handlers
from .metrics import Metrics
from .middleware import ApiKeyAuth, BodySizeLimit, RequestMetrics, ShutdownAnswer
from .routes import router
from .service import EmbeddingService
from .settings import ServerSettings

log = logging.getLogger("llm2comp.server")


def load_model(settings: ServerSettings):
    """The model, loaded as `encode`, `eval` and `search` load it (same flags)."""
    from ..models import loading

    return loading.load_for_use(settings.model, settings.pooling, dtype=settings.dtype, device=settings.device,
                                trust_remote_code=settings.trust_remote_code, backend=settings.backend)


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
            if isinstance(error, LLM2CompError):  # the user's input: one line that names it, no traceback
                log.error("could not load the model %s: %s", settings.model, error)
            else:
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

    docs = settings.enable_docs  # off by default: the schema is no business of anonymous callers
    app = FastAPI(title="llm2comp embeddings", version="1", lifespan=lifespan,
                  summary="OpenAI-compatible embeddings from an LLM2Comp model",
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  openapi_url="/openapi.json" if docs else None)
    app.state.llm2comp = state
    install_error_handlers(app)
    app.include_router(router)
    # added innermost first: the last one added sees a request first
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if state.api_key is not None:
        app.add_middleware(ApiKeyAuth, key=state.api_key)
    app.add_middleware(ShutdownAnswer)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    return app


def uvicorn_config(app: FastAPI, settings: ServerSettings, log_level: str = "info", **overrides):
    """uvicorn's settings for `app`: where to listen, and what bounds connections.

    Bounded: open connections (`limit_concurrency`: past --max-connections a new request gets 503),
    the size of a request line + headers (`h11_max_incomplete_event_size`: --max-header-bytes), idle
    keep-alive connections (`timeout_keep_alive`: --keep-alive-timeout), the body
    (--max-request-bytes, middleware.BodySizeLimit) and shutdown (`timeout_graceful_shutdown`).
    Not bounded by uvicorn: how long a client may take to send its headers (no header timeout), and
    connections that have not finished their headers count toward the cap only once they do; put a
    proxy with a header timeout in front of a server that untrusted clients reach (docs/serving.md).
    """
    import uvicorn

    options = dict(host=settings.host, port=settings.port, log_level=log_level, http="h11",
                   timeout_graceful_shutdown=settings.graceful_timeout_s, limit_concurrency=settings.max_connections,
                   timeout_keep_alive=settings.keep_alive_timeout,
                   h11_max_incomplete_event_size=settings.max_header_bytes)
    return uvicorn.Config(app, **{**options, **overrides})


def create_server(app: FastAPI, config):
    """uvicorn's server for `app`, which tells the app it is stopping as soon as a signal arrives."""
    import uvicorn

    class EmbeddingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.llm2comp.stopping = True  # /health: 503 "stopping"; new embeddings: 503
            super().handle_exit(sig, frame)

    return EmbeddingServer(config)
