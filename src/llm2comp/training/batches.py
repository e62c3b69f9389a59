"""A resumable, shardable stream of micro-batches over a list of examples.

Epoch e visits the examples in a permutation seeded by (seed, e). A global batch holds
`batch_size * world_size` examples; process r takes its contiguous slice of it, so the union of
all processes' micro-batches is exactly the single-process global batch. The position (epoch,
batch index) is saved in checkpoints, and a resumed stream yields what the interrupted one would
have yielded next.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidSetting


class BatchStream:
    def __init__(self, items: Sequence, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise InvalidSetting(f"batch_size must be >= 1, got {batch_size}")
        self.global_batch = batch_size * world_size
        if len(items) < self.global_batch:
            raise InvalidSetting(f"{len(items)} training examples cannot fill one global batch of "
                             f"{self.global_batch} ({batch_size} per process x {world_size} processes)")
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank = rank
        self.epoch, self.index = 0, 0
        self._order = self._permutation(0)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.items) // self.global_batch  # the incomplete tail batch is dropped

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.items))

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)

    def next_batch(self):
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        start = self.index * self.global_batch + self.rank * self.batch_size
        chosen = self._order[start:start + self.batch_size]
        self.index += 1
        return [self.items[i] for i in chosen]
