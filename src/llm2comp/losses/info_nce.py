"""InfoNCE with in-batch and hard negatives over the global batch: the stage-2/3 contrastive loss.

Objective (LLM2Comp paper, stages 2 and 3; the same loss as SimCSE, Gao et al. 2021, and E5 /
sentence-transformers' MultipleNegativesRankingLoss with scale = 1 / temperature):

    candidates  C = [p_1 .. p_N, h_1 .. h_M]       all positives, then all hard negatives of the
                                                   *global* batch (gathered over processes)
    logits      s_ij = cos(q_i, c_j) / tau          tau = temperature = 0.05 (scale 20)
    loss        L = 1/N * sum_i -log( exp(s_{i,t(i)}) / sum_j exp(s_ij) ),   t(i) = index of p_i

Query i's own positive is its target; every other positive and every hard negative of the global
batch is a negative. SimCSE (stage 2) is the special case q_i, p_i = two dropout views of the same
sentence and no hard negatives.

Shapes: queries (n, d) and positives (n, d) row-aligned; negatives (m, d), any m (e.g. n * h for h
hard negatives per query, in any order; m may differ between processes, n may not).
Computed in float32 at least (float64 stays float64), with autocast switched off: under mixed
precision the matmul of the logits would otherwise silently run in bf16/fp16.

Several processes. Each process holds n = N / W queries (equal n on every rank). It gathers the
candidates with `all_gather_with_grad` and returns the mean cross-entropy of its *local* queries,
L_r = 1/n * sum_{i in r} CE_i, so that mean_r L_r = L. Gradients: the gather's backward sums over
ranks the gradient on each rank's rows, so rank r's parameters get G_r = sum_s dL_s/dtheta (through
its own embeddings); DDP then averages: 1/W * sum_r G_r = 1/W * d(sum_s L_s)/dtheta = 1/W * d(W L)
/dtheta = dL/dtheta -- exactly the single-process gradient on the global batch, with no extra scale
factor. (With a constant gather, cross-rank terms would be lost; mean-reducing is what cancels the
W that the gradient summation introduces.)

Objectives. `InfoNCE` (here), `SimCSE` (here) and `CachedInfoNCE` (losses/cached_info_nce.py) are
nn.Modules like every stage's objective: `loss = objective(batch)` returns L_r with its graph, and
the caller backpropagates whatever multiple of it it wants (the training loop:
`accelerator.backward(loss / grad_accum)`, through accelerate's fp16 GradScaler when there is one).
Each holds the encoder it trains as `encoder`; with `forward_through(wrapper)` (the training loop
calls it with the DDP wrapper that `accelerator.prepare(encoder)` returned) it embeds through the
wrapper instead, so that each embedding pass is a forward of the wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_gather_with_grad
from ..errors import InvalidSetting, InvalidType
from ..models.encoding import check_batch_size, plan_batches

DEFAULT_TEMPERATURE = 0.05


def check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise InvalidSetting(f"temperature must be > 0 (the paper uses 0.05), got {temperature}")
    return float(temperature)


def info_nce(
    queries: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    gather: bool = True,
) -> torch.Tensor:
    """Mean InfoNCE of the local queries against all gathered positives and hard negatives.

    queries, positives: (n, d), row i of `positives` is the positive of query i.
    negatives: (m, d) hard negatives, or None (in-batch negatives only).
    gather: collect candidates from all processes (a no-op without a process group).
    Returns a scalar: the mean over local queries (mean over the global batch after averaging ranks).
    """
    check_temperature(temperature)
    if queries.dim() != 2 or queries.shape != positives.shape:
        raise InvalidSetting(f"queries and positives must both be (n, d), got {tuple(queries.shape)} and "
                         f"{tuple(positives.shape)}")
    if negatives is not None and (negatives.dim() != 2 or negatives.shape[1] != queries.shape[1]):
        raise InvalidSetting(f"negatives must be (m, {queries.shape[1]}), got {tuple(negatives.shape)}")
    with torch.autocast(queries.device.type, enabled=False):  # autocast would run q @ c.T in bf16/fp16
        return _info_nce_fp32(queries, positives, negatives, temperature, gather)


def _info_nce_fp32(queries, positives, negatives, temperature: float, gather: bool) -> torch.Tensor:
    """`info_nce` with autocast off: logits in float32 at least, even inside `accelerator.autocast()`."""
    dtype = torch.promote_types(queries.dtype, torch.float32)  # bf16/fp16 logits / 0.05 lose too much
    q = F.normalize(queries.to(dtype), dim=-1)  # (n, d)
    p = F.normalize(positives.to(dtype), dim=-1)  # (n, d)
    if negatives is None:  # an empty block that, like the queries, takes part in the backward's collectives
        h = q.new_zeros(0, q.shape[1], requires_grad=torch.is_grad_enabled() and q.requires_grad)
    else:
        h = F.normalize(negatives.to(dtype), dim=-1)  # (m, d)
    offset = 0
    if gather:  # every rank gathers both, even with no negatives here: collectives must match
        p, offset = all_gather_with_grad(p, equal_sizes=True)  # (N, d), local rows at [offset, offset + n)
        h, _ = all_gather_with_grad(h)  # (M, d), M = sum of the ranks' m (may differ per rank)
    logits = q @ torch.cat([p, h]).T / temperature  # (n, N + M)
    targets = torch.arange(offset, offset + q.shape[0], device=q.device)
    return F.cross_entropy(logits, targets)  # mean over local queries


# ---------------------------------------------------------------------------- model level
TextsIds = list[list[int]]  # token ids per text, as returned by `LLM2Comp.tokenize`


def unwrap(model):
    """The LLM2Comp inside a DDP/FSDP wrapper (their public `.module`), or the model itself."""
    return getattr(model, "module", model)


def plan_chunks(texts_ids: TextsIds, chunk_size: int | None) -> list[list[int]]:
    """Row indices per forward pass: all rows at once (chunk_size None), or longest-first chunks of
    at most `chunk_size` rows, planned like `encode`'s batches (`encoding.plan_batches`).

    Sorting by length keeps padding (and wasted compute) small in mixed-length batches; embeddings
    do not depend on padding, so this changes no result.
    """
    if chunk_size is None or (isinstance(chunk_size, int) and chunk_size >= len(texts_ids)):
        return [list(range(len(texts_ids)))]
    return plan_batches([len(ids) for ids in texts_ids], check_batch_size(chunk_size, "chunk_size"),
                        max_texts_factor=1)


def check_groups(queries: TextsIds, positives: TextsIds, negatives: TextsIds | None = None) -> list[TextsIds]:
    """The non-empty text groups [queries, positives(, negatives)], after checking their sizes."""
    if not queries:
        raise InvalidSetting("empty batch: give at least one (query, positive) pair")
    if len(queries) != len(positives):
        raise InvalidSetting(f"{len(queries)} queries but {len(positives)} positives; they must be row-aligned")
    return [queries, positives] + ([negatives] if negatives else [])


def batch_groups(batch) -> list[TextsIds]:
    """A contrastive batch (queries, positives[, negatives]) as its non-empty text groups (checked)."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise InvalidType(f"a contrastive batch is (queries, positives) or (queries, positives, negatives), got "
                          f"{type(batch).__name__}" + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    return check_groups(*batch)


