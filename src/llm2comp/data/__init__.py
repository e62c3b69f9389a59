"""Training data for the three LLM2Comp stages: readers, filters, sentence splitting, pairs, batching.

Stage 1 (compression pre-training): `load_corpus(source, min_chars=, max_tokens=, tokenizer=, seed=, limit=)`.
Stage 2 (SimCSE): `load_sentences(source="wiki_default", ...)`.
Stage 3 (supervised): `read_pairs(paths)`, `read_e5_mix(folder)`, `wiki_demo_pairs()`,
`wiki_cloze_pairs()`, and
`ContrastiveBatchSampler(*pair_keys(examples), ...)` for clash-free global batches.
A source is a dict such as ``{"type": "hf", "name": "wikitext", "config": "wikitext-103-raw-v1"}``
(see `sources.SourceSpec`). Bad input raises `DataError` naming file and line.
"""

from .batching import ContrastiveBatchSampler, pair_keys, text_key
from .corpora import Corpus, load_corpus
from .demo_pairs import wiki_cloze_pairs, wiki_demo_pairs
from .filters import count_tokens, filter_texts
from .instructions import E5_INSTRUCTIONS, instruction_for, instruction_table
from .pairs import PairExample, PairSet, drop_duplicates, read_e5_mix, read_pairs
from .reading import DataError, MissingDataError
from .sentences import load_sentences, sentences_from_documents, split_sentences
from .sources import SOURCE_TYPES, SourceSpec, load_documents
from .wikipedia import WIKI_LICENSE, wiki_articles, wiki_dump_path, wiki_paragraphs

__all__ = [
    "ContrastiveBatchSampler", "Corpus", "DataError", "E5_INSTRUCTIONS", "MissingDataError", "PairExample",
    "PairSet", "SOURCE_TYPES", "SourceSpec", "WIKI_LICENSE",
    "count_tokens", "drop_duplicates", "filter_texts", "instruction_for", "instruction_table",
    "load_corpus", "load_documents", "load_sentences", "pair_keys", "read_e5_mix", "read_pairs",
    "sentences_from_documents", "split_sentences", "text_key", "wiki_articles", "wiki_cloze_pairs", "wiki_demo_pairs",
    "wiki_dump_path", "wiki_paragraphs",
]
