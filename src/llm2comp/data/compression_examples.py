"""Stage-1 compression examples: one tokenised text cut into what the encoder compresses and what
the frozen decoder must then predict (the loss itself: losses/compression.py).

    continuation (kl, nll)   context = x_{1..a}, target = x_{a+1..n}, a ~ U[MIN_SPLIT, n - MIN_SPLIT]
                             (kl also keeps the full text, which the teacher reads)
    reconstruction           context = target = x_{1..n}

The split point a is drawn once per (seed, sample index), so a resumed run, another process or a
later epoch cuts every text exactly where an uninterrupted run does. Texts shorter than
2 * MIN_SPLIT tokens cannot be split and give no example.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SPLIT = 10  # tokens kept on each side of the split point


def split_point(length: int, seed: int, index: int, margin: int = MIN_SPLIT) -> int | None:
    """Uniform in [margin, length - margin], reproducible per (seed, sample index); None if too short."""
    if length < 2 * margin:
        return None
    return int(np.random.default_rng([seed, index]).integers(margin, length - margin + 1))


@dataclass
class CompressionExample:
    context: list[int]  # what the encoder compresses
    target: list[int]  # what the decoder predicts (continuation, or the context itself for RC)
    full: list[int] | None = None  # context + continuation, read by the KL teacher


def make_example(ids: list[int], objective: str, seed: int, index: int) -> CompressionExample | None:
    """Cut one tokenised text into a training example for `objective` ("kl", "nll" or "reconstruction");
    None when too short to split."""
    if objective == "reconstruction":
        return CompressionExample(context=ids, target=ids) if len(ids) >= 1 else None
    cut = split_point(len(ids), seed, index)
    if cut is None:
        return None
    return CompressionExample(context=ids[:cut], target=ids[cut:], full=ids if objective == "kl" else None)

