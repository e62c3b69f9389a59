"""Reading texts to embed: .txt / .jsonl, compressed, with instructions; errors name file and line."""

import gzip
import json

import pytest

from llm2comp.data.reading import DataError
from llm2comp.text_files import read_texts


def test_txt_skips_blank_lines_and_keeps_order(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("first\n\n  \nsecond\r\nthird")
    assert read_texts(path) == ["first", "second", "third"]


def test_jsonl_gz_with_instructions(tmp_path):
    path = tmp_path / "queries.jsonl.gz"
    rows = [{"text": "what is a cat", "instruction": "Retrieve passages"}, {"text": "plain"}]
    with gzip.open(path, "wt") as stream:
        stream.write("\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_texts(path) == [("Retrieve passages", "what is a cat"), "plain"]


def test_custom_field_and_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "a"}\n{"body": ""}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: field 'body' is empty"):
        read_texts(path, field="body")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty.txt: holds no texts"):
        read_texts(tmp_path / "empty.txt")
    (tmp_path / "latin.txt").write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(DataError, match=r"latin.txt:2: bytes that are not UTF-8"):
        read_texts(tmp_path / "latin.txt")
    with pytest.raises(FileNotFoundError, match="nothere.txt"):
        read_texts(tmp_path / "nothere.txt")
