"""Retrieval: rank a corpus for each query by cosine similarity; are the relevant documents on top?

Metrics (as MTEB / trec_eval compute them), per query then averaged over queries that have at least
one relevant document (MTEB drops the others):
- `ndcg_at_k` (main: `ndcg_at_10`): DCG@k = sum_{rank r <= k} rel_r / log2(r + 1) with graded
  relevance as gain, divided by the DCG@k of the ideal ordering of the query's judged documents.
- `mrr_at_10`: 1 / rank of the first relevant document within the top 10, else 0.
- `recall_at_k`: relevant documents in the top k / all relevant documents of the query.
- `map_at_k`: sum of precision@r over relevant documents at ranks r <= k, / all relevant documents.
- `precision_at_k`: relevant documents in the top k / k.
A document is relevant when its qrel score is > 0. Ties keep corpus order. Queries get the task's
instruction; documents never do. With a multivector embedder (`long_texts="multivector"`), queries
and documents are scored by MaxSim over their windows (models/maxsim.py) instead of cosine.

Quantised scoring (`EvalSettings.precision`, `rank_quantized`): int8 ranks by the dot product of the
int8 codes of the normalised embeddings, the ranges calibrated on the task's documents (the index) and
shared by the queries; binary ranks by Hamming distance of the sign bits, and with a rescore multiplier
m the best `RESCORE_TOP` x m by Hamming are ranked again by the float query . the documents' +-1 bits
(the binary index only; models/quantization.py `rank_binary`), the rest following in Hamming order.

File format (BEIR-like): `queries` and `corpus` files (TSV/CSV/JSONL) with `id` and `text` columns
(corpus: optional `title`, prepended to the text); a `qrels` file with `query-id`, `corpus-id`,
`score` columns. All column names are configurable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidSetting
from .base import Embedder, EvalDataError, Task, normalize_rows, seeded_subset
from .formats import as_float, as_text, read_table

K_VALUES = (1, 3, 5, 10, 100)
RESCORE_TOP = 10  # binary rescoring: the best RESCORE_TOP x multiplier candidates (the main metric's cutoff)


def rank_documents(query_embeddings, doc_embeddings, top_k: int, chunk: int = 256) -> np.ndarray:
    """Indices of the `top_k` most similar documents per query, best first, (Q, top_k).

    Dense (n, d) embeddings are compared by cosine; when either side is a multivector list (one
    (windows, d) array per text), by MaxSim.
    """
    from ..models.maxsim import is_multivector, maxsim

    multivector = is_multivector(query_embeddings) or is_multivector(doc_embeddings)
    docs = doc_embeddings if multivector else normalize_rows(doc_embeddings)
    top_k = min(top_k, len(docs))
    out = []
    for start in range(0, len(query_embeddings), chunk):  # (chunk, D) at a time: large corpora fit memory
        queries = query_embeddings[start:start + chunk]
        scores = maxsim(queries, docs).double().numpy() if multivector else normalize_rows(queries) @ docs.T
        out.append(np.argsort(-scores, axis=1, kind="stable")[:, :top_k])
    return np.concatenate(out) if out else np.zeros((0, top_k), dtype=np.int64)


def rank_quantized(query_embeddings, doc_embeddings, top_k: int, precision: str,
                   rescore_multiplier: int | None = None, ranges=None) -> np.ndarray:
    """Indices of the `top_k` best documents per query, best first, (Q, top_k), scored in `precision`
    (module docstring). int8: `ranges` (2, d) of the normalised documents (None: calibrated on
    `doc_embeddings`); float32 is `rank_documents`."""
    from ..models.quantization import check_precision, quantize, rank_binary

    check_precision(precision, ("float32", "int8", "binary"))
    if precision == "float32":
        if rescore_multiplier is not None:
            raise InvalidSetting("rescore_multiplier applies to precision 'binary' only")
        return rank_documents(query_embeddings, doc_embeddings, top_k)
    queries = normalize_rows(query_embeddings).astype(np.float32)
    docs = normalize_rows(doc_embeddings).astype(np.float32)
    if precision == "binary":
        indices, _ = rank_binary(queries, quantize(docs, "binary"), top_k, rescore_multiplier, RESCORE_TOP)
        return indices
    if rescore_multiplier is not None:
        raise InvalidSetting("rescore_multiplier applies to precision 'binary' only")
    if ranges is None:
        ranges = int8_ranges(docs)
    doc_codes = quantize(docs, "int8", ranges=ranges).astype(np.int64)
    scores = quantize(queries, "int8", ranges=ranges).astype(np.int64) @ doc_codes.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :min(top_k, len(docs))]


def int8_ranges(doc_embeddings) -> np.ndarray:
    """(2, d): per-dimension min and max of the normalised documents, the int8 calibration of a task."""
    docs = normalize_rows(doc_embeddings)
    return np.stack([docs.min(axis=0), docs.max(axis=0)]).astype(np.float32)


def ranking_metrics(rankings: list[list[int]], relevance: list[dict[int, float]],
                    k_values=K_VALUES) -> dict[str, float]:
    """Mean nDCG@k, MAP@k, recall@k, precision@k and MRR@10 of ranked document lists.

    `rankings[q]` lists document indices best first; `relevance[q]` maps document index -> graded
    relevance for query q (> 0 = relevant). Queries without a relevant document must be removed first.
    """
    per_query: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        per_query.setdefault(key, []).append(value)

    for ranking, judged in zip(rankings, relevance):
        relevant = {doc for doc, rel in judged.items() if rel > 0}
        if not relevant:
            raise ValueError("every query needs at least one relevant document")
        gains = np.array([judged.get(doc, 0.0) for doc in ranking], dtype=np.float64)
        hits = np.array([doc in relevant for doc in ranking], dtype=np.float64)
        discounts = 1.0 / np.log2(np.arange(2, len(ranking) + 2))
        ideal = np.sort(np.array([rel for rel in judged.values() if rel > 0], dtype=np.float64))[::-1]
        ideal_discounts = 1.0 / np.log2(np.arange(2, len(ideal) + 2))
        precision_at_rank = np.cumsum(hits) / np.arange(1, len(ranking) + 1)
        for k in k_values:
            idcg = float((ideal[:k] * ideal_discounts[:k]).sum())
            add(f"ndcg_at_{k}", float((gains[:k] * discounts[:k]).sum()) / idcg)
            add(f"map_at_{k}", float((precision_at_rank[:k] * hits[:k]).sum()) / len(relevant))
            add(f"recall_at_{k}", float(hits[:k].sum()) / len(relevant))
            add(f"precision_at_{k}", float(hits[:k].sum()) / k)
        first = np.flatnonzero(hits[:10])
        add("mrr_at_10", 1.0 / (first[0] + 1) if len(first) else 0.0)
    return {key: float(np.mean(values)) for key, values in per_query.items()}


def retrieval_metrics(query_embeddings, doc_embeddings, relevance: list[dict[int, float]],
                      k_values=K_VALUES, precision: str = "float32",
                      rescore_multiplier: int | None = None) -> dict[str, float]:
    """Rank the corpus (cosine, or MaxSim for multivector embeddings; quantised with `precision`, module
    docstring) and score it; `main_score` = `ndcg_at_10`."""
    if precision == "float32" and rescore_multiplier is None:
        rankings = rank_documents(query_embeddings, doc_embeddings, top_k=max(k_values)).tolist()
    else:
        rankings = rank_quantized(query_embeddings, doc_embeddings, max(k_values), precision,
                                  rescore_multiplier).tolist()
    out = ranking_metrics(rankings, relevance, k_values)
    out["main_score"] = out["ndcg_at_10"]
    return out


@dataclass(kw_only=True)
class RetrievalTask(Task):
    """Queries, a corpus and per-query relevance `{doc index: grade}` (queries get `instruction`)."""

    queries: list[str]
    corpus: list[str]
    relevance: list[dict[int, float]]
    type = "Retrieval"
    main_metric = "ndcg_at_10"
    unit = "queries"

    def __post_init__(self):
        if len(self.queries) != len(self.relevance):
            raise EvalDataError(f"{self.source}: {len(self.queries)} queries but {len(self.relevance)} judgements")
        if not self.queries or not self.corpus:
            raise EvalDataError(f"{self.source}: retrieval needs at least one query and one document")
        for index, judged in enumerate(self.relevance):
            if not any(rel > 0 for rel in judged.values()):
                raise EvalDataError(f"{self.source}: query {index} has no relevant document")
            if any(not 0 <= doc < len(self.corpus) for doc in judged):
                raise EvalDataError(f"{self.source}: query {index} judges a document outside the corpus")

    @property
    def n_items(self) -> int:
        return len(self.queries)

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        encode = embed.windows if embed.long_texts == "multivector" else embed
        query_embeddings = encode(self.queries, self.instruction, desc=f"{self.name} (queries)")
        doc_embeddings = encode(self.corpus, None, desc=f"{self.name} (corpus)")
        out = retrieval_metrics(query_embeddings, doc_embeddings, self.relevance,
                                precision=embed.precision, rescore_multiplier=embed.rescore_multiplier)
        out["corpus_size"] = float(len(self.corpus))
        return out


def load_retrieval(queries, corpus, qrels, *, name: str | None = None, id: str = "id", text: str = "text",
                   title: str = "title", query_id: str = "query-id", corpus_id: str = "corpus-id",
                   score: str = "score", max_items: int | None = None, seed: int = 0,
                   instruction: str | None = None) -> RetrievalTask:
    """Read BEIR-like queries/corpus/qrels files; `max_items` keeps a seeded subset of queries.

    Queries without a relevant document are dropped (as MTEB does); qrels naming an unknown query or
    document are an error.
    """
    query_rows = read_table(queries, {"id": id, "text": text})
    doc_rows = read_table(corpus, {"id": id, "text": text}, optional={"title": title})
    qrel_rows = read_table(qrels, {"query_id": query_id, "corpus_id": corpus_id, "score": score})
    query_index = _index_ids(query_rows, queries, id)
    doc_index = _index_ids(doc_rows, corpus, id)
    judged: dict[int, dict[int, float]] = {}
    for number, row in qrel_rows:
        q, d = str(row["query_id"]).strip(), str(row["corpus_id"]).strip()
        if q not in query_index:
            raise EvalDataError(f"{qrels}:{number}: column {query_id!r}: unknown query id {q!r} (not in {queries})")
        if d not in doc_index:
            raise EvalDataError(f"{qrels}:{number}: column {corpus_id!r}: unknown document id {d!r} (not in {corpus})")
        judged.setdefault(query_index[q], {})[doc_index[d]] = as_float(row["score"], qrels, number, score)
    usable = [q for q in range(len(query_rows)) if any(rel > 0 for rel in judged.get(q, {}).values())]
    if not usable:
        raise EvalDataError(f"{qrels}: column {score!r}: no query has a relevant document (score > 0)")
    usable = [usable[i] for i in seeded_subset(len(usable), max_items, seed)]
    query_texts = [as_text(query_rows[q][1]["text"], queries, query_rows[q][0], text) for q in usable]
    documents = []
    for number, row in doc_rows:
        body = as_text(row["text"], corpus, number, text)
        heading = str(row.get("title") or "").strip()
        documents.append(f"{heading} {body}" if heading else body)
    return RetrievalTask(name=name or Path(queries).stem, source=str(qrels), queries=query_texts, corpus=documents,
                         relevance=[judged[q] for q in usable], instruction=instruction)


def _index_ids(rows, path, column: str) -> dict[str, int]:
    index: dict[str, int] = {}
    for position, (number, row) in enumerate(rows):
        key = str(row["id"]).strip()
        if key in index:
            raise EvalDataError(f"{path}:{number}: column {column!r}: duplicate id {key!r}")
        index[key] = position
    return index