def embed(model, texts_ids: TextsIds, chunk_size: int | None = None) -> torch.Tensor:
    """Pooled embeddings (n, d) in input order, forwarding `chunk_size` texts at a time."""
    encoder = unwrap(model)
    parts, index = [], []
    for rows in plan_chunks(texts_ids, chunk_size):
        parts.append(model(encoder.collate([texts_ids[i] for i in rows])))  # (len(rows), d)
        index.extend(rows)
    inverse = torch.empty(len(index), dtype=torch.long)
    inverse[torch.tensor(index)] = torch.arange(len(index))
    return torch.cat(parts)[inverse.to(parts[0].device)]


class InfoNCE(nn.Module):
    """Model-level InfoNCE: `forward(batch)` embeds the batch's texts and returns `info_nce` of them.

    batch: (queries, positives) or (queries, positives, negatives), token-id lists from
        `LLM2Comp.tokenize`; negatives may be empty (here; other processes may have some).
    encoder: the `LLM2Comp` whose parameters are trained (registered: they are this module's).
    chunk_size: forward that many texts at a time *with* graph (no memory saving; it draws the
        same dropout masks as `CachedInfoNCE` with the same chunk size, which the tests use).
    gather: candidates from every process (module docstring); a no-op without a process group.
    matryoshka_dims: prefix sizes also trained (losses/matryoshka.py: L = sum over dims and the full
        size of InfoNCE on the first d components); empty (default): plain InfoNCE.

    The whole batch's graph is kept until the backward, so memory grows with the batch; see
    `CachedInfoNCE` (losses/cached_info_nce.py) for the same loss and gradients at constant memory.

    Several processes: the training loop prepares (DDP-wraps) `encoder`, not this module, and hands
    the wrapper back with `forward_through`; the texts are then embedded through it, each text group
    one forward of the wrapper, all of them before the step's one backward (what DDP expects).
    """

    def __init__(self, encoder, temperature: float = DEFAULT_TEMPERATURE, chunk_size: int | None = None,
                 gather: bool = True, matryoshka_dims=()):
        from .matryoshka import check_matryoshka_dims

        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise InvalidSetting(f"chunk_size must be >= 1 or None, got {chunk_size}")
        self.encoder = unwrap(encoder)
        self._embedder = [encoder]  # a list: a wrapper is not registered (parameter names stay the encoder's)
        self.temperature = check_temperature(temperature)
        self.chunk_size = chunk_size
        self.gather = gather
        self.matryoshka_dims = check_matryoshka_dims(matryoshka_dims, getattr(self.encoder, "hidden_size", None))

    @property
    def embedder(self):
        """What embeds a batch of texts: the encoder, or the wrapper given to `forward_through`."""
        return self._embedder[0]

    def forward_through(self, wrapper) -> None:
        """Embed through `wrapper` from now on: the DDP / FSDP / DeepSpeed wrapper of `self.encoder`
        that `accelerator.prepare` returned (the training loop calls this)."""
        if unwrap(wrapper) is not self.encoder:
            raise InvalidSetting(f"forward_through: {type(wrapper).__name__} does not wrap this objective's encoder")
        self._embedder = [wrapper]

    def forward(self, batch) -> torch.Tensor:
        """The mean InfoNCE of this process's queries (scalar, with graph)."""
        groups = batch_groups(batch)
        embeddings = [embed(self.embedder, ids, self.chunk_size) for ids in groups]  # (n_g, d) each
        return self.loss_of(embeddings)

    def loss_of(self, embeddings: list[torch.Tensor]) -> torch.Tensor:
        """The loss of embedded groups [queries, positives(, negatives)]: `info_nce`, or with
        `matryoshka_dims` the Matryoshka sum over prefixes (losses/matryoshka.py)."""
        if not self.matryoshka_dims:
            return info_nce(*embeddings, temperature=self.temperature, gather=self.gather)
        from .matryoshka import matryoshka_info_nce

        return matryoshka_info_nce(*embeddings, dims=self.matryoshka_dims, temperature=self.temperature,
                                   gather=self.gather)


class SimCSE(nn.Module):
    """Unsupervised SimCSE (stage 2): every sentence is encoded twice, with independent dropout.

    The two forward passes of a sentence draw different dropout masks (attention and LoRA dropout),
    which makes the two views; view 2 of sentence i is the positive of view 1, the other sentences'
    views are the negatives: L = `info_nce(view1, view2)`. Wraps `InfoNCE` or `CachedInfoNCE`;
    `forward(sentences)` (token-id lists) returns L, and `encoder` / `forward_through` are the
    wrapped loss's.
    """

    def __init__(self, loss: InfoNCE):
        super().__init__()
        self.loss = loss

    @property
    def encoder(self):
        return self.loss.encoder

    def forward_through(self, wrapper) -> None:
        self.loss.forward_through(wrapper)

    def forward(self, sentences: TextsIds) -> torch.Tensor:
        """Loss of view 1 against view 2 of every sentence (scalar, with graph)."""
        if not self.encoder.training:
            raise RuntimeError("SimCSE needs dropout to make its two views: call model.train() first")
        return self.loss((sentences, sentences))
