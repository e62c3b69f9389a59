"""Readers for text / JSONL / Hugging Face sources, the source spec, and their error messages."""

from __future__ import annotations

import gzip
import json

import pytest

from llm2comp.data import DataError, MissingDataError, SourceSpec, load_documents
from llm2comp.data.sources import read_text_file


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_text_one_document_per_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first doc\n\n  second doc  \r\nthird\n", encoding="utf-8")
    assert load_documents({"type": "text", "path": str(path)}) == ["first doc", "second doc", "third"]


def test_text_blank_line_paragraphs_and_whole_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a wrapped\nparagraph\n\n\nsecond one\n  \nthird\nend", encoding="utf-8")
    spec = {"type": "text", "path": str(path), "separator": "blank_line"}
    assert load_documents(spec) == ["a wrapped paragraph", "second one", "third end"]
    assert read_text_file(path, "file") == ["a wrapped\nparagraph\n\n\nsecond one\n  \nthird\nend"]


def test_several_files_gzip_and_bom(tmp_path):
    plain = tmp_path / "a.txt"
    plain.write_bytes(b"\xef\xbb\xbfwith bom\n")
    packed = tmp_path / "b.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write("zipped doc\n")
    assert load_documents({"type": "text", "path": [str(plain), str(packed)]}) == ["with bom", "zipped doc"]


def test_jsonl_field(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"body": " x y ", "id": 1}, "", {"body": "z"}])
    assert load_documents({"type": "jsonl", "path": str(path), "field": "body"}) == ["x y", "z"]
    assert load_documents(str(write_jsonl(tmp_path / "d.jsonl", [{"text": "t"}]))) == ["t"]  # shorthand


@pytest.mark.parametrize("row, message", [
    ("[1, 2]", "expected a JSON object, got list"),
    ("{not json", "invalid JSON"),
    ({"other": "x"}, "field 'text' is missing (fields present: other)"),
    ({"text": "   "}, "field 'text' is empty"),
    ({"text": 3}, "field 'text' must be a string, got int"),
    ({"text": None}, "field 'text' must be a string, got NoneType"),
])
def test_jsonl_bad_row_names_file_and_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"text": "ok"}, row])
    with pytest.raises(DataError) as caught:
        load_documents({"type": "jsonl", "path": str(path)})
    assert f"{path}:3: " in str(caught.value) and message in str(caught.value)
    assert caught.value.line == 3 and caught.value.path == str(path)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("good line\ncaf\u00e9 ok\n".encode() + "na\u00efve".encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=rf"{path}:3: bytes that are not UTF-8 at column 3"):
        load_documents({"type": "text", "path": str(path)})


def test_missing_and_empty_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(MissingDataError, match=f"{missing}: no such file"):
        load_documents(str(missing))
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        load_documents({"type": "jsonl", "path": str(tmp_path / "nope.jsonl")})
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match=f"{blank}: holds no documents"):
        load_documents(str(blank))
    with pytest.raises(DataError, match="is a folder"):
        load_documents(str(tmp_path))


def test_spec_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown data source type 'csv'"):
        SourceSpec.from_config({"type": "csv", "path": "x"})
    with pytest.raises(ValueError, match=r"unknown data source key\(s\) \['fields'\]"):
        SourceSpec.from_config({"type": "jsonl", "path": "x", "fields": "t"})
    with pytest.raises(ValueError, match="needs 'path'"):
        SourceSpec.from_config({"type": "text"})
    with pytest.raises(ValueError, match="unknown separator"):
        SourceSpec(type="text", path="x", separator="para")
    assert SourceSpec.from_config("wiki_default").type == "wiki_default"
    spec = SourceSpec.from_config({"type": "hf", "name": "wikitext", "config": "wikitext-103-raw-v1"})
    assert spec.to_dict() == {"type": "hf", "name": "wikitext", "config": "wikitext-103-raw-v1"}
    assert SourceSpec.from_config(spec.to_dict()) == spec
    assert spec.describe() == "hf:wikitext/wikitext-103-raw-v1/train"


# --- Hugging Face datasets: local data through the same calls as the Hub -------------------------

WIKITEXT_ROWS = ["", " = Title = \n", " A long paragraph of text . \n", "", " Another paragraph . \n"]


def test_hf_hub_layout_folder_goes_through_load_dataset(tmp_path):
    """A folder laid out like the Hub's `wikitext` repo (parquet per config + README configs)."""
    datasets = pytest.importorskip("datasets")
    repo = tmp_path / "wikitext"
    (repo / "wikitext-103-raw-v1").mkdir(parents=True)
    datasets.Dataset.from_dict({"text": WIKITEXT_ROWS}).to_parquet(
        str(repo / "wikitext-103-raw-v1" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_dict({"text": ["held out"]}).to_parquet(
        str(repo / "wikitext-103-raw-v1" / "test-00000-of-00001.parquet"))
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: wikitext-103-raw-v1\n  data_files:\n"
        "  - split: train\n    path: wikitext-103-raw-v1/train-*\n"
        "  - split: test\n    path: wikitext-103-raw-v1/test-*\n---\n")
    spec = {"type": "hf", "name": str(repo), "config": "wikitext-103-raw-v1", "split": "train",
            "cache_dir": str(tmp_path / "cache")}
    assert load_documents(spec) == ["= Title =", "A long paragraph of text .", "Another paragraph ."]
    assert load_documents(dict(spec, split="test")) == ["held out"]


def test_hf_save_to_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": WIKITEXT_ROWS, "n": [1, 2, 3, 4, 5]}).save_to_disk(str(tmp_path / "one"))
    assert len(load_documents({"type": "hf", "path": str(tmp_path / "one")})) == 3
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"body": ["v1", None, "v2"]})}).save_to_disk(
        str(tmp_path / "dict"))
    spec = {"type": "hf", "path": str(tmp_path / "dict"), "split": "validation", "field": "body"}
    assert load_documents(spec) == ["v1", "v2"]
    with pytest.raises(DataError, match="no split 'train'; splits: validation"):
        load_documents(dict(spec, split="train"))
    with pytest.raises(DataError, match="no column 'text'; columns: body"):
        load_documents(dict(spec, field="text"))
    with pytest.raises(DataError, match="row 0: column 'n' must hold strings, got int"):
        load_documents({"type": "hf", "path": str(tmp_path / "one"), "field": "n"})
    with pytest.raises(MissingDataError, match="no such dataset folder"):
        load_documents({"type": "hf", "path": str(tmp_path / "absent")})


def test_hf_json_builder_with_data_files(tmp_path):
    pytest.importorskip("datasets")
    path = write_jsonl(tmp_path / "rows.json", [{"text": "one"}, {"text": "two"}])
    spec = {"type": "hf", "name": "json", "data_files": [str(path)], "cache_dir": str(tmp_path / "cache")}
    assert load_documents(spec) == ["one", "two"]


def test_hf_unreachable_hub_is_a_data_error(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    with pytest.raises(DataError, match="could not load dataset"):
        load_documents({"type": "hf", "name": "surely-not/a-dataset-llm2comp", "cache_dir": str(tmp_path)})
