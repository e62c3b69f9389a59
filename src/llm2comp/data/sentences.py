"""Sentences for unsupervised contrastive learning (stage 2, SimCSE).

SimCSE's ``wiki1m_for_simcse.txt`` is one sentence per line, so it is read as a plain text
source (``{"type": "text", "path": "wiki1m_for_simcse.txt"}``) without splitting. Paragraph
sources such as the bundled Wikipedia excerpt (the offline default) are split with
`split_sentences`, a small rule-based splitter:

- a sentence ends at ``.``, ``!`` or ``?`` (plus closing quotes / brackets) followed by white
  space and a capital letter, a digit or an opening quote / bracket, and at every line break;
- no break inside an open parenthesis, nor after a known abbreviation (``Dr.``, ``e.g.``, ``U.S.``, ``Jan.`` ...), a single
  initial (``J. R. R. Tolkien``), or ``No.`` / ``p.`` / ``c.`` before a number;
- decimals (``3.14``) and dotted names (``node.js``) never break: a boundary needs white space.

It is not a linguistic parser; it is deterministic, fast and good enough for contrastive pairs,
where an occasional bad split is a slightly odd sentence, not a wrong label.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Mapping

from .corpora import Corpus
from .reading import DataError
from .sources import SourceSpec, load_documents

DEFAULT_MIN_CHARS = 20
DEFAULT_MAX_CHARS = 600

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr vs e.g i.e cf fig figs al approx ca inc ltd co corp bros gen col lt sgt capt
cmdr adm gov sen rep rev hon pres jan feb mar apr jun jul aug sep sept oct nov dec mt ft ave blvd dept univ
assn u.s u.k u.n a.k.a ph.d b.a m.a esp resp viz
""".split())
_BEFORE_NUMBER = frozenset({"no", "nos", "p", "pp", "c", "vol", "ch", "art", "sec", "op", "fl", "b", "d", "r"})
_BOUNDARY = re.compile(r"[.!?]+[\"'”’»)\]]*(?=\s+(\S))")
_WORD_BEFORE = re.compile(r"([\w.]+)\.$")
_OPENERS = "\"'“‘«([¿¡"


def _is_boundary(text: str, start: int, match: re.Match) -> bool:
    following = match.group(1)[0]
    if not (following.isupper() or following.isdigit() or following in _OPENERS):
        return False
    so_far = text[start:match.end()]
    if so_far.count("(") > so_far.count(")"):
        return False  # inside an open parenthesis: "(Hdt. 1.202)" is one sentence
    mark = match.group(0)
    if not mark.startswith(".") or mark.startswith(".."):
        return True  # "!", "?" and an ellipsis always end a sentence before a capital
    word = _WORD_BEFORE.search(text[:match.start() + 1])
    if word is None:
        return True
    token = word.group(1)
    if token.lower() in _ABBREVIATIONS:
        return False
    if len(token) == 1 and token.isalpha() and token.isupper():
        return False  # an initial: "J. Smith"
    return not (token.lower() in _BEFORE_NUMBER and following.isdigit())


def split_sentences(text: str) -> list[str]:
    """Split a text into sentences (see the module docstring for the rules); blank pieces are dropped."""
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            if _is_boundary(line, start, match):
                sentences.append(line[start:match.end()].strip())
                start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def sentences_from_documents(documents: Iterable[str], *, min_chars: int = DEFAULT_MIN_CHARS,
                             max_chars: int | None = DEFAULT_MAX_CHARS, dedupe: bool = True,
                             split: bool = True) -> tuple[list[str], dict]:
    """Split every document (unless `split` is False) and keep sentences within the length bounds (characters).

    Returns ``(sentences, stats)`` with stats ``{"documents", "sentences", "too_short", "too_long",
    "duplicates", "kept"}``. With `dedupe`, a sentence seen before (exact text) is dropped: two copies
    in one SimCSE batch would be a false negative.
    """
    stats = {"documents": 0, "sentences": 0, "too_short": 0, "too_long": 0, "duplicates": 0, "kept": 0}
    kept: list[str] = []
    seen: set[str] = set()
    for document in documents:
        stats["documents"] += 1
        for sentence in split_sentences(document) if split else [document.strip()]:
            stats["sentences"] += 1
            if len(sentence) < min_chars:
                stats["too_short"] += 1
            elif max_chars is not None and len(sentence) > max_chars:
                stats["too_long"] += 1
            elif dedupe and sentence in seen:
                stats["duplicates"] += 1
            else:
                seen.add(sentence)
                kept.append(sentence)
    stats["kept"] = len(kept)
    return kept, stats


def load_sentences(source: str | os.PathLike | Mapping | SourceSpec = "wiki_default", *, split: bool | None = None,
                   min_chars: int = DEFAULT_MIN_CHARS, max_chars: int | None = DEFAULT_MAX_CHARS,
                   dedupe: bool = True, shuffle: bool = True, seed: int = 0, limit: int | None = None) -> Corpus:
    """Stage-2 sentences from any source; the default is the bundled Wikipedia excerpt.

    split: split documents into sentences; default True for ``wiki_default``, False otherwise (a
           sentence file such as SimCSE's wiki1m is already one sentence per line).
    Then length bounds, exact-duplicate removal, a seeded shuffle and `limit`, in that order.
    """
    spec = SourceSpec.from_config(source)
    documents = load_documents(spec)
    if split is None:
        split = spec.type == "wiki_default"
    sentences, stats = sentences_from_documents(documents, min_chars=min_chars, max_chars=max_chars,
                                                dedupe=dedupe, split=split)
    if shuffle:
        random.Random(seed).shuffle(sentences)
    stats["unchecked"] = 0
    if limit is not None:
        stats["unchecked"] = max(0, len(sentences) - limit)
        sentences = sentences[:limit]
    stats["kept"] = len(sentences)
    if not sentences:
        raise DataError(f"no sentence passed the filters (min_chars={min_chars}, max_chars={max_chars}): {stats}",
                        spec.describe())
    return Corpus(sentences, spec, stats)
