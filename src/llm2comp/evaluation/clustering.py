"""Clustering: do texts of one group land in one k-means cluster?

Metric (as MTEB's clustering tasks): mini-batch k-means (scikit-learn `MiniBatchKMeans`, k = the
number of gold groups, `batch_size=512`, `n_init=1`, k-means++ init) on the raw embeddings, scored
with the V-measure (harmonic mean of homogeneity and completeness) between clusters and gold groups.
The main score `v_measure` is the mean over `n_runs` (default 10) k-means runs with seeds
`seed, seed+1, ...`; `v_measure_std` is their spread; `ami` is the mean adjusted mutual information.
(MTEB re-draws a bootstrap sample per run on large sets; these sets are small, so each run sees all.)

File format (TSV/CSV/JSONL): columns `text`, `label` (names configurable: `text=`, `label=`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import (
    Embedder,
    EvalDataError,
    Task,
    check_classes,
    require_sklearn,
    seeded_subset,
    single_threaded,
)
from .formats import as_text, read_table


def clustering_metrics(embeddings: np.ndarray, labels, n_runs: int = 10, seed: int = 0,
                       batch_size: int = 512) -> dict[str, float]:
    """Mean V-measure (main score) and AMI of `n_runs` seeded mini-batch k-means runs."""
    require_sklearn()
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import adjusted_mutual_info_score, v_measure_score

    labels = np.asarray([str(label) for label in labels])
    k = len(np.unique(labels))
    v_measures, amis = [], []
    for run in range(n_runs):
        kmeans = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, n_init=1, init="k-means++",
                                 random_state=seed + run)
        with warnings.catch_warnings(), single_threaded():
            warnings.simplefilter("ignore")  # e.g. fewer distinct points than clusters on tiny sets
            assigned = kmeans.fit_predict(np.asarray(embeddings, dtype=np.float64))
        v_measures.append(v_measure_score(labels, assigned))
        amis.append(adjusted_mutual_info_score(labels, assigned))
    return {"v_measure": float(np.mean(v_measures)), "v_measure_std": float(np.std(v_measures)),
            "ami": float(np.mean(amis)), "n_clusters": float(k), "main_score": float(np.mean(v_measures))}


@dataclass(kw_only=True)
class ClusteringTask(Task):
    """Texts with gold group labels (every text gets `instruction`, if any)."""

    texts: list[str]
    labels: list
    n_runs: int = 10
    seed: int = 0
    type = "Clustering"
    main_metric = "v_measure"
    unit = "texts"

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise EvalDataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")
        check_classes(self.labels, self.source, "label")
        if len(set(map(str, self.labels))) >= len(self.texts):
            raise EvalDataError(f"{self.source}: every text has its own label; clustering needs groups")

    @property
    def n_items(self) -> int:
        return len(self.texts)

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        embeddings = embed(self.texts, self.instruction, desc=self.name)
        return clustering_metrics(embeddings, self.labels, self.n_runs, self.seed)


def load_clustering(path, *, name: str | None = None, text: str = "text", label: str = "label",
                    max_items: int | None = None, seed: int = 0, n_runs: int = 10,
                    instruction: str | None = None) -> ClusteringTask:
    """Read a clustering file; `max_items` keeps a seeded subset of texts."""
    rows = read_table(path, {"text": text, "label": label})
    check_classes([row["label"] for _, row in rows], str(path), label)
    keep = seeded_subset(len(rows), max_items, seed)
    texts = [as_text(rows[i][1]["text"], path, rows[i][0], text) for i in keep]
    labels = [str(rows[i][1]["label"]).strip() for i in keep]
    check_classes(labels, f"{path} (after subsampling to {len(keep)})", label)
    return ClusteringTask(name=name or Path(path).stem, source=str(path), texts=texts, labels=labels,
                          n_runs=n_runs, seed=seed, instruction=instruction)
