"""Every tiny architecture (conftest.TINY_ARCHES) saves, reloads and trains as an LLM2Comp encoder."""

import numpy as np
import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.data.compression_examples import make_example
from llm2comp.losses.compression import CompressionObjective

from .conftest import TINY_ARCHES, randomize_lora

TEXTS = ["The cat sat on the mat near the warm kitchen window.", "Memory tokens compress text.",
         "A third, rather longer sentence about rivers, mountains and the sea."]


@pytest.mark.parametrize("arch", [arch for arch in TINY_ARCHES if arch != "llama"])  # llama: test_saving.py
def test_save_and_reload_gives_identical_embeddings(tiny_model_dirs, tmp_path, arch):
    model = LLM2Comp.from_pretrained(tiny_model_dirs[arch], num_memory_tokens=3, max_length=32)
    model.add_lora(LoraSettings(r=2, alpha=4))
    randomize_lora(model.model)
    before = model.encode(TEXTS)
    model.save(tmp_path / "m")
    np.testing.assert_allclose(LLM2Comp.from_pretrained(tmp_path / "m").encode(TEXTS), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", TINY_ARCHES)
def test_one_compression_training_step(tiny_model_dirs, arch):
    """The stage-1 KL step (bidirectional encoder, causal student and teacher) learns on every family."""
    torch.manual_seed(0)
    model = LLM2Comp.from_pretrained(tiny_model_dirs[arch], num_memory_tokens=2, max_length=64)
    model.add_lora(LoraSettings(r=2, alpha=4, dropout=0.0))
    model.memory.weight.requires_grad_(True)
    ids = model.tokenize([" ".join(TEXTS) + " " + TEXTS[2]])[0][0]
    examples = [make_example(ids[:40], "kl", seed=0, index=i) for i in range(2)]
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    before = {name: p.detach().clone() for name, p in params.items()}
    loss = CompressionObjective(model, "kl")(examples)
    loss.backward()
    torch.optim.AdamW(params.values(), lr=1e-2).step()
    assert torch.isfinite(loss) and loss > 0
    assert params["memory.weight"].grad.abs().sum() > 0  # the memory is read through the encoder
    lora_b = [name for name in params if "lora_B" in name]
    assert lora_b and all(not torch.equal(params[name], before[name]) for name in lora_b)
