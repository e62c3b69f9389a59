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


def test_not_gzip_and_truncated_gzip_are_named_errors(tmp_path):
    fake = tmp_path / "fake.txt.gz"
    fake.write_text("plain text, not gzip\n")
    with pytest.raises(DataError, match=r"fake.txt.gz: is not valid gzip data .*rename it without .gz"):
        read_texts(fake)
    whole = gzip.compress(("a line of text\n" * 2000).encode())
    (tmp_path / "cut.txt.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut.txt.gz: is a truncated gzip file"):
        read_texts(tmp_path / "cut.txt.gz")
    (tmp_path / "fake.jsonl.bz2").write_text('{"text": "a"}\n')
    with pytest.raises(DataError, match=r"fake.jsonl.bz2: is not valid bz2 data"):
        read_texts(tmp_path / "fake.jsonl.bz2")


def test_pipes_devices_and_stdin_are_read(tmp_path, monkeypatch):
    import io
    import os
    import sys

    read, write = os.pipe()  # what a shell's <(printf 'a\nb\n') gives: /dev/fd/N, a pipe
    os.write(write, b"from a pipe\n\nsecond\n")
    os.close(write)
    try:
        assert read_texts(f"/dev/fd/{read}") == ["from a pipe", "second"]
    finally:
        os.close(read)
    with pytest.raises(DataError, match=r"/dev/null: holds no texts"):  # a device: read, and empty
        read_texts("/dev/null")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfone\r\ntwo\n")))
    assert read_texts("-") == ["one", "two"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n")))
    with pytest.raises(DataError, match=r"<stdin>: holds no texts"):
        read_texts("-")


def test_folders_binary_utf16_and_json_files_are_refused(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(DataError, match=r"folder.txt: is a folder; expected a file"):
        read_texts(tmp_path / "folder.txt")
    (tmp_path / "binary.txt").write_bytes(b"ok\nab\x00\x01cd\n")
    with pytest.raises(DataError, match=r"binary.txt:2: a NUL byte at column 3: this looks like a binary file"):
        read_texts(tmp_path / "binary.txt")
    (tmp_path / "wide.txt").write_bytes("hello\nworld\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"wide.txt:1: is UTF-16 text .*iconv -f utf-16"):
        read_texts(tmp_path / "wide.txt")
    (tmp_path / "texts.json").write_text('["a", "b"]')
    with pytest.raises(DataError, match=r"texts.json: is a .json file; give one text per line"):
        read_texts(tmp_path / "texts.json")


def test_unreadable_file_is_a_named_error(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "secret.txt"
    path.write_text("a\n")
    path.chmod(0)
    with pytest.raises(DataError, match=r"secret.txt: cannot be read: Permission denied"):
        read_texts(path)


def test_cr_line_endings_and_an_empty_file_name(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes(b"one\rtwo\r\rthree\r")
    assert read_texts(path) == ["one", "two", "three"]
    with pytest.raises(DataError, match=r"the file name is empty; name a file \(or - for the standard input\)"):
        read_texts("")
