"""The memory-token encoder: layout, pooling, truncation and invariances of `encode`."""

import warnings

import numpy as np
import pytest
import torch

from llm2comp import LLM2Comp
from llm2comp.models.memory import build_encoder_batch

from .conftest import TINY_ARCHES

TEXTS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Embeddings",
    "Compression of long contexts into a handful of memory vectors is the pretext task.",
    "short one",
]


def test_layout_is_bos_text_memory_then_padding():
    batch = build_encoder_batch([[10, 11, 12], [20]], num_memory=2, prefix_ids=[1], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 10, 11, 12, 0, 0], [1, 20, 0, 0, 0, 0]]
    assert batch.memory_slot.tolist() == [[-1, -1, -1, -1, 0, 1], [-1, -1, 0, 1, -1, -1]]
    assert batch.valid.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch.text_mask.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]]
    left = build_encoder_batch([[10, 11, 12], [20]], num_memory=2, prefix_ids=[1], pad_id=0, padding_side="left")
    assert left.memory_slot.tolist()[1] == [-1, -1, -1, -1, 0, 1]


def test_embedding_is_mean_of_memory_states(tiny_encoder):
    batch = tiny_encoder.collate(tiny_encoder.tokenize(TEXTS[:2])[0])
    with torch.no_grad():
        states = tiny_encoder.memory_states(batch)
        pooled = tiny_encoder(batch)
    assert states.shape == (2, 4, tiny_encoder.hidden_size)
    torch.testing.assert_close(pooled, states.mean(1))


def test_memory_vectors_change_the_embedding(tiny_encoder):
    before = tiny_encoder.encode(TEXTS[0])
    with torch.no_grad():
        tiny_encoder.memory.weight.add_(0.5)
    assert np.abs(tiny_encoder.encode(TEXTS[0]) - before).max() > 1e-4


def test_encode_never_computes_lm_head_logits(tiny_encoder):
    calls = []
    head = tiny_encoder.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda *args: calls.append(1))
    tiny_encoder.encode(TEXTS)
    handle.remove()
    assert calls == []


@pytest.mark.parametrize("batch_size", [1, 2, 3, 32])
def test_embeddings_do_not_depend_on_batch_size(tiny_encoder, batch_size):
    reference = tiny_encoder.encode(TEXTS, batch_size=len(TEXTS))
    np.testing.assert_allclose(tiny_encoder.encode(TEXTS, batch_size=batch_size), reference, atol=1e-5, rtol=0)


def test_embeddings_do_not_depend_on_order_neighbours_or_padding_side(tiny_encoder):
    reference = tiny_encoder.encode(TEXTS)
    permutation = [3, 0, 4, 2, 1]
    shuffled = tiny_encoder.encode([TEXTS[i] for i in permutation])
    np.testing.assert_allclose(shuffled, reference[permutation], atol=1e-5, rtol=0)
    alone = np.stack([tiny_encoder.encode(text) for text in TEXTS])
    np.testing.assert_allclose(alone, reference, atol=1e-5, rtol=0)
    left = tiny_encoder.encode(TEXTS, padding_side="left")
    np.testing.assert_allclose(left, reference, atol=1e-5, rtol=0)
    other_neighbours = tiny_encoder.encode([TEXTS[1], "something else entirely, and rather long " * 5])
    np.testing.assert_allclose(other_neighbours[0], reference[1], atol=1e-5, rtol=0)


def test_shapes_types_and_normalisation(tiny_encoder):
    d = tiny_encoder.hidden_size
    assert tiny_encoder.encode("one").shape == (d,)
    assert tiny_encoder.encode([]).shape == (0, d)
    tensor = tiny_encoder.encode(TEXTS[:2], convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, d)
    normed = tiny_encoder.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, atol=1e-5)
    sims = tiny_encoder.similarity(normed, normed)
    assert sims.shape == (5, 5)
    torch.testing.assert_close(torch.diagonal(sims), torch.ones(5), atol=1e-5, rtol=0)


def test_instructions_apply_to_queries_only(tiny_encoder):
    plain = tiny_encoder.encode_query(TEXTS[0])
    with_instruction = tiny_encoder.encode_query(TEXTS[0], instruction="Retrieve relevant passages")
    assert np.abs(plain - with_instruction).max() > 1e-4
    as_pair = tiny_encoder.encode([("Retrieve relevant passages", TEXTS[0])])[0]
    as_text = tiny_encoder.encode("Retrieve relevant passages: " + TEXTS[0])
    np.testing.assert_allclose(as_pair, with_instruction, atol=1e-6)
    np.testing.assert_allclose(as_text, with_instruction, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.encode_document(TEXTS[0]), plain, atol=1e-6)
    with pytest.raises(ValueError, match="queries only"):
        tiny_encoder.encode_document(TEXTS[0], instruction="x")
    with pytest.raises(ValueError, match="documents take no instruction"):
        tiny_encoder.encode_document([("x", TEXTS[0])])


