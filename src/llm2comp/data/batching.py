"""A seeded batch sampler for contrastive training that keeps duplicates out of a batch.

In an in-batch-negatives loss every other sample's documents are negatives for a query. If two
rows share a query or a positive (the same source pair seen twice), or one row's hard negative is
another row's positive, the loss pushes a query away from its own positive: a false negative.
`ContrastiveBatchSampler` forms *global* batches in which that never happens:

- each sample has `keys` (its own texts: query, positive; a SimCSE sentence) and optional
  `soft_keys` (texts it only shows as negatives). Two samples clash if their keys meet, or one's
  soft keys meet the other's keys; two samples that merely share a hard negative do not clash;
- per epoch, indices are shuffled with ``random.Random(seed, epoch)`` and placed greedily into
  the first open batch with no clash; a full batch is emitted. The plan depends only on
  (data keys, batch size, seed, epoch), so every process computes the same plan;
- with `groups` (e.g. the E5 dataset of each row) a batch holds one group only, as E5 and
  LLM2Vec train; the batches of all groups are then shuffled together;
- with `drop_last` (default) batches left incomplete at the end of an epoch are dropped (their
  samples come back, shuffled differently, next epoch): every global batch has `batch_size` rows;
- resume: ``set_epoch(epoch, start_batch=n)`` skips the first n global batches of that epoch, so a
  resumed run sees exactly the batches an uninterrupted one would;
- sharding: with ``num_replicas=R``, rank r yields rows ``[r*B/R, (r+1)*B/R)`` of every global
  batch B; the ranks together hold the global batch (the loss gathers it back).

Use it as a DataLoader ``batch_sampler`` (it yields lists of indices). Do not let another layer
re-shard it (with Accelerate, build the DataLoader with this sampler and skip
``accelerator.prepare`` for it, or give every rank its own rank here).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Hashable, Iterable, Iterator, Sequence

from ..errors import InvalidSetting


def text_key(text: str) -> int:
    """A stable 64-bit key of a text, white space collapsed; the same in every process (unlike hash())."""
    digest = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def pair_keys(examples: Sequence) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """`keys` (query, positive) and `soft_keys` (hard negatives) for a list of `PairExample`."""
    keys = [(text_key(e.query), text_key(e.positive)) for e in examples]
    soft = [tuple(text_key(n) for n in e.negatives) for e in examples]
    return keys, soft


class _OpenBatch:
    __slots__ = ("indices", "keys", "soft")

    def __init__(self):
        self.indices: list[int] = []
        self.keys: set = set()
        self.soft: set = set()

    def accepts(self, keys: frozenset, soft: frozenset) -> bool:
        return keys.isdisjoint(self.keys) and keys.isdisjoint(self.soft) and soft.isdisjoint(self.keys)

    def add(self, index: int, keys: frozenset, soft: frozenset) -> None:
        self.indices.append(index)
        self.keys |= keys
        self.soft |= soft


class ContrastiveBatchSampler:
    """Yields this rank's part of each clash-free global batch; see the module docstring."""

    def __init__(self, keys: Sequence[Iterable[Hashable]], batch_size: int, *,
                 soft_keys: Sequence[Iterable[Hashable]] | None = None, groups: Sequence[Hashable] | None = None,
                 seed: int = 0, drop_last: bool = True, num_replicas: int = 1, rank: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need 0 <= rank < num_replicas, got rank={rank}, num_replicas={num_replicas}")
        if batch_size % num_replicas:
            raise ValueError(f"the global batch_size ({batch_size}) must be divisible by num_replicas "
                             f"({num_replicas}) so that every rank gets the same number of rows")
        for name, values in (("soft_keys", soft_keys), ("groups", groups)):
            if values is not None and len(values) != len(keys):
                raise ValueError(f"{name} has {len(values)} entries for {len(keys)} samples")
        self.keys = [frozenset(k) for k in keys]
        self.soft_keys = [frozenset(k) for k in soft_keys] if soft_keys is not None else None
        self.groups = list(groups) if groups is not None else None
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.position = 0, 0
        self._plans: dict[int, list[list[int]]] = {}
        self.dropped = 0  # samples left out of the current epoch's plan (incomplete batches)

    def __len__(self) -> int:
        """Global batches in the current epoch (each rank yields one part of each)."""
        return len(self.plan(self.epoch))

    def _fill(self, order: Iterable[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Greedy first-fit: return (full batches in completion order, incomplete batches)."""
        empty = frozenset()
        full: list[list[int]] = []
        open_batches: list[_OpenBatch] = []
        for index in order:
            keys = self.keys[index]
            soft = self.soft_keys[index] if self.soft_keys is not None else empty
            target = next((b for b in open_batches if b.accepts(keys, soft)), None)
            if target is None:
                target = _OpenBatch()
                open_batches.append(target)
            target.add(index, keys, soft)
            if len(target.indices) == self.batch_size:
                open_batches.remove(target)
                full.append(target.indices)
        return full, [b.indices for b in open_batches]

    def plan(self, epoch: int) -> list[list[int]]:
        """The global batches of `epoch` (computed once per epoch and cached)."""
        if epoch not in self._plans:
            rng = random.Random(f"{self.seed}:{epoch}")  # str seeds hash with sha512: same in every process
            order = list(range(len(self.keys)))
            rng.shuffle(order)
            if self.groups is None:
                full, partial = self._fill(order)
            else:
                by_group: dict = {}
                for index in order:
                    by_group.setdefault(self.groups[index], []).append(index)
                full, partial = [], []
                for group in sorted(by_group, key=str):  # sorted: independent of dict/hash order
                    group_full, group_partial = self._fill(by_group[group])
                    full += group_full
                    partial += group_partial
                rng.shuffle(full)
            self.dropped = sum(map(len, partial)) if self.drop_last else 0
            if not full and (self.drop_last or not partial):
                raise InvalidSetting(
                    f"no full batch of {self.batch_size} clash-free samples can be formed from {len(self.keys)} "
                    f"samples{' within one group' if self.groups is not None else ''}; lower the batch size, "
                    "add data, or pass drop_last=False")
            self._plans = {epoch: full if self.drop_last else full + partial}
        return self._plans[epoch]

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Start `epoch` at global batch `start_batch` (the number of batches already trained on)."""
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch, self.position = epoch, start_batch

    def local_part(self, batch: list[int]) -> list[int]:
        """This rank's rows of a global batch."""
        if self.num_replicas == 1:
            return batch
        per_rank = -(-len(batch) // self.num_replicas)  # equal parts unless an incomplete batch is kept
        return batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.plan(self.epoch)
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield self.local_part(batch)

    def state_dict(self) -> dict:
        """Where the sampler stands. `position` counts batches *handed out*; a DataLoader that prefetches
        runs ahead of training, so checkpoints should rather store the number of batches trained on
        and pass it to `set_epoch`."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size,
                "num_samples": len(self.keys)}

    def load_state_dict(self, state: dict) -> None:
        for name in ("seed", "batch_size", "num_samples"):
            ours = len(self.keys) if name == "num_samples" else getattr(self, name)
            if state.get(name, ours) != ours:
                raise InvalidSetting(f"cannot resume: the checkpoint's sampler had {name}={state[name]}, this run has "
                                 f"{ours}; resume with the same data and settings")
        self.set_epoch(state["epoch"], state["position"])
