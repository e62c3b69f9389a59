"""What every evaluation task shares: the embedding cache, the task base class, seeded subsampling.

All tasks encode through one `Embedder`, which caches embeddings by `(instruction, text)`: texts used
by several tasks of a suite (the same reviews for clustering, retrieval and pair classification) are
encoded once. Documents and inputs of symmetric tasks are encoded without instruction unless the task
sets one; retrieval/reranking queries get the task's instruction.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import InvalidSetting, LLM2CompError, MissingDependency
from .encoders import as_encoder, default_long_texts, long_text_modes, window_budget_of

SKLEARN_HINT = "pip install scikit-learn scipy   (or: pip install 'llm2comp[eval]')"


class EvalDataError(LLM2CompError, ValueError):
    """An evaluation file or data set cannot be used; the message names the file and the column."""


def require_sklearn():
    """Import scikit-learn lazily, with an install hint."""
    try:
        import sklearn
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"evaluation metrics need scikit-learn: {SKLEARN_HINT}") from error
    return sklearn


def single_threaded():
    """Limit BLAS/OpenMP pools to one thread for the small scikit-learn fits of the metrics.

    On a busy 2-core machine, k-means and logistic regression on a few hundred points run up to 20x
    slower with spinning thread pools than on one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


# ---------------------------------------------------------------------------------------------- encoding
def _encode_all(encoder, items: list[tuple[str | None, str]], batch_size: int, show_progress_bar: bool,
                long_texts: str | None = None, overlap: int | None = None) -> np.ndarray:
    """Embed `(instruction, text)` items with a `TextEncoder` (encoders.py; instructions its own way).

    All items go to the encoder in one call: it sorts them by length and plans its own batches
    (`encoding.plan_batches` for LLM2Comp: larger batches for short texts).
    """
    inputs = [(instruction, text) if instruction else text for instruction, text in items]
    out = encoder.encode(inputs, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True,
                         long_texts=long_texts, overlap=overlap)
    return np.asarray(out, dtype=np.float32)


