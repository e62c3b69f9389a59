"""Classification: how linearly separable are the classes in embedding space?

Metric (as MTEB's `AbsTaskClassification`): a logistic-regression classifier (scikit-learn,
`max_iter=100`, default L2 C=1) is trained on the raw embeddings. Without a train/test split the
texts are evaluated by stratified k-fold cross-validation (k = `n_folds`, default 5, shuffled with
`seed`; MTEB's cross-validation mode); scores are the mean over folds of `accuracy` (main score),
`f1` (macro-averaged F1) and `f1_weighted`; `accuracy_std` is the spread over folds. With a split
column, one classifier is trained on the `train` rows and scored on the `test` rows.

File format (TSV/CSV/JSONL): columns `text`, `label`, optionally `split` with values train/test
(names configurable: `text=`, `label=`, `split=`). Every class needs at least 2 examples.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import (
    Embedder,
    EvalDataError,
    Task,
    check_classes,
    check_min_per_class,
    require_sklearn,
    single_threaded,
    stratified_subset,
)
from .formats import as_text, read_table


def _fit_score(train_x, train_y, test_x, test_y) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    classifier = LogisticRegression(max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # MTEB's 100 iterations; raw LLM states converge slowly
        classifier.fit(train_x, train_y)
    predicted = classifier.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, predicted)),
            "f1": float(f1_score(test_y, predicted, average="macro")),
            "f1_weighted": float(f1_score(test_y, predicted, average="weighted"))}


def classification_metrics(embeddings: np.ndarray, labels, n_folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Stratified k-fold logistic regression; mean `accuracy` (main), `f1` (macro), `f1_weighted`."""
    require_sklearn()
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray([str(label) for label in labels])
    smallest = min(Counter(labels).values())
    if smallest < 2:
        raise EvalDataError("every class needs at least 2 examples for stratified k-fold")
    folds = StratifiedKFold(n_splits=max(2, min(n_folds, smallest)), shuffle=True, random_state=seed)
    with single_threaded():
        runs = [_fit_score(embeddings[train], labels[train], embeddings[test], labels[test])
                for train, test in folds.split(embeddings, labels)]
    out = {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}
    out["accuracy_std"] = float(np.std([run["accuracy"] for run in runs]))
    out["n_folds"] = float(len(runs))
    out["main_score"] = out["accuracy"]
    return out


def split_metrics(train_x, train_y, test_x, test_y) -> dict[str, float]:
    """One classifier trained on the train split, scored on the test split."""
    require_sklearn()
    with single_threaded():
        out = _fit_score(train_x, [str(y) for y in train_y], test_x, [str(y) for y in test_y])
    out["main_score"] = out["accuracy"]
    return out


@dataclass(kw_only=True)
class ClassificationTask(Task):
    """Texts with class labels; cross-validated unless `test_texts` / `test_labels` are given."""

    texts: list[str]
    labels: list
    test_texts: list[str] | None = None
    test_labels: list | None = None
    n_folds: int = 5
    seed: int = 0
    type = "Classification"
    main_metric = "accuracy"
    unit = "texts"

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise EvalDataError(f"{self.source}: {len(self.texts)} texts but {len(self.labels)} labels")
        check_classes(self.labels, self.source, "label")
        if self.test_texts is None:
            check_min_per_class(self.labels, self.source, "label")

    @property
    def n_items(self) -> int:
        return len(self.texts) + len(self.test_texts or [])

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        train = embed(self.texts, self.instruction, desc=self.name)
        if self.test_texts is None:
            return classification_metrics(train, self.labels, self.n_folds, self.seed)
        test = embed(self.test_texts, self.instruction, desc=self.name)
        return split_metrics(train, self.labels, test, self.test_labels)


def load_classification(path, *, name: str | None = None, text: str = "text", label: str = "label",
                        split: str = "split", max_items: int | None = None, seed: int = 0, n_folds: int = 5,
                        instruction: str | None = None) -> ClassificationTask:
    """Read a classification file; `max_items` keeps a seeded, stratified subset."""
    rows = read_table(path, {"text": text, "label": label}, optional={"split": split})
    texts = [as_text(row["text"], path, number, text) for number, row in rows]
    labels = [str(row["label"]).strip() for _, row in rows]
    check_classes(labels, str(path), label)
    splits = [str(row.get("split") or "").strip().lower() for _, row in rows]
    task_name = name or Path(path).stem
    if any(splits):
        bad = sorted(set(splits) - {"train", "test"})
        if bad:
            raise EvalDataError(f"{path}: column {split!r} must hold 'train' or 'test', found {bad[:5]}")
        train = [i for i, s in enumerate(splits) if s == "train"]
        test = [i for i, s in enumerate(splits) if s == "test"]
        if not train or not test:
            raise EvalDataError(f"{path}: column {split!r} needs both train and test rows")
        test = [test[i] for i in stratified_subset([labels[i] for i in test], max_items, seed)]
        check_classes([labels[i] for i in train], f"{path} (train rows)", label)
        return ClassificationTask(name=task_name, source=str(path), texts=[texts[i] for i in train],
                                  labels=[labels[i] for i in train], test_texts=[texts[i] for i in test],
                                  test_labels=[labels[i] for i in test], instruction=instruction)
    check_min_per_class(labels, str(path), label)
    keep = stratified_subset(labels, max_items, seed)
    return ClassificationTask(name=task_name, source=str(path), texts=[texts[i] for i in keep],
                              labels=[labels[i] for i in keep], n_folds=n_folds, seed=seed, instruction=instruction)
