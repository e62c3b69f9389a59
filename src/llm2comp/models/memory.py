"""Learned memory tokens and the padded encoder batch they are written into.

A row of text ids (`layout.rows_for`) becomes `[prefix] text [M1..Mk]` in `build_encoder_batch`;
`embed_with_memory` puts the k learned vectors into the memory slots.

The k memory vectors are a small separate parameter (k x d); the vocabulary is never resized, so
the backbone's embedding matrix and LM head stay untouched (and shareable with the frozen decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidSetting


class MemoryTokens(nn.Module):
    """k learned input vectors of the backbone's hidden size.

    Initialised from the statistics of the backbone's embedding matrix (per-dimension mean and
    standard deviation), so they start on the same scale as real token embeddings.
    """

    def __init__(self, num_tokens: int, hidden_size: int):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_memory_tokens must be >= 1, got {num_tokens}")
        self.weight = nn.Parameter(torch.zeros(num_tokens, hidden_size))

    @property
    def num_tokens(self) -> int:
        return self.weight.shape[0]

    @torch.no_grad()
    def init_from_embeddings(self, embedding_matrix: torch.Tensor, seed: int = 0) -> None:
        table = embedding_matrix.detach().float()
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(self.weight.shape, generator=generator)
        self.weight.copy_(table.mean(0) + noise * table.std(0))


@dataclass
class EncoderBatch:
    """One padded batch. Shapes: (B, T) except where noted."""

    input_ids: torch.Tensor  # token ids; pad and memory slots hold `pad_id`
    valid: torch.Tensor  # 1 for real tokens (text and memory), 0 for padding
    memory_slot: torch.Tensor  # j in [0, k) at memory position j, -1 elsewhere
    text_mask: torch.Tensor  # 1 for text tokens (BOS included), 0 for memory and padding

    def to(self, device) -> EncoderBatch:
        return EncoderBatch(*(t.to(device) for t in (self.input_ids, self.valid, self.memory_slot,
                                                     self.text_mask)))


def build_encoder_batch(
    texts_ids: list[list[int]],
    *,
    num_memory: int,
    prefix_ids: list[int],
    pad_id: int,
    padding_side: str = "right",
) -> EncoderBatch:
    """Lay out `[prefix] text [M1..Mk]` for each text and pad to a common length."""
    if padding_side not in ("right", "left"):
        raise InvalidSetting(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    rows = [prefix_ids + ids for ids in texts_ids]
    length = max(len(r) for r in rows) + num_memory
    batch = len(rows)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    valid = torch.zeros(batch, length, dtype=torch.long)
    memory_slot = torch.full((batch, length), -1, dtype=torch.long)
    text_mask = torch.zeros(batch, length, dtype=torch.long)
    for i, row in enumerate(rows):
        used = len(row) + num_memory
        start = 0 if padding_side == "right" else length - used
        input_ids[i, start:start + len(row)] = torch.tensor(row, dtype=torch.long)
        valid[i, start:start + used] = 1
        text_mask[i, start:start + len(row)] = 1
        memory_slot[i, start + len(row):start + used] = torch.arange(num_memory)
    return EncoderBatch(input_ids, valid, memory_slot, text_mask)


def embed_with_memory(embed: nn.Module, batch: EncoderBatch, memory: MemoryTokens | None) -> torch.Tensor:
    """Token embeddings with the memory vectors written into their slots: (B, T, d)."""
    embeds = embed(batch.input_ids)
    if memory is None:
        return embeds
    is_memory = (batch.memory_slot >= 0).unsqueeze(-1)  # (B, T, 1)
    vectors = memory.weight.to(embeds.dtype)[batch.memory_slot.clamp(min=0)]  # (B, T, d)
    return torch.where(is_memory, vectors, embeds)
