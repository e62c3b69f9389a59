"""InfoNCE against a hand-written reference; cached (GradCache) == plain in loss and gradients."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.losses.cached_info_nce import AutocastState, BackwardTwice, CachedInfoNCE
from llm2comp.losses.info_nce import InfoNCE, SimCSE, embed, info_nce, plan_chunks

from .conftest import randomize_lora
from .training_helpers import CONTRASTIVE_TEXTS, reference_info_nce

TEXTS = CONTRASTIVE_TEXTS
pytestmark = pytest.mark.usefixtures("one_thread")
QUERIES, POSITIVES, NEGATIVES = TEXTS[0:4], TEXTS[4:8], TEXTS[8:12]



# ---------------------------------------------------------------------------- tensor level



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


def run(objective, batch, seed=0):
    """`objective(batch).backward()`; returns (loss, {name: grad}) for every trainable parameter."""
    model = objective.encoder
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    value = objective(batch)
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return value.detach(), grads


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
    plain = run(SimCSE(InfoNCE(lora_model, chunk_size=4)), sentences, seed=3)
    assert_same(plain, run(SimCSE(CachedInfoNCE(lora_model, chunk_size=4)), sentences, seed=3))
    lora_model.eval()
    with pytest.raises(RuntimeError, match="model.train"):
        SimCSE(InfoNCE(lora_model))(sentences)


def test_model_level_input_checks(lora_model):
    queries, positives, _ = tokenized(lora_model)
    with pytest.raises(ValueError, match="row-aligned"):
        CachedInfoNCE(lora_model)((queries, positives[:2]))
    with pytest.raises(ValueError, match="empty batch"):
        InfoNCE(lora_model)(([], []))
    with pytest.raises(TypeError, match="contrastive batch is"):
        InfoNCE(lora_model)(queries)  # one group: not (queries, positives[, negatives])
    with pytest.raises(ValueError, match="does not wrap this objective's encoder"):
        InfoNCE(lora_model).forward_through(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="chunk_size"):
        CachedInfoNCE(lora_model, chunk_size=0)
    with pytest.raises(ValueError, match="keep_graphs"):
        CachedInfoNCE(lora_model, keep_graphs=-1)


# ---------------------------------------------------------------------------- the hook's contract
def test_a_cached_loss_backpropagated_twice_is_refused(lora_model):
    lora_model.eval()
    loss = CachedInfoNCE(lora_model, chunk_size=3)(tokenized(lora_model))
    loss.backward()
    with pytest.raises(BackwardTwice, match="already backpropagated"):
        loss.backward()


def test_without_grad_the_cached_loss_is_the_plain_loss(lora_model):
    lora_model.eval()
    batch = tokenized(lora_model)
    with torch.no_grad():
        cached = CachedInfoNCE(lora_model, chunk_size=3)(batch)
    assert not cached.requires_grad
    torch.testing.assert_close(cached, run(InfoNCE(lora_model), batch)[0], atol=1e-12, rtol=0)


@pytest.fixture
def float32_model(tiny_llama_dir):
    """The float32 tiny Llama (bf16 autocast casts float32 matmuls only), no dropout, non-zero LoRA."""
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, scale=0.1)
    return model.eval()


def relative_difference(grads: dict, reference: dict) -> float:
    """max over parameters of |g - g_ref| / |g_ref| (Frobenius norms)."""
    return max(((grads[n] - reference[n]).norm() / reference[n].norm()).item() for n in reference)


def test_chunks_are_re_embedded_under_the_autocast_state_of_the_forward(float32_model, monkeypatch):
    """The forward runs inside bf16 autocast, the backward (step 3) after the block has closed: the
    re-embedded chunks must be the bf16 ones of step 1, or the cached gradients belong to other embeddings.

    Reference: all chunks but one keep their step-1 graph (recorded under autocast), so their gradients
    are right by construction; re-embedding all 9 chunks must give the same (measured 6e-8 relative).
    Plain InfoNCE agrees within 2% (measured 0.5%): one backward sums a bf16 weight copy's gradients over
    the chunks in bf16, GradCache's backward per chunk sums them in float32. Negative control: re-embedded
    without autocast, the gradients move by ~10%."""
    batch = tokenized(float32_model)

    def under_autocast(objective):
        float32_model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = objective(batch)
        loss.backward()  # outside the autocast block, as torch recommends and the training loop does
        return {n: p.grad.clone() for n, p in float32_model.named_parameters() if p.requires_grad}

    kept = under_autocast(CachedInfoNCE(float32_model, chunk_size=3, keep_graphs=100))
    re_embedded = under_autocast(CachedInfoNCE(float32_model, chunk_size=3, keep_graphs=0))
    assert relative_difference(re_embedded, kept) < 1e-5
    assert relative_difference(re_embedded, under_autocast(InfoNCE(float32_model, chunk_size=3))) < 0.02
    monkeypatch.setattr(AutocastState, "enter", lambda self: contextlib.nullcontext())  # negative control
    lost = under_autocast(CachedInfoNCE(float32_model, chunk_size=3, keep_graphs=0))
    assert relative_difference(lost, kept) > 0.05


class IgnoresGradOutput(CachedInfoNCE):
    """Negative control: backpropagates the cached gradient as if the caller had applied no scale."""

    def backpropagate_chunks(self, cache, grad_output):
        super().backpropagate_chunks(cache, torch.ones_like(grad_output))


class ListStream:
    """The loop's batch-stream interface over fixed micro-batches, in order."""

    def __init__(self, batches):
        self.batches, self.index = batches, 0

    def state(self) -> dict:
        return {"index": self.index}

    def restore(self, state: dict) -> None:
        self.index = state["index"]

    def next_batch(self):
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch


def loop_gradients(objective, batches, grad_accum, output_dir) -> dict:
    """The gradients AdamW sees at the first step of `train_loop` over `batches`, by parameter name."""
    from accelerate import Accelerator
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from llm2comp.training.loop import LoopSettings, train_loop

    encoder, seen = objective.encoder, []
    encoder.load_state_dict(objective.initial_state)  # the loop's AdamW step moved the weights of a previous run
    encoder.zero_grad(set_to_none=True)
    handle = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: seen.append(
        {n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad}))
    try:
        train_loop(objective, ListStream(batches), LoopSettings(max_steps=1, grad_accum=grad_accum,
                                                                max_grad_norm=None, progress=False),
                   accelerator=Accelerator(), output_dir=output_dir, config={"stage": "toy"})
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0]


def test_grad_accum_scale_reaches_the_gradcache_hook(tiny_llama_dir, tmp_path):
    """`train_loop` with grad_accum=2 backpropagates loss / 2 per micro-batch; GradCache's chunk backwards
    get that 1/2 as the gradient of its loss. So grad_accum=2 over micro-batches (B1, B2) gives
    (dL(B1) + dL(B2)) / 2 (plain InfoNCE, by hand), and over (B, B) the gradient of grad_accum=1 on B.
    (Not the gradient of the 2x batch B1 + B2: InfoNCE's in-batch negatives make it another loss.)
    Negative control: a hook that drops the scale gives twice the gradient."""
    model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=4, max_length=64, dtype=torch.float64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, scale=0.1)
    model.memory.to(torch.float64)
    queries, positives, negatives = tokenized(model)
    first, second = (queries[:2], positives[:2], negatives[:2]), (queries[2:], positives[2:], negatives[2:])

    model.zero_grad(set_to_none=True)
    for batch in (first, second):
        (InfoNCE(model)(batch) / 2).backward()
    by_hand = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    def cached(kind=CachedInfoNCE):
        objective = kind(model, chunk_size=1)
        objective.initial_state = initial
        return objective

    accumulated = loop_gradients(cached(), [first, second], 2, tmp_path / "a")
    assert_same((torch.zeros(()), by_hand), (torch.zeros(()), accumulated), atol=1e-10)
    twice = loop_gradients(cached(), [first, first], 2, tmp_path / "b")
    once = loop_gradients(cached(), [first], 1, tmp_path / "c")
    assert_same((torch.zeros(()), once), (torch.zeros(()), twice), atol=1e-10)
    unscaled = loop_gradients(cached(IgnoresGradOutput), [first, first], 2, tmp_path / "d")
    for name in once:
        torch.testing.assert_close(unscaled[name], 2 * once[name], atol=1e-10, rtol=1e-9)
