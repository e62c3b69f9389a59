"""`llm2comp serve`: serve a model over HTTP with OpenAI's embeddings API (docs/serving.md)."""

from __future__ import annotations

from contextlib import contextmanager

from ..errors import LLM2CompError, ModelLoadError
from ..models.default_model import DEFAULT_MODEL_NAME
from .arguments import add_backend, add_trust_remote_code, device_name, positive_int


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI-compatible /v1/embeddings)",
        description="Serve an LLM2Comp model with OpenAI's embeddings API: POST /v1/embeddings, GET /v1/models, "
        "GET /health, GET /metrics (Prometheus). Concurrent requests are batched by a token budget. "
        "The model is loaded as encode, eval and search load it. "
        "Needs the serve extra: pip install 'llm2comp[serve]'.",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME,
                        help=f"saved LLM2Comp folder, Hub id or local backbone (default: {DEFAULT_MODEL_NAME})")
    parser.add_argument("--served-model-name", default=None,
                        help="the name clients send as `model` (default: the folder's name)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--pooling", choices=["memory_mean", "mean", "last"], default=None,
                        help="for a plain backbone: memory_mean (default), or mean/last token baselines")
    add_trust_remote_code(parser)
    add_backend(parser)
    parser.add_argument("--max-batch-tokens", type=int, default=4096,
                        help="padded tokens (rows x longest row) in one forward pass (default: 4096)")
    parser.add_argument("--max-wait-ms", type=float, default=0.0,
                        help="how long a batch may wait for more requests once one arrived (default: 0)")
    parser.add_argument("--max-queue-inputs", type=int, default=4096,
                        help="inputs waiting or running; beyond it requests get 503 (default: 4096)")
    parser.add_argument("--max-inputs-per-request", type=int, default=2048)
    parser.add_argument("--max-request-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--max-input-tokens", type=int, default=None,
                        help="text tokens per input (default: what the model's max_length leaves)")
    parser.add_argument("--no-truncate", dest="truncate", action="store_false",
                        help="answer 413 for an input over the limit instead of cutting it")
    parser.add_argument("--long-texts", choices=["truncate", "segments"], default=None,
                        help="inputs beyond max_length: cut them, or average their windows "
                             "(default: the model's long_texts; requests may choose with `long_texts`)")
    parser.add_argument("--no-normalize", dest="normalize", action="store_false",
                        help="return the raw embeddings instead of unit-length vectors")
    parser.add_argument("--api-key-env", default=None, metavar="VAR",
                        help="require `Authorization: Bearer $VAR` on /v1/ (the key is read from this env var)")
    parser.add_argument("--graceful-timeout", type=float, default=30.0,
                        help="seconds shutdown waits for in-flight requests (default: 30)")
    parser.add_argument("--max-connections", type=positive_int, default=1024,
                        help="open connections; past it a new request gets 503 (default: 1024)")
    parser.add_argument("--keep-alive-timeout", type=positive_int, default=5,
                        help="seconds an idle keep-alive connection stays open (default: 5)")
    parser.add_argument("--max-header-bytes", type=positive_int, default=16 * 1024,
                        help="request line + headers; more is refused (default: 16384)")
    parser.add_argument("--enable-docs", action="store_true",
                        help="serve /docs, /redoc and /openapi.json (behind the API key when one is set; "
                        "/docs loads Swagger UI from a CDN)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def settings_from_args(args):
    from ..server.settings import ServerSettings

    return ServerSettings(
        model=args.model, served_model_name=args.served_model_name, host=args.host, port=args.port,
        dtype=args.dtype, device=args.device, backend=args.backend, max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
        max_queue_inputs=args.max_queue_inputs, max_inputs_per_request=args.max_inputs_per_request,
        max_request_bytes=args.max_request_bytes, max_input_tokens=args.max_input_tokens, truncate=args.truncate,
        long_texts=args.long_texts, normalize=args.normalize, api_key_env=args.api_key_env,
        graceful_timeout_s=args.graceful_timeout, pooling=args.pooling, trust_remote_code=args.trust_remote_code,
        max_connections=args.max_connections, keep_alive_timeout=args.keep_alive_timeout,
        max_header_bytes=args.max_header_bytes, enable_docs=args.enable_docs)


def run(args) -> int:
    import sys

    from ..server import require_serve_dependencies

    try:
        require_serve_dependencies()
    except ImportError as error:
        print(f"llm2comp serve: error: {error}", file=sys.stderr)
        return 2
    from ..server.app import create_app, create_server, uvicorn_config

    settings = settings_from_args(args)
    log_to_stderr(args.log_level)
    failures = []

    def stop_on_failure(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    app = create_app(settings, on_fatal=stop_on_failure)
    server = create_server(app, uvicorn_config(app, settings, args.log_level))
    with signals_end_quietly():
        server.run()
    if failures:
        if isinstance(failures[0], LLM2CompError):
            raise failures[0]
        raise ModelLoadError(f"could not load the model {settings.model}: {failures[0]}")
    return 0  # a graceful stop on SIGTERM / SIGINT is a success (a service manager reads the status)


@contextmanager
def signals_end_quietly():
    """While uvicorn runs: SIGTERM and SIGINT stop it gracefully (its own handlers), and the signal it
    re-raises once stopped finds a no-op handler here, so the process exits 0 instead of dying of
    SIGTERM (-15) or printing a KeyboardInterrupt traceback."""
    import signal

    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def log_to_stderr(level: str) -> None:
    """The server's own messages (model ready, load failures), in uvicorn's style."""
    import logging

    logger = logging.getLogger("llm2comp")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
