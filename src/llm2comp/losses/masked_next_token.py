"""MNTP, LLM2Vec's masked next-token prediction: the baseline stage-1 objective.

A bidirectional encoder (the LLM with its causal mask removed, + LoRA) reads a text x_{0..n-1} in
which a set M of positions was corrupted (BERT-style: the token replaced by a mask token, by a
random token, or kept). Masked token i is predicted from the encoder's final state at position
i - 1, through the LM head, as a causal LM predicts its *next* token -- hence "next-token":

    h = encoder(x~)                                          (B, T, d), adapter on, no causal mask
    L = 1/|M| sum_{(b, i) in M} -log softmax(W_lm h_{b, i-1})[x_{b, i}]

with M the masked positions of the whole batch: one mean over all masked tokens of the batch, as
LLM2Vec's loss (the causal LM's token cross-entropy over the labels that are not ignored). A
text's weight is thus its number of masked tokens (proportional to its length), unlike the
compression losses, which average per text first; we keep LLM2Vec's reduction because MNTP is
the paper's baseline, and a baseline is only worth its name when it is the original objective.
"The batch" is one micro-batch of one process; gradient accumulation and DDP then average these
means, as LLM2Vec's Hugging Face Trainer does.
Position 0 (BOS) is never masked, so every masked i has a state at i - 1.

Source: BehnamGhader et al., "LLM2Vec: Large Language Models Are Secretly Powerful Text
Encoders", arXiv 2404.05961, Sec. 2 (masked next token prediction); the LLM2Comp paper
(arXiv 2511.17129) compares its compression objectives against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def states_before_masked(hidden: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, d), masked (B, T) bool -> (N, d): the state at i - 1 for every masked (b, i).

    Rows come in row-major order of `masked` (the order of `targets = ids[masked]`).
    """
    if masked.shape != hidden.shape[:2]:
        raise ValueError(f"masked {tuple(masked.shape)} must match hidden's (B, T) {tuple(hidden.shape[:2])}")
    if masked[:, 0].any():
        raise ValueError("position 0 cannot be masked: no state precedes it to predict it from")
    rows, positions = masked.nonzero(as_tuple=True)
    return hidden[rows, positions - 1]


def masked_next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (N, V) from the states before the N masked tokens, targets (N,) their original ids.

    Mean token cross-entropy over all N masked tokens of the batch (LLM2Vec's reduction).
    """
    if logits.shape[0] != targets.shape[0] or targets.numel() == 0:
        raise ValueError(f"need one target per logit row and at least one, got {tuple(logits.shape)} logits "
                         f"and {tuple(targets.shape)} targets")
    return F.cross_entropy(logits.float(), targets)
