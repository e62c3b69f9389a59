"""The rule-based sentence splitter and stage-2 sentence loading."""

from __future__ import annotations

import importlib.util

import pytest

from llm2comp.data import DataError, load_sentences, sentences_from_documents, split_sentences


@pytest.mark.parametrize("text, expected", [
    ("One here. Two there! Three? Four.", ["One here.", "Two there!", "Three?", "Four."]),
    ("It cost $3.50 in 2.5 hours. Then v1.2 shipped.", ["It cost $3.50 in 2.5 hours.", "Then v1.2 shipped."]),
    ("Dr. Smith met Mrs. Jones, e.g. at St. Paul. They left.", ["Dr. Smith met Mrs. Jones, e.g. at St. Paul.",
                                                                 "They left."]),
    ("J. R. R. Tolkien was born in 1892. He wrote.", ["J. R. R. Tolkien was born in 1892.", "He wrote."]),
    ("See No. 5 and p. 14 from c. 1190. Next.", ["See No. 5 and p. 14 from c. 1190.", "Next."]),
    ("It grew in the U.S. during the war. Then it fell.", ["It grew in the U.S. during the war.", "Then it fell."]),
    ('He said "Stop." Then he went... And so on.', ['He said "Stop."', "Then he went...", "And so on."]),
    ("Near 450 BC (Hdt. 1.202). Next one.", ["Near 450 BC (Hdt. 1.202).", "Next one."]),
    ("lower case. after a stop stays joined", ["lower case. after a stop stays joined"]),
    ("First line\n\nsecond line. Third.", ["First line", "second line.", "Third."]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_length_bounds_and_dedupe():
    docs = ["Short. A sentence long enough to keep. A sentence long enough to keep.", "x" * 50 + "."]
    kept, stats = sentences_from_documents(docs, min_chars=10, max_chars=40)
    assert kept == ["A sentence long enough to keep."]
    assert stats == {"documents": 2, "sentences": 4, "too_short": 1, "too_long": 1, "duplicates": 1, "kept": 1}


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs the gensim wheel's data")
def test_default_sentences_from_bundled_wikipedia():
    corpus = load_sentences(seed=0)
    assert len(corpus) >= 10_000
    assert len(set(corpus.texts)) == len(corpus.texts)
    assert all(20 <= len(s) <= 600 for s in corpus.texts)
    again = load_sentences(seed=0, limit=100)
    assert again.texts == corpus.texts[:100] and again.stats["unchecked"] == len(corpus) - 100


def test_sentence_file_is_not_split(tmp_path):
    path = tmp_path / "wiki1m.txt"
    path.write_text("One sentence. With two parts here.\nAnother line here.\nAnother line here.\nok\n")
    corpus = load_sentences(str(path), shuffle=False, min_chars=5)
    assert corpus.texts == ["One sentence. With two parts here.", "Another line here."]
    assert corpus.stats["duplicates"] == 1 and corpus.stats["too_short"] == 1
    assert load_sentences(str(path), split=True, shuffle=False, min_chars=5).texts[0] == "One sentence."
    with pytest.raises(DataError, match="no sentence passed the filters"):
        load_sentences(str(path), min_chars=500)
