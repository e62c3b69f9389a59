"""Gradient checkpointing changes memory, not gradients: stage 1 (adapter on in the encoder, off in the
frozen teacher / decoder) and stage 3 with GradCache, in float32, with and without it.

Tolerance: recomputation repeats the very same float32 operations on the same inputs (and the same
dropout masks: torch's checkpoint restores the random state), so the gradients agree to rounding
(rtol 1e-6; measured: bitwise equal).
"""

from __future__ import annotations

import pytest
import torch

from llm2comp.data.compression_examples import make_example
from llm2comp.losses.cached_info_nce import CachedInfoNCE
from llm2comp.losses.compression import CompressionObjective
from llm2comp.recipes.common import load_encoder

from .conftest import randomize_lora
from .training_helpers import tiny_stage_config


def count_layer_calls(model) -> list[int]:
    """A counter of the runs of the first decoder layer (forwards and recomputations), on its MLP: the
    layer's own hooks stay outside the checkpoint (transformers checkpoints `forward`), its children's run
    again in a recomputation."""
    calls = [0]
    layer = next(m for name, m in model.model.named_modules() if name.endswith("layers.0.mlp"))
    layer.register_forward_pre_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    return calls


def build(tiny_llama_dir, tmp_path, checkpointing: bool, dropout: float = 0.0):
    """The recipes' model (`load_encoder`): LoRA with non-zero weights, trainable memory vectors."""
    cfg = tiny_stage_config(tiny_llama_dir, tmp_path / "unused", tmp_path / "run", num_memory_tokens=3,
                            lora={"r": 4, "alpha": 8, "dropout": dropout}, gradient_checkpointing=checkpointing)
    model = load_encoder(cfg)
    randomize_lora(model.model)
    return model.train()


def gradients(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.requires_grad}


def assert_same_gradients(first: dict, second: dict) -> None:
    assert first.keys() == second.keys() and first
    for name in first:
        torch.testing.assert_close(second[name], first[name], rtol=1e-6, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
    assert any(g.abs().sum() > 0 for g in first.values())


def stage1_examples():
    rows = [[(7 * i + 13 * j) % 3000 + 100 for j in range(30 + 3 * i)] for i in range(3)]
    return [make_example(row, "kl", 0, i) for i, row in enumerate(rows)]


def test_stage1_gradients_equal_with_checkpointing(tiny_llama_dir, tmp_path):
    """Regression: with `gradient_checkpointing: true` (the paper configs) the first stage-1 backward
    stopped with torch's CheckpointError: the student decoder ran with the adapter off, its
    recomputation in the backward with the adapter back on (training/activation_checkpointing.py)."""
    results = {}
    for checkpointing in (False, True):
        model = build(tiny_llama_dir, tmp_path, checkpointing)
        calls = count_layer_calls(model)
        objective = CompressionObjective(model, "kl")
        loss = objective(stage1_examples())
        forwards = calls[0]
        loss.backward()
        results[checkpointing] = loss.detach(), gradients(objective), forwards, calls[0] - forwards
    torch.testing.assert_close(results[True][0], results[False][0], rtol=0, atol=0)
    assert_same_gradients(results[False][1], results[True][1])
    # encoder, teacher, student: 3 forwards; the backward recomputes the encoder's and the student's,
    # never the teacher's (no_grad): checkpointing is on, and off in the teacher pass
    assert results[False][2:] == (3, 0) and results[True][2:] == (3, 2)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_stage3_gradcache_gradients_equal_with_checkpointing(tiny_llama_dir, tmp_path, dropout):
    """GradCache re-embeds each chunk with the dropout masks of its first pass; checkpointing recomputes
    each layer once more in the backward. Both replay the random state, so the gradients stay equal."""
    rows = [[(11 * i + 5 * j) % 3000 + 100 for j in range(6 + i % 4)] for i in range(12)]
    queries, positives, negatives = rows[:4], rows[4:8], rows[8:]
    results = {}
    for checkpointing in (False, True):
        model = build(tiny_llama_dir, tmp_path, checkpointing, dropout=dropout)
        calls = count_layer_calls(model)
        torch.manual_seed(0)
        loss = CachedInfoNCE(model, chunk_size=2)((queries, positives, negatives))
        loss.backward()
        results[checkpointing] = loss.detach(), gradients(model), calls[0]
    torch.testing.assert_close(results[True][0], results[False][0], rtol=0, atol=0)
    assert_same_gradients(results[False][1], results[True][1])
    # 6 chunks: 5 embedded without graph then re-embedded, 1 kept: 11 forwards; checkpointing adds one
    # recomputation per chunk with graph (6)
    assert (results[False][2], results[True][2]) == (11, 17)
