"""Stage 1 with LLM2Vec's MNTP: the masked batch and the encoder pass (loss: losses/masked_next_token.py).

    masking   per text, round(mask_ratio * n) of its n maskable tokens (at least 1), chosen
              uniformly without replacement; each becomes the mask token (80%), a token drawn
              uniformly from the vocabulary (10%), or stays itself (10%) -- BERT's recipe
    encoder   LLM2Comp without memory tokens (LoRA on, bidirectional) reads [BOS] masked text
    loss      the LM head on the state *before* each masked token, cross-entropy against the
              original token, mean over all masked tokens of the batch

The mask token is the tokenizer's own, else the "_" token, as LLM2Vec's `mask_token_type=blank`
does for vocabularies without one (Llama, Mistral, SmolLM2). Special tokens are never masked, nor
the first text token when no BOS precedes it (nothing to predict it from); BOS and padding are not
part of the text at all. Masks are drawn once per (seed, sample index), like the compression split
point, so a resumed run sees exactly the masks of an uninterrupted one (the same mask every epoch,
where LLM2Vec's collator redraws it; at one epoch the two are the same).

Unlike the compression objectives, whose decoder is the frozen LLM, the LM head here reads the
states of the encoder being trained: the adapter stays on. Logits are computed only at the
masked positions, never for the whole (B, T, V).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InvalidSetting
from ..losses.masked_next_token import masked_next_token_loss, states_before_masked
from .compression import lm_logits

MNTP = "mntp"
BLANK_TOKEN = "_"  # LLM2Vec's mask_token_type=blank
REPLACE_WITH_MASK, REPLACE_WITH_RANDOM = 0.8, 0.1  # the rest stays unchanged


def mask_token_id(tokenizer) -> int:
    """The tokenizer's mask token, else the id of the "_" token; an error if it has neither."""
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    token_id = tokenizer.convert_tokens_to_ids(BLANK_TOKEN)
    unknown = token_id is None or (token_id == tokenizer.unk_token_id and tokenizer.unk_token != BLANK_TOKEN)
    if unknown:
        raise InvalidSetting(f"objective mntp needs a mask token: the tokenizer ({type(tokenizer).__name__}) has "
                         f"neither a mask token nor a {BLANK_TOKEN!r} token in its vocabulary")
    return int(token_id)


@dataclass(frozen=True)
class MaskingSpec:
    """How texts are masked: the ratio, the ids involved, and which text positions may be masked."""

    mask_ratio: float
    mask_id: int
    vocab_size: int  # random replacements are drawn from [0, vocab_size)
    special_ids: frozenset[int]  # never masked
    first_maskable: int  # 0 when a BOS precedes the text, else 1

    def __post_init__(self):
        if not 0 < self.mask_ratio < 1:
            raise InvalidSetting(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")

    @classmethod
    def from_tokenizer(cls, tokenizer, mask_ratio: float = 0.2) -> MaskingSpec:
        return cls(mask_ratio=mask_ratio, mask_id=mask_token_id(tokenizer), vocab_size=len(tokenizer),
                   special_ids=frozenset(tokenizer.all_special_ids),
                   first_maskable=0 if tokenizer.bos_token_id is not None else 1)


@dataclass
class MaskedExample:
    input_ids: list[int]  # the text after masking (what the encoder reads, without BOS)
    positions: list[int]  # ascending indices into input_ids of the masked tokens
    labels: list[int]  # the original token at each of those positions


def mask_text(ids: list[int], spec: MaskingSpec, seed: int, index: int) -> MaskedExample | None:
    """Mask one tokenised text, reproducibly per (seed, sample index); None if nothing is maskable."""
    maskable = [i for i in range(spec.first_maskable, len(ids)) if ids[i] not in spec.special_ids]
    if not maskable:
        return None
    rng = np.random.default_rng([seed, index])
    count = max(1, round(spec.mask_ratio * len(maskable)))
    positions = np.sort(rng.choice(np.asarray(maskable), size=count, replace=False)).tolist()
    kind = rng.random(count)
    random_ids = rng.integers(0, spec.vocab_size, count)
    masked = list(ids)
    for j, position in enumerate(positions):
        if kind[j] < REPLACE_WITH_MASK:
            masked[position] = spec.mask_id
        elif kind[j] < REPLACE_WITH_MASK + REPLACE_WITH_RANDOM:
            masked[position] = int(random_ids[j])
    return MaskedExample(input_ids=masked, positions=positions, labels=[ids[p] for p in positions])


class MaskedNextTokenObjective(nn.Module):
    """forward(examples) -> the MNTP loss of one micro-batch of `MaskedExample`s.

    encoder: an LLM2Comp without memory tokens (num_memory_tokens 0), normally with mean pooling.
    """

    def __init__(self, encoder):
        super().__init__()
        if encoder.num_memory_tokens != 0:
            raise InvalidSetting(f"MNTP trains an encoder without memory tokens, got num_memory_tokens="
                             f"{encoder.num_memory_tokens}")
        rows = encoder.model.get_input_embeddings().weight.shape[0]
        if len(encoder.tokenizer) > rows:  # random replacements are drawn from the tokenizer's ids
            raise InvalidSetting(f"the tokenizer has {len(encoder.tokenizer)} tokens but the model embeds only {rows}")
        self.encoder = encoder

    def forward(self, examples: list[MaskedExample]) -> torch.Tensor:
        encoder = self.encoder
        batch = encoder.collate([e.input_ids for e in examples])  # [BOS] text [pad], right-padded
        hidden = encoder.hidden_states(batch)  # (B, T, d), adapter on, the configured attention
        offset = len(encoder.prefix_ids())
        masked = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        targets = torch.zeros(batch.input_ids.shape, dtype=torch.long)
        for row, example in enumerate(examples):
            columns = torch.tensor(example.positions, dtype=torch.long) + offset
            masked[row, columns] = True
            targets[row, columns] = torch.tensor(example.labels, dtype=torch.long)
        masked, targets = masked.to(hidden.device), targets.to(hidden.device)
        states = states_before_masked(hidden, masked)  # (N, d)
        return masked_next_token_loss(lm_logits(encoder.model, states), targets[masked])


def masked_example_tokens(batch: list[MaskedExample]) -> int:
    """Tokens the encoder reads for a micro-batch (for the trainer's tokens/s)."""
    return sum(len(e.input_ids) for e in batch)
