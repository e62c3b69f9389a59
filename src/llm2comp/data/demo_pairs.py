"""Offline pairs for stage 3, built from the bundled Wikipedia excerpt (CC BY-SA, see `wikipedia.py`).

They let the supervised stage run end to end without downloads. They are *not* evaluation data and
resemble no MTEB task. Two kinds:

`wiki_demo_pairs()`: title / section heading -> the paragraph it introduces.

- an article's lead: query = the title, positive = the lead's first paragraph;
- a section: query = ``"{title} - {heading}"``, positive = the section's first paragraph;
- hard negative: the first paragraph of the next section of the same article (same topic,
  different content), when the article has another section.
Reference-like sections (See also, References, External links, ...) are skipped.

`wiki_cloze_pairs()`: the inverse cloze task (Lee et al., 2019, "Latent Retrieval for Weakly
Supervised Open Domain QA"): the query is one sentence of a paragraph, the positive is that
paragraph *without* the sentence (so lexical copying does not solve it), the hard negative is the
next paragraph of the same article. Paragraphs of fewer than three sentences are skipped; the
sentence taken out is chosen by a hash of the paragraph (the same on every run), among sentences
of at least `min_sentence_chars` characters.
"""

from __future__ import annotations

import zlib

from .instructions import WIKI_CLOZE_INSTRUCTION, WIKI_CLOZE_TASK, WIKI_DEMO_INSTRUCTION, WIKI_DEMO_TASK
from .pairs import PairExample, PairSet, drop_duplicates
from .sentences import split_sentences
from .wikipedia import DEFAULT_MIN_PARAGRAPH_CHARS, wiki_articles

_SKIPPED_HEADINGS = frozenset({"see also", "references", "external links", "notes", "further reading",
                               "bibliography", "sources", "citations", "footnotes", "notes and references"})


def wiki_demo_pairs(min_chars: int = DEFAULT_MIN_PARAGRAPH_CHARS, with_instruction: bool = True) -> PairSet:
    """Title/heading -> paragraph pairs from the bundled Wikipedia excerpt, de-duplicated."""
    instruction = WIKI_DEMO_INSTRUCTION if with_instruction else None
    examples: list[PairExample] = []
    for article in wiki_articles(min_chars):
        sections = [s for s in article.sections if (s.heading or "").lower() not in _SKIPPED_HEADINGS]
        for position, section in enumerate(sections):
            query = article.title if section.heading is None else f"{article.title} - {section.heading}"
            negatives = ()
            if len(sections) > 1:
                negatives = (sections[(position + 1) % len(sections)].paragraphs[0],)
            origin = f"wiki:{article.title}#{section.heading or 'lead'}"
            examples.append(PairExample(query, section.paragraphs[0], negatives, instruction, WIKI_DEMO_TASK, origin))
    return drop_duplicates(examples)


def wiki_cloze_pairs(min_chars: int = DEFAULT_MIN_PARAGRAPH_CHARS, min_sentence_chars: int = 40,
                     with_instruction: bool = True) -> PairSet:
    """Sentence -> rest of its paragraph pairs (inverse cloze), hard negative from the same article."""
    instruction = WIKI_CLOZE_INSTRUCTION if with_instruction else None
    examples: list[PairExample] = []
    for article in wiki_articles(min_chars):
        paragraphs = article.paragraphs()
        for position, paragraph in enumerate(paragraphs):
            sentences = split_sentences(paragraph)
            candidates = [i for i, s in enumerate(sentences) if len(s) >= min_sentence_chars]
            if len(sentences) < 3 or not candidates:
                continue
            taken = candidates[zlib.crc32(paragraph.encode("utf-8")) % len(candidates)]
            rest = " ".join(s for i, s in enumerate(sentences) if i != taken)
            negatives = (paragraphs[(position + 1) % len(paragraphs)],) if len(paragraphs) > 1 else ()
            origin = f"wiki:{article.title}#paragraph{position}"
            examples.append(PairExample(sentences[taken], rest, negatives, instruction, WIKI_CLOZE_TASK, origin))
    return drop_duplicates(examples)
