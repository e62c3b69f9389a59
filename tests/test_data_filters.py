"""Length filters, seeded shuffle and limit (stage-1 corpora), with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from llm2comp.data import DataError, count_tokens, filter_texts, load_corpus


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


TEXTS = [f"text number {i} " + "word " * (i % 7) for i in range(40)] + ["tiny", " x "]


def test_count_tokens_excludes_special_tokens(tokenizer):
    plain = tokenizer("hello world", add_special_tokens=False)["input_ids"]
    assert count_tokens(["hello world", ""], tokenizer, batch_size=1) == [len(plain), 0]


def test_min_chars_and_stats():
    kept, stats = filter_texts(TEXTS, min_chars=20)
    assert all(len(t) >= 20 for t in kept)
    assert stats["too_short"] == sum(len(t.strip()) < 20 for t in TEXTS)
    assert stats == {"read": 42, "too_short": stats["too_short"], "too_long": 0, "kept": len(kept), "unchecked": 0}
    assert kept == [t.strip() for t in TEXTS if len(t.strip()) >= 20]  # no shuffle: input order


def test_max_tokens_is_inclusive(tokenizer):
    stripped = [t.strip() for t in TEXTS]
    lengths = dict(zip(stripped, count_tokens(stripped, tokenizer)))
    bound = sorted(lengths.values())[len(lengths) // 2]
    kept, stats = filter_texts(TEXTS, max_tokens=bound, tokenizer=tokenizer, batch_size=7)
    assert kept == [t for t in stripped if lengths[t] <= bound]
    assert stats["too_long"] == sum(n > bound for n in lengths.values()) > 0


def test_shuffle_is_seeded_and_limit_stops_early(tokenizer):
    a, stats = filter_texts(TEXTS, min_chars=10, max_tokens=50, tokenizer=tokenizer, shuffle=True, seed=3, limit=5,
                            batch_size=4)
    b, _ = filter_texts(TEXTS, min_chars=10, max_tokens=50, tokenizer=tokenizer, shuffle=True, seed=3, limit=5,
                        batch_size=64)
    c, _ = filter_texts(TEXTS, min_chars=10, shuffle=True, seed=4, limit=5)
    assert a == b and len(a) == 5 and a != c
    assert stats["kept"] == 5 and stats["unchecked"] > 0
    assert sum(stats[k] for k in ("too_short", "too_long", "kept", "unchecked")) == stats["read"]
    everything, _ = filter_texts(TEXTS, min_chars=10, shuffle=True, seed=3)
    assert a == everything[:5]  # a limit takes a prefix of the same seeded order


def test_bad_filter_arguments():
    with pytest.raises(ValueError, match="needs a tokenizer"):
        filter_texts(TEXTS, max_tokens=10)
    with pytest.raises(ValueError, match="limit must be >= 1"):
        filter_texts(TEXTS, limit=0)
    with pytest.raises(ValueError, match="min_chars must be >= 0"):
        filter_texts(TEXTS, min_chars=-1)


def test_load_corpus_reports_and_rejects_empty_result(tmp_path, tokenizer):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(TEXTS), encoding="utf-8")
    corpus = load_corpus(str(path), min_chars=20, max_tokens=12, tokenizer=tokenizer, seed=1, limit=10)
    assert len(corpus) == 10 and corpus.stats["kept"] == 10
    assert "kept 10" in corpus.summary()
    with pytest.raises(DataError, match=rf"{path}: no text passed the filters \(min_chars=5000"):
        load_corpus(str(path), min_chars=5000)
