"""The input layout (models/layout.py): the text budget, texts -> encoder rows, the decoder input.

The pinned numbers are what `encode` gave on the tiny Llama fixture before the layout moved into
one file; a change to the row layout (prefix, budget, windows, weights) changes them.
"""

import numpy as np
import pytest
import torch

from llm2comp.data.compression_examples import CompressionExample
from llm2comp.errors import InvalidSetting
from llm2comp.losses.compression import CompressionObjective, lm_logits
from llm2comp.models.attention import position_ids_for
from llm2comp.models.backbone import body_of
from llm2comp.models.encoding import embed_rows
from llm2comp.models.layout import (
    apply_instructions,
    decoder_inputs,
    model_text_budget,
    rows_for,
    rows_of_ids,
    text_budget,
    truncate_ids,
)

LONG = " ".join(["word"] * 130)  # 130 tokens: 3 windows of B = 59 with overlap 8 (stride 51)
ITEMS = [(None, LONG), (None, "short text"), ("Represent the query", "where did the cat sit")]
OVERLAP = 8
# tiny_encoder (k = 4, max_length 64, BOS): the first four dimensions of each raw vector
PINNED_TRUNCATE = [[-0.691731, 0.984102, 0.230588, 0.308948], [0.165219, -0.570243, 0.692426, -0.488485],
                   [0.470404, 0.247068, 0.395386, 0.078476]]
PINNED_LONG_SEGMENTS = [-0.697362, 0.991288, 0.238085, 0.302235]
PINNED_LONG_WINDOWS = [[-0.691731, 0.984102, 0.230588, 0.308948], [-0.717332, 1.005805, 0.253118, 0.301791],
                       [-0.663053, 0.975469, 0.221871, 0.283562]]


# ---------------------------------------------------------------------------------------------- budget
def test_text_budget_is_max_length_minus_prefix_and_memory():
    assert text_budget(64, 1, 4) == 59
    assert text_budget(64, 0, 4) == 60  # no BOS: one more text token
    assert text_budget(12, 1, 0) == 11  # no memory tokens (mean pooling)
    assert text_budget(6, 1, 4) == 1  # the smallest budget still holds one token


@pytest.mark.parametrize("max_length, prefix, k", [(5, 1, 4), (3, 1, 4), (4, 0, 4)])
def test_no_room_for_text_is_refused_by_name(max_length, prefix, k):
    with pytest.raises(InvalidSetting, match=f"max_length {max_length} leaves no room for text next to {k} memory"):
        text_budget(max_length, prefix, k)


def test_the_model_budget_follows_its_prefix_and_k(tiny_encoder):
    assert tiny_encoder.prefix_ids() == [tiny_encoder.tokenizer.bos_token_id]
    assert model_text_budget(tiny_encoder) == 64 - 1 - 4
    assert model_text_budget(tiny_encoder, 20) == 15  # an explicit max_length (the supervised query length)
    with pytest.raises(InvalidSetting, match="max_length 5 leaves no room"):
        model_text_budget(tiny_encoder, 5)


def test_truncate_ids_counts_the_texts_it_cuts():
    rows, cut = truncate_ids([[1, 2, 3], [4], [5, 6, 7, 8], []], 3)
    assert rows == [[1, 2, 3], [4], [5, 6, 7], []] and cut == 1


# ---------------------------------------------------------------------------------------------- rows
def test_truncate_rows_are_one_per_text():
    rows = rows_of_ids([[1] * 5, [2] * 2, [3] * 9], budget=4, mode="truncate", overlap=999)  # overlap unused
    assert rows.ids == [[1] * 4, [2] * 2, [3] * 4]
    assert rows.owner.tolist() == [0, 1, 2] and rows.weights.tolist() == [1.0, 1.0, 1.0]
    assert rows.n_texts == 3 and rows.truncated == 2


@pytest.mark.parametrize("mode", ["segments", "multivector"])
def test_window_rows_keep_every_token_and_weigh_it_once(mode):
    lengths = [25, 3, 0, 10, 11]
    ids = [list(range(100 * i, 100 * i + n)) for i, n in enumerate(lengths)]
    rows = rows_of_ids(ids, budget=10, mode=mode, overlap=2)
    assert rows.owner.tolist() == [0, 0, 0, 1, 2, 3, 4, 4]
    assert rows.weights.tolist() == [10, 8, 7, 3, 1, 10, 10, 1]
    totals = torch.zeros(len(ids)).index_add_(0, rows.owner, rows.weights)
    assert totals.tolist() == [max(n, 1) for n in lengths]  # each token once; an empty text weighs 1
    assert rows.ids[:3] == [ids[0][0:10], ids[0][8:18], ids[0][16:25]] and rows.ids[7] == ids[4][8:11]
    assert all(len(row) <= 10 for row in rows.ids) and rows.truncated == 0 and rows.n_texts == 5
    assert rows.owner.dtype == torch.long and rows.weights.dtype == torch.float32


