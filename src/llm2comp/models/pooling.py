"""Pooling final hidden states (B, T, d) into one vector per text (B, d).

- `memory_mean` (LLM2Comp): mean of the k memory-token states, the paper's embedding.
- `mean`: mean over text tokens (BOS included), the sentence-transformers baseline.
- `last`: the last text token's state, the paper's "LT" baseline (meaningful with causal attention).
"""

from __future__ import annotations

import torch

from ..errors import InvalidSetting
from .memory import EncoderBatch

POOLING_MODES = ("memory_mean", "mean", "last")


def check_pooling(mode: str, num_memory: int) -> str:
    if mode not in POOLING_MODES:
        raise InvalidSetting(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
    if mode == "memory_mean" and num_memory < 1:
        raise InvalidSetting("pooling 'memory_mean' needs num_memory_tokens >= 1")
    return mode


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def last_text_state(hidden: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(text_mask.shape[1], device=text_mask.device)
    last = (positions * text_mask).argmax(dim=1)  # (B,) index of the last text token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool(hidden: torch.Tensor, batch: EncoderBatch, mode: str) -> torch.Tensor:
    if mode == "memory_mean":
        return masked_mean(hidden, batch.memory_slot >= 0)
    if mode == "mean":
        return masked_mean(hidden, batch.text_mask)
    if mode == "last":
        return last_text_state(hidden, batch.text_mask)
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")
