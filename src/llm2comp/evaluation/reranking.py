"""Reranking: order each query's own candidate list (positives + negatives) by cosine similarity.

Metrics (as MTEB's reranking tasks, which score each query's candidates only): the main score `map`
is the mean over queries of the average precision of the ranked candidates (mean of precision@r over
the ranks r of the positives; equals MTEB's `map_at_1000` for lists shorter than 1,000); also
`mrr_at_10` and `ndcg_at_10` (binary relevance). Queries get the task's instruction; candidates
never do. Queries without a positive or without a negative are dropped (nothing to rank). With
`EvalSettings.precision` int8 / binary the candidates are ranked as retrieval.py's `rank_quantized`
ranks a corpus (int8 calibrated on all the task's candidates).

File formats:
- JSONL (MTEB's reranking layout): one object per query with `query` (text), `positive` and
  `negative` (lists of texts);
- TSV/CSV/JSONL, one row per candidate: `query`, `document`, `label` (0/1), grouped by query text.
Column names are configurable (`query=`, `positive=`, `negative=`, `document=`, `label=`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.reading import format_suffix
from .base import Embedder, EvalDataError, Task, cosine_matrix, seeded_subset
from .formats import JSONL_SUFFIXES, as_binary_label, as_text, as_text_list, read_raw_table, select_columns
from .retrieval import int8_ranges, rank_quantized, ranking_metrics


@dataclass
class RerankItem:
    query: str
    positives: list[str]
    negatives: list[str]


def maxsim_scores(queries, documents) -> np.ndarray:
    from ..models.maxsim import maxsim

    return maxsim(queries, documents).double().numpy()


def quantized_scores(query, documents, *, precision: str, rescore_multiplier: int | None, ranges) -> np.ndarray:
    """(1, n): minus the rank of each document in `rank_quantized`'s ranking for the one `query` (precision
    int8 / binary, retrieval.py), scores whose order is that ranking."""
    ranking = rank_quantized(query, documents, len(documents), precision, rescore_multiplier, ranges)[0]
    out = np.empty((1, len(documents)))
    out[0, ranking] = -np.arange(len(ranking), dtype=np.float64)
    return out


def reranking_metrics(scores_per_query: list[np.ndarray], labels_per_query: list[np.ndarray]) -> dict[str, float]:
    """`map` (main), `mrr_at_10`, `ndcg_at_10` of each query's candidates ordered by score."""
    rankings, relevance = [], []
    for scores, labels in zip(scores_per_query, labels_per_query):
        rankings.append(np.argsort(-np.asarray(scores), kind="stable").tolist())
        relevance.append({int(i): 1.0 for i in np.flatnonzero(np.asarray(labels) > 0)})
    longest = max(len(r) for r in rankings)
    ranked = ranking_metrics(rankings, relevance, k_values=sorted({10, longest}))
    out = {"map": ranked[f"map_at_{longest}"], "mrr_at_10": ranked["mrr_at_10"], "ndcg_at_10": ranked["ndcg_at_10"]}
    out["main_score"] = out["map"]
    return out


@dataclass(kw_only=True)
class RerankingTask(Task):
    """Queries, each with its positive and negative candidates."""

    items: list[RerankItem]
    type = "Reranking"
    main_metric = "map"
    unit = "queries"

    def __post_init__(self):
        if not self.items:
            raise EvalDataError(f"{self.source}: no query has both a positive and a negative candidate")

    @property
    def n_items(self) -> int:
        return len(self.items)

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        multivector = embed.long_texts == "multivector"  # then MaxSim over windows (models/maxsim.py)
        encode = embed.windows if multivector else embed
        queries = encode([item.query for item in self.items], self.instruction, desc=f"{self.name} (queries)")
        candidates = [c for item in self.items for c in item.positives + item.negatives]
        doc_embeddings = encode(candidates, None, desc=f"{self.name} (candidates)")
        score = maxsim_scores if multivector else cosine_matrix
        if embed.precision != "float32":  # quantised (EvalSettings.precision): int8 calibrated on all candidates
            ranges = int8_ranges(doc_embeddings) if embed.precision == "int8" else None
            score = functools.partial(quantized_scores, precision=embed.precision,
                                      rescore_multiplier=embed.rescore_multiplier, ranges=ranges)
        scores, labels, start = [], [], 0
        for q, item in enumerate(self.items):
            count = len(item.positives) + len(item.negatives)
            scores.append(score(queries[q:q + 1], doc_embeddings[start:start + count])[0])
            labels.append(np.array([1] * len(item.positives) + [0] * len(item.negatives)))
            start += count
        return reranking_metrics(scores, labels)


def load_reranking(path, *, name: str | None = None, query: str = "query", positive: str = "positive",
                   negative: str = "negative", document: str = "document", label: str = "label",
                   max_items: int | None = None, seed: int = 0, instruction: str | None = None) -> RerankingTask:
    """Read a reranking file in either layout; `max_items` keeps a seeded subset of queries."""
    path = Path(path)
    header, raw_rows = read_raw_table(path)  # once: the file may be a pipe
    if format_suffix(path) in JSONL_SUFFIXES and (not raw_rows or document not in raw_rows[0][1]):
        rows = select_columns(path, header, raw_rows, {"query": query, "positive": positive, "negative": negative})
        items = [RerankItem(as_text(row["query"], path, number, query),
                            as_text_list(row["positive"], path, number, positive),
                            as_text_list(row["negative"], path, number, negative)) for number, row in rows]
    else:
        rows = select_columns(path, header, raw_rows, {"query": query, "document": document, "label": label})
        grouped: dict[str, RerankItem] = {}
        for number, row in rows:
            text = as_text(row["query"], path, number, query)
            item = grouped.setdefault(text, RerankItem(text, [], []))
            doc = as_text(row["document"], path, number, document)
            (item.positives if as_binary_label(row["label"], path, number, label) else item.negatives).append(doc)
        items = list(grouped.values())
    usable = [item for item in items if item.positives and item.negatives]
    if not usable:
        raise EvalDataError(f"{path}: no query has both a positive and a negative candidate "
                            f"(columns {positive!r}/{negative!r} or {label!r})")
    usable = [usable[i] for i in seeded_subset(len(usable), max_items, seed)]
    return RerankingTask(name=name or path.stem, source=str(path), items=usable, instruction=instruction)
