"""Stage-1 MNTP examples: LLM2Vec's BERT-style masking of a tokenised text (the loss and the encoder
pass: losses/masked_next_token.py).

    masking   per text, round(mask_ratio * n) of its n maskable tokens (at least 1), chosen
              uniformly without replacement; each becomes the mask token (80%), a token drawn
              uniformly from the vocabulary (10%), or stays itself (10%) -- BERT's recipe

The mask token is the tokenizer's own, else the "_" token, as LLM2Vec's `mask_token_type=blank`
does for vocabularies without one (Llama, Mistral, SmolLM2). Special tokens are never masked, nor
the first text token when no BOS precedes it (nothing to predict it from); BOS and padding are not
part of the text at all. Masks are drawn once per (seed, sample index), like the compression split
point (data/compression_examples.py), so a resumed run sees exactly the masks of an uninterrupted
one (the same mask every epoch, where LLM2Vec's collator redraws it; at one epoch the two are the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidSetting

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


def masked_example_tokens(batch: list[MaskedExample]) -> int:
    """Tokens the encoder reads for a micro-batch (for the trainer's tokens/s)."""
    return sum(len(e.input_ids) for e in batch)
