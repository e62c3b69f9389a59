"""MaxSim: scoring texts that carry several vectors (one per window, `long_texts="multivector"`).

For a query with vectors q_1..q_A and a document with vectors d_1..d_B (cosine similarity):

    s(Q, D) = 1/A * sum_a max_b cos(q_a, d_b)

ColBERT's late interaction over windows instead of tokens, averaged instead of summed over the
query's vectors so that scores stay in [-1, 1] and compare with plain cosine scores (a query's ranking
is the same either way). A single-vector text is a text with one window: a plain query against
multivector documents scores `max_b cos(q, d_b)`, the best-matching window; two single vectors score
their cosine. Not symmetric when both sides have several vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def is_multivector(embeddings) -> bool:
    """A list/tuple of 2-D arrays or tensors, one per text (what `encode(long_texts="multivector")` returns)."""
    return (isinstance(embeddings, Sequence) and not isinstance(embeddings, str) and len(embeddings) > 0
            and all(getattr(item, "ndim", None) == 2 for item in embeddings))


def as_windows(embeddings) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(all vectors (W, d) float32, owner (W,), n texts): a multivector list, or dense (n, d) / (d,)
    with one window per text."""
    if is_multivector(embeddings):
        parts = [torch.as_tensor(part).float() for part in embeddings]
        for index, part in enumerate(parts):
            if part.shape[0] == 0:
                raise ValueError(f"embeddings[{index}] has no vectors; every text needs at least one")
        counts = torch.tensor([part.shape[0] for part in parts])
        return torch.cat(parts), torch.repeat_interleave(torch.arange(len(parts)), counts), len(parts)
    dense = torch.as_tensor(embeddings).float()
    dense = dense.reshape(-1, dense.shape[-1])
    return dense, torch.arange(dense.shape[0]), dense.shape[0]


def maxsim(queries, documents) -> torch.Tensor:
    """MaxSim scores (n_queries, n_documents) (module docstring); either side multivector or dense."""
    query_vectors, query_owner, n_queries = as_windows(queries)
    doc_vectors, doc_owner, n_docs = as_windows(documents)
    if query_vectors.shape[1] != doc_vectors.shape[1]:
        raise ValueError(f"embedding sizes differ: {query_vectors.shape[1]} vs {doc_vectors.shape[1]}")
    cosine = (torch.nn.functional.normalize(query_vectors, dim=-1)
              @ torch.nn.functional.normalize(doc_vectors, dim=-1).T)  # (Wq, Wd)
    best = torch.full((len(query_vectors), n_docs), -torch.inf)  # (Wq, n_docs): max over each doc's windows
    best.scatter_reduce_(1, doc_owner.expand(len(query_vectors), -1), cosine, reduce="amax")
    sums = torch.zeros(n_queries, n_docs).index_add_(0, query_owner, best)
    return sums / torch.bincount(query_owner, minlength=n_queries)[:, None]