def test_window_overlap_and_mode_are_checked():
    with pytest.raises(InvalidSetting, match=r"overlap must be an int in \[0, 10\)"):
        rows_of_ids([], budget=10, mode="segments", overlap=10)  # checked even with no text
    with pytest.raises(InvalidSetting, match="long_texts must be one of"):
        rows_of_ids([[1]], budget=10, mode="chunks")


def test_rows_for_applies_the_instruction_then_tokenizes(tiny_encoder):
    rows = rows_for(tiny_encoder, ITEMS, "segments", OVERLAP)
    texts = apply_instructions(tiny_encoder, ITEMS)
    assert texts[2] == "Represent the query: where did the cat sit"
    full = tiny_encoder.tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert rows.owner.tolist() == [0, 0, 0, 1, 2] and rows.weights.tolist() == [59, 51, 20, 2, 9]
    assert rows.ids[3:] == full[1:] and rows.ids[0] == full[0][:59] and rows.ids[2] == full[0][102:]
    cut = rows_for(tiny_encoder, ITEMS, "truncate")
    assert cut.ids == [full[0][:59], full[1], full[2]] and cut.truncated == 1
    assert rows_for(tiny_encoder, [], "truncate").ids == []


# ---------------------------------------------------------------------------------------------- vectors
def test_encode_gives_the_pinned_vectors(tiny_encoder):
    truncate = tiny_encoder.encode(ITEMS, overlap=OVERLAP)
    np.testing.assert_allclose(truncate[:, :4], PINNED_TRUNCATE, atol=1e-5, rtol=0)
    segments = tiny_encoder.encode(ITEMS, long_texts="segments", overlap=OVERLAP)
    np.testing.assert_allclose(segments[0, :4], PINNED_LONG_SEGMENTS, atol=1e-5, rtol=0)
    np.testing.assert_allclose(segments[1:], truncate[1:], atol=1e-6, rtol=0)  # short texts: one window
    multi = tiny_encoder.encode(ITEMS, long_texts="multivector", overlap=OVERLAP)
    assert [part.shape for part in multi] == [(3, 64), (1, 64), (1, 64)]
    np.testing.assert_allclose(multi[0][:, :4], PINNED_LONG_WINDOWS, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["truncate", "segments", "multivector"])
def test_rows_embedded_and_combined_are_encode(tiny_encoder, mode):
    rows = rows_for(tiny_encoder, ITEMS, mode, OVERLAP)
    got = rows.combine(embed_rows(tiny_encoder, rows.ids), mode)  # the batches encode plans: bit for bit
    expected = tiny_encoder.encode(ITEMS, long_texts=mode, overlap=OVERLAP, convert_to_tensor=True)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


# ---------------------------------------------------------------------------------------------- decoder input
def test_decoder_input_is_prefix_memory_continuation():
    embed = torch.nn.Embedding(10, 3)
    memory = torch.randn(2, 4, 3)
    continuation = torch.tensor([[5, 6, 7], [8, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    embeds, attention, last = decoder_inputs(embed, [1], memory, continuation, mask)
    assert embeds.shape == (2, 1 + 4 + 3, 3) and last == 4
    with torch.no_grad():
        assert torch.equal(embeds[:, 0], embed.weight[[1, 1]])
        assert torch.equal(embeds[:, 1:5], memory)
        assert torch.equal(embeds[:, 5:], embed(continuation))
    assert attention.tolist() == [[1] * 8, [1] * 6 + [0, 0]]
    alone, alone_mask, alone_last = decoder_inputs(embed, [], memory)  # no BOS, nothing after the memory
    assert torch.equal(alone, memory) and alone_mask.tolist() == [[1] * 4] * 2 and alone_last == 3
    with pytest.raises(InvalidSetting, match="continuation_mask"):
        decoder_inputs(embed, [1], memory, continuation)


def test_decoder_input_reproduces_the_stage1_student(encoder):
    """The stage-1 student's logits, rebuilt from `decoder_inputs`: the same maths as training's."""
    tokenize = encoder.tokenizer
    examples = [CompressionExample(context=tokenize(c, add_special_tokens=False)["input_ids"],
                                   target=tokenize(t, add_special_tokens=False)["input_ids"])
                for c, t in (("the cat sat on the mat", " and slept all day long"), ("rain again", " today"))]
    objective = CompressionObjective(encoder, objective="nll").eval()
    with torch.no_grad():
        memory = objective.compress(examples)
        with encoder.frozen() as causal_lm:
            expected, _, _, _ = objective._student(causal_lm, memory, [e.target for e in examples])
            width = max(len(e.target) for e in examples)
            targets = torch.tensor([e.target + [0] * (width - len(e.target)) for e in examples])
            target_mask = torch.tensor([[1] * len(e.target) + [0] * (width - len(e.target)) for e in examples])
            embeds, mask, last = decoder_inputs(causal_lm.get_input_embeddings(), encoder.prefix_ids(), memory,
                                                targets, target_mask)
            hidden = body_of(causal_lm)(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_for(mask),
                                        use_cache=False).last_hidden_state
            states = torch.cat([hidden[b, last:last + len(e.target)] for b, e in enumerate(examples)])
            got = lm_logits(causal_lm, states)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
