"""Length filters, seeded shuffle and a sample limit, as in the authors' stage-1 data preparation.

The release kept WikiText-103 train texts with at least 1,000 characters and fewer than 512
tokens, shuffled them with a fixed seed and took the first 128,000 (32,000 for reconstruction).
Here that is ``filter_texts(texts, min_chars=1000, max_tokens=511, tokenizer=tok, shuffle=True,
seed=..., limit=128_000)``.

Order of work: shuffle first, then walk the shuffled texts and keep those that pass until `limit`
are kept. This gives the same kind of sample as "filter everything, shuffle, take the first N"
(a seeded uniform sample of the texts that pass) but tokenizes only what it needs, which matters
on a 1.8M-row dataset. Texts left unexamined once the limit is reached are counted as
``unchecked`` in the stats.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..errors import InvalidSetting


def count_tokens(texts: Sequence[str], tokenizer, batch_size: int = 512) -> list[int]:
    """Number of tokens of each text, without special tokens (BOS/EOS are the model's, not the text's)."""
    counts: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        encoded = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
    return counts


def filter_texts(texts: Sequence[str], *, min_chars: int = 0, max_tokens: int | None = None, tokenizer=None,
                 shuffle: bool = False, seed: int = 0, limit: int | None = None,
                 batch_size: int = 512) -> tuple[list[str], dict]:
    """Return ``(kept_texts, stats)``.

    min_chars:  drop texts shorter than this many characters (after stripping).
    max_tokens: drop texts with more than this many tokens (counted by `tokenizer`, without special
                tokens). The release's "< 512 tokens" is ``max_tokens=511``.
    shuffle:    shuffle with ``random.Random(seed)`` before filtering; otherwise input order is kept.
    limit:      stop once this many texts are kept.
    stats:      ``{"read", "too_short", "too_long", "kept", "unchecked"}``; read = too_short +
                too_long + kept + unchecked.
    """
    if min_chars < 0:
        raise InvalidSetting(f"min_chars must be >= 0, got {min_chars}")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidSetting(f"max_tokens must be >= 1, got {max_tokens}")
    if max_tokens is not None and tokenizer is None:
        raise InvalidSetting("max_tokens needs a tokenizer to count tokens; pass tokenizer=...")
    if limit is not None and limit < 1:
        raise InvalidSetting(f"limit must be >= 1 (or None for no limit), got {limit}")
    order = list(range(len(texts)))
    if shuffle:
        random.Random(seed).shuffle(order)
    stats = {"read": len(texts), "too_short": 0, "too_long": 0, "kept": 0, "unchecked": 0}
    kept: list[str] = []
    position = 0
    while position < len(order) and (limit is None or len(kept) < limit):
        # Look at a window of candidates at a time so the tokenizer works in batches.
        window = order[position:position + batch_size]
        position += len(window)
        stripped = [texts[index].strip() for index in window]
        candidates = [text for text in stripped if len(text) >= min_chars]
        lengths = iter(count_tokens(candidates, tokenizer, batch_size) if max_tokens is not None else [])
        for text in stripped:
            if limit is not None and len(kept) >= limit:
                stats["unchecked"] += 1
            elif len(text) < min_chars:
                stats["too_short"] += 1
            elif max_tokens is not None and next(lengths) > max_tokens:
                stats["too_long"] += 1
            else:
                kept.append(text)
    stats["unchecked"] += len(order) - position
    stats["kept"] = len(kept)
    return kept, stats
