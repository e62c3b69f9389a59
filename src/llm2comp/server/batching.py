"""Dynamic batching: inputs of concurrent requests share forward passes, cut by a token budget.

    requests (event loop)  --embed(rows)-->  bounded FIFO of rows  -->  one worker thread
                                                                         take FIFO rows while their
                                                                           real tokens <= budget
                                                                         plan_batches: sort by length,
                                                                           cut into passes of
                                                                           rows x longest <= budget
                                                                         model forward, per pass
    futures resolved on the event loop  <--call_soon_threadsafe--  vectors in request order

A request whose client disconnects is cancelled (routes.py); its rows still waiting leave the
queue at once, before they reach the model. The model only ever runs on the worker thread, so the event loop keeps answering (health,
metrics, new requests) while a batch runs. Rows are taken oldest first, so no request starves;
within what was taken, sorting by length keeps padding low. A row's vector does not depend on
its batch (tested for `encode`: padding, neighbours, order), so every vector is the one offline
`encode` gives for that text. The queue is bounded in inputs: a request that does not fit is
refused at once (the caller answers 503) instead of letting memory and latency grow without limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..models.encoding import plan_batches
from .metrics import Metrics


class QueueFull(Exception):
    """The bounded queue cannot take a request's inputs now."""


class ShuttingDown(Exception):
    """The batcher no longer takes work."""


@dataclass(eq=False)
class _Job:
    """One request: its future (on the event loop) and its vectors as they come back."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    vectors: list = field(default_factory=list)
    remaining: int = 0
    failed: bool = False

    def abandoned(self) -> bool:
        return self.failed or self.future.cancelled()


@dataclass(eq=False)
class _Row:
    job: _Job
    index: int
    ids: list[int]
    length: int  # padded-row length: prefix + text + memory tokens
    arrived: float  # time.monotonic() when queued


def _settle(future: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _notify(job: _Job, result=None, error: BaseException | None = None) -> None:
    """Resolve a job's future from the worker thread, on its event loop."""
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def forward_pass(model, rows: list[list[int]]) -> torch.Tensor:
    """One forward pass over token-id rows: (len(rows), d) float32 on the CPU, as `encode` computes."""
    with torch.inference_mode():
        return model(model.collate(rows)).float().cpu()


class DynamicBatcher:
    def __init__(self, embed: Callable[[list[list[int]]], torch.Tensor], *, row_overhead: int,
                 max_batch_tokens: int, max_queue_inputs: int, max_wait_s: float = 0.0,
                 metrics: Metrics | None = None):
        self._embed = embed
        self._row_overhead = row_overhead
        self._max_batch_tokens = max_batch_tokens
        self._max_queue_inputs = max_queue_inputs
        self._max_wait_s = max_wait_s
        self._metrics = metrics or Metrics()
        self._cond = threading.Condition()
        self._pending: deque[_Row] = deque()
        self._pending_tokens = 0
        self._queued = 0  # rows waiting or running
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="llm2comp-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued_inputs(self) -> int:
        return self._queued

    async def embed(self, rows: list[list[int]]) -> torch.Tensor:
        """The vectors of `rows` (token ids, no special tokens), (len(rows), d), in order."""
        if not rows:
            raise ValueError("no rows to embed")
        loop = asyncio.get_running_loop()
        job = _Job(loop, loop.create_future(), [None] * len(rows), len(rows))
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if self._queued + len(rows) > self._max_queue_inputs:
                raise QueueFull(f"the queue holds {self._queued} of at most {self._max_queue_inputs} inputs; "
                                f"this request brings {len(rows)}")
            arrived = time.monotonic()
            for index, ids in enumerate(rows):
                row = _Row(job, index, ids, len(ids) + self._row_overhead, arrived)
                self._pending.append(row)
                self._pending_tokens += row.length
            self._queued += len(rows)
            self._metrics.set("queue_inputs", self._queued)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:  # the client went away (or shutdown cut it short)
            self._drop(job)
            raise

    def _drop(self, job: _Job) -> None:
        """Take a cancelled job's waiting rows out of the queue at once: they never reach the model,
        and their places are free for other requests (rows already in a forward pass finish there)."""
        with self._cond:
            kept = deque(row for row in self._pending if row.job is not job)
            dropped = len(self._pending) - len(kept)
            if dropped:
                self._pending = kept
                self._pending_tokens = sum(row.length for row in kept)
                self._queued -= dropped
                self._metrics.set("queue_inputs", self._queued)

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, end the thread (waits up to `timeout` s)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return  # stopping, and nothing left
                self._wait_for_more()
                rows = self._take()
            if rows:
                self._run(rows)

    def _wait_for_more(self) -> None:
        """Give later requests up to `max_wait_s` after the oldest pending row to join its batch."""
        deadline = self._pending[0].arrived + self._max_wait_s
        while not self._stopping and self._pending_tokens < self._max_batch_tokens:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take(self) -> list[_Row]:
        """Oldest rows first, while their padded-row lengths add up to the token budget (at least one)."""
        rows, tokens, dropped = [], 0, 0
        while self._pending:
            row = self._pending[0]
            if row.job.abandoned():  # cancelled by its client, or another row of it failed
                self._pending.popleft()
                self._pending_tokens -= row.length
                dropped += 1
                continue
            if rows and tokens + row.length > self._max_batch_tokens:
                break
            self._pending.popleft()
            self._pending_tokens -= row.length
            rows.append(row)
            tokens += row.length
        if dropped:
            self._queued -= dropped
            self._metrics.set("queue_inputs", self._queued)
        return rows

    def _run(self, rows: list[_Row]) -> None:
        lengths = [row.length for row in rows]
        for chosen in plan_batches(lengths, batch_size=max(1, self._max_batch_tokens // max(lengths))):
            planned = [rows[i] for i in chosen]
            batch = [row for row in planned if not row.job.abandoned()]
            try:
                if batch:
                    self._run_batch(batch)
            except Exception as error:  # these requests get the error (a 500); the server goes on
                for job in {row.job for row in batch}:
                    job.failed = True
                    _notify(job, error=error)
            finally:
                with self._cond:
                    self._queued -= len(planned)
                    self._metrics.set("queue_inputs", self._queued)

    def _run_batch(self, batch: list[_Row]) -> None:
        started = time.perf_counter()
        vectors = self._embed([row.ids for row in batch])
        self._record(batch, time.perf_counter() - started)
        for row, vector in zip(batch, vectors):
            job = row.job
            job.vectors[row.index] = vector
            job.remaining -= 1
            if job.remaining == 0 and not job.abandoned():
                _notify(job, result=torch.stack(job.vectors))

    def _record(self, batch: list[_Row], seconds: float) -> None:
        self._metrics.inc("forward_passes_total")
        self._metrics.observe("batch_inputs", len(batch))
        self._metrics.observe("batch_tokens", len(batch) * max(row.length for row in batch))
        self._metrics.observe("forward_seconds", seconds)
