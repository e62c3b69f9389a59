"""Reductions shared by the compression losses: mean over a text's positions, then over texts."""

from __future__ import annotations

import torch


def mean_per_text(values: torch.Tensor, text_index: torch.Tensor, num_texts: int) -> torch.Tensor:
    """values (N,) at flattened positions, text_index (N,) in [0, num_texts) -> (num_texts,) means.

    A text with no position gets 0.
    """
    sums = torch.zeros(num_texts, dtype=values.dtype, device=values.device).index_add_(0, text_index, values)
    counts = torch.bincount(text_index, minlength=num_texts).clamp(min=1).to(values.dtype)
    return sums / counts

