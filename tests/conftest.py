"""Shared fixtures: tiny random models of several architectures with the real SmolLM2 tokenizer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

# every test that runs across architectures uses all of these: plain RoPE (Llama), q/k bias (Qwen2),
# q/k norm (Qwen3), sliding window on every layer (Mistral), sliding + global layers (Gemma 3),
# learned positions and fused qkv (GPT-2), partial rotary and parallel blocks (Phi)
TINY_ARCHES = ("llama", "qwen2", "qwen3", "mistral", "gemma3", "gpt2", "phi")
WINDOW = 4  # the sliding window of the tiny Mistral and Gemma 3
VOCAB = 49152


def pytest_collection_modifyitems(config, items):
    for item in items:  # several processes are always slow (`make test-fast` skips `slow`)
        if "multiprocess" in item.keywords:
            item.add_marker(pytest.mark.slow)
    if os.environ.get("LLM2COMP_REAL_MODEL") == "1":
        return
    skip = pytest.mark.skip(reason="real-model test: set LLM2COMP_REAL_MODEL=1 to run")
    for item in items:
        if "real_model" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def no_model_load(monkeypatch):
    """Make loading a model fail loudly: what is checked before the work must never get there."""
    import llm2comp.cli.encode_cmd  # noqa: F401
    import llm2comp.evaluation.runner as runner
    import llm2comp.models.loading as loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(runner, "load_model", refuse)
    monkeypatch.setattr(loading, "load_for_use", refuse)


@pytest.fixture
def one_thread():
    """Tiny matrices: one thread is ~10x faster than two fighting over a shared, busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """Folder holding the real SmolLM2 tokenizer files (converted once into the user cache)."""
    from llm2comp.models.default_model import resolve_default_model

    return resolve_default_model()


def tiny_config(arch: str):
    import transformers as tf

    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, **common)
    if arch == "qwen2":
        return tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
                              **common)
    if arch == "qwen3":
        return tf.Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=True,
                              **common)
    if arch == "mistral":
        return tf.MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, max_position_embeddings=512, sliding_window=WINDOW,
                                tie_word_embeddings=True, **common)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                                   sliding_window=WINDOW, layer_types=["sliding_attention", "full_attention"], **common)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=512, **common)
    if arch == "phi":
        return tf.PhiConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            max_position_embeddings=512, partial_rotary_factor=0.5, **common)
    raise ValueError(arch)


def save_tiny_model(arch: str, folder: Path, tokenizer_dir: Path, seed: int = 0, config=None) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config or tiny_config(arch))
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: save_tiny_model(arch, root / arch, tokenizer_dir) for arch in TINY_ARCHES}


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_model_dirs) -> Path:
    return tiny_model_dirs["llama"]


@pytest.fixture
def tiny_encoder(tiny_llama_dir):
    from llm2comp import LLM2Comp

    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)


@pytest.fixture
def encoder(tiny_llama_dir):
    """A tiny LLM2Comp (k = 3) with a LoRA adapter whose weights are non-zero: the stage-1 objective tests."""
    from llm2comp import LLM2Comp, LoraSettings

    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=3, max_length=128)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model)
    return model


def randomize_lora(model, seed: int = 1, scale: float = 0.05) -> None:
    """Give a fresh LoRA adapter non-zero weights so that it changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
