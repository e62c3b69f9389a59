"""What `POST /v1/embeddings` does with a parsed body: check it against the limits, tokenize (off the
event loop), queue the rows for the batcher, and shape the vectors as the client asked.

    text     -> "{instruction}: {text}" for queries (the model's template), as `encode` builds it
             -> cut by characters to a bound no kept token can lie beyond (below), so a huge text
                costs the tokenizer a few kB, not megabytes
             -> token ids without special tokens (a pool of tokenizer copies, one per concurrent call:
                no global lock held for one request's work)
    long     -> truncate: cut to `max_input_tokens` (or 413 with --no-truncate)
                segments: windows of the model's text budget, each a row; the text's vector is the
                token-weighted mean of its windows' (models/long_texts.py), as `encode` computes it;
                an explicit --max-input-tokens bounds the whole text here too
    vectors  -> unit length (unless --no-normalize) -> `dimensions`: first n, renormalised
             -> `precision` binary / ubinary: packed sign bits (models/quantization.py)
             -> float (or int) list, or base64 of little-endian float32 (or of the int8 / uint8 bytes)

The character bound: one token never covers more characters than the longest entry of the
vocabulary (doubled for normalizers that merge characters), so a text of more than
(L + margin) x that many characters has more than L + margin tokens, and its first L tokens are
those of its first (L + margin) x that many characters (the cut falls `margin` tokens past the
last token kept). L is the limit of the mode: `max_input_tokens` for truncate (or an explicit
--max-input-tokens), and for segments the tokens that the windows the queue can hold cover.
"""

from __future__ import annotations

import base64
import copy
import logging
import os
import queue
import threading
import time

import torch
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidSetting
from ..models.config import is_trained_size, untrained_size_message
from ..models.layout import EncoderRows, apply_instructions, model_text_budget, row_overhead, rows_of_ids
from ..models.quantization import quantize
from .batching import DynamicBatcher, QueueFull, ShuttingDown, forward_pass
from .errors import APIError
from .metrics import Metrics
from .schemas import CHUNK, SERVED_LONG_TEXT_MODES, EmbeddingRequest
from .settings import ServerSettings

OVERLOADED = dict(type="server_error", code="server_overloaded")
MARGIN_TOKENS = 16  # tokens past the last one kept where a character cut may fall
MIN_CHARS_PER_TOKEN = 8
log = logging.getLogger("llm2comp.server")


def longest_token_chars(tokenizer) -> int:
    """Characters of the longest vocabulary entry (added tokens included); what one token can cover."""
    try:
        return max(len(token) for token in tokenizer.get_vocab())
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return 256


class TokenizerPool:
    """Copies of one tokenizer, each used by one call at a time: concurrent requests tokenize in
    parallel (fast tokenizers release the GIL), and a long request holds one copy, not all of them.
    A copy is made only when every existing one is busy, up to `size` copies."""

    def __init__(self, tokenizers: list, size: int | None = None):
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for tokenizer in tokenizers:
            self._free.put(tokenizer)
        self._original = tokenizers[0]
        self._made = len(tokenizers)
        self._size = max(size or len(tokenizers), len(tokenizers))
        self._lock = threading.Lock()

    @classmethod
    def of(cls, tokenizer, size: int) -> TokenizerPool:
        return cls([tokenizer], size)

    def _take(self):
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._made < self._size
            self._made += grow
        if grow:
            try:
                return copy.deepcopy(self._original)
            except Exception:  # a tokenizer that cannot be copied: wait for a free one
                with self._lock:
                    self._made, self._size = self._made - 1, self._made - 1
        return self._free.get()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        tokenizer = self._take()
        try:
            return tokenizer(texts, add_special_tokens=False)["input_ids"]
        finally:
            self._free.put(tokenizer)


def _surrogate_at(text: str) -> int | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


