"""MaxSim: scoring texts that carry several vectors (one per window, `long_texts="multivector"`).

For a query with vectors q_1..q_A and a document with vectors d_1..d_B (cosine similarity):

    s(Q, D) = 1/A * sum_a max_b cos(q_a, d_b)

ColBERT's late interaction over windows instead of tokens, averaged instead of summed over the
query's vectors so that scores stay in [-1, 1] and compare with plain cosine scores (a query's ranking
is the same either way). A single-vector text is a text with one window: a plain query against
multivector documents scores `max_b cos(q, d_b)`, the best-matching window; two single vectors score
their cosine. Not symmetric when both sides have several vectors.

Inputs are checked, not reshaped: a dense side is (n, d) or one (d,) vector, a multivector side a
list of (windows, d) arrays; a 3-D array or embeddings of different widths are refused by name
(`InvalidSetting`, naming both shapes), never flattened or left to a matmul error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidSetting, InvalidType


def is_multivector(embeddings) -> bool:
    """A list/tuple of 2-D arrays or tensors, one per text (what `encode(long_texts="multivector")` returns)."""
    return (isinstance(embeddings, Sequence) and not isinstance(embeddings, str) and len(embeddings) > 0
            and all(getattr(item, "ndim", None) == 2 for item in embeddings))


def _shape(embeddings, vectors: torch.Tensor) -> str:
    """How an input looks, for messages: its shape, or its multivector arrays' shapes."""
    if is_multivector(embeddings):
        shapes = [tuple(part.shape) for part in embeddings]
        return f"{len(shapes)} multivector arrays of shapes {shapes[:3]}{' ...' if len(shapes) > 3 else ''}"
    return f"shape {tuple(getattr(embeddings, 'shape', vectors.shape))}"


def dense_embeddings(embeddings, name: str) -> torch.Tensor:
    """(n, d) float32 from dense embeddings: an (n, d) array/tensor, or one (d,) vector as (1, d)."""
    try:
        dense = torch.as_tensor(embeddings).float()
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidType(f"{name} must be embeddings: an (n, d) or (d,) array or tensor, or a list of "
                          f"(windows, d) arrays (multivector); got {type(embeddings).__name__} ({error})") from None
    if dense.ndim == 1:
        return dense.unsqueeze(0)
    if dense.ndim != 2:
        raise InvalidSetting(f"{name} has shape {tuple(dense.shape)}: expected (n, d) embeddings or one (d,) vector. "
                             "For multivector embeddings (MaxSim) pass a list with one (windows, d) array per text "
                             "(e.g. list(array)), as encode(long_texts='multivector') returns")
    return dense


def check_widths(a: torch.Tensor, b: torch.Tensor, a_input, b_input, names: tuple[str, str]) -> None:
    """Both sides must hold vectors of one width d (the same model); names both shapes if not."""
    if a.shape[1] != b.shape[1]:
        raise InvalidSetting(f"embedding sizes differ: {names[0]} has {_shape(a_input, a)} (d={a.shape[1]}), "
                             f"{names[1]} has {_shape(b_input, b)} (d={b.shape[1]}); compare embeddings of one model")


def as_windows(embeddings, name: str = "embeddings") -> tuple[torch.Tensor, torch.Tensor, int]:
    """(all vectors (W, d) float32, owner (W,), n texts): a multivector list, or dense (n, d) / (d,)
    with one window per text."""
    if is_multivector(embeddings):
        parts = [torch.as_tensor(part).float() for part in embeddings]
        for index, part in enumerate(parts):
            if part.shape[0] == 0:
                raise ValueError(f"embeddings[{index}] has no vectors; every text needs at least one")
            if part.shape[1] != parts[0].shape[1]:
                raise InvalidSetting(f"{name}[{index}] has shape {tuple(part.shape)}, but {name}[0] has "
                                     f"{tuple(parts[0].shape)}: every text's vectors need one width d")
        counts = torch.tensor([part.shape[0] for part in parts])
        return torch.cat(parts), torch.repeat_interleave(torch.arange(len(parts)), counts), len(parts)
    dense = dense_embeddings(embeddings, name)
    return dense, torch.arange(dense.shape[0]), dense.shape[0]


def maxsim(queries, documents, names: tuple[str, str] = ("queries", "documents")) -> torch.Tensor:
    """MaxSim scores (n_queries, n_documents) (module docstring); either side multivector or dense."""
    query_vectors, query_owner, n_queries = as_windows(queries, names[0])
    doc_vectors, doc_owner, n_docs = as_windows(documents, names[1])
    check_widths(query_vectors, doc_vectors, queries, documents, names)
    cosine = (torch.nn.functional.normalize(query_vectors, dim=-1)
              @ torch.nn.functional.normalize(doc_vectors, dim=-1).T)  # (Wq, Wd)
    best = torch.full((len(query_vectors), n_docs), -torch.inf)  # (Wq, n_docs): max over each doc's windows
    best.scatter_reduce_(1, doc_owner.expand(len(query_vectors), -1), cosine, reduce="amax")
    sums = torch.zeros(n_queries, n_docs).index_add_(0, query_owner, best)
    return sums / torch.bincount(query_owner, minlength=n_queries)[:, None]
