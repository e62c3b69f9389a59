"""Texts longer than `max_length`: cut them off, or compress them window by window.

A text of n tokens (instruction included) meets a per-window text budget

    B = max_length - |prefix| - k          (prefix: BOS when the tokenizer has one; k memory tokens)

and `long_texts` chooses what happens when n > B:

- `truncate` (default): keep the first B tokens; a warning counts the texts that were cut.
- `segments`: cut the n tokens into windows of at most B tokens, window s+1 starting `B - overlap`
  tokens after window s (the last one ends at n). Each window is laid out as an ordinary text,
  `[BOS] window [M1..Mk]`, and pooled as usual into e_s; the text's embedding is the token-weighted
  mean of its window embeddings

      e = sum_s w_s e_s / sum_s w_s,     w_s = end_s - end_{s-1}   (end_{-1} = 0, so sum_s w_s = n)

  Each token counts once, credited to the first window that reads it: overlap tokens give a window
  context without being counted twice. e is the mean of raw (unnormalised) window embeddings;
  `normalize_embeddings` normalises e afterwards.
- `multivector`: no mean; the text's window embeddings e_1..e_S as one (S, d) array, for indexes
  that store windows and score with MaxSim (`maxsim.py`).

A text of at most B tokens has exactly one window, so all three modes give it the same vector. The
windows of all texts are flattened into one list of rows (`layout.rows_for`) and embedded by
`encoding.embed_rows`, the same token-budget batching as ordinary texts: a window's embedding does
not depend on its neighbours, the batch size or the padding side, and neither does a text's. This
file holds the window maths only; B is `layout.text_budget`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidSetting

LONG_TEXT_MODES = ("truncate", "segments", "multivector")
DEFAULT_OVERLAP = 32


def check_long_texts(mode: str) -> str:
    if mode not in LONG_TEXT_MODES:
        raise InvalidSetting(f"long_texts must be one of {LONG_TEXT_MODES}, got {mode!r}")
    return mode


def check_overlap(overlap: int, budget: int) -> int:
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < budget:
        raise InvalidSetting(f"overlap must be an int in [0, {budget}) (the window's text budget: max_length minus "
                         f"BOS and memory tokens), got {overlap!r}; pass encode(overlap=...) or set the "
                         "model's long_text_overlap")
    return overlap


def plan_windows(n_tokens: int, budget: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open token ranges `[start, end)` covering `n_tokens`: at most `budget` long, consecutive
    windows sharing `overlap` tokens, the last one ending at `n_tokens`. An empty text has one empty
    window, a text of at most `budget` tokens exactly one window."""
    check_overlap(overlap, budget)
    if n_tokens <= budget:
        return [(0, n_tokens)]
    stride = budget - overlap
    windows, start = [], 0
    while True:
        end = min(start + budget, n_tokens)
        windows.append((start, end))
        if end == n_tokens:
            return windows
        start += stride


def window_weights(windows: list[tuple[int, int]]) -> list[int]:
    """w_s = end_s - end_{s-1}: the tokens window s reads first (module docstring). An empty text's
    single empty window gets weight 1, so its embedding is that window's."""
    weights, previous_end = [], 0
    for _, end in windows:
        weights.append(end - previous_end)
        previous_end = end
    return weights if sum(weights) > 0 else [1] * len(windows)


@dataclass
class WindowEmbeddings:
    """The window embeddings of n texts: texts in input order, each text's windows in text order."""

    vectors: torch.Tensor  # (W, d) float32, raw pooled window embeddings
    owner: torch.Tensor  # (W,) index of the text each window belongs to
    weights: torch.Tensor  # (W,) float32, w_s (module docstring)
    n_texts: int

    @property
    def counts(self) -> torch.Tensor:
        """(n,) windows per text."""
        return torch.bincount(self.owner, minlength=self.n_texts)

    def weighted_mean(self) -> torch.Tensor:
        """(n, d) float32, on the vectors' device: e = sum_s w_s e_s / sum_s w_s per text (`segments`)."""
        vectors = self.vectors.float()
        owner, weights = self.owner.to(vectors.device), self.weights.to(vectors.device, torch.float32)
        totals = vectors.new_zeros(self.n_texts).index_add_(0, owner, weights)
        sums = vectors.new_zeros(self.n_texts, vectors.shape[1]).index_add_(0, owner, vectors * weights[:, None])
        return sums / totals[:, None]

    def split(self) -> list[torch.Tensor]:
        """One (S_i, d) tensor per text (the `multivector` output)."""
        return list(self.vectors.split(self.counts.tolist()))
