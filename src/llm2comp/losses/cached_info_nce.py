"""GradCache-style InfoNCE: large contrastive batches at the memory cost of one small chunk.

Same objective, value and gradients as `InfoNCE` (losses/info_nce.py; see `info_nce` for the
formula), computed in three steps (Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size
under Memory Limited Setup", the GradCache method):

1. embed every text without an autograd graph, `chunk_size` texts per forward: E (n_all, d);
2. treat E as a leaf, compute the loss L(E) on all of it (gathered over processes as usual) and
   its gradient G = dL/dE, (n_all, d) -- cheap, the model is not involved;
3. re-embed each chunk c *with* graph, E_c, and backpropagate the cached gradient:
   `torch.autograd.backward(E_c, s * G_c)`, i.e. the chain rule d(sL)/dtheta = sum_c s G_c . dE_c/dtheta.

`forward(batch)` runs steps 1 and 2 and returns L as a leaf tensor that requires grad; step 3 runs
in a hook on that tensor, when the caller backpropagates it. s is the gradient the hook receives,
d(what the caller backpropagates)/dL: 1 for `loss.backward()`, 1/grad_accum for the training
loop's `accelerator.backward(loss * (1/grad_accum))`, times the fp16 GradScaler's factor when
accelerate scales. So GradCache obeys the same contract as every other objective (the loop
neither knows nor cares that the loss is cached). (sentence-transformers' CachedMultiple-
NegativesRankingLoss computes its third step from such a hook, too.)

Peak memory holds one chunk's activations instead of the whole batch's; the price is one extra
forward pass (step 1), less the chunks whose step-1 graph is kept (`keep_graphs`, default 1, which
costs no memory: that graph is used and freed before any re-embedding). With a LoRA on frozen
weights the backward costs about one forward, so the extra forward is ~+50% time per step.

Step 3 must reproduce step 1 exactly:
- dropout (SimCSE's two views *are* two dropout draws): the random-generator state (CPU, and the
  model's accelerator) is saved before each chunk's first forward and restored around its
  re-embedding, then the caller's state is put back, so the next step draws fresh masks as if
  every chunk had been run once;
- mixed precision: the torch autocast state (enabled, dtype, cache) at `forward` time is captured
  and re-entered around the re-embeddings, which run inside the backward, where the caller's
  `autocast` block may be over (or, on a GPU, in the autograd engine's own thread). The backward
  passes themselves run as a plain loss's would: step 2 with autocast off (autocast would run the
  logits' backward matmuls in bf16/fp16), each chunk's backward in the caller's backward.

DDP. torch's DistributedDataParallel arms its gradient reducer in each forward *of the wrapper*
(when grad is enabled and gradient sync is on), and expects exactly one backward per armed forward:
several backwards inside one armed forward mark a parameter ready twice ("mark a variable ready
only once") or, as measured with the objective DDP-wrapped and its chunks forwarded through the
bare encoder, leave the gradients silently unsynced (each rank trains on its own half; the
2-process test of tests/test_trainer_distributed.py catches it). So the chunks are forwarded through
the DDP wrapper itself, never through the bare encoder behind a wrapped objective: the training
loop prepares the *encoder* for the contrastive objectives (training/loop.py) and hands the wrapper
to `forward_through`. Each re-embedding is then its own forward of the wrapper, and every chunk but
the last is forwarded and backpropagated under the wrapper's `no_sync()`: the gradients of all
chunks accumulate locally, and the last chunk's forward arms the reducer, whose backward
all-reduces the accumulated sum once per step (under the loop's own `no_sync` on a
gradient-accumulation micro-step, not even then). Step 1 runs without grad, so it arms nothing;
a kept chunk is forwarded under `no_sync()` too. The loop calls `accelerator.backward` inside its
`no_sync` block, so the hook's forwards see the loop's sync decision.
FSDP2 (`fully_shard`) modules have no `no_sync`: each chunk's backward reduce-scatters into the
sharded gradients, which accumulate; the result is the same (tests/test_fsdp.py).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from ..errors import InvalidSetting, LLM2CompError
from .info_nce import DEFAULT_TEMPERATURE, InfoNCE, batch_groups, embed, plan_chunks


class BackwardTwice(LLM2CompError, RuntimeError):
    """A GradCache loss was backpropagated a second time: its chunks' graphs and cache are spent."""


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