def _encode_windows(encoder, items: list[tuple[str | None, str]], batch_size: int, show_progress_bar: bool,
                    overlap: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item: (its window embeddings (S, d), its `segments` vector (d,)), from one pass of the encoder."""
    inputs = [(instruction, text) if instruction else text for instruction, text in items]
    windows = encoder.encode_windows(inputs, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                     overlap=overlap)
    means = windows.weighted_mean().numpy()
    return [(part.numpy(), mean) for part, mean in zip(windows.split(), means)]


def _summarise_warnings(caught, desc: str) -> None:
    """Re-emit warnings of one encoding call once each; truncation notices summed into one line."""
    truncated, seen = 0, set()
    for item in caught:
        found = re.match(r"(\d+) text\(s\) longer than max_length", str(item.message))
        if found:
            truncated += int(found.group(1))
        elif str(item.message) not in seen:
            seen.add(str(item.message))
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    if truncated:
        warnings.warn(f"{desc}: {truncated} text(s) were cut to the model's max_length (long_texts='segments' "
                      "keeps them whole)", stacklevel=4)


def _checked_overlap(encoder, long_texts: str, overlap: int | None) -> int | None:
    """`overlap` if it can apply: windows are cut (segments / multivector) and it fits inside one window
    (where the encoder tells its window size: `encoders.window_budget_of`)."""
    from ..models.long_texts import check_overlap

    if overlap is None:
        return None
    if long_texts == "truncate":
        raise InvalidSetting(f"overlap={overlap!r} applies only with long_texts 'segments' or 'multivector' "
                             "(where texts are cut into windows); with 'truncate' no windows overlap. Set "
                             "long_texts, or drop overlap")
    budget = window_budget_of(encoder)
    return check_overlap(overlap, budget) if budget is not None else overlap


class Embedder:
    """Encode texts through a model, caching by (instruction, text); one model call per call.

    `model` is a `TextEncoder` such as an `LLM2Comp` (instructions its own way, through its
    template), or any object with a sentence-transformers `encode(texts, ...)` (wrapped by
    `encoders.SentenceEncoder`: instructions prepended as `"{instruction}: {text}"`); anything else is
    refused (`InvalidType`). `long_texts` (None = the model's default; modes other than `truncate`
    need an encoder with windows) and `overlap` are passed to `encode`. With `multivector`,
    `windows()` gives each text's window embeddings (retrieval and reranking score them with MaxSim),
    and a plain call gives the token-weighted mean of the same windows (the `segments` vector) to
    every other task. `precision` / `rescore_multiplier` tell retrieval and reranking how to score
    (quantised; `EvalSettings`); the cached embeddings stay float.
    """

    def __init__(self, model, batch_size: int = 16, show_progress_bar: bool = True, long_texts: str | None = None,
                 overlap: int | None = None, precision: str = "float32", rescore_multiplier: int | None = None,
                 truncate_dim: int | None = None):
        from ..models.long_texts import check_long_texts

        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InvalidSetting(f"batch_size must be >= 1, got {batch_size}")
        if long_texts is not None:
            check_long_texts(long_texts)
        encoder = as_encoder(model)
        if long_texts is not None and long_texts not in long_text_modes(encoder):
            raise InvalidSetting(f"long_texts={long_texts!r} needs an encoder that reads long texts in windows (an "
                                 f"LLM2Comp model); {type(model).__name__} truncates")
        self.model = model
        self.encoder = encoder
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        self.long_texts = long_texts or default_long_texts(encoder)
        self.overlap = _checked_overlap(encoder, self.long_texts, overlap)
        self.precision, self.rescore_multiplier = precision, rescore_multiplier
        self.truncate_dim = truncate_dim  # the first n components of every vector (the cache keeps them whole)
        check_size = getattr(model, "_check_truncate_dim", None)  # LLM2Comp: range check, warns for untrained sizes
        if truncate_dim is not None and check_size is not None:
            check_size(truncate_dim)
        if precision != "float32" and self.long_texts == "multivector":
            raise InvalidSetting(f"precision {precision!r} scores one vector per text; long_texts 'multivector' "
                                 "gives several (use 'segments', or precision 'float32')")
        self._cache: dict[tuple[str | None, str], np.ndarray] = {}
        self._windows: dict[tuple[str | None, str], np.ndarray] = {}  # multivector mode only
        self.num_encoded = 0  # texts actually run through the model (cache misses)

    def __call__(self, texts: list[str], instruction: str | None = None, desc: str = "encode") -> np.ndarray:
        """Return float32 embeddings (n, d) of `texts` in order, encoding only what is not cached."""
        keys = self._fill(texts, instruction, desc)
        if not keys:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        return np.stack([self._cache[key] for key in keys])[:, :self.truncate_dim]

    def windows(self, texts: list[str], instruction: str | None = None, desc: str = "encode") -> list[np.ndarray]:
        """Each text's window embeddings (S_i, d), float32 (multivector mode only)."""
        if self.long_texts != "multivector":
            raise InvalidSetting(f"windows() needs long_texts='multivector', this embedder uses {self.long_texts!r}")
        return [self._windows[key][:, :self.truncate_dim] for key in self._fill(texts, instruction, desc)]

    def _fill(self, texts: list[str], instruction: str | None, desc: str) -> list[tuple[str | None, str]]:
        """Encode the keys of `texts` that are not cached yet; return all keys in order."""
        keys = [(instruction or None, text) for text in texts]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if missing and self.long_texts == "multivector":
                encoded = _encode_windows(self.encoder, missing, self.batch_size, self.show_progress_bar, self.overlap)
                for key, (parts, mean) in zip(missing, encoded):
                    self._windows[key] = np.asarray(parts, dtype=np.float32)
                    self._cache[key] = np.asarray(mean, dtype=np.float32)
            elif missing:
                vectors = _encode_all(self.encoder, missing, self.batch_size, self.show_progress_bar, self.long_texts,
                                      self.overlap)
                for key, vector in zip(missing, vectors):
                    self._cache[key] = np.asarray(vector, dtype=np.float32)
        self.num_encoded += len(missing)
        _summarise_warnings(caught, desc)
        return keys

    @property
    def dimension(self) -> int | None:
        return next(iter(self._cache.values()))[:self.truncate_dim].shape[0] if self._cache else None

    def plain_texts(self) -> list[str]:
        """Every text encoded without instruction so far (the corpus for the diagnostics)."""
        return [text for instruction, text in self._cache if instruction is None]

    def plain_embeddings(self) -> np.ndarray:
        vectors = [vector for (instruction, _), vector in self._cache.items() if instruction is None]
        return np.stack(vectors)[:, :self.truncate_dim] if vectors else np.zeros((0, self.dimension or 0), dtype=np.float32)


# ---------------------------------------------------------------------------------------------- similarity
def normalize_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b`, (n, m)."""
    return normalize_rows(a) @ normalize_rows(b).T


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b`, (n,)."""
    return (normalize_rows(a) * normalize_rows(b)).sum(-1)


def paired_scores(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Similarity of row i of `a` with row i of `b` four ways (higher = more similar), each (n,):
    cosine, dot product, and the negated Euclidean and Manhattan distances (MTEB's pair scores)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return {"cosine": paired_cosine(a, b), "dot": (a * b).sum(-1),
            "euclidean": -np.linalg.norm(a - b, axis=-1), "manhattan": -np.abs(a - b).sum(-1)}


# ---------------------------------------------------------------------------------------------- tasks
@dataclass(kw_only=True)
class Task:
    """One evaluation task: data in memory plus a metric. Subclasses set `type` and `main_metric`.

    `source` names where the data came from (a file, or a packaged data set) for messages and reports;
    `instruction` is given to queries (asymmetric tasks) or to every text (symmetric tasks).
    """

    name: str
    source: str = "<memory>"
    instruction: str | None = None
    description: str = ""

    type: ClassVar[str] = ""
    main_metric: ClassVar[str] = ""
    unit: ClassVar[str] = "items"  # what `n_items` counts, for the report

    @property
    def n_items(self) -> int:
        raise NotImplementedError

    def evaluate(self, embed: Embedder) -> dict[str, float]:
        """Return the metrics, including `main_score`."""
        raise NotImplementedError


def finite_main_score(value, task_name: str, metric: str, source: str) -> float:
    """`value` as a float, or an EvalDataError naming the task when it is NaN / infinite (no average can use it)."""
    score = float(value)
    if not math.isfinite(score):
        raise EvalDataError(f"task {task_name} ({source}): its main score {metric} is {score} (not a number): the "
                            "data or the embeddings do not vary (e.g. all embeddings equal, or constant gold scores); "
                            "check the task's file and the model")
    return score


# ---------------------------------------------------------------------------------------------- subsampling
def seeded_subset(n: int, k: int | None, seed: int) -> np.ndarray:
    """Indices of `k` of `n` items chosen with `seed`, in their original order (all when k is None/>= n)."""
    if k is None or k >= n:
        return np.arange(n)
    if k < 1:
        raise InvalidSetting(f"max_items must be >= 1, got {k}")
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def stratified_subset(labels, k: int | None, seed: int) -> np.ndarray:
    """Indices of about `k` items keeping each label's share (at least 2 per label), original order."""
    labels = np.asarray(labels)
    if k is None or k >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    chosen = []
    for value, count in zip(values, counts):
        take = min(count, max(2, int(round(k * count / len(labels)))))
        members = np.flatnonzero(labels == value)
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def check_classes(labels, source: str, column: str, minimum: int = 2) -> None:
    """Raise when `labels` hold fewer than `minimum` distinct values."""
    distinct = sorted({str(label) for label in labels})
    if len(distinct) < minimum:
        raise EvalDataError(f"{source}: column {column!r} has {len(distinct)} distinct label(s) {distinct[:5]}; "
                            f"need at least {minimum} classes")


def check_min_per_class(labels, source: str, column: str, minimum: int = 2) -> None:
    """Raise when a class has fewer than `minimum` examples (k-fold needs 2 per class)."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[str(label)] = counts.get(str(label), 0) + 1
    rare = [label for label, count in counts.items() if count < minimum]
    if rare:
        raise EvalDataError(f"{source}: column {column!r}: class(es) {rare[:5]} have fewer than {minimum} "
                            "examples; stratified k-fold needs at least 2 per class")
