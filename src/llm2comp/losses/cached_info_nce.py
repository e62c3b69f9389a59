"""GradCache-style InfoNCE: large contrastive batches at the memory cost of one small chunk.

Same objective, value and gradients as `InfoNCE` (losses/info_nce.py; see `info_nce` for the
formula), computed in three steps (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup", the GradCache method):

1. embed every text without an autograd graph, `chunk_size` texts per forward: E (n_all, d);
2. treat E as a leaf, compute the loss L(E) on all of it (gathered over processes as usual) and
   its gradient G = dL/dE, (n_all, d) -- cheap, the model is not involved;
3. re-embed each chunk c *with* graph, E_c, and backpropagate the cached gradient:
   `torch.autograd.backward(E_c, G_c)`, i.e. the chain rule dL/dtheta = sum_c G_c . dE_c/dtheta.

Peak memory holds one chunk's activations instead of the whole batch's; the price is one extra
forward pass (step 1), less the chunks whose step-1 graph is kept (`keep_graphs`, default 1, which
costs no memory: that graph is used and freed before any re-embedding). With a LoRA on frozen
weights the backward costs about one forward, so the extra forward is ~+50% time per step.

Step 3 must reproduce step 1 exactly, dropout included (SimCSE's two views *are* two dropout
draws): the random-generator state (CPU, and the model's accelerator) is saved before each chunk's
first forward and restored around its re-embedding, then the caller's state is put back, so the
next step draws fresh masks as if every chunk had been run once.

With DDP (HF Accelerate), the backward of every chunk but the last runs under the wrapper's
`no_sync()`, so gradients are all-reduced once per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .info_nce import (
    DEFAULT_TEMPERATURE,
    TextsIds,
    check_groups,
    check_temperature,
    info_nce,
    plan_chunks,
    unwrap,
)


@dataclass
class RandomState:
    """The CPU generator state and, for an accelerator device, that device's generator state."""

    cpu: torch.Tensor
    device: torch.device
    accelerator: torch.Tensor | None = None

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        device = torch.device(device)
        accelerator = None
        if device.type != "cpu":
            accelerator = torch.get_device_module(device.type).get_rng_state(device)
        return cls(torch.get_rng_state(), device, accelerator)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.accelerator is not None:
            torch.get_device_module(self.device.type).set_rng_state(self.accelerator, self.device)

    @contextlib.contextmanager
    def replay(self):
        """Run the block with this state's random numbers; the caller's state is restored after."""
        current = RandomState.capture(self.device)
        self.restore()
        try:
            yield
        finally:
            current.restore()


@dataclass
class _Chunk:
    group: int  # 0 queries, 1 positives, 2 negatives
    rows: list[int]  # row indices within the group
    batch: object  # the EncoderBatch of these rows
    random_state: RandomState | None = None  # for re-embedding; None for a kept chunk
    kept: torch.Tensor | None = None  # embeddings with their graph, for a kept chunk