@dataclass(frozen=True)
class AutocastState:
    """torch autocast's state for one device type: on or off, its dtype, its weight-cast cache."""

    device_type: str
    enabled: bool
    dtype: torch.dtype
    cache_enabled: bool

    @classmethod
    def capture(cls, device: torch.device) -> AutocastState:
        device_type = torch.device(device).type
        return cls(device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type),
                   torch.is_autocast_cache_enabled())

    def enter(self):
        """A context with exactly this state (it switches autocast off when it was off)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled,
                              cache_enabled=self.cache_enabled)


@dataclass
class _Chunk:
    group: int  # 0 queries, 1 positives, 2 negatives
    rows: list[int]  # row indices within the group
    batch: object  # the EncoderBatch of these rows
    random_state: RandomState | None = None  # for re-embedding; None for a kept chunk
    kept: torch.Tensor | None = None  # embeddings with their graph, for a kept chunk


@dataclass
class _Cache:
    """What one forward leaves for its backward hook (step 3)."""

    chunks: list[_Chunk]
    gradients: list[torch.Tensor]  # G per group, (n_g, d)
    autocast: AutocastState
    spent: bool = False


class CachedInfoNCE(InfoNCE):
    """InfoNCE with a gradient cache: memory of `chunk_size` texts, gradients of the full batch.

    `forward(batch)` -> L (steps 1-2); backpropagating L runs step 3 (module docstring).
    batch: (queries, positives[, negatives]) token-id lists, as for `InfoNCE`.
    encoder: the `LLM2Comp` trained; `forward_through(wrapper)` embeds through its DDP wrapper.
    temperature: tau of `info_nce` (0.05, scale 20). chunk_size: texts per forward pass.
    keep_graphs: the last `keep_graphs` chunks of step 1 run *with* graph and are not re-embedded.
        1 (default) is free: that graph is backpropagated and freed before any re-embedding, so
        the peak stays one chunk, and one forward is saved. Each further chunk trades one chunk of
        activation memory for one forward less; 0 is textbook GradCache.
    Without grad (`torch.no_grad()`, evaluation) the loss is computed from step 1 alone.
    matryoshka_dims: as for `InfoNCE`; the Matryoshka sum is step 2's loss on the cached embeddings.
    """

    def __init__(self, encoder, temperature: float = DEFAULT_TEMPERATURE, chunk_size: int = 8,
                 gather: bool = True, keep_graphs: int = 1, matryoshka_dims=()):
        if chunk_size is None or chunk_size < 1:
            raise InvalidSetting(f"chunk_size must be >= 1, got {chunk_size}")
        if keep_graphs < 0:
            raise InvalidSetting(f"keep_graphs must be >= 0, got {keep_graphs}")
        super().__init__(encoder, temperature=temperature, chunk_size=chunk_size, gather=gather,
                         matryoshka_dims=matryoshka_dims)
        self.keep_graphs = keep_graphs

    def replay(self, random_state: RandomState):
        """Context for a chunk's second forward: the same random draws as its first (dropout)."""
        return random_state.replay()

    def forward(self, batch) -> torch.Tensor:
        """Steps 1 and 2; returns L (scalar) whose backward runs step 3."""
        groups = batch_groups(batch)
        if not torch.is_grad_enabled():  # nothing to backpropagate: the loss of one no-grad pass
            embeddings = [embed(self.embedder, ids, self.chunk_size) for ids in groups]
            return self.loss_of(embeddings)
        autocast = AutocastState.capture(self.encoder.device)
        embeddings, chunks = self.embed_first_pass(groups)
        if len(embeddings) == 2:  # no hard negatives here; other processes may have some, and the
            embeddings.append(embeddings[0][:0])  # gradient of the gathered negatives must reach them
        leaves = [e.detach().requires_grad_(True) for e in embeddings]
        loss = self.loss_of(leaves)  # with `matryoshka_dims`: the sum over prefixes, on the cached leaves
        with torch.autocast(autocast.device_type, enabled=False):  # a backward: never under autocast
            gradients = torch.autograd.grad(loss, leaves)  # step 2: G per group, (n_g, d)
        loss = loss.detach().requires_grad_(True)  # a leaf: its backward is the hook below
        loss.register_hook(functools.partial(self._backward_hook, _Cache(chunks, list(gradients), autocast)))
        return loss

    def embed_first_pass(self, groups) -> tuple[list[torch.Tensor], list[_Chunk]]:
        """Step 1: embeddings (n_g, d) per group in input order (no graph), and the chunks."""
        encoder, model = self.encoder, self.embedder
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
                    chunk_embeddings = model(chunk.batch)  # (len(rows), d)
            else:
                with self._sync(last=False):  # not armed: its backward is one of several
                    chunk.kept = chunk_embeddings = model(chunk.batch)  # with graph
            if embeddings[chunk.group] is None:
                embeddings[chunk.group] = chunk_embeddings.new_empty(len(groups[chunk.group]),
                                                                     chunk_embeddings.shape[1])
            rows = torch.tensor(chunk.rows, device=chunk_embeddings.device)
            embeddings[chunk.group][rows] = chunk_embeddings.detach()
        return embeddings, chunks

    def _backward_hook(self, cache: _Cache, grad_output: torch.Tensor) -> None:
        """Step 3, with s = `grad_output` (d of what is backpropagated / dL)."""
        if cache.spent:
            raise BackwardTwice("this GradCache loss was already backpropagated; compute it again for another "
                                "backward")
        cache.spent = True
        with torch.enable_grad():
            self.backpropagate_chunks(cache, grad_output)
        cache.chunks, cache.gradients = [], []

    def backpropagate_chunks(self, cache: _Cache, grad_output: torch.Tensor) -> None:
        """Kept chunks first (frees their graphs), then re-embed the others one at a time; each gets
        s * G_c. Every backward but the last runs under the DDP wrapper's `no_sync()`."""
        chunks = cache.chunks
        order = [c for c in chunks if c.kept is not None] + [c for c in chunks if c.kept is None]
        for number, chunk in enumerate(order):
            cached = cache.gradients[chunk.group]
            grad = cached[torch.tensor(chunk.rows, device=cached.device)] * grad_output.to(cached.device)
            with self._sync(last=number == len(order) - 1):
                if chunk.kept is not None:
                    chunk_embeddings, chunk.kept = chunk.kept, None
                else:
                    with cache.autocast.enter(), self.replay(chunk.random_state):  # step 1's precision, masks
                        chunk_embeddings = self.embedder(chunk.batch)  # (len(rows), d), with graph
                torch.autograd.backward(chunk_embeddings, grad)  # in the caller's backward's autocast state
            del chunk_embeddings  # free this chunk's graph before the next one is built

    def _sync(self, last: bool):
        no_sync = getattr(self.embedder, "no_sync", None)  # DDP: all-reduce only on the last backward
        return contextlib.nullcontext() if last or no_sync is None else no_sync()
