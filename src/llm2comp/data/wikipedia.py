"""The offline default corpus: clean paragraphs from a bundled excerpt of English Wikipedia.

Where it comes from: the `gensim` wheel on PyPI ships, as test data,
``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``:
a MediaWiki XML export (MediaWiki 1.27, early 2016) of the first pages of the English Wikipedia
dump, shortened by gensim's maintainers to 106 articles plus redirects. We read the file directly
(located with `importlib.util.find_spec`, never importing gensim, which needs compiled
dependencies), parse it with the standard library's XML parser, and strip the markup with
`wiki_markup.strip_markup`.

License: the article text is by Wikipedia contributors and licensed under the Creative Commons
Attribution-ShareAlike license (CC BY-SA 3.0 at the time of the dump; also GFDL). Text derived
from it (paragraphs, sentences, title -> paragraph pairs, and models trained mostly on it where
that matters to you) must keep the attribution and the share-alike terms. gensim itself is
LGPL-2.1; only its data file is used here.

Install it without its dependencies: ``pip install --no-deps gensim``.
"""

from __future__ import annotations

import bz2
import functools
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ..packaged import packaged_file
from .wiki_markup import strip_markup

WIKI_FILE_NAME = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKI_LICENSE = "CC BY-SA 3.0 (Wikipedia contributors); text from the gensim wheel's test data"
_INSTALL_HINT = "pip install --no-deps gensim"
DEFAULT_MIN_PARAGRAPH_CHARS = 100


@dataclass(frozen=True)
class WikiSection:
    """A run of paragraphs under one heading; the lead section has heading None and level 1."""

    heading: str | None
    level: int
    paragraphs: tuple[str, ...]


@dataclass(frozen=True)
class WikiArticle:
    title: str
    sections: tuple[WikiSection, ...] = field(default_factory=tuple)

    def paragraphs(self) -> list[str]:
        return [p for section in self.sections for p in section.paragraphs]


def wiki_dump_path() -> Path:
    """Locate the bundled Wikipedia excerpt inside the installed gensim package, without importing it."""
    return packaged_file("gensim", "test", "test_data", WIKI_FILE_NAME, install_hint=_INSTALL_HINT,
                         purpose="the default corpus (a Wikipedia excerpt)")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # drop the MediaWiki export namespace


def iter_pages(path: str | Path):
    """Yield ``(title, wikitext)`` for every article page (namespace 0) that is not a redirect."""
    path = Path(path)
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rb") as stream:
        for _, element in ElementTree.iterparse(stream, events=("end",)):
            if _local(element.tag) != "page":
                continue
            children = {_local(child.tag): child for child in element}
            namespace = children.get("ns")
            revision = children.get("revision")
            is_article = namespace is not None and (namespace.text or "").strip() == "0"
            if is_article and "redirect" not in children and revision is not None:
                text = next((c.text for c in revision if _local(c.tag) == "text"), None) or ""
                if not text.lstrip().lower().startswith("#redirect"):
                    yield children["title"].text or "", text
            element.clear()  # keep memory flat on a full-size dump


def parse_article(title: str, wikitext: str, min_chars: int = DEFAULT_MIN_PARAGRAPH_CHARS) -> WikiArticle:
    """Split one page into sections of clean paragraphs; paragraphs under `min_chars` are dropped."""
    sections: list[WikiSection] = []
    heading, level, paragraphs = None, 1, []
    for kind, block_level, text in strip_markup(wikitext):
        if kind == "heading":
            if paragraphs:
                sections.append(WikiSection(heading, level, tuple(paragraphs)))
            heading, level, paragraphs = text, block_level, []
        elif len(text) >= min_chars:
            paragraphs.append(text)
    if paragraphs:
        sections.append(WikiSection(heading, level, tuple(paragraphs)))
    return WikiArticle(title, tuple(sections))


@functools.lru_cache(maxsize=4)
def wiki_articles(min_chars: int = DEFAULT_MIN_PARAGRAPH_CHARS, path: str | None = None) -> tuple[WikiArticle, ...]:
    """All articles of the bundled excerpt (or of another MediaWiki XML export at `path`), cached."""
    source = Path(path) if path else wiki_dump_path()
    articles = tuple(parse_article(title, text, min_chars) for title, text in iter_pages(source))
    return tuple(article for article in articles if article.sections)


def wiki_paragraphs(min_chars: int = DEFAULT_MIN_PARAGRAPH_CHARS, path: str | None = None) -> list[str]:
    """Clean prose paragraphs of the bundled Wikipedia excerpt, in page order (no headings)."""
    return [p for article in wiki_articles(min_chars, path) for p in article.paragraphs()]
