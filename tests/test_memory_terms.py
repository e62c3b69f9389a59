"""Stage-1 levers against the prefix shortcut: alignment, margin, mixed reconstruction; the memory
gap diagnostic; the decoding probe; the overfit canary that guards the memory -> decoder path."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.data.compression_examples import make_example
from llm2comp.losses.compression import CompressionObjective, CompressionTerms
from llm2comp.losses.embedding_alignment import embedding_alignment_loss
from llm2comp.losses.memory_margin import memory_margin_loss
from llm2comp.training.loop import LoopSettings, parameter_groups
from llm2comp.training.memory_probe import memory_gap

from .conftest import save_tiny_model, tiny_config
from .test_compression import IDS  # the `encoder` fixture lives in conftest.py
from .training_helpers import memory_and_backbone_targets


def test_alignment_and_margin_cores_match_their_formulas():
    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    expected = (1 - (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)).mean()
    torch.testing.assert_close(embedding_alignment_loss(a, b), expected)
    assert embedding_alignment_loss(a, 3 * a).abs() < 1e-6  # scale-free
    own, other = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.5, 1.0, 3.1])
    # gaps 0.5, -1.0, 0.1 against margin 0.3 -> 0, 1.3, 0.2
    torch.testing.assert_close(memory_margin_loss(own, other, 0.3), torch.tensor([0.0, 1.3, 0.2]).mean())
    with pytest.raises(ValueError, match="shape"):
        memory_margin_loss(own, other[:2], 0.3)


def test_per_text_losses_roll_uses_another_texts_memory(encoder):
    for name in ("kl", "nll"):
        objective = CompressionObjective(encoder, name)
        examples = [make_example(ids, name, seed=3, index=i) for i, ids in enumerate(IDS)]
        own = objective.per_text_losses(examples)
        torch.testing.assert_close(own.mean(), objective(examples), atol=1e-6, rtol=1e-6)
        assert not torch.allclose(own, objective.per_text_losses(examples, roll=1))
    # nll: text 0 read with the memory of text 2 (roll 1) = text 0's target after text 2's context
    rolled = objective.per_text_losses(examples, roll=1)
    swapped = make_example(IDS[0], "nll", 3, 0)
    swapped.context = examples[2].context
    torch.testing.assert_close(rolled[0], objective.per_text_losses([swapped, examples[1]])[0], atol=1e-5,
                               rtol=1e-5)


def test_mixed_terms_add_their_weighted_losses(encoder):
    examples = [make_example(ids, "kl", seed=3, index=i) for i, ids in enumerate(IDS)]
    base = CompressionObjective(encoder, "kl")(examples)
    rc_only = CompressionObjective(encoder, "reconstruction")(
        [make_example(e.context, "reconstruction", 0, 0) for e in examples])
    mixed = CompressionObjective(encoder, "kl", terms=CompressionTerms(reconstruction_weight=0.5))(examples)
    torch.testing.assert_close(mixed, base + 0.5 * rc_only, atol=1e-5, rtol=1e-5)

    objective = CompressionObjective(encoder, "kl")
    own, other = objective.per_text_losses(examples), objective.per_text_losses(examples, roll=1)
    margin = CompressionObjective(encoder, "kl", terms=CompressionTerms(margin_weight=2.0, margin=0.7))(examples)
    torch.testing.assert_close(margin, base + 2.0 * memory_margin_loss(own, other, 0.7), atol=1e-5, rtol=1e-5)

    # alignment target: the frozen causal LLM's mean over [BOS] context, i.e. the backbone's mean pooling
    aligned = CompressionObjective(encoder, "kl", terms=CompressionTerms(alignment_weight=1.0))(examples)
    memory, targets = memory_and_backbone_targets(encoder, examples)
    expected = base + embedding_alignment_loss(memory, targets)
    torch.testing.assert_close(aligned, expected, atol=1e-5, rtol=1e-5)
    # contrastive alignment: each memory mean must pick its own text's teacher embedding in the batch
    nce = CompressionObjective(encoder, "kl", terms=CompressionTerms(alignment_weight=1.0,
                                                                     alignment_temperature=0.1))(examples)
    logits = F.normalize(memory, dim=-1) @ F.normalize(targets, dim=-1).T / 0.1
    expected = base + F.cross_entropy(logits, torch.arange(len(examples)))
    torch.testing.assert_close(nce, expected, atol=1e-5, rtol=1e-5)


def test_alignment_gradient_reaches_the_memory_vectors(encoder):
    encoder.memory.weight.requires_grad_(True)
    examples = [make_example(ids, "nll", seed=3, index=i) for i, ids in enumerate(IDS)]
    CompressionObjective(encoder, "nll", terms=CompressionTerms(alignment_weight=1.0, margin_weight=1.0))(
        examples).backward()
    assert encoder.memory.weight.grad is not None and encoder.memory.weight.grad.abs().sum() > 0


def test_first_token_losses_score_only_the_first_target_tokens(encoder):
    objective = CompressionObjective(encoder, "kl")
    examples = [make_example(ids, "kl", seed=3, index=i) for i, ids in enumerate(IDS)]
    full, first = objective.per_text_losses(examples, roll=1, first=2)
    torch.testing.assert_close(full, objective.per_text_losses(examples, roll=1))
    cut = [replace(e, target=e.target[:2], full=e.context + e.target[:2]) for e in examples]
    torch.testing.assert_close(first, objective.per_text_losses(cut, roll=1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first, full)


def test_memory_gap_is_other_minus_own(encoder):
    objective = CompressionObjective(encoder, "kl")
    texts = [" ".join(f"word{i}{j}" for j in range(30)) for i in range(5)]
    gap = memory_gap(objective, texts, seed=0, batch_size=2)
    assert gap["texts"] == 5
    assert gap["gap"] == pytest.approx(gap["other"] - gap["own"])
    assert gap["gap_first"] == pytest.approx(gap["other_first"] - gap["own_first"])
    with pytest.raises(ValueError, match="at least 2"):
        memory_gap(objective, texts[:1])


def test_memory_lr_gets_its_own_parameter_group(encoder):
    named = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad or n == "memory.weight"]
    groups = parameter_groups(named, LoopSettings(max_steps=1, lr=1e-4, lr_by_name={"memory.weight": 3e-3}))
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert set(by_lr) == {1e-4, 3e-3} and by_lr[3e-3] == [encoder.memory.weight]


@pytest.mark.slow
def test_overfit_canary_reconstruction_path_carries_the_text(tmp_path, tokenizer_dir):
    """The memory -> frozen decoder path can carry a text: reconstruction overfits two short texts and
    decoding their memories gives each text back (guards the path against regressions).

    The tiny decoder is initialised with a larger weight scale (0.3) than usual: with the default 0.02
    a random 2-layer model's logits are nearly uniform and no input can make it write a given text."""
    config = tiny_config("llama")
    config.initializer_range = 0.3
    save_tiny_model("llama", tmp_path / "m", tokenizer_dir, config=config)
    torch.manual_seed(0)
    model = LLM2Comp.from_pretrained(tmp_path / "m", num_memory_tokens=4, max_length=64)
    model.add_lora(LoraSettings(r=8, alpha=16, dropout=0.0))
    model.memory.weight.requires_grad_(True)
    texts = ["the cat sat on the mat", "stock prices fell sharply"]
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    examples = [make_example(row, "reconstruction", 0, i) for i, row in enumerate(ids)]
    objective = CompressionObjective(model, "reconstruction")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    start = float(objective(examples))
    for _ in range(200):
        optimizer.zero_grad()
        loss = objective(examples)
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.25 * start
    decoded = model.decode_memory(texts, max_new_tokens=8)
    assert decoded[0].startswith("the cat") and decoded[1].startswith("stock prices"), decoded
