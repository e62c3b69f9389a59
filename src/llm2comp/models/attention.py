"""Bidirectional or causal attention on the same weights, through public model inputs only.

transformers passes a 4-D attention mask of shape (B, 1, T, T) straight to the attention kernels
("an already prepared 4D mask ... is returned as-is", `masking_utils`). So the attention mode is
a property of the *input*, not of the model: no attention class is subclassed or patched, and the
same weights serve as a bidirectional encoder and as a causal decoder in one process.

The mask is additive (0 = attend, the dtype's minimum = blocked), which the eager and SDPA
implementations both accept. Flash-attention kernels take no 4-D mask; use "sdpa" or "eager".

Rules, for a row of `valid` flags (1 = real token, 0 = padding):
- bidirectional: every real token attends to every real token;
- causal: every real token attends to the real tokens at or before it;
- a padding position attends only to itself, so no row is fully blocked (no NaN) and padding
  never leaks into a real position.
"""

from __future__ import annotations

from typing import Literal

import torch

AttentionMode = Literal["bidirectional", "causal"]
ATTENTION_MODES = ("bidirectional", "causal")


def check_attention_mode(mode: str) -> AttentionMode:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def attention_allowed(valid: torch.Tensor, mode: AttentionMode) -> torch.Tensor:
    """Boolean (B, 1, T, T) matrix: may query position i attend to key position j."""
    valid = valid.bool()
    allowed = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, T, T)
    length = valid.shape[1]
    if check_attention_mode(mode) == "causal":
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    return allowed | eye


def attention_mask_4d(valid: torch.Tensor, mode: AttentionMode, dtype: torch.dtype) -> torch.Tensor:
    """Additive (B, 1, T, T) mask in `dtype` for `valid` (B, T) under the given attention mode."""
    allowed = attention_allowed(valid, mode)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def position_ids_for(valid: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so left and right padding give the same positions."""
    valid = valid.long()
    return (valid.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)


def model_attention_mask(valid: torch.Tensor, mode: AttentionMode, dtype: torch.dtype) -> torch.Tensor:
    """The `attention_mask` argument to give the model for this mode.

    Causal mode passes the ordinary 2-D padding mask, so the model builds its own native causal
    mask (including sliding windows, e.g. Gemma 3); bidirectional mode passes our 4-D mask.
    """
    if check_attention_mode(mode) == "causal":
        return valid.long()
    return attention_mask_4d(valid, mode, dtype)
