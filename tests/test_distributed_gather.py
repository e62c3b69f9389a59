"""Two processes (gloo) on halves of a global batch == one process on the whole batch.

Each worker runs the tiny model on its half, all-reduces the loss and averages the gradients over
processes exactly as DDP does; the result must equal a single process on the full global batch
(atol 1e-5), for the plain and the cached loss. Negative control: a gather whose other-rank slices
are plain constants (their gradient dropped) gives other gradients.
"""

from __future__ import annotations

import datetime
import os
import random
import socket

import pytest
import torch
import torch.distributed as dist

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.distributed import all_gather_with_grad
from llm2comp.losses.cached_info_nce import CachedInfoNCE
from llm2comp.losses.info_nce import InfoNCE, embed, info_nce

from .conftest import randomize_lora

WORLD = 2
GLOBAL_BATCH = 8
UNEVEN_NEGATIVES = {"uneven": 2, "none_on_rank1": 0}  # hard negatives that rank 1 keeps (of 4)


def global_batch() -> tuple[list[str], list[str], list[str]]:
    """Queries, positives, one hard negative each: 3 * 8 distinct texts of mixed length."""
    words = ("river storm market violin garden bridge engine winter harbour forest council "
             "island theatre signal copper orbit").split()
    rng = random.Random(0)
    texts = [f"{i}: " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 14)))
             for i in range(3 * GLOBAL_BATCH)]
    return texts[:GLOBAL_BATCH], texts[GLOBAL_BATCH:2 * GLOBAL_BATCH], texts[2 * GLOBAL_BATCH:]


def build_model(model_dir) -> LLM2Comp:
    """The same model in every process: tiny Llama, float64, non-zero LoRA, no dropout (eval)."""
    model = LLM2Comp.from_pretrained(model_dir, num_memory_tokens=4, max_length=64, dtype=torch.float64)
    model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    randomize_lora(model.model, scale=0.1)
    return model.eval()


def constant_gather_loss(model, queries, positives, negatives) -> torch.Tensor:
    """Negative control: other ranks' candidates as constants, no gradient sent back to them."""
    q, p, h = (embed(model, ids) for ids in (queries, positives, negatives))
    p_all = [torch.empty_like(p) for _ in range(WORLD)]
    h_all = [torch.empty_like(h) for _ in range(WORLD)]
    dist.all_gather(p_all, p.detach())
    dist.all_gather(h_all, h.detach())
    rank = dist.get_rank()
    h_all[rank] = h
    others = [t for r, t in enumerate(p_all) if r != rank]
    # the same candidates in another order: own positives first, so targets are 0..n-1
    return info_nce(q, p, torch.cat(others + h_all), gather=False)


def step(model, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One backward; loss and gradients averaged over processes as DDP does (no-op alone)."""
    model.zero_grad(set_to_none=True)
    value = loss_fn()
    grads = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            grad = param.grad.clone()
            if dist.is_initialized():
                dist.all_reduce(grad)
                grad /= dist.get_world_size()
            grads[name] = grad
    value = value.detach().clone()
    if dist.is_initialized():
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value, grads


def worker(rank: int, port: int, model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = build_model(model_dir)
        n = GLOBAL_BATCH // WORLD
        local = [model.tokenize(texts[rank * n:(rank + 1) * n])[0] for texts in global_batch()]
        cached = CachedInfoNCE(model, chunk_size=3)
        results = {
            "plain": step(model, lambda: _backward(InfoNCE(model)(local))),
            "cached": step(model, lambda: _backward(cached(local))),
            "constant": step(model, lambda: _backward(constant_gather_loss(model, *local))),
        }
        for name, keep in UNEVEN_NEGATIVES.items():  # rank 1 keeps fewer hard negatives
            negatives = local[2] if rank == 0 else local[2][:keep]
            results[name] = step(model, lambda: _backward(cached((local[0], local[1], negatives))))
        try:
            all_gather_with_grad(torch.zeros(2 + rank, 3), equal_sizes=True)
        except ValueError as error:
            results["unequal_error"] = str(error)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _backward(loss: torch.Tensor) -> torch.Tensor:
    loss.backward()
    return loss


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_same(first, second, atol=1e-5):
    torch.testing.assert_close(first[0], second[0], atol=atol, rtol=0)
    assert first[1].keys() == second[1].keys()
    for name in first[1]:
        torch.testing.assert_close(first[1][name], second[1][name], atol=atol, rtol=0,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.multiprocess
def test_two_processes_equal_one_process(tiny_llama_dir, tmp_path):
    torch.multiprocessing.spawn(worker, args=(free_port(), str(tiny_llama_dir), str(tmp_path)), nprocs=WORLD,
                                join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(tiny_llama_dir)
        full = [model.tokenize(texts)[0] for texts in global_batch()]
        single = step(model, lambda: _backward(InfoNCE(model)(full)))
        single_cached = step(model, lambda: _backward(CachedInfoNCE(model, chunk_size=3)(full)))
        half = GLOBAL_BATCH // WORLD
        uneven = {name: step(model, lambda k=keep: _backward(InfoNCE(model)((*full[:2], full[2][:half + k]))))
                  for name, keep in UNEVEN_NEGATIVES.items()}
    finally:
        torch.set_num_threads(threads)
    assert_same(single, single_cached)
    for result in ranks:  # both ranks hold the same averaged gradients, as DDP guarantees
        assert_same(single, result["plain"])
        assert_same(single, result["cached"])
        for name in UNEVEN_NEGATIVES:  # ranks may hold different numbers of hard negatives
            assert_same(uneven[name], result[name])
        assert "same number of rows" in result["unequal_error"]
    constant = ranks[0]["constant"]
    torch.testing.assert_close(constant[0], single[0], atol=1e-5, rtol=0)  # same loss value ...
    max_diff = max((constant[1][n] - single[1][n]).abs().max().item() for n in single[1])
    assert max_diff > 1e-3  # ... but the cross-rank gradient terms are missing


def test_gather_without_process_group_is_identity():
    tensor = torch.randn(3, 4, requires_grad=True)
    gathered, offset = all_gather_with_grad(tensor)
    assert gathered is tensor and offset == 0
