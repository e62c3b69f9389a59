"""A saved model folder reloads offline and gives the same embeddings."""

import json

import numpy as np
import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings

from .conftest import randomize_lora

TEXTS = ["The cat sat on the mat.", "Memory tokens compress text.", "A third, rather longer sentence here."]


@pytest.fixture
def trained_like(tiny_llama_dir):
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    model.add_lora(LoraSettings(r=4, alpha=8))
    randomize_lora(model.model)
    with torch.no_grad():
        model.memory.weight.mul_(1.5)
    return model


def test_save_and_reload_gives_identical_embeddings(trained_like, tmp_path):
    before = trained_like.encode(TEXTS)
    trained_like.save(tmp_path / "m")
    files = {p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert {"llm2comp_config.json", "memory_tokens.safetensors", "adapters/00/adapter_model.safetensors",
            "adapters/00/adapter_config.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((tmp_path / "m" / "llm2comp_config.json").read_text())
    assert config["num_memory_tokens"] == 4 and config["adapters"] == ["adapters/00"]
    assert config["embedding_dim"] == 64 and config["attention"] == "bidirectional"
    reloaded = LLM2Comp.from_pretrained(tmp_path / "m")
    np.testing.assert_allclose(reloaded.encode(TEXTS), before, atol=1e-5, rtol=0)
    assert np.abs(LLM2Comp.from_pretrained(config["backbone"], num_memory_tokens=4).encode(TEXTS) - before).max() > 1e-3


def test_stacked_stages_and_merged_save(trained_like, tmp_path):
    trained_like.add_lora(LoraSettings(r=4, alpha=8))  # stage 2: the first LoRA is merged
    randomize_lora(trained_like.model, seed=7)
    before = trained_like.encode(TEXTS)
    trained_like.save(tmp_path / "stacked")
    config = json.loads((tmp_path / "stacked" / "llm2comp_config.json").read_text())
    assert config["adapters"] == ["adapters/00", "adapters/01"]
    np.testing.assert_allclose(LLM2Comp.from_pretrained(tmp_path / "stacked").encode(TEXTS), before, atol=1e-5)
    trained_like.save(tmp_path / "merged", merge=True)
    assert (tmp_path / "merged" / "backbone" / "model.safetensors").is_file()
    np.testing.assert_allclose(LLM2Comp.from_pretrained(tmp_path / "merged").encode(TEXTS), before, atol=1e-5)


def test_saving_over_an_existing_folder_replaces_it_atomically(trained_like, tmp_path):
    target = tmp_path / "m"
    trained_like.save(target)
    (target / "adapters" / "01").mkdir()  # a model file the new save does not write (an older, longer stack)
    (target / "adapters" / "01" / "adapter_model.safetensors").write_bytes(b"old")
    trained_like.save(target)
    assert not (target / "adapters" / "01").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folders left behind


def test_incomplete_folder_is_reported(trained_like, tmp_path):
    trained_like.save(tmp_path / "m")
    (tmp_path / "m" / "adapters" / "00" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapters/00 has no adapter_model.safetensors"):
        LLM2Comp.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "llm2comp_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LLM2Comp.from_pretrained(tmp_path / "m")
