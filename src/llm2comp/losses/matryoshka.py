"""Matryoshka InfoNCE: the contrastive loss on nested prefixes of the embedding, so that the first
d components are an embedding of their own (Kusupati et al. 2022, "Matryoshka Representation
Learning"; the same sum as sentence-transformers' MatryoshkaLoss with equal weights).

For sizes D = dims ∪ {d_full} (dims strictly increasing, each in [1, d_full)):

    x[:d]       the first d components of an embedding x (queries, positives, hard negatives alike)
    L_d         = info_nce(q[:, :d], p[:, :d], h[:, :d])   each prefix re-normalised inside info_nce,
                                                           so s_ij = cos(q_i[:d], c_j[:d]) / tau
    L           = sum_{d in D} L_d                         (weights 1, not averaged)

dims = [] gives D = {d_full} and L = info_nce(q, p, h): today's loss exactly (the same single call).
The gradient reaching a component k is sum over the d in D with d > k of dL_d/dx_k, so the leading
components get the gradient of every size: they carry the most meaning.

GradCache (`CachedInfoNCE`): L is computed in its step 2 on the cached leaf embeddings E, and
dL/dE = sum_d dL_d/dE is what step 3 backpropagates; re-embedding costs nothing extra, only the
cheap loss on E is evaluated |D| times. Several processes: each L_d gathers its candidates like
`info_nce`, the same |D| collectives on every rank (D comes from the config, the same everywhere).

`LLM2CompConfig.matryoshka_dims` records the sizes a model was trained for; `encode(truncate_dim=)`,
`to_sentence_transformer(truncate_dim=)` and the server's `dimensions` warn for any other cut.
"""

from __future__ import annotations

import torch

from ..errors import InvalidSetting
from .info_nce import DEFAULT_TEMPERATURE, info_nce


def check_matryoshka_dims(dims, hidden_size: int | None = None, where: str = "matryoshka_dims") -> list[int]:
    """`dims` as a list of whole numbers > 0, strictly increasing, each below `hidden_size` (when
    known: the full size is always trained, so it is not listed); `InvalidSetting` naming `where`."""
    if dims is None:
        return []
    if not isinstance(dims, (list, tuple)):
        raise InvalidSetting(f"{where} must be a list of whole numbers, got {dims!r}")
    dims = list(dims)
    for index, d in enumerate(dims):
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise InvalidSetting(f"{where}[{index}] must be a whole number > 0, got {d!r}")
        if index and d <= dims[index - 1]:
            raise InvalidSetting(f"{where} must be strictly increasing, got {dims} ({where}[{index}] = {d} "
                                 f"after {dims[index - 1]})")
    if hidden_size is not None and dims and dims[-1] >= hidden_size:
        raise InvalidSetting(f"{where} must all be smaller than the model's hidden size {hidden_size} (the full "
                             f"size is always trained), got {dims}")
    return dims


def matryoshka_info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                        *, dims=(), temperature: float = DEFAULT_TEMPERATURE, gather: bool = True) -> torch.Tensor:
    """sum over d in dims ∪ {full} of `info_nce` on the first d components (module docstring).

    dims empty: exactly `info_nce(queries, positives, negatives)`. Shapes as for `info_nce`."""
    dims = check_matryoshka_dims(dims, queries.shape[-1] if queries.dim() == 2 else None)
    loss = info_nce(queries, positives, negatives, temperature=temperature, gather=gather)
    for d in dims:
        loss = loss + info_nce(queries[:, :d], positives[:, :d], None if negatives is None else negatives[:, :d],
                               temperature=temperature, gather=gather)
    return loss
