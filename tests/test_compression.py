"""Stage 1: the compression objectives on one copy of the weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llm2comp.data.compression_examples import make_example, split_point
from llm2comp.losses.compression import CompressionObjective
from llm2comp.losses.kl_continuation import kl_continuation_loss
from llm2comp.losses.nll_continuation import token_nll_loss
from llm2comp.models.backbone import load_causal_lm

from .conftest import TINY_ARCHES

IDS = [list(range(100, 140)), list(range(300, 325)), list(range(500, 560))]


def test_split_point_is_uniform_in_range_reproducible_and_skips_short_texts():
    points = [split_point(40, seed=1, index=i) for i in range(2000)]
    assert min(points) == 10 and max(points) == 30
    assert points == [split_point(40, seed=1, index=i) for i in range(2000)]
    assert points != [split_point(40, seed=2, index=i) for i in range(2000)]
    assert split_point(19, seed=0, index=0) is None and split_point(20, seed=0, index=0) == 10
    example = make_example(list(range(40)), "kl", seed=1, index=0)
    assert example.context + example.target == list(range(40)) == example.full
    assert make_example(list(range(40)), "reconstruction", 1, 0).target == list(range(40))


def test_kl_loss_matches_reference_and_vanishes_for_identical_distributions():
    torch.manual_seed(0)
    teacher, student = torch.randn(5, 11), torch.randn(5, 11)
    text_index = torch.tensor([0, 0, 0, 1, 1])
    per_position = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                            reduction="none").sum(-1)
    expected = (per_position[:3].mean() + per_position[3:].mean()) / 2
    torch.testing.assert_close(kl_continuation_loss(teacher, student, text_index, 2), expected)
    assert kl_continuation_loss(teacher, teacher, text_index, 2).abs() < 1e-6
    nll = token_nll_loss(student, torch.tensor([1, 2, 3, 4, 5]), text_index, 2)
    ce = F.cross_entropy(student, torch.tensor([1, 2, 3, 4, 5]), reduction="none")
    torch.testing.assert_close(nll, (ce[:3].mean() + ce[3:].mean()) / 2)


def test_frozen_decoder_equals_fresh_backbone(encoder, tiny_llama_dir):
    fresh, _, _ = load_causal_lm(tiny_llama_dir)
    ids = torch.tensor([IDS[0][:20]])
    with torch.no_grad(), encoder.frozen() as decoder:
        ours = decoder(input_ids=ids).logits
    with torch.no_grad():
        adapted = encoder.model(input_ids=ids).logits
        reference = fresh(input_ids=ids).logits
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert (adapted - reference).abs().max() > 1e-3  # negative control: the adapter does change it


def _reference_logits(encoder, examples):
    """Per text, unbatched and with full logits: the student and teacher logits the loss should use."""
    student, teacher = [], []
    with torch.no_grad():
        for ex in examples:
            batch = encoder.collate([ex.context])
            memory = encoder.memory_states(batch)  # (1, k, d)
            with encoder.frozen() as lm:
                embed = lm.get_input_embeddings()
                bos = embed(torch.tensor([[1]]))
                inputs = torch.cat([bos, memory, embed(torch.tensor([ex.target]))], 1)
                logits = lm(inputs_embeds=inputs).logits[0]
                k = memory.shape[1]
                student.append(logits[k:k + len(ex.target)])  # position k = last memory slot
                if ex.full is not None:
                    full = lm(input_ids=torch.tensor([[1] + ex.full])).logits[0]
                    teacher.append(full[len(ex.context):len(ex.context) + len(ex.target)])
    return student, teacher


@pytest.mark.parametrize("objective", ["kl", "nll", "reconstruction"])
def test_batched_objective_equals_per_text_reference(encoder, objective):
    examples = [make_example(ids, objective, seed=3, index=i) for i, ids in enumerate(IDS)]
    encoder.eval()
    loss = CompressionObjective(encoder, objective)(examples)
    student, teacher = _reference_logits(encoder, examples)
    if objective == "kl":
        per_text = [kl_continuation_loss(t, s, torch.zeros(len(s), dtype=torch.long), 1)
                    for t, s in zip(teacher, student)]
    else:
        per_text = [F.cross_entropy(s, torch.tensor(ex.target)) for s, ex in zip(student, examples)]
    torch.testing.assert_close(loss, torch.stack(per_text).mean(), atol=1e-5, rtol=1e-5)


def test_gradients_reach_lora_and_memory_only(encoder):
    examples = [make_example(ids, "kl", seed=0, index=i) for i, ids in enumerate(IDS)]
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n == "memory.weight" for n in trainable)
    CompressionObjective(encoder, "kl")(examples).backward()
    grads = {n: p.grad for n, p in encoder.named_parameters() if p.requires_grad}
    assert grads["memory.weight"] is not None and grads["memory.weight"].abs().sum() > 0
    assert all(g is not None for g in grads.values())
    assert all(p.grad is None for n, p in encoder.named_parameters() if not p.requires_grad)


def test_separate_frozen_decoder_gives_the_same_loss_as_one_copy(encoder, tiny_llama_dir):
    examples = [make_example(ids, "kl", seed=5, index=i) for i, ids in enumerate(IDS)]
    encoder.eval()
    decoder, _, _ = load_causal_lm(tiny_llama_dir)
    one_copy = CompressionObjective(encoder, "kl")(examples)
    two_copy = CompressionObjective(encoder, "kl", decoder=decoder.eval())(examples)
    torch.testing.assert_close(one_copy, two_copy, atol=1e-6, rtol=1e-6)
    assert not any(name.startswith("decoder") for name, _ in CompressionObjective(encoder, decoder=decoder)
                   .named_parameters())


def _teacher_and_frozen_logits(objective, examples):
    with torch.no_grad(), objective.encoder.frozen() as lm:
        teacher = objective._teacher_outputs(lm, examples, context_mean=False)["logits"]
        return teacher, lm(input_ids=torch.tensor([IDS[0][:20]])).logits


@pytest.fixture
def trained_table(tiny_llama_dir, tmp_path):
    """The stage-1 model of `train_input_embeddings: true` on the tied tiny Llama, after one optimizer step:
    (model, objective, examples, teacher logits before the step, the backbone as loaded afresh)."""
    from llm2comp.recipes.common import load_encoder

    from .conftest import randomize_lora
    from .training_helpers import tiny_stage_config, write_corpus

    fresh, _, _ = load_causal_lm(tiny_llama_dir)
    assert fresh.get_output_embeddings().weight is fresh.get_input_embeddings().weight  # a tied model
    cfg = tiny_stage_config(tiny_llama_dir, write_corpus(tmp_path / "c.txt"), tmp_path / "run",
                            train_input_embeddings=True)
    model = load_encoder(cfg)
    randomize_lora(model.model)
    objective = CompressionObjective(model, "kl")
    examples = [make_example(ids, "kl", seed=0, index=i) for i, ids in enumerate(IDS)]
    before = _teacher_and_frozen_logits(objective, examples)
    params = [p for p in objective.parameters() if p.requires_grad]
    table = model.model.get_input_embeddings().weight
    assert any(p is table for p in params)
    assert not any(p is model.model.get_output_embeddings().weight for p in params)  # the head is not trained
    optimizer = torch.optim.Adam(params, lr=0.05)
    objective(examples).backward()
    optimizer.step()
    assert (table - fresh.get_input_embeddings().weight).abs().max() > 1e-2  # the table did train
    return model, objective, examples, before, fresh


def test_training_the_input_embeddings_keeps_the_teacher_the_original_llm(trained_table):
    # before: the tied LM head was the trained table, and the teacher read it too: its logits moved
    model, objective, examples, before, fresh = trained_table
    after = _teacher_and_frozen_logits(objective, examples)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)
    with torch.no_grad():
        reference = fresh(input_ids=torch.tensor([IDS[0][:20]])).logits
    torch.testing.assert_close(after[1], reference, atol=1e-5, rtol=0)
    head = model.model.get_output_embeddings().weight
    torch.testing.assert_close(head, fresh.get_output_embeddings().weight, atol=0, rtol=0)
    # the encoder itself reads the trained table (the swap lasts only inside frozen())
    assert model.model.get_input_embeddings().weight.requires_grad


def test_a_trained_table_saves_alone_and_loads_without_touching_the_head(trained_table, tmp_path):
    from safetensors.torch import load_file

    from llm2comp import LLM2Comp

    model, _, _, _, fresh = trained_table
    trained = model.model.get_input_embeddings().weight.detach().clone()
    original_head = fresh.get_output_embeddings().weight.detach()
    expected = model.encode(["a cat on a mat", "stage one"])
    model.save(tmp_path / "adapters")
    saved = load_file(str(tmp_path / "adapters" / "input_embeddings.safetensors"))
    assert list(saved) == ["weight"]
    torch.testing.assert_close(saved["weight"], trained, atol=0, rtol=0)
    model.save(tmp_path / "merged", merge=True)
    for folder in ("adapters", "merged"):
        loaded = LLM2Comp.from_pretrained(tmp_path / folder)
        table = loaded.model.get_input_embeddings().weight
        head = loaded.model.get_output_embeddings().weight
        torch.testing.assert_close(table, trained, atol=0, rtol=0)
        # before: loading the table into the tied backbone overwrote the LM head with it
        assert head is not table
        torch.testing.assert_close(head, original_head, atol=0, rtol=0)
        np.testing.assert_allclose(loaded.encode(["a cat on a mat", "stage one"]), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", TINY_ARCHES)
def test_every_architecture_keeps_its_frozen_llm_when_the_table_trains(tiny_model_dirs, tmp_path, arch):
    """Tied (Llama, Gemma 3 with its scaled embedding, GPT-2, ...) or not: frozen() is the backbone."""
    from llm2comp import LLM2Comp

    fresh, _, _ = load_causal_lm(tiny_model_dirs[arch])
    model = LLM2Comp.from_pretrained(tiny_model_dirs[arch], num_memory_tokens=2, max_length=32)
    model.train_input_embeddings()
    with torch.no_grad():  # what an optimizer step does to the table
        table = model.model.get_input_embeddings().weight
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    ids = torch.tensor([IDS[0][:12]])
    with torch.no_grad(), model.frozen() as lm:
        ours = lm(input_ids=ids).logits
    with torch.no_grad():
        reference = fresh(input_ids=ids).logits
        moved = model.model(input_ids=ids).logits  # outside frozen(): the trained table
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert (moved - reference).abs().max() > 1e-3
    model.save(tmp_path / "m")
    loaded = LLM2Comp.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.model.get_output_embeddings().weight, fresh.get_output_embeddings().weight,
                               atol=0, rtol=0)
    torch.testing.assert_close(loaded.model.get_input_embeddings().weight,
                               model.model.get_input_embeddings().weight, atol=0, rtol=0)
