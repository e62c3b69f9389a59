"""Semantic textual similarity (STS): do embedding similarities rank pairs like humans do?

Metric (as MTEB's `AbsTaskSTS`): for each pair, the cosine similarity of the two embeddings; the main
score `cosine_spearman` is Spearman's rank correlation between those similarities and the gold
scores. Also reported: `cosine_pearson`, and Spearman / Pearson of the negated Euclidean and
Manhattan distances (`euclidean_spearman`, ...). Correlations are invariant to the gold scale, so
gold scores need no normalisation.

File format (TSV/CSV/JSONL): one pair per row, columns `sentence1`, `sentence2`, `score` (names
configurable: `text1=`, `text2=`, `score=`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Embedder, EvalDataError, Task, paired_scores, seeded_subset
from .formats import as_float, as_text, read_table


def sts_metrics(embeddings1: np.ndarray, embeddings2: np.ndarray, gold) -> dict[str, float]:
    """Correlations between pair similarities and `gold`; `main_score` = `cosine_spearman`."""
    from scipy.stats import pearsonr, spearmanr

    gold = np.asarray(gold, dtype=np.float64)
    similarities = paired_scores(embeddings1, embeddings2)
    del similarities["dot"]  # MTEB's STS reports cosine, Euclidean and Manhattan
    out = {}
    for name, values in similarities.items():
        out[f"{name}_spearman"] = float(spearmanr(gold, values)[0])
        out[f"{name}_pearson"] = float(pearsonr(gold, values)[0])
    out["main_score"] = out["cosine_spearman"]
    return out


@dataclass(kw_only=True)
class STSTask(Task):
    """Pairs of texts with gold similarity scores (both texts get `instruction`, if any)."""

    texts1: list[str]
    texts2: list[str]
    scores: list[float]
    type = "STS"
    main_metric = "cosine_spearman"
    unit = "pairs"

    def __post_init__(self):
        if not (len(self.texts1) == len(self.texts2) == len(self.scores)):
            raise EvalDataError(f"{self.source}: texts1, texts2 and scores differ in length "
                                f"({len(self.texts1)}, {len(self.texts2)}, {len(self.scores)})")
        bad = next((index for index, score in enumerate(self.scores) if not np.isfinite(score)), None)
        if bad is not None:
            raise EvalDataError(f"{self.source}: scores[{bad}] is {self.scores[bad]}; gold scores must be finite "
                                "numbers")
        if len(self.scores) < 3:
            raise EvalDataError(f"{self.source}: an STS task needs at least 3 pairs, got {len(self.scores)}")
        if len(set(self.scores)) < 2:
            raise EvalDataError(f"{self.source}: all gold scores are equal ({self.scores[0]}); "
                                "a correlation needs varying scores")

    @property
    def n_items(self) -> int:
        return len(self.scores)

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        first = embed(self.texts1, self.instruction, desc=self.name)
        second = embed(self.texts2, self.instruction, desc=self.name)
        return sts_metrics(first, second, self.scores)


def load_sts(path, *, name: str | None = None, text1: str = "sentence1", text2: str = "sentence2",
             score: str = "score", max_items: int | None = None, seed: int = 0,
             instruction: str | None = None) -> STSTask:
    """Read an STS file (see the module docstring); `max_items` keeps a seeded subset of pairs."""
    rows = read_table(path, {"text1": text1, "text2": text2, "score": score})
    keep = seeded_subset(len(rows), max_items, seed)
    texts1, texts2, scores = [], [], []
    for index in keep:
        number, row = rows[index]
        texts1.append(as_text(row["text1"], path, number, text1))
        texts2.append(as_text(row["text2"], path, number, text2))
        scores.append(as_float(row["score"], path, number, score))
    if len(set(scores)) < 2:
        raise EvalDataError(f"{path}: column {score!r} holds a single value; STS needs varying gold scores")
    return STSTask(name=name or Path(path).stem, source=str(path), texts1=texts1, texts2=texts2, scores=scores,
                   instruction=instruction)
