"""Stage-3 pairs: JSONL rows, instructions on queries only, the E5 folder layout, errors, duplicates."""

from __future__ import annotations

import importlib.util
import json

import pytest

from llm2comp.data import (
    E5_INSTRUCTIONS,
    DataError,
    MissingDataError,
    instruction_for,
    read_e5_mix,
    read_pairs,
    split_sentences,
    wiki_articles,
    wiki_cloze_pairs,
    wiki_demo_pairs,
)


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_rows_negatives_and_instruction_precedence(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"query": "q1", "positive": "p1", "negative": "n1"},
        {"query": "q2", "positive": "p2", "negatives": ["n2", "n3"], "task": "nq"},
        {"query": "q3", "positive": "p3", "negative": [], "task": "fever", "instruction": "Own words"},
        {"query": "q4", "positive": "p4", "negative": None, "task": None},
    ])
    pairs = read_pairs(path, task="msmarco_passage")
    first, second, third, fourth = pairs.examples
    assert first.negatives == ("n1",) and second.negatives == ("n2", "n3") and third.negatives == ()
    assert first.instruction == E5_INSTRUCTIONS["msmarco_passage"] and first.task == "msmarco_passage"
    assert second.instruction == E5_INSTRUCTIONS["nq"] and second.task == "nq"
    assert third.instruction == "Own words" and third.task == "fever"
    assert fourth.task == "msmarco_passage"  # null means "not given": the file's task applies
    assert first.origin == f"{path}:1"
    assert second.query_text() == f"{E5_INSTRUCTIONS['nq']}: q2"
    assert second.positive == "p2"  # documents never carry the instruction
    plain = read_pairs(path, instruction="File instruction").examples
    assert plain[0].instruction == "File instruction" and plain[1].instruction == E5_INSTRUCTIONS["nq"]
    assert read_pairs(path).examples[0].query_text() == "q1"  # no instruction at all


@pytest.mark.parametrize("row, message", [
    ({"positive": "p"}, "field 'query' is missing (fields present: positive)"),
    ({"query": "q"}, "field 'positive' is missing"),
    ({"query": " ", "positive": "p"}, "field 'query' is empty"),
    ({"query": "q", "positive": ""}, "field 'positive' is empty"),
    ({"query": "q", "positive": 5}, "field 'positive' must be a string, got int"),
    ({"query": "q", "positive": "p", "negative": ["n", ""]}, "negative[1] must be a non-empty string"),
    ({"query": "q", "positive": "p", "negative": {"a": 1}}, "must be a string or a list of strings, got dict"),
    ({"query": "q", "positive": "p", "task": "msmarco"}, "unknown task 'msmarco'; known tasks: allnli"),
    ({"query": "q", "positive": "p", "instruction": ""}, "field 'instruction' is empty"),
    ('"just a string"', "expected a JSON object, got str"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q0", "positive": "p0"}, "", row])
    with pytest.raises(DataError) as caught:
        read_pairs(path)
    assert str(caught.value).startswith(f"{path}:3: ") and message in str(caught.value)


def test_unknown_file_level_task_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"query": "q", "positive": "p"}])
    with pytest.raises(KeyError, match="unknown task 'nope'"):
        read_pairs(path, task="nope")
    assert read_pairs(path, task="nope", instructions={"nope": "Do it"}).examples[0].instruction == "Do it"
    with pytest.raises(MissingDataError):
        read_pairs(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_pairs(tmp_path / "empty.jsonl")


def test_duplicates_are_counted_dropped_and_reported(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"query": "q", "positive": "p"}, {"query": "q ", "positive": "p", "negative": "x"},
                                           {"query": "q", "positive": "other"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"query": "q", "positive": "  p"}])
    pairs = read_pairs([a, b])
    assert len(pairs) == 2 and pairs.stats["duplicates"] == 2 and pairs.stats["read"] == 4
    assert pairs.duplicates == [(f"{a}:2", f"{a}:1"), (f"{b}:1", f"{a}:1")]
    assert "dropped 2 duplicates" in pairs.summary()
    assert len(read_pairs([a, b], dedupe=False)) == 4


def test_e5_folder_layout(tmp_path):
    write_jsonl(tmp_path / "allnli_split2.jsonl", [{"query": "a man sleeps", "positive": "a person rests",
                                                    "negative": "a man runs"}])
    write_jsonl(tmp_path / "msmarco_passage.jsonl", [{"query": "what is x", "positive": "x is y", "negative": "z"}])
    pairs = read_e5_mix(tmp_path)
    by_task = {e.task: e for e in pairs.examples}
    assert by_task["allnli_split2"].instruction == "Retrieve semantically similar text"
    assert by_task["allnli_split2"].group == "allnli" and by_task["msmarco_passage"].group == "msmarco_passage"
    assert by_task["allnli_split2"].positive == "a person rests"  # symmetric task: still no doc instruction
    assert "hotpot_qa" in pairs.stats["missing_tasks"] and "msmarco_passage" not in pairs.stats["missing_tasks"]
    assert len(read_e5_mix(tmp_path, tasks=["msmarco_passage"])) == 1
    with pytest.raises(MissingDataError, match="nq.jsonl: no such task file"):
        read_e5_mix(tmp_path, tasks=["nq"])
    write_jsonl(tmp_path / "mystery.jsonl", [{"query": "q", "positive": "p"}])
    with pytest.raises(DataError, match="mystery.jsonl: file name 'mystery' is not a known task"):
        read_e5_mix(tmp_path)
    assert len(read_e5_mix(tmp_path, instructions={"mystery": "Solve it"})) == 3


def test_instruction_table_covers_the_paper_mix():
    for task in ("allnli", "eli5", "fever", "hotpot_qa", "miracl", "mrtydi", "msmarco_passage", "msmarco_document",
                 "nq", "quora_duplicates", "squad", "trivia_qa", "dureader", "t2ranking"):
        assert instruction_for(task)
    with pytest.raises(KeyError, match="unknown task"):
        instruction_for("imagenet")


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs the gensim wheel's data")
def test_wiki_demo_pairs():
    pairs = wiki_demo_pairs()
    assert len(pairs) >= 1000 and pairs.stats["duplicates"] == 0
    lead = next(e for e in pairs.examples if e.query == "Anarchism")
    assert lead.positive.startswith("Anarchism is a political philosophy")
    assert lead.negatives and lead.negatives[0] != lead.positive
    assert lead.query_text().endswith(": Anarchism")
    assert not any(e.query.endswith(("- References", "- External links")) for e in pairs.examples)


@pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs the gensim wheel's data")
def test_wiki_cloze_pairs_take_one_sentence_out_of_its_paragraph():
    pairs = wiki_cloze_pairs()
    assert len(pairs) >= 1000 and pairs.stats["duplicates"] == 0
    paragraphs = {p: article for article in wiki_articles() for p in article.paragraphs()}
    for example in pairs.examples[:300]:
        # the positive is a paragraph of the corpus with exactly the query sentence taken out
        source = next(p for p in paragraphs if example.query in p and example.positive.split()[0] in p)
        sentences = split_sentences(source)
        assert example.query in sentences and len(sentences) >= 3
        assert example.query not in example.positive
        assert example.positive == " ".join(s for s in sentences if s != example.query)
        # the hard negative is another paragraph of the same article
        article = paragraphs[source]
        assert example.negatives and example.negatives[0] in article.paragraphs() and example.negatives[0] != source
        assert example.query_text().startswith("Given a sentence from a Wikipedia article")
    assert [e.query for e in wiki_cloze_pairs().examples[:50]] == [e.query for e in pairs.examples[:50]]
