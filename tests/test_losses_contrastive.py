"""InfoNCE against a hand-written reference; cached (GradCache) == plain in loss and gradients."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.losses.cached_info_nce import CachedInfoNCE
from llm2comp.losses.info_nce import InfoNCE, SimCSE, embed, info_nce, plan_chunks

from .conftest import randomize_lora

TEXTS = [
    "The cat sat on the mat.",
    "Bushfires forced hundreds of residents to leave their homes in the Southern Highlands.",
    "A storm cell moved east across the Blue Mountains.",
    "Stocks rose.",
    "The committee will meet again next week to discuss the budget and the new road proposals.",
    "Rain is expected tomorrow.",
    "He plays the violin every evening after dinner with his two sisters.",
    "Quantum computers use qubits.",
    "The river flooded the lower town.",
    "She finished the marathon in under four hours, a personal best.",
    "Paris is the capital of France.",
    "New rules for fishing boats come into force in March.",
]
QUERIES, POSITIVES, NEGATIVES = TEXTS[0:4], TEXTS[4:8], TEXTS[8:12]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is ~10x faster than two fighting over a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- tensor level
def reference_info_nce(q, p, h, temperature):
    """Explicit loops: -log softmax of cos(q_i, c)/tau at q_i's positive, averaged over queries."""
    candidates = list(p) + (list(h) if h is not None else [])
    total = 0.0
    for i, query in enumerate(q):
        logits = [torch.dot(query, c) / (query.norm() * c.norm()) / temperature for c in candidates]
        log_normaliser = torch.logsumexp(torch.stack(logits), dim=0)
        total = total + (log_normaliser - logits[i])
    return total / len(q)


@pytest.mark.parametrize("with_negatives", [True, False])
def test_info_nce_matches_explicit_loop(with_negatives):
    generator = torch.Generator().manual_seed(0)
    q, p, h = (torch.randn(n, 16, generator=generator, dtype=torch.float64) for n in (5, 5, 7))
    h = h if with_negatives else None
    leaves = [t.clone().requires_grad_(True) for t in (q, p) + ((h,) if with_negatives else ())]
    loss = info_nce(*leaves, temperature=0.05)
    reference_leaves = [t.clone().requires_grad_(True) for t in (q, p) + ((h,) if with_negatives else ())]
    reference = reference_info_nce(*reference_leaves, *(() if with_negatives else (None,)), 0.05)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    loss.backward()
    reference.backward()
    for mine, theirs in zip(leaves, reference_leaves):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-10, atol=1e-12)


def test_info_nce_perfect_retrieval_and_uniform_cases():
    eye = torch.eye(4)
    # each query identical to its positive, orthogonal to the rest: CE = log(1 + 3 exp(-1/tau))
    expected = math.log(1 + 3 * math.exp(-1 / 0.5))
    assert math.isclose(info_nce(eye, eye, temperature=0.5).item(), expected, rel_tol=1e-6)
    # all candidates equal: uniform over 4 + 2 candidates
    ones = torch.ones(4, 3)
    assert math.isclose(info_nce(ones, ones, torch.ones(2, 3)).item(), math.log(6), rel_tol=1e-6)


def test_info_nce_rejects_bad_input():
    with pytest.raises(ValueError, match="row-aligned|both be"):
        info_nce(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="negatives"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(3, 4), torch.randn(3, 4), temperature=0.0)


def test_plan_chunks_sorts_longest_first_and_covers_all_rows():
    ids = [[1] * n for n in (3, 9, 1, 5, 7)]
    assert plan_chunks(ids, None) == [[0, 1, 2, 3, 4]]
    assert plan_chunks(ids, 2) == [[1, 4], [3, 0], [2]]


# ---------------------------------------------------------------------------- model level
@pytest.fixture
def lora_model(tiny_llama_dir):
    """Tiny Llama encoder with attention dropout 0.2, a non-zero LoRA (dropout 0.1), memory vectors.

    float64, so that "equal" means equal: in float32 the reordered sums of chunked, differently padded
    batches alone differ by ~2e-6 relative on gradients of size ~10.
    """
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64,
                                     attention_dropout=0.2, dtype=torch.float64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.1))
    randomize_lora(model.model, scale=0.1)
    model.memory.to(torch.float64)  # float32 by default: its gradient would be summed in float32
    return model


def tokenized(model):
    return [model.tokenize(texts)[0] for texts in (QUERIES, POSITIVES, NEGATIVES)]