class EmbeddingService:
    def __init__(self, model, settings: ServerSettings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self.name = settings.model_name
        self.created = int(time.time())
        self.window_tokens = model_text_budget(model)  # text budget of a row
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
        self.chars_per_token = max(MIN_CHARS_PER_TOKEN, 2 * longest_token_chars(model.tokenizer))
        self.tokenizers = TokenizerPool.of(model.tokenizer, min(4, os.cpu_count() or 1))
        self.dimension = model.hidden_size
        self.warned_sizes: set[int] = set()  # `dimensions` the model was not trained for, warned about once each
        self.batcher = DynamicBatcher(lambda rows: forward_pass(model, rows), row_overhead=row_overhead(model),
                                      max_batch_tokens=settings.max_batch_tokens,
                                      max_queue_inputs=settings.max_queue_inputs,
                                      max_wait_s=settings.max_wait_ms / 1000, metrics=metrics)

    def start(self) -> None:
        self.model.eval()
        self.batcher.start()

    def stop(self) -> None:
        self.batcher.stop(self.settings.graceful_timeout_s)

    # ------------------------------------------------------------------ request handling
    async def create(self, request: EmbeddingRequest, inputs: list) -> dict:
        """The answer to a parsed request; `inputs`: its texts or token-id rows (`schemas.check_input`)."""
        if request.model != self.name:
            raise APIError(404, f"The model {request.model!r} does not exist; this server serves {self.name!r}",
                           param="model", code="model_not_found")
        if request.dimensions is not None and request.dimensions > self.dimension:
            raise APIError(400, f"dimensions {request.dimensions} exceeds the model's {self.dimension}",
                           param="dimensions", code="invalid_value")
        self._warn_untrained_size(request.dimensions)
        mode = request.long_texts or self.long_texts
        overlap = self._overlap(request, mode)
        rows = await self._token_rows(request, inputs, mode, overlap)
        rows = self._apply_token_limit(rows, self.settings.max_input_tokens if mode == "segments"
                                       else self.max_input_tokens)
        layout = rows_of_ids(rows, self.window_tokens, mode, overlap)  # overlap checked in _overlap
        vectors = layout.combine(await self._queue_rows(layout, mode), mode)
        tokens = sum(len(row) for row in rows)
        self.metrics.inc("inputs_total", len(rows))
        self.metrics.inc("prompt_tokens_total", tokens)
        return {"object": "list", "data": self._shape(vectors, request), "model": self.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _warn_untrained_size(self, size: int | None) -> None:
        """Log a warning, once per size, when `dimensions` cuts to a size the model was not trained for
        (not in its config's `matryoshka_dims`, not the full size)."""
        config = self.model.config
        if size in self.warned_sizes or is_trained_size(config, size, self.dimension):
            return
        self.warned_sizes.add(size)
        log.warning("dimensions %d: %s", size, untrained_size_message(config, size, self.dimension))

    def text_token_limit(self, mode: str, overlap: int) -> int:
        """The most tokens a text may bring in `mode` (module docstring: L)."""
        if mode != "segments":
            return self.max_input_tokens
        if self.settings.max_input_tokens is not None:
            return self.settings.max_input_tokens
        return self.window_tokens + (self.settings.max_queue_inputs - 1) * (self.window_tokens - overlap)

    def char_bound(self, mode: str, overlap: int) -> int:
        """Characters of a text that can hold its first `text_token_limit` tokens (module docstring)."""
        return (self.text_token_limit(mode, overlap) + MARGIN_TOKENS) * self.chars_per_token

    async def _token_rows(self, request: EmbeddingRequest, inputs: list, mode: str, overlap: int) -> list[list[int]]:
        """The request's inputs as token ids (instruction applied to text), checked against the limits;
        the checks and the tokenizer run on a worker thread."""
        if not inputs:
            raise APIError(400, "input must not be empty", param="input", code="invalid_value")
        if len(inputs) > self.settings.max_inputs_per_request:
            raise APIError(400, f"input has {len(inputs)} items; at most {self.settings.max_inputs_per_request} "
                           "per request", param="input", code="too_many_inputs")
        instruction = self._instruction(request)
        if isinstance(inputs[0], str):
            return await run_in_threadpool(self._tokenize, inputs, instruction, mode, overlap)
        if instruction:
            raise APIError(400, "token-id input cannot take an instruction (the template applies to text); "
                           "send text, or drop instruction/input_type", param="instruction", code="invalid_value")
        return await run_in_threadpool(self._check_id_rows, inputs, mode)

    def _check_texts(self, texts: list[str]) -> None:
        for index, text in enumerate(texts):
            if not text.strip():
                raise APIError(400, f"input[{index}] is empty or whitespace only", param="input",
                               code="invalid_value")
            at = _surrogate_at(text)
            if at is not None:
                raise APIError(400, f"input[{index}] is not valid Unicode: character {at} is a lone surrogate "
                               f"({text[at]!r}); send well-formed UTF-16 escapes or UTF-8 text", param="input",
                               code="invalid_value")

    def _tokenize(self, texts: list[str], instruction: str | None, mode: str, overlap: int) -> list[list[int]]:
        self._check_texts(texts)
        full = apply_instructions(self.model, [(instruction, text) for text in texts])
        bound = self.char_bound(mode, overlap)
        may_cut = self.settings.truncate and (mode != "segments" or self.settings.max_input_tokens is not None)
        for index, text in enumerate(full):
            if len(text) > bound:
                if not may_cut:
                    self._too_long(index, f"more than {self.text_token_limit(mode, overlap)}", mode)
                full[index] = text[:bound]  # still more tokens than the limit: cut below, as encode cuts
        return self.tokenizers(full)

    def _too_long(self, index: int, tokens: str, mode: str) -> None:
        if mode == "segments" and self.settings.max_input_tokens is None:
            raise APIError(413, f"input[{index}] has {tokens} tokens, more than the windows the queue holds "
                           f"(--max-queue-inputs {self.settings.max_queue_inputs}) can cover", param="input",
                           code="input_too_long")
        limit = self.settings.max_input_tokens if mode == "segments" else self.max_input_tokens
        raise APIError(413, f"input[{index}] has {tokens} tokens; the limit is {limit} (the server runs with "
                       "--no-truncate)", param="input", code="input_too_long")

    def _check_id_rows(self, rows: list[list[int]], mode: str) -> list[list[int]]:
        """Token-id rows checked against the vocabulary; under truncate, only the ids that are kept (a
        longer row is cut, or refused with --no-truncate, below)."""
        keep = self.max_input_tokens + 1 if mode != "segments" else None
        for index, row in enumerate(rows):
            self._check_ids(row if keep is None else row[:keep], index)
        return rows

    async def _queue(self, rows: list[list[int]]) -> torch.Tensor:
        try:
            return await self.batcher.embed(rows)
        except QueueFull as error:
            raise APIError(503, f"server overloaded: {error}; retry later", headers={"Retry-After": "1"},
                           **OVERLOADED) from None
        except ShuttingDown as error:
            raise APIError(503, str(error), headers={"Retry-After": "1"}, **OVERLOADED) from None

    def _overlap(self, request: EmbeddingRequest, mode: str) -> int:
        """The window overlap for `segments`, checked against the window (the message speaks in request fields)."""
        if mode != "segments":
            if request.overlap is not None:
                raise APIError(400, "'overlap' applies to long_texts 'segments' only", param="overlap",
                               code="invalid_value")
            return 0
        overlap = self.overlap if request.overlap is None else request.overlap
        if not isinstance(overlap, int) or not 0 <= overlap < self.window_tokens:
            where = "'overlap'" if request.overlap is not None else f"the model's long_text_overlap ({overlap!r})"
            raise APIError(400, f"{where} must be in [0, {self.window_tokens}) for long_texts 'segments' (a window "
                           f"holds {self.window_tokens} text tokens); send 'overlap' between 0 and "
                           f"{self.window_tokens - 1}, or long_texts 'truncate'", param="overlap",
                           code="invalid_value")
        return overlap

    async def _queue_rows(self, layout: EncoderRows, mode: str) -> torch.Tensor:
        """The rows' raw vectors; under segments (one row per window, `layout.rows_of_ids`) 413 when the
        windows are more than the queue holds."""
        if mode == "segments" and len(layout.ids) > self.settings.max_queue_inputs:
            raise APIError(413, f"the inputs make {len(layout.ids)} windows of {self.window_tokens} tokens; the "
                           f"queue holds at most {self.settings.max_queue_inputs}", param="input",
                           code="input_too_long")
        return await self._queue(layout.ids)

    def _instruction(self, request: EmbeddingRequest) -> str | None:
        """Queries take `instruction`, or the model's saved query prompt; documents never take one."""
        if request.instruction is not None and not request.instruction.strip():
            raise APIError(400, "instruction is empty", param="instruction", code="invalid_value")
        if request.instruction is not None and _surrogate_at(request.instruction) is not None:
            raise APIError(400, "instruction is not valid Unicode: it holds a lone surrogate", param="instruction",
                           code="invalid_value")
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

    def _check_ids(self, row: list[int], index: int) -> list[int]:
        if not row:
            raise APIError(400, f"input[{index}] is an empty token list", param="input", code="invalid_value")
        for start in range(0, len(row), CHUNK):  # C loops over chunks; the slow search only on failure
            chunk = row[start:start + CHUNK]
            if min(chunk) < 0 or max(chunk) >= self.vocab_size:
                bad = next(token for token in chunk if not 0 <= token < self.vocab_size)
                raise APIError(400, f"input[{index}] holds token id {bad}, outside the vocabulary [0, "
                               f"{self.vocab_size})", param="input", code="invalid_value")
        return row

    def _apply_token_limit(self, rows: list[list[int]], limit: int | None) -> list[list[int]]:
        """Cut every row to `limit` tokens (None: no limit), or 413 with --no-truncate."""
        if limit is None:
            return rows
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
        if request.precision != "float32":  # one byte per value: no byte order
            array = quantize(array, request.precision)
        if request.encoding_format == "base64":
            values = [base64.b64encode(row.tobytes()).decode("ascii") for row in array]
        else:
            values = array.tolist()
        return [{"object": "embedding", "index": index, "embedding": value} for index, value in enumerate(values)]
