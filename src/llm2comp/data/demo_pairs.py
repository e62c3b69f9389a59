"""Offline demo pairs for stage 3: Wikipedia title / section heading -> the paragraph it introduces.

Built from the bundled Wikipedia excerpt (CC BY-SA, see `wikipedia.py`) so that the supervised
stage runs end to end without downloads. It is *not* evaluation data and resembles no MTEB task:
use it to check that the pipeline works, not to report quality.

- an article's lead: query = the title, positive = the lead's first paragraph;
- a section: query = ``"{title} - {heading}"``, positive = the section's first paragraph;
- hard negative: the first paragraph of the next section of the same article (same topic,
  different content), when the article has another section.
Reference-like sections (See also, References, External links, ...) are skipped.
"""

from __future__ import annotations

from .instructions import WIKI_DEMO_INSTRUCTION, WIKI_DEMO_TASK
from .pairs import PairExample, PairSet, drop_duplicates
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
