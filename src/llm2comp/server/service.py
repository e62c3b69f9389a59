"""What `POST /v1/embeddings` does with a valid body: check it against the limits, tokenize (off the
event loop), queue the rows for the batcher, and shape the vectors as the client asked.

    text     -> "{instruction}: {text}" for queries (the model's template), as `encode` builds it
             -> token ids without special tokens
    long     -> truncate: cut to `max_input_tokens` (or 413 with --no-truncate)
                segments: windows of the model's text budget, each a row; the text's vector is the
                token-weighted mean of its windows' (models/long_texts.py), as `encode` computes it
    vectors  -> unit length (unless --no-normalize) -> `dimensions`: first n, renormalised
             -> float list, or base64 of little-endian float32
"""

from __future__ import annotations

import base64
import threading
import time

import torch
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidSetting
from ..models.encoding import apply_instructions
from ..models.long_texts import WindowEmbeddings, window_rows
from .batching import DynamicBatcher, QueueFull, ShuttingDown, forward_pass
from .errors import APIError
from .metrics import Metrics
from .schemas import SERVED_LONG_TEXT_MODES, EmbeddingRequest
from .settings import ServerSettings

OVERLOADED = dict(type="server_error", code="server_overloaded")


class EmbeddingService:
    def __init__(self, model, settings: ServerSettings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.name = settings.model_name
        self.created = int(time.time())
        prefix = len(model.prefix_ids())
        self.window_tokens = model.config.max_length - prefix - model.num_memory_tokens  # text budget of a row
        if settings.max_input_tokens is not None and settings.max_input_tokens > self.window_tokens:
            raise InvalidSetting(f"--max-input-tokens {settings.max_input_tokens} exceeds what the model holds: "
                             f"max_length {model.config.max_length} - BOS - {model.num_memory_tokens} memory "
                             f"tokens = {self.window_tokens}")
        self.max_input_tokens = settings.max_input_tokens or self.window_tokens
        self.long_texts = settings.long_texts or model.config.long_texts
        if self.long_texts not in SERVED_LONG_TEXT_MODES:
            raise InvalidSetting(f"the model's long_texts is {self.long_texts!r}, which has no OpenAI response shape; "
                             f"pass --long-texts {' or '.join(SERVED_LONG_TEXT_MODES)}")
        self.overlap = model.config.long_text_overlap  # checked against the window when segments are asked for
        self.vocab_size = len(model.tokenizer)
        self._tokenizer_lock = threading.Lock()  # one tokenizer object, called from a thread pool
        self.dimension = model.hidden_size
        self.batcher = DynamicBatcher(lambda rows: forward_pass(model, rows), row_overhead=prefix +
                                      model.num_memory_tokens, max_batch_tokens=settings.max_batch_tokens,
                                      max_queue_inputs=settings.max_queue_inputs,
                                      max_wait_s=settings.max_wait_ms / 1000, metrics=metrics)

    def start(self) -> None:
        self.model.eval()
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop(self.settings.graceful_timeout_s)

    # ------------------------------------------------------------------ request handling
    async def create(self, request: EmbeddingRequest) -> dict:
        if request.model != self.name:
            raise APIError(404, f"The model '{request.model}' does not exist; this server serves '{self.name}'",
                           param="model", code="model_not_found")
        if request.dimensions is not None and request.dimensions > self.dimension:
            raise APIError(400, f"dimensions {request.dimensions} exceeds the model's {self.dimension}",
                           param="dimensions", code="invalid_value")
        rows = await self._token_rows(request)
        if (request.long_texts or self.long_texts) == "segments":
            vectors = await self._embed_segments(rows)
        else:
            rows = self._apply_token_limit(rows)
            vectors = await self._queue(rows)
        tokens = sum(len(row) for row in rows)
        self.metrics.inc("inputs_total", len(rows))
        self.metrics.inc("prompt_tokens_total", tokens)
        return {"object": "list", "data": self._shape(vectors, request), "model": self.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def _token_rows(self, request: EmbeddingRequest) -> list[list[int]]:
        """The request's inputs as token ids (instruction applied to text), checked against the limits."""
        inputs = [request.input] if isinstance(request.input, str) or _is_token_row(request.input) \
            else list(request.input)
        if not inputs:
            raise APIError(400, "input must not be empty", param="input", code="invalid_value")
        if len(inputs) > self.settings.max_inputs_per_request:
            raise APIError(400, f"input has {len(inputs)} items; at most {self.settings.max_inputs_per_request} "
                           "per request", param="input", code="too_many_inputs")
        instruction = self._instruction(request)
        if isinstance(inputs[0], str):
            for index, text in enumerate(inputs):
                if not text.strip():
                    raise APIError(400, f"input[{index}] is empty or whitespace only", param="input",
                                   code="invalid_value")
            return await run_in_threadpool(self._tokenize, inputs, instruction)
        if instruction:
            raise APIError(400, "token-id input cannot take an instruction (the template applies to text); "
                           "send text, or drop instruction/input_type", param="instruction", code="invalid_value")
        return [self._check_ids(row, index) for index, row in enumerate(inputs)]

    async def _queue(self, rows: list[list[int]]) -> torch.Tensor:
        try:
            return await self.batcher.embed(rows)
        except QueueFull as error:
            raise APIError(503, f"server overloaded: {error}; retry later", headers={"Retry-After": "1"},
                           **OVERLOADED) from None
        except ShuttingDown as error:
            raise APIError(503, str(error), headers={"Retry-After": "1"}, **OVERLOADED) from None

    async def _embed_segments(self, rows: list[list[int]]) -> torch.Tensor:
        """Every input cut into windows (`long_texts.plan_windows`), all windows queued as rows, then per
        input the token-weighted mean of its windows' raw vectors."""
        try:
            windows, owner, weights = window_rows(rows, self.window_tokens, self.overlap)
        except ValueError as error:
            raise APIError(400, f"long_texts 'segments' is not available for this model: {error}",
                           param="long_texts", code="invalid_value") from None
        if len(windows) > self.settings.max_queue_inputs:
            raise APIError(413, f"the inputs make {len(windows)} windows of {self.window_tokens} tokens; the "
                           f"queue holds at most {self.settings.max_queue_inputs}", param="input",
                           code="input_too_long")
        return WindowEmbeddings(await self._queue(windows), owner, weights, len(rows)).weighted_mean()

    def _instruction(self, request: EmbeddingRequest) -> str | None:
        """Queries take `instruction`, or the model's saved query prompt; documents never take one."""
        if request.instruction is not None and not request.instruction.strip():
            raise APIError(400, "instruction is empty", param="instruction", code="invalid_value")
        if request.input_type == "document":
            if request.instruction:
                raise APIError(400, "documents take no instruction; instructions go on queries only",
                               param="instruction", code="invalid_value")
            return None
        if request.instruction:
            return request.instruction
        if request.input_type == "query":
            return self.model.config.prompts.get("query") or None
        return None

    def _tokenize(self, texts: list[str], instruction: str | None) -> list[list[int]]:
        full = apply_instructions(self.model, [(instruction, text) for text in texts])
        with self._tokenizer_lock:
            return self.model.tokenizer(full, add_special_tokens=False)["input_ids"]

    def _check_ids(self, row: list[int], index: int) -> list[int]:
        if not row:
            raise APIError(400, f"input[{index}] is an empty token list", param="input", code="invalid_value")
        bad = next((token for token in row if not 0 <= token < self.vocab_size), None)
        if bad is not None:
            raise APIError(400, f"input[{index}] holds token id {bad}, outside the vocabulary [0, "
                           f"{self.vocab_size})", param="input", code="invalid_value")
        return row

    def _apply_token_limit(self, rows: list[list[int]]) -> list[list[int]]:
        limit = self.max_input_tokens
        long = [index for index, row in enumerate(rows) if len(row) > limit]
        if not long:
            return rows
        if not self.settings.truncate:
            first = long[0]
            raise APIError(413, f"input[{first}] has {len(rows[first])} tokens; the limit is {limit} "
                           f"({len(long)} input(s) over it; the server runs with --no-truncate)",
                           param="input", code="input_too_long")
        self.metrics.inc("truncated_inputs_total", len(long))
        return [row[:limit] for row in rows]

    def _shape(self, vectors: torch.Tensor, request: EmbeddingRequest) -> list[dict]:
        if request.dimensions is not None:
            vectors = torch.nn.functional.normalize(vectors[:, :request.dimensions], dim=-1)
        elif self.settings.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        array = vectors.numpy().astype("<f4", copy=False)
        if request.encoding_format == "base64":
            values = [base64.b64encode(row.tobytes()).decode("ascii") for row in array]
        else:
            values = array.tolist()
        return [{"object": "embedding", "index": index, "embedding": value} for index, value in enumerate(values)]


def _is_token_row(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, int) for item in value)
