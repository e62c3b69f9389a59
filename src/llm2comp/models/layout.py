"""How texts become encoder rows and decoder inputs: the model's input layout, in one place.

    encoder row    [prefix] text [M1..Mk]                prefix: [BOS] when the tokenizer has one, else nothing
    text budget    B = max_length - |prefix| - k         the text tokens one row holds (`text_budget`)
    decoder input  [E(prefix), m_1..m_k, E(x_1..x_J)]    the frozen LLM reading k memory states (`decoder_inputs`)

Texts to rows (`rows_for`): each `(instruction, text)` is put through the model's instruction
template, tokenized without special tokens, and then, by `long_texts` mode, either cut to its first B
tokens (`truncate`: one row per text) or cut into windows of at most B tokens (`segments`,
`multivector`: one row per window, `long_texts.plan_windows`). The rows record the text each belongs
to and its weight w_s, so encode, the sentence-transformers module and the server embed the rows in
batches of their own choosing and `EncoderRows.combine` turns row vectors back into one result per
text. A row holds text ids only: `memory.build_encoder_batch` adds the prefix and the k memory slots
and pads.

The decoder input is what the stage-1 objective and the decoding probe feed the frozen causal LLM:
the prefix's token embeddings, the encoder's k memory states in place of the text, then the
continuation's token embeddings (teacher forcing). The state at the last memory slot,
position |prefix| + k - 1, predicts the continuation's first token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..errors import InvalidSetting
from ..inputs import apply_instruction
from .long_texts import WindowEmbeddings, check_long_texts, check_overlap, plan_windows, window_weights


# ---------------------------------------------------------------------------------------------- budget
def prefix_ids(tokenizer) -> list[int]:
    """The ids put before every text: [BOS] when the tokenizer has one, else nothing."""
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None else []


def text_budget(max_length: int, prefix_len: int, num_memory: int) -> int:
    """B = max_length - |prefix| - k: the text tokens one encoder row holds; refused when no token fits."""
    budget = max_length - prefix_len - num_memory
    if budget < 1:
        raise InvalidSetting(f"max_length {max_length} leaves no room for text next to {num_memory} memory tokens")
    return budget


def model_text_budget(model, max_length: int | None = None) -> int:
    """`text_budget` of an LLM2Comp model: its prefix and k, and `max_length` (None or 0: the model's)."""
    return text_budget(max_length or model.config.max_length, len(model.prefix_ids()), model.num_memory_tokens)


def row_overhead(model) -> int:
    """|prefix| + k: the positions of an encoder row that are not text."""
    return len(model.prefix_ids()) + model.num_memory_tokens


def truncate_ids(ids: list[list[int]], budget: int) -> tuple[list[list[int]], int]:
    """Every text cut to its first `budget` tokens (the memory tokens are never cut); returns the rows
    and how many texts were cut."""
    return [row[:budget] for row in ids], sum(len(row) > budget for row in ids)


# ---------------------------------------------------------------------------------------------- texts -> rows
def apply_instructions(model, items: list[tuple[str | None, str]]) -> list[str]:
    """The texts the model reads: each instruction put in front of its text with the model's template."""
    template = model.config.instruction_template
    return [apply_instruction(instruction, text, template) for instruction, text in items]


@dataclass
class EncoderRows:
    """n texts as encoder rows: one row per text (`truncate`) or one per window (`segments`, `multivector`).

    Rows keep input order: text i's rows come before text i+1's, a text's windows in text order.
    """

    ids: list[list[int]]  # each row's text ids, at most B of them (no prefix, no memory slots)
    owner: torch.Tensor  # (R,) long: the text each row belongs to
    weights: torch.Tensor  # (R,) float32: w_s (long_texts.py); 1 for a text's only row under truncate
    n_texts: int
    truncated: int = 0  # texts cut to B (truncate only; windows keep every token)

    def windows(self, vectors: torch.Tensor) -> WindowEmbeddings:
        """The rows' embeddings (R, d) with the text and weight of each row."""
        return WindowEmbeddings(vectors, self.owner, self.weights, self.n_texts)

    def combine(self, vectors: torch.Tensor, mode: str) -> torch.Tensor | list[torch.Tensor]:
        """The rows' embeddings (R, d) as the result of `mode`: `truncate` the rows themselves (n, d);
        `segments` each text's token-weighted window mean (n, d); `multivector` one (S_i, d) per text."""
        if check_long_texts(mode) == "truncate":
            return vectors
        windows = self.windows(vectors)
        return windows.weighted_mean() if mode == "segments" else windows.split()


def rows_of_ids(ids: list[list[int]], budget: int, mode: str, overlap: int = 0) -> EncoderRows:
    """Token-id texts as encoder rows of at most `budget` tokens (module docstring). `overlap` (the
    tokens consecutive windows share) is checked and used by the window modes only."""
    if check_long_texts(mode) == "truncate":
        rows, truncated = truncate_ids(ids, budget)
        return EncoderRows(rows, torch.arange(len(ids)), torch.ones(len(ids)), len(ids), truncated)
    check_overlap(overlap, budget)
    rows, owner, weights = [], [], []
    for index, text_ids in enumerate(ids):
        windows = plan_windows(len(text_ids), budget, overlap)
        rows += [text_ids[start:end] for start, end in windows]
        owner += [index] * len(windows)
        weights += window_weights(windows)
    return EncoderRows(rows, torch.tensor(owner, dtype=torch.long), torch.tensor(weights, dtype=torch.float32),
                       len(ids))


def rows_for(model, items: list[tuple[str | None, str]], mode: str, overlap: int = 0, *,
             max_length: int | None = None) -> EncoderRows:
    """`(instruction, text)` items as the model's encoder rows under `mode`: instruction applied,
    tokenized without special tokens, truncated or windowed to the model's text budget (`max_length`
    default: the model's)."""
    budget = model_text_budget(model, max_length)
    texts = apply_instructions(model, items)
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return rows_of_ids(ids, budget, mode, overlap)


# ---------------------------------------------------------------------------------------------- decoder input
class DecoderInput(NamedTuple):
    """What the frozen causal LLM reads in place of a text (module docstring)."""

    embeds: torch.Tensor  # (B, p + k + J, d) input embeddings, in the embedding table's dtype
    attention_mask: torch.Tensor  # (B, p + k + J) long: 1 for prefix, memory and real continuation tokens
    last_memory: int  # p + k - 1: the position whose state predicts the continuation's first token


def decoder_inputs(embed: nn.Module, prefix: list[int], memory: torch.Tensor, continuation: torch.Tensor | None = None,
                   continuation_mask: torch.Tensor | None = None) -> DecoderInput:
    """`[E(prefix), m_1..m_k, E(continuation)]` and its attention mask, on `memory`'s device.

    embed: the decoder's input-embedding table; prefix: its ids (`prefix_ids`); memory: (B, k, d),
    cast to the table's dtype; continuation: (B, J) right-padded token ids with `continuation_mask`
    (B, J) 1 at real tokens (None: the decoder starts from the memory alone, as in generation).
    """
    batch, k = memory.shape[0], memory.shape[1]
    device = memory.device
    parts = [memory.to(embed.weight.dtype)]
    if continuation is not None:
        parts.append(embed(continuation))
    if prefix:
        head = embed(torch.tensor(prefix, device=device))  # (p, d)
        parts.insert(0, head.unsqueeze(0).expand(batch, -1, -1))
    mask = torch.ones(batch, len(prefix) + k, dtype=torch.long, device=device)
    if continuation is not None:
        if continuation_mask is None:
            raise InvalidSetting("decoder_inputs: a continuation needs its continuation_mask (1 at real tokens)")
        mask = torch.cat([mask, continuation_mask.to(device=device, dtype=torch.long)], dim=1)
    return DecoderInput(torch.cat(parts, dim=1), mask, len(prefix) + k - 1)