class CachedInfoNCE:
    """InfoNCE with a gradient cache: memory of `chunk_size` texts, gradients of the full batch.

    model: an `LLM2Comp` (or its DDP wrapper); texts are token-id lists from `model.tokenize`.
    temperature: tau of `info_nce` (0.05, scale 20). chunk_size: texts per forward pass.
    keep_graphs: the last `keep_graphs` chunks of step 1 run *with* graph and are not re-embedded.
        1 (default) is free: that graph is backpropagated and freed before any re-embedding, so
        the peak stays one chunk, and one forward is saved. Each further chunk trades one chunk of
        activation memory for one forward less; 0 is textbook GradCache.
    backward_fn: backpropagates a scalar (e.g. `accelerator.backward`); given the surrogate
        sum(E_c * G_c), whose gradient is the cached one. Default: `torch.autograd.backward(E_c, G_c)`.
    Call `backward(queries, positives, negatives)` once per step: it fills the parameters' `.grad`
    and returns the detached loss of this process's queries.
    """

    def __init__(self, model, temperature: float = DEFAULT_TEMPERATURE, chunk_size: int = 8,
                 backward_fn=None, gather: bool = True, keep_graphs: int = 1):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if keep_graphs < 0:
            raise ValueError(f"keep_graphs must be >= 0, got {keep_graphs}")
        self.model = model
        self.temperature = check_temperature(temperature)
        self.chunk_size = chunk_size
        self.backward_fn = backward_fn
        self.gather = gather
        self.keep_graphs = keep_graphs

    def replay(self, random_state: RandomState):
        """Context for a chunk's second forward: the same random draws as its first (dropout)."""
        return random_state.replay()

    def embed_first_pass(self, groups: list[TextsIds]) -> tuple[list[torch.Tensor], list[_Chunk]]:
        """Step 1: embeddings (n_g, d) per group in input order (no graph), and the chunks."""
        encoder = unwrap(self.model)
        chunks = [_Chunk(group, rows, encoder.collate([texts_ids[i] for i in rows]))
                  for group, texts_ids in enumerate(groups)
                  for rows in plan_chunks(texts_ids, self.chunk_size)]
        # at least one chunk is re-embedded, so that the last backward (the DDP sync) has its forward
        first_kept = len(chunks) - min(self.keep_graphs, len(chunks) - 1)
        embeddings = [None] * len(groups)
        for number, chunk in enumerate(chunks):
            if number < first_kept:
                chunk.random_state = RandomState.capture(encoder.device)
                with torch.no_grad():
                    chunk_embeddings = self.model(chunk.batch)  # (len(rows), d)
            else:
                with self._sync(last=False):
                    chunk.kept = chunk_embeddings = self.model(chunk.batch)  # with graph
            if embeddings[chunk.group] is None:
                embeddings[chunk.group] = chunk_embeddings.new_empty(len(groups[chunk.group]),
                                                                     chunk_embeddings.shape[1])
            rows = torch.tensor(chunk.rows, device=chunk_embeddings.device)
            embeddings[chunk.group][rows] = chunk_embeddings.detach()
        return embeddings, chunks

    def backward(self, queries: TextsIds, positives: TextsIds,
                 negatives: TextsIds | None = None) -> torch.Tensor:
        """Steps 1-3: fill the parameters' `.grad` with dL/dtheta; returns the detached loss."""
        groups = check_groups(queries, positives, negatives)
        embeddings, chunks = self.embed_first_pass(groups)
        if len(embeddings) == 2:  # no hard negatives here; other processes may have some, and the
            embeddings.append(embeddings[0][:0])  # gradient of the gathered negatives must reach them
        leaves = [e.detach().requires_grad_(True) for e in embeddings]
        with torch.enable_grad():
            loss = info_nce(*leaves, temperature=self.temperature, gather=self.gather)
            cached = torch.autograd.grad(loss, leaves)  # step 2: G per group, (n_g, d)
        # step 3: kept chunks first (frees their graphs), then re-embed the others, one at a time
        order = [c for c in chunks if c.kept is not None] + [c for c in chunks if c.kept is None]
        for number, chunk in enumerate(order):
            grad = cached[chunk.group][torch.tensor(chunk.rows, device=cached[chunk.group].device)]
            with self._sync(last=number == len(order) - 1):
                if chunk.kept is not None:
                    chunk_embeddings, chunk.kept = chunk.kept, None
                else:
                    with self.replay(chunk.random_state):
                        chunk_embeddings = self.model(chunk.batch)  # (len(rows), d), with graph
                self._backpropagate(chunk_embeddings, grad)
            del chunk_embeddings  # free this chunk's graph before the next one is built
        return loss.detach()

    def _backpropagate(self, embeddings: torch.Tensor, grad: torch.Tensor) -> None:
        if self.backward_fn is None:
            torch.autograd.backward(embeddings, grad)
        else:
            self.backward_fn((embeddings * grad).sum())

    def _sync(self, last: bool):
        no_sync = getattr(self.model, "no_sync", None)  # DDP: all-reduce only on the last backward
        return contextlib.nullcontext() if last or no_sync is None else no_sync()