def run(loss, batch, seed=0):
    """One backward; returns (loss, {name: grad}) for every trainable parameter."""
    model = loss.model
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = loss.backward(*batch)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return value, grads


def assert_same(first, second, atol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = first, second
    torch.testing.assert_close(loss_a, loss_b, atol=atol, rtol=0)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=atol, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_trainable_parameters_are_lora_and_memory(lora_model):
    names = [n for n, p in lora_model.named_parameters() if p.requires_grad]
    assert "memory.weight" in names and all("lora_" in n for n in names if n != "memory.weight")
    _, grads = run(InfoNCE(lora_model), tokenized(lora_model))
    assert all(g.abs().sum() > 0 for g in grads.values())  # every LoRA matrix and the memory learn


def test_cached_equals_plain_without_dropout(lora_model):
    lora_model.eval()  # no dropout: chunking, sorting and padding must not change anything
    batch = tokenized(lora_model)
    plain = run(InfoNCE(lora_model), batch)  # one forward per group, whole graph kept
    assert_same(plain, run(CachedInfoNCE(lora_model, chunk_size=3), batch))
    in_batch_only = run(InfoNCE(lora_model), batch[:2])  # no hard negatives, one text per chunk
    assert_same(in_batch_only, run(CachedInfoNCE(lora_model, chunk_size=1), batch[:2]))


@pytest.mark.parametrize("chunk_size, keep_graphs", [(3, 0), (3, 1), (3, 4), (100, 1)])
def test_cached_equals_plain_with_dropout(lora_model, chunk_size, keep_graphs):
    lora_model.train()
    batch = tokenized(lora_model)
    plain_loss = InfoNCE(lora_model, chunk_size=chunk_size)
    plain = run(plain_loss, batch, seed=7)
    state_after_plain = torch.get_rng_state()
    cached = run(CachedInfoNCE(lora_model, chunk_size=chunk_size, keep_graphs=keep_graphs), batch, seed=7)
    assert_same(plain, cached)
    # the cache leaves the generator where one pass would: the next step draws fresh masks
    assert torch.equal(torch.get_rng_state(), state_after_plain)
    # dropout is really active: another seed gives another loss
    assert abs(run(plain_loss, batch, seed=8)[0] - plain[0]) > 1e-4


class NoReplay(CachedInfoNCE):
    """Negative control: re-embeds chunks with whatever random state comes next."""

    def replay(self, random_state):
        return contextlib.nullcontext()


def test_negative_control_without_rng_replay_gradients_differ(lora_model):
    lora_model.train()
    batch = tokenized(lora_model)
    plain = run(InfoNCE(lora_model, chunk_size=3), batch, seed=7)
    broken = run(NoReplay(lora_model, chunk_size=3), batch, seed=7)
    torch.testing.assert_close(plain[0], broken[0])  # the loss comes from the first pass: same
    max_diff = max((plain[1][n] - broken[1][n]).abs().max().item() for n in plain[1])
    assert max_diff > 1e-3  # but the gradients belong to other dropout masks


def test_simcse_views_differ_and_cached_equals_plain(lora_model):
    lora_model.train()
    sentences = lora_model.tokenize(TEXTS[:6])[0]
    torch.manual_seed(3)
    with torch.no_grad():
        view1, view2 = embed(lora_model, sentences), embed(lora_model, sentences)
    assert (view1 - view2).abs().max() > 1e-3  # two dropout draws, two different views
    plain = run(SimCSE(InfoNCE(lora_model, chunk_size=4)), [sentences], seed=3)
    assert_same(plain, run(SimCSE(CachedInfoNCE(lora_model, chunk_size=4)), [sentences], seed=3))
    lora_model.eval()
    with pytest.raises(RuntimeError, match="model.train"):
        SimCSE(InfoNCE(lora_model)).backward(sentences)


def test_model_level_input_checks(lora_model):
    queries, positives, _ = tokenized(lora_model)
    with pytest.raises(ValueError, match="row-aligned"):
        CachedInfoNCE(lora_model).backward(queries, positives[:2])
    with pytest.raises(ValueError, match="empty batch"):
        InfoNCE(lora_model).backward([], [])
    with pytest.raises(ValueError, match="chunk_size"):
        CachedInfoNCE(lora_model, chunk_size=0)
    with pytest.raises(ValueError, match="keep_graphs"):
        CachedInfoNCE(lora_model, keep_graphs=-1)
