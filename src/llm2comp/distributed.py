"""Gathering embeddings across processes for contrastive losses with cross-device negatives.

It sits below both `losses/` (the contrastive losses gather their candidates) and `training/`
(the trainer), so neither imports the other for it.

`all_gather_with_grad(x)` concatenates the (n_r, d) tensors of all W processes into one
(sum_r n_r, d) tensor, in rank order, so that every process sees the candidates of the *global*
batch. It uses plain `torch.distributed` collectives on the default process group, which HF
Accelerate (or `torchrun`) initialises; without an initialised group (one process) it returns the
tensor itself and offset 0.

Gradients. On rank r the rows [offset, offset + n_r) are `x` itself: its gradient flows into x's
autograd graph. The other ranks' rows arrive as constants (this rank holds no graph for them), but
the gradient that rank r's loss puts on them is not thrown away: the backward all-reduces (sums) the
gradient of the whole gathered tensor and hands each rank the rows of its own slice. So with
per-rank losses L_s, rank r's embeddings receive sum_s dL_s/dx_r -- every query of the global batch
pushes on every candidate, as in one process. A "constant" gather (other slices detached, nothing
sent back) silently loses the gradient that other ranks' queries put on this rank's candidates;
tests/test_distributed_gather.py shows that it does *not* match a single process.

Sizes may differ between ranks (e.g. some rows without a hard negative): every rank learns all
sizes first (one tiny all_gather), pieces are padded to the largest for the collective and cut
back. `equal_sizes=True` turns a size mismatch into an error instead (queries/positives: the DDP
gradient average equals the global-batch gradient only when every rank has the same n).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised torch.distributed process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_sizes(tensor: torch.Tensor) -> list[int]:
    """Number of rows of `tensor` on every rank, in rank order."""
    local = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """all_gather of row blocks of different lengths: pad to the longest, gather, cut, concatenate."""
    longest = max(sizes)
    if longest == 0:  # nothing anywhere (e.g. no hard negatives): no collective needed
        return tensor.new_zeros((0, *tensor.shape[1:]))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:tensor.shape[0]] = tensor
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)], dim=0)  # (sum n_r, ...)


class _GatherRows(torch.autograd.Function):
    """Forward: gather all ranks' rows. Backward: all_reduce(sum) of the gradient, own rows back."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int], offset: int) -> torch.Tensor:
        ctx.offset, ctx.rows = offset, tensor.shape[0]
        return _gather_rows(tensor.detach(), sizes)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()  # all_reduce works in place; same shape on every rank
        if grad.numel():  # every rank knows the sizes, so all skip an empty reduction together
            dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # sum_s dL_s / d(gathered)
        return grad[ctx.offset:ctx.offset + ctx.rows], None, None


def all_gather_with_grad(tensor: torch.Tensor, equal_sizes: bool = False) -> tuple[torch.Tensor, int]:
    """Gather `tensor` (n_r, ...) from all processes; returns `(gathered, offset)`.

    gathered: (sum_r n_r, ...) in rank order; rows [offset, offset + n_r) hold this rank's `tensor`,
    and the backward gives each rank the gradient summed over all ranks' losses for its own rows.
    offset: sum of the sizes of the lower ranks (rank * n with equal sizes); 0 without a process
    group, where `gathered is tensor`. `equal_sizes=True`: raise if the ranks' sizes differ.
    The backward's all_reduce runs when `tensor.requires_grad` (under grad mode): this must be the
    same on every rank, or the collectives do not match.
    """
    if not is_distributed():
        return tensor, 0
    sizes = gather_sizes(tensor)
    if equal_sizes and len(set(sizes)) != 1:
        raise ValueError(
            f"all ranks must hold the same number of rows, got {sizes} (one per rank); with unequal "
            "per-process batches the DDP gradient average is not the global-batch gradient: give every "
            "process the same batch size (e.g. drop_last=True)"
        )
    offset = sum(sizes[:dist.get_rank()])
    if torch.is_grad_enabled() and tensor.requires_grad:
        return _GatherRows.apply(tensor, sizes, offset), offset
    return _gather_rows(tensor, sizes), offset

