"""Long texts: window planning, the token-weighted mean, multivector output, MaxSim, invariances."""

import math
import warnings

import numpy as np
import pytest
import torch

from llm2comp import LLM2Comp
from llm2comp.models.long_texts import check_overlap, plan_windows, window_weights
from llm2comp.models.maxsim import maxsim

# max_length 16 = BOS + 11 text tokens + 4 memory tokens: window budget B = 11
MAX_LENGTH, K, BUDGET = 16, 4, 11


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=K, max_length=MAX_LENGTH, long_text_overlap=3)


def words(n: int) -> str:
    return " ".join(["word"] * n)


def token_ids(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def window_embedding(model, ids: list[int]) -> torch.Tensor:
    """One window embedded alone, straight from its token ids."""
    with torch.no_grad():
        return model(model.collate([ids]))[0].float()


# ---------------------------------------------------------------------------------------------- planning
def test_windows_at_the_boundaries():
    assert plan_windows(0, 10, 3) == [(0, 0)] and window_weights([(0, 0)]) == [1]  # empty text
    assert plan_windows(1, 10, 3) == [(0, 1)]
    assert plan_windows(10, 10, 3) == [(0, 10)]  # exactly at the limit: one window
    assert plan_windows(11, 10, 3) == [(0, 10), (7, 11)]  # one token over: a second window
    assert window_weights([(0, 10), (7, 11)]) == [10, 1]
    assert plan_windows(25, 10, 2) == [(0, 10), (8, 18), (16, 25)]
    assert window_weights(plan_windows(25, 10, 2)) == [10, 8, 7]
    assert plan_windows(20, 10, 0) == [(0, 10), (10, 20)]


@pytest.mark.parametrize("budget,overlap", [(10, 0), (10, 3), (10, 9), (7, 1), (1, 0)])
def test_windows_cover_the_text_with_the_asked_overlap(budget, overlap):
    for n in range(0, 60):
        windows = plan_windows(n, budget, overlap)
        assert windows[0][0] == 0 and windows[-1][1] == n
        assert all(0 <= end - start <= budget for start, end in windows)
        assert all(b[0] - a[0] == budget - overlap for a, b in zip(windows, windows[1:]))  # constant stride
        assert all(a[1] - b[0] == overlap for a, b in zip(windows, windows[1:]))  # shared tokens
        expected = 1 if n <= budget else 1 + math.ceil((n - budget) / (budget - overlap))
        assert len(windows) == expected
        assert sum(window_weights(windows)) == max(n, 1)  # each token counted once


def test_bad_overlap_is_refused_with_the_budget():
    for bad in (-1, 10, 11, 2.5, True):
        with pytest.raises(ValueError, match=r"overlap must be an int in \[0, 10\)"):
            check_overlap(bad, 10)


# ---------------------------------------------------------------------------------------------- encoding
def test_segments_is_the_token_weighted_mean_of_windows_by_hand(model):
    text = words(27)
    ids = token_ids(model, text)
    assert len(ids) == 27
    # B = 11, overlap 3: windows [0, 11), [8, 19), [16, 27); new tokens per window 11, 8, 8
    windows = [window_embedding(model, ids[a:b]) for a, b in [(0, 11), (8, 19), (16, 27)]]
    expected = (11 * windows[0] + 8 * windows[1] + 8 * windows[2]) / 27
    got = model.encode(text, long_texts="segments", overlap=3, convert_to_tensor=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    multi = model.encode(text, long_texts="multivector", overlap=3)
    assert isinstance(multi, np.ndarray) and multi.shape == (3, model.hidden_size)
    np.testing.assert_allclose(multi, torch.stack(windows).numpy(), atol=1e-5, rtol=0)
    normalized = model.encode(text, long_texts="segments", overlap=3, normalize_embeddings=True)
    np.testing.assert_allclose(normalized, (expected / expected.norm()).numpy(), atol=1e-5, rtol=0)


def test_text_at_the_limit_is_one_window_in_every_mode(model):
    text = words(BUDGET)
    assert len(token_ids(model, text)) == BUDGET
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning
        truncated = model.encode(text)
        segments = model.encode(text, long_texts="segments")
        multi = model.encode(text, long_texts="multivector")
    np.testing.assert_allclose(segments, truncated, atol=1e-6, rtol=0)
    np.testing.assert_allclose(multi, truncated[None], atol=1e-6, rtol=0)


def test_one_token_over_warns_in_truncate_only(model):
    text = words(BUDGET + 1)
    with pytest.warns(UserWarning, match="1 text\\(s\\) longer than max_length=16.*segments"):
        truncated = model.encode(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segments = model.encode(text, long_texts="segments", overlap=0)
    first, last = window_embedding(model, token_ids(model, text)[:BUDGET]), \
        window_embedding(model, token_ids(model, text)[BUDGET:])
    np.testing.assert_allclose(truncated, first.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(segments, ((BUDGET * first + last) / (BUDGET + 1)).numpy(), atol=1e-5, rtol=0)


MIXED = [words(40), "short text", words(11), "The cat sat on the mat while the dog slept by the fire " * 3,
         "tiny", words(23)]


@pytest.mark.parametrize("mode", ["segments", "multivector"])
def test_long_text_vectors_do_not_depend_on_batching_order_or_neighbours(model, mode):
    reference = model.encode(MIXED, long_texts=mode, batch_size=len(MIXED))

    def check(got, indices):
        for g, i in zip(got, indices):
            np.testing.assert_allclose(g, reference[i], atol=1e-5, rtol=0)

    for batch_size in (1, 2, 32):
        check(model.encode(MIXED, long_texts=mode, batch_size=batch_size), range(len(MIXED)))
    permutation = [3, 0, 5, 2, 1, 4]
    check(model.encode([MIXED[i] for i in permutation], long_texts=mode), permutation)
    check([model.encode(text, long_texts=mode) for text in MIXED], range(len(MIXED)))
    check(model.encode(MIXED, long_texts=mode, padding_side="left"), range(len(MIXED)))


def test_windows_of_all_texts_share_batches(model, monkeypatch):
    import llm2comp.models.encoding as encoding

    calls = []
    original = encoding.plan_batches
    monkeypatch.setattr(encoding, "plan_batches", lambda lengths, *a, **k: calls.append(len(lengths))
                        or original(lengths, *a, **k))
    windows = model.encode_windows(MIXED, overlap=2)
    assert calls == [len(windows.owner)]  # one plan over every window of every text
    assert windows.counts.tolist() == [len(plan_windows(len(token_ids(model, t)), BUDGET, 2)) for t in MIXED]


def test_mean_pooling_backbone_segments(tiny_llama_dir):
    mean = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=0, pooling="mean", attention="causal",
                                    max_length=12, long_texts="segments", long_text_overlap=0)
    ids = token_ids(mean, words(22))  # B = 11: two disjoint full windows
    expected = (window_embedding(mean, ids[:11]) + window_embedding(mean, ids[11:])) / 2
    np.testing.assert_allclose(mean.encode(words(22)), expected.numpy(), atol=1e-5, rtol=0)


def test_mode_is_checked_and_saved(model, tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match="long_texts must be one of"):
        model.encode("x", long_texts="chunks")
    with pytest.raises(ValueError, match=r"overlap must be an int in \[0, 11\)"):
        model.encode(words(30), long_texts="segments", overlap=11)
    saved = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=K, max_length=MAX_LENGTH,
                                     long_texts="multivector", long_text_overlap=5)
    saved.save(tmp_path / "m")
    loaded = LLM2Comp.from_pretrained(tmp_path / "m")
    assert (loaded.config.long_texts, loaded.config.long_text_overlap) == ("multivector", 5)
    assert isinstance(loaded.encode([words(30)]), list)
    assert LLM2Comp.from_pretrained(tmp_path / "m", long_texts="truncate").config.long_texts == "truncate"


# ---------------------------------------------------------------------------------------------- MaxSim
def test_maxsim_on_known_vectors():
    s = 1 / math.sqrt(2)
    documents = [np.array([[0.0, 1.0], [1.0, 1.0]]), np.array([[2.0, 0.0]]), np.array([[0.0, -1.0], [-1.0, 0.0]])]
    plain = np.array([[1.0, 0.0], [0.0, 3.0]])
    expected = torch.tensor([[s, 1.0, 0.0], [1.0, 0.0, -0.0]])  # best window per document
    torch.testing.assert_close(maxsim(plain, documents), expected.float())
    multi_query = [np.array([[1.0, 0.0], [0.0, 1.0]])]  # mean over the query's vectors of the best match
    torch.testing.assert_close(maxsim(multi_query, documents), torch.tensor([[(s + 1) / 2, 0.5, 0.0]]))
    torch.testing.assert_close(LLM2Comp.similarity(plain, documents), maxsim(plain, documents))
    # dense on both sides: MaxSim is the cosine matrix
    torch.testing.assert_close(maxsim(plain, plain), LLM2Comp.similarity(plain, plain))
    with pytest.raises(ValueError, match="no vectors"):
        maxsim(plain, [np.zeros((0, 2))] + documents)
