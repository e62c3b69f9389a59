"""Pair classification: are two texts duplicates / paraphrases (label 1) or not (label 0)?

Metric (as MTEB's `AbsTaskPairClassification`): each pair is scored by the cosine similarity, dot
product, and negated Euclidean and Manhattan distances of its embeddings. For each score: `*_ap`,
the average precision of the ranking against the labels (scikit-learn `average_precision_score`);
`*_accuracy` and `*_f1`, the best accuracy / F1 over thresholds placed between two distinct
consecutive scores (at least one pair on each side). Main score: `max_ap`, the best AP of the four
(MTEB's main score for e.g. SprintDuplicateQuestions).

File format (TSV/CSV/JSONL): columns `sentence1`, `sentence2`, `label` (0/1) (names configurable:
`text1=`, `text2=`, `label=`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Embedder, EvalDataError, Task, check_classes, paired_scores, require_sklearn, seeded_subset
from .formats import as_binary_label, as_text, read_table


def best_threshold_scores(scores, labels) -> tuple[float, float]:
    """Best accuracy and best F1 over thresholds between distinct consecutive scores (high = positive)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    n, positives = len(y), int(y.sum())
    taken = np.arange(1, n + 1)  # pairs predicted positive when cutting after row i
    true_pos = np.cumsum(y)
    false_pos = taken - true_pos
    valid = np.zeros(n, dtype=bool)
    valid[:-1] = s[:-1] != s[1:]  # a threshold cannot split tied scores; never "all positive"
    if not valid.any():
        return 0.0, 0.0
    accuracy = (true_pos + (n - positives - false_pos)) / n
    f1 = np.where(true_pos > 0, 2 * true_pos / np.maximum(taken + positives, 1), 0.0)
    return float(accuracy[valid].max()), float(f1[valid].max())


def pair_classification_metrics(embeddings1: np.ndarray, embeddings2: np.ndarray, labels) -> dict[str, float]:
    """AP / best accuracy / best F1 for cosine, dot, Euclidean and Manhattan scores; main = `max_ap`."""
    require_sklearn()
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels, dtype=np.int64)
    scores = paired_scores(embeddings1, embeddings2)
    out = {}
    for name, values in scores.items():
        out[f"{name}_ap"] = float(average_precision_score(labels, values))
        out[f"{name}_accuracy"], out[f"{name}_f1"] = best_threshold_scores(values, labels)
    for metric in ("ap", "accuracy", "f1"):
        out[f"max_{metric}"] = max(out[f"{name}_{metric}"] for name in scores)
    out["main_score"] = out["max_ap"]
    return out


@dataclass(kw_only=True)
class PairClassificationTask(Task):
    """Text pairs with 0/1 labels (both texts get `instruction`, if any)."""

    texts1: list[str]
    texts2: list[str]
    labels: list[int]
    type = "PairClassification"
    main_metric = "max_ap"
    unit = "pairs"

    def __post_init__(self):
        if not (len(self.texts1) == len(self.texts2) == len(self.labels)):
            raise EvalDataError(f"{self.source}: texts1, texts2 and labels differ in length")
        check_classes(self.labels, self.source, "label")
        if set(self.labels) - {0, 1}:
            raise EvalDataError(f"{self.source}: labels must be 0 or 1")

    @property
    def n_items(self) -> int:
        return len(self.labels)

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        first = embed(self.texts1, self.instruction, desc=self.name)
        second = embed(self.texts2, self.instruction, desc=self.name)
        return pair_classification_metrics(first, second, self.labels)


def load_pair_classification(path, *, name: str | None = None, text1: str = "sentence1",
                             text2: str = "sentence2", label: str = "label", max_items: int | None = None,
                             seed: int = 0, instruction: str | None = None) -> PairClassificationTask:
    """Read a pair-classification file; `max_items` keeps a seeded subset of pairs."""
    rows = read_table(path, {"text1": text1, "text2": text2, "label": label})
    labels = [as_binary_label(row["label"], path, number, label) for number, row in rows]
    check_classes(labels, str(path), label)
    keep = seeded_subset(len(rows), max_items, seed)
    texts1 = [as_text(rows[i][1]["text1"], path, rows[i][0], text1) for i in keep]
    texts2 = [as_text(rows[i][1]["text2"], path, rows[i][0], text2) for i in keep]
    kept_labels = [labels[i] for i in keep]
    check_classes(kept_labels, f"{path} (after subsampling to {len(keep)})", label)
    return PairClassificationTask(name=name or Path(path).stem, source=str(path), texts1=texts1, texts2=texts2,
                                  labels=kept_labels, instruction=instruction)
