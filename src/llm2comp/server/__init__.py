"""`llm2comp serve`: an OpenAI-compatible embedding server (docs/serving.md).

    settings.py    the flags, checked at start-up
    app.py         the app factory and the server's life (load, serve, drain)
    routes.py      /v1/embeddings, /v1/models, /health, /metrics
    schemas.py     request/response bodies (OpenAI's shape)
    service.py     a request's path: limits, tokenization, shaping the vectors
    batching.py    dynamic batching of concurrent requests by a token budget, off the event loop
    middleware.py  API key, body size cap, request metrics
    metrics.py     Prometheus text format
    errors.py      OpenAI-style error bodies

Needs the `serve` extra (FastAPI, uvicorn): `pip install 'llm2comp[serve]'`.
"""

from __future__ import annotations

import importlib.util

from ..errors import MissingDependency

SERVE_PACKAGES = ("fastapi", "uvicorn")


def require_serve_dependencies() -> None:
    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(f"llm2comp serve needs {', '.join(missing)}: pip install 'llm2comp[serve]'")
