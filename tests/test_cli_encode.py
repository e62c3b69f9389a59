"""`llm2comp encode` end to end on a tiny model, and its errors."""

import json

import numpy as np
import pytest

from llm2comp import LLM2Comp
from llm2comp.cli.main import main


@pytest.fixture
def saved_model(tiny_llama_dir, tmp_path):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    model.save(tmp_path / "model")
    return model, tmp_path / "model"


def test_encode_txt_and_jsonl(saved_model, tmp_path):
    model, folder = saved_model
    (tmp_path / "in.txt").write_text("first text\n\nsecond text\n")
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "in.txt"),
                 "--output", str(tmp_path / "out.npy")]) == 0
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, model.encode(["first text", "second text"]), atol=1e-5)
    rows = [{"text": "first text", "instruction": "Find it"}, {"text": "second text"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "q.npy"), "--normalize"]) == 0
    expected = model.encode([("Find it", "first text"), "second text"], normalize_embeddings=True)
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), expected, atol=1e-5)


def test_encode_errors_name_file_and_line(saved_model, tmp_path, capsys):
    _, folder = saved_model
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "bad.jsonl"),
                 "--output", str(tmp_path / "o.npy")]) == 2
    assert "bad.jsonl:2: expected a JSON object" in capsys.readouterr().err
    (tmp_path / "nofield.jsonl").write_text('{"body": "ok"}\n')
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "nofield.jsonl"),
                 "--output", str(tmp_path / "o.npy")]) == 2
    assert "nofield.jsonl:1: field 'text' is missing" in capsys.readouterr().err
    assert main(["encode", "--model", str(folder), "--input", str(tmp_path / "missing.txt"),
                 "--output", str(tmp_path / "o.npy")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["encode", "--help"])
    out = capsys.readouterr().out
    assert "--input" in out and "one row per text" in out