def test_long_text_is_truncated_memory_kept_and_warned_once(tiny_encoder):
    long_texts = ["word " * 500, "another " * 400, "fine"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = tiny_encoder.encode(long_texts)
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("2 text(s)")
    ids, count = tiny_encoder.tokenize(long_texts)
    assert count == 2 and max(len(row) for row in ids) == 64 - 1 - 4
    batch = tiny_encoder.collate(ids)
    assert batch.input_ids.shape[1] == 64 and (batch.memory_slot >= 0).sum(1).tolist() == [4, 4, 4]
    assert np.isfinite(embeddings).all()


def test_baseline_poolings_need_no_memory(tiny_llama_dir):
    mean = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="mean", attention="causal")
    last = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="last", attention="causal")
    assert mean.memory is None
    a, b = mean.encode(TEXTS), last.encode(TEXTS)
    assert a.shape == b.shape == (5, mean.hidden_size) and np.abs(a - b).max() > 1e-3
    # last-token pooling under causal attention = the state of the last text token, with or without padding
    np.testing.assert_allclose(last.encode(TEXTS[1]), b[1], atol=1e-5)
    with pytest.raises(ValueError, match="memory_mean"):
        LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0)


@pytest.mark.parametrize("arch", [arch for arch in TINY_ARCHES if arch != "llama"])
def test_other_architectures_encode_invariantly(tiny_model_dirs, arch):
    model = LLM2Comp.from_pretrained(tiny_model_dirs[arch], num_memory_tokens=3)
    reference = model.encode(TEXTS)
    np.testing.assert_allclose(model.encode(TEXTS, batch_size=1), reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.encode(TEXTS, padding_side="left"), reference, atol=1e-5, rtol=0)


def test_similarity_refuses_shapes_it_cannot_compare():
    from llm2comp.errors import InvalidSetting, InvalidType

    # before: torch's "mat1 and mat2 shapes cannot be multiplied (2x64 and 32x2)"
    with pytest.raises(InvalidSetting, match=r"embedding sizes differ: a has shape \(2, 64\) \(d=64\), "
                                             r"b has shape \(2, 32\) \(d=32\)"):
        LLM2Comp.similarity(np.ones((2, 64)), np.ones((2, 32)))
    # before: a (2, 3, 64) array was silently flattened into 6 rows
    with pytest.raises(InvalidSetting, match=r"a has shape \(2, 3, 64\): expected \(n, d\).*list\(array\)"):
        LLM2Comp.similarity(np.ones((2, 3, 64)), np.ones((2, 64)))
    with pytest.raises(InvalidSetting, match=r"b has shape \(\)"):
        LLM2Comp.similarity(np.ones((2, 64)), np.float32(1.0))
    multivector = [np.ones((3, 64)), np.ones((1, 64))]
    with pytest.raises(InvalidSetting, match=r"a has 2 multivector arrays of shapes \[\(3, 64\), \(1, 64\)\] "
                                             r"\(d=64\), b has shape \(2, 32\)"):
        LLM2Comp.similarity(multivector, np.ones((2, 32)))
    with pytest.raises(InvalidSetting, match=r"b\[1\] has shape \(1, 32\), but b\[0\] has \(3, 64\)"):
        LLM2Comp.similarity(np.ones((2, 64)), [np.ones((3, 64)), np.ones((1, 32))])
    with pytest.raises(InvalidType, match="a must be embeddings"):
        LLM2Comp.similarity(["not", "vectors"], np.ones((2, 64)))
    # what is meant keeps working: (d,) is one row, a list of (windows, d) arrays is MaxSim
    assert LLM2Comp.similarity(np.ones(64), np.ones((3, 64))).shape == (1, 3)
    list_of_windows = list(np.random.default_rng(0).normal(size=(2, 3, 64)))
    scores = LLM2Comp.similarity(list_of_windows, np.ones((4, 64)))
    assert scores.shape == (2, 4)
    torch.testing.assert_close(LLM2Comp.similarity(list_of_windows, list_of_windows)[0, 0], torch.tensor(1.0))
