"""Stage-1 documents: a source (see `sources.py`) read, filtered and sampled in one call.

    corpus = load_corpus({"type": "hf", "name": "wikitext", "config": "wikitext-103-raw-v1"},
                         min_chars=1000, max_tokens=511, tokenizer=tok, seed=42, limit=128_000)
    corpus.texts   # list[str] for the trainer
    corpus.stats   # {"read", "too_short", "too_long", "kept", "unchecked"}

Everything that can be wrong with the data (missing file, undecodable line, a bad JSONL row, no
text left after filtering) raises here, before a model is loaded or a step is taken.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .filters import filter_texts
from .reading import DataError
from .sources import SourceSpec, load_documents


@dataclass
class Corpus:
    """Texts ready for training, the source they came from and what the filters did."""

    texts: list[str]
    source: SourceSpec
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def summary(self) -> str:
        s = self.stats
        return (f"{self.source.describe()}: read {s.get('read', 0)}, too short {s.get('too_short', 0)}, "
                f"too long {s.get('too_long', 0)}, kept {s.get('kept', len(self.texts))}"
                + (f" (limit reached, {s['unchecked']} not examined)" if s.get("unchecked") else ""))


def load_corpus(source: str | os.PathLike | Mapping | SourceSpec, *, min_chars: int = 0,
                max_tokens: int | None = None, tokenizer=None, shuffle: bool = True, seed: int = 0,
                limit: int | None = None) -> Corpus:
    """Read `source`, drop texts outside the length bounds, shuffle with `seed`, keep at most `limit`.

    See `filters.filter_texts` for the meaning of each filter. Raises DataError when nothing is
    left, with the counts that say which filter removed everything.
    """
    spec = SourceSpec.from_config(source)
    documents = load_documents(spec)
    texts, stats = filter_texts(documents, min_chars=min_chars, max_tokens=max_tokens, tokenizer=tokenizer,
                                shuffle=shuffle, seed=seed, limit=limit)
    corpus = Corpus(texts, spec, stats)
    if not texts:
        raise DataError(f"no text passed the filters (min_chars={min_chars}, max_tokens={max_tokens}): "
                        f"{corpus.summary()}", spec.describe())
    return corpus
