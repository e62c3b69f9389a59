"""Everything `llm2comp serve` can be told, checked once at start-up (a bad value stops the server
before it loads anything, with the flag's name in the message)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidSetting
from ..models.default_model import DEFAULT_MODEL_NAME


@dataclass
class ServerSettings:
    model: str = DEFAULT_MODEL_NAME  # a saved LLM2Comp folder, a Hub id or the default alias
    served_model_name: str | None = None  # the `model` clients must send; default: the folder's name
    host: str = "127.0.0.1"
    port: int = 8080
    dtype: str = "float32"
    device: str | None = None
    backend: str = "torch"  # or a saved folder's ONNX export: onnx, onnx-int8 (backends/)
    # batching
    max_batch_tokens: int = 4096  # padded tokens (rows x longest row) in one forward pass
    max_wait_ms: float = 0.0  # how long a batch may wait for more inputs once the first one arrived
    max_queue_inputs: int = 4096  # inputs waiting or running; a request that would exceed it gets 503
    # limits
    max_inputs_per_request: int = 2048
    max_request_bytes: int = 8 * 1024 * 1024
    max_input_tokens: int | None = None  # text tokens (instruction included); default: what the model holds
    truncate: bool = True  # cut longer inputs (as `encode` does), or answer 413
    long_texts: str | None = None  # truncate | segments; default: the model's `long_texts`
    normalize: bool = True  # unit-length vectors, as OpenAI's
    api_key_env: str | None = None  # name of the environment variable holding the API key
    graceful_timeout_s: float = 30.0  # how long shutdown waits for in-flight requests
    # loading (the loader encode, eval and search use: models/loading.py)
    pooling: str | None = None  # for a plain backbone: memory_mean (default), mean or last
    trust_remote_code: bool = False
    # connections (uvicorn's own limits: app.uvicorn_config)
    max_connections: int = 1024  # open connections; a request beyond it gets 503
    keep_alive_timeout: int = 5  # an idle keep-alive connection is closed after this many seconds
    max_header_bytes: int = 16 * 1024  # request line + headers; more is refused
    enable_docs: bool = False  # /docs, /redoc, /openapi.json (behind the API key when one is set)

    def __post_init__(self) -> None:
        positive = ("max_batch_tokens", "max_queue_inputs", "max_inputs_per_request", "max_request_bytes",
                    "max_connections", "keep_alive_timeout", "max_header_bytes")
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidSetting(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise InvalidSetting(f"--max-input-tokens must be >= 1, got {self.max_input_tokens}")
        if self.max_wait_ms < 0 or self.graceful_timeout_s < 0:
            raise InvalidSetting("--max-wait-ms and --graceful-timeout must be >= 0")
        if self.max_inputs_per_request > self.max_queue_inputs:
            raise InvalidSetting(f"--max-inputs-per-request ({self.max_inputs_per_request}) cannot exceed "
                             f"--max-queue-inputs ({self.max_queue_inputs}): such a request could never be queued")
        if self.long_texts not in (None, "truncate", "segments"):
            raise InvalidSetting(f"--long-texts must be truncate or segments, got {self.long_texts!r}")
        if not 0 <= self.port <= 65535:
            raise InvalidSetting(f"--port must be in 0..65535, got {self.port}")

    @property
    def model_name(self) -> str:
        """`--served-model-name`, else the model folder's own name (`.` and `../x/` resolved), else the id."""
        if self.served_model_name:
            return self.served_model_name
        path = Path(str(self.model))
        if path.exists():
            return path.resolve().name or str(self.model)
        return Path(str(self.model).rstrip("/")).name or str(self.model)

    def api_key(self) -> str | None:
        """The key clients must send as `Authorization: Bearer KEY`, or None (no key required)."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise InvalidSetting(f"--api-key-env {self.api_key_env}: that environment variable is unset or empty")
        return key
