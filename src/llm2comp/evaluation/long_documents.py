"""WikiLongDocRetrieval: find a whole Wikipedia article from one sentence taken from deep inside it.

Built offline, seeded, from the bundled English Wikipedia excerpt (data/wikipedia.py: 100 articles
of the gensim wheel's test dump, CC BY-SA):

1. Documents: every article whose clean prose (paragraphs of >= 100 characters, headings dropped)
   has between `min_words` and `max_words` whitespace words, whole, paragraphs joined by blank lines.
2. Queries: in each article, the sentences of 8 to 40 words that start after its first `skip_words`
   words; `queries_per_article` of them are drawn at random. A whitespace word is at least one token
   for the usual BPE tokenizers, so such a sentence lies past the first `skip_words` tokens: a model
   that truncates at `max_length <= skip_words` never reads it.
3. Each query sentence is removed from its article, so no exact copy of it stays in the corpus;
   a query's only relevant document is its source article (relevance 1).
4. Queries get `LONG_DOC_INSTRUCTION`; documents none. `max_items` keeps a seeded subset of articles.

The suite `longdoc` is this task with the defaults below (skip 512 words, articles of 1,024 words
and more: 74 articles, 148 queries, ~380k words, ~520k SmolLM2 tokens; hours on a CPU, minutes on a
GPU).
docs/long_documents.md measures a bounded variant (shorter articles, a smaller window).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InvalidSetting
from .base import EvalDataError, seeded_subset
from .retrieval import RetrievalTask

LONG_DOC_INSTRUCTION = "Given a sentence, retrieve the Wikipedia article it was taken from"
DEFAULT_SKIP_WORDS = 512
QUERY_WORDS = (8, 40)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _sentences_with_offsets(paragraphs: list[str]) -> list[list[tuple[int, str]]]:
    """Per paragraph, its sentences with the word offset at which each starts in the whole article."""
    out, offset = [], 0
    for paragraph in paragraphs:
        sentences = []
        for sentence in _SENTENCE_END.split(paragraph.strip()):
            if sentence.strip():
                sentences.append((offset, sentence.strip()))
                offset += len(sentence.split())
        out.append(sentences)
    return out


def article_queries(paragraphs: list[str], skip_words: int, count: int, rng) -> tuple[list[str], str]:
    """Draw `count` query sentences past `skip_words` words; return them and the article without them."""
    structure = _sentences_with_offsets(paragraphs)
    low, high = QUERY_WORDS
    candidates = [(p, s) for p, sentences in enumerate(structure) for s, (offset, text) in enumerate(sentences)
                  if offset >= skip_words and low <= len(text.split()) <= high]
    if not candidates:
        return [], ""
    chosen = sorted(rng.choice(len(candidates), size=min(count, len(candidates)), replace=False).tolist())
    removed = {candidates[i] for i in chosen}
    queries = [structure[p][s][1] for p, s in (candidates[i] for i in chosen)]
    kept = [" ".join(text for s, (_, text) in enumerate(sentences) if (p, s) not in removed)
            for p, sentences in enumerate(structure)]
    return queries, "\n\n".join(paragraph for paragraph in kept if paragraph)


def long_document_task(max_items: int | None = None, seed: int = 0, *, skip_words: int = DEFAULT_SKIP_WORDS,
                       min_words: int | None = None, max_words: int | None = None, queries_per_article: int = 2,
                       articles=None) -> RetrievalTask:
    """The task of the module docstring. `min_words` defaults to `2 * skip_words`; `articles` (for
    tests) replaces the bundled Wikipedia articles with other `WikiArticle`s."""
    if skip_words < 0 or queries_per_article < 1:
        raise InvalidSetting("skip_words must be >= 0 and queries_per_article >= 1")
    if articles is None:
        from ..data.wikipedia import wiki_articles

        articles = wiki_articles()
    min_words = 2 * skip_words if min_words is None else min_words
    eligible = []
    for article in articles:
        size = sum(len(p.split()) for p in article.paragraphs())
        if size >= min_words and (max_words is None or size <= max_words):
            eligible.append(article)
    rng = np.random.default_rng(seed)
    queries, corpus, relevance = [], [], []
    for article in (eligible[i] for i in seeded_subset(len(eligible), max_items, seed)):
        picked, document = article_queries(article.paragraphs(), skip_words, queries_per_article, rng)
        if not picked:
            continue
        corpus.append(document)
        queries += picked
        relevance += [{len(corpus) - 1: 1.0} for _ in picked]
    if not corpus:
        raise EvalDataError(f"no Wikipedia article has {min_words}-{max_words or 'any'} words and a query sentence "
                            f"past word {skip_words}")
    return RetrievalTask(name="WikiLongDocRetrieval", source="gensim enwiki test dump (data/wikipedia.py)",
                         instruction=LONG_DOC_INSTRUCTION, queries=queries, corpus=corpus, relevance=relevance,
                         description=f"sentence from past word {skip_words} -> its whole article "
                                     f"({len(corpus)} articles, sentence removed)")
