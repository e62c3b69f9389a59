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

Sliding-window layers (Mistral; the local layers of Gemma 2/3, Cohere 2, windowed Qwen2/3 ...).
Causally, such a layer lets query i see keys i - w < j <= i (w = `config.sliding_window`: the query
and the w - 1 tokens before it). Bidirectionally it keeps the same reach on both sides:

    sliding layer:  i may attend to j  iff  |p_i - p_j| < w     (p = positions of real tokens)
    global layer:   i may attend to every real j

so a local layer never sees a key farther away than it did in pre-training (its rotary frequencies
and weights were only ever trained on distances < w), while the global layers see the whole text,
as in causal use. Each layer kind gets its own mask: models that list `config.layer_types` take a
`{layer kind: 4-D mask}` dict as `attention_mask` (transformers builds the same dict itself when
given a 2-D mask); models with one `sliding_window` on every layer take the windowed 4-D mask. (A
single 4-D mask would replace the window on every layer.) The alternative of EmbeddingGemma
(`use_bidirectional_attention`: the window is halved so that a query sees about w keys in all) is
what such a config gets here too, since its `sliding_window` is already halved.

Families whose layers are not all softmax attention (Mamba, RWKV, RecurrentGemma, hybrids with
linear-attention or state-space layers, chunked attention) cannot be made bidirectional through a
mask and are refused by name (`attention_layout`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import InvalidSetting, UnsupportedModel

AttentionMode = Literal["bidirectional", "causal"]
ATTENTION_MODES = ("bidirectional", "causal")


def check_attention_mode(mode: str) -> AttentionMode:
    if mode not in ATTENTION_MODES:
        raise InvalidSetting(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


FULL, SLIDING = "full_attention", "sliding_attention"
# model types without attention layers (no layer_types to say so): refused by name
RECURRENT_FAMILIES = {"mamba": "Mamba", "mamba2": "Mamba-2", "falcon_mamba": "Falcon-Mamba", "rwkv": "RWKV",
                      "recurrent_gemma": "RecurrentGemma", "xlstm": "xLSTM"}


@dataclass(frozen=True)
class AttentionLayout:
    """The attention kinds of a backbone's layers, read from its config."""

    kinds: tuple[str, ...] = (FULL,)  # distinct kinds among the layers
    sliding_window: int | None = None  # w of the sliding layers
    per_kind: bool = False  # the model takes a {kind: mask} dict (it lists `config.layer_types`)

    @property
    def has_sliding(self) -> bool:
        return SLIDING in self.kinds


def attention_layout(config) -> AttentionLayout:
    """Which mask each layer needs; raises `UnsupportedModel` naming a family that cannot work."""
    model_type = getattr(config, "model_type", "") or ""
    if model_type in RECURRENT_FAMILIES:
        raise UnsupportedModel(f"{RECURRENT_FAMILIES[model_type]} (model_type {model_type!r}) has recurrent, not "
                               "attention, layers: a mask cannot make it bidirectional, so it cannot be an LLM2Comp "
                               "encoder. Use a Transformer decoder (Llama, Mistral, Qwen, Gemma, GPT-2, Phi, ...)")
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:  # one mask for every layer; Mistral-style configs window all of them
        return AttentionLayout((SLIDING,), window) if window else AttentionLayout()
    kinds = tuple(sorted(set(layer_types)))
    unknown = [kind for kind in kinds if kind not in (FULL, SLIDING)]
    if unknown:
        raise UnsupportedModel(f"{type(config).__name__} (model_type {model_type!r}) has {', '.join(unknown)} layers; "
                               "only full and sliding-window softmax attention can be made bidirectional, so it "
                               "cannot be an LLM2Comp encoder")
    if SLIDING in kinds and not window:
        raise UnsupportedModel(f"{type(config).__name__} lists sliding-window layers but no sliding_window size")
    return AttentionLayout(kinds, window if SLIDING in kinds else None, per_kind=True)


def attention_allowed(valid: torch.Tensor, mode: AttentionMode, window: int | None = None) -> torch.Tensor:
    """Boolean (B, 1, T, T) matrix: may query position i attend to key position j.

    `window` w (bidirectional sliding-window layers): also |p_i - p_j| < w, positions of real tokens.
    """
    valid = valid.bool()
    allowed = valid[:, None, :, None] & valid[:, None, None, :]  # (B, 1, T, T)
    length = valid.shape[1]
    if check_attention_mode(mode) == "causal":
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=valid.device).tril()
    if window is not None:
        positions = position_ids_for(valid)  # (B, T)
        distance = (positions[:, :, None] - positions[:, None, :]).abs()  # (B, T, T)
        allowed = allowed & (distance < window)[:, None]
    index = torch.arange(length, device=valid.device)
    diagonal = index[:, None] == index[None, :]  # an identity built from arange: exports to ONNX (EyeLike has no bool kernel)
    return allowed | diagonal


def attention_mask_4d(valid: torch.Tensor, mode: AttentionMode, dtype: torch.dtype,
                      window: int | None = None) -> torch.Tensor:
    """Additive (B, 1, T, T) mask in `dtype` for `valid` (B, T) under the given attention mode."""
    allowed = attention_allowed(valid, mode, window)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def position_ids_for(valid: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only, so left and right padding give the same positions."""
    valid = valid.long()
    return (valid.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)


def model_attention_mask(valid: torch.Tensor, mode: AttentionMode, dtype: torch.dtype,
                         layout: AttentionLayout | None = None) -> torch.Tensor | dict[str, torch.Tensor]:
    """The `attention_mask` argument to give the model for this mode.

    Causal mode passes the ordinary 2-D padding mask, so the model builds its own native causal
    mask (including sliding windows, e.g. Gemma 3); bidirectional mode passes our 4-D mask, or one
    per layer kind (module docstring) when `layout` has sliding-window layers.
    """
    if check_attention_mode(mode) == "causal":
        return valid.long()
    layout = layout or AttentionLayout()
    if not layout.has_sliding:
        return attention_mask_4d(valid, mode, dtype)
    windowed = attention_mask_4d(valid, mode, dtype, layout.sliding_window)
    if not layout.per_kind:
        return windowed
    return {kind: windowed if kind == SLIDING else attention_mask_4d(valid, mode, dtype) for kind in layout.kinds}
