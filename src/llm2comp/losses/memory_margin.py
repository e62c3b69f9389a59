"""The memory-gap margin: a text's own memory must be a better prefix than another text's memory.

    gap_b   = L_b(m_{pi(b)}) - L_b(m_b)               pi = roll by one within the batch
    L_margin = 1/B sum_b max(0, delta - gap_b)

L_b(m) is the stage-1 loss of text b's target (continuation, or the text for reconstruction) when
the frozen decoder reads memory m. A text-independent prefix gives gap_b = 0 and pays delta; a
memory that carries its text lowers its own loss below another text's and pays nothing once the
gap exceeds delta. Both sides carry gradient (the own memory is pulled down, the other pushed up).

Beyond the paper: a term that a fixed, text-independent prefix cannot satisfy; the memory gap itself
is the diagnostic of `llm2comp.training.memory_probe`.
"""

from __future__ import annotations

import torch


def memory_margin_loss(own: torch.Tensor, other: torch.Tensor, margin: float, per_text: bool = False) -> torch.Tensor:
    """own, other (B,) per-text stage-1 losses with the own / another text's memory -> scalar (or (B,))."""
    if own.shape != other.shape:
        raise ValueError(f"own {tuple(own.shape)} and other {tuple(other.shape)} losses differ in shape")
    per = torch.clamp(margin - (other - own), min=0.0)
    return per if per_text else per.mean()
