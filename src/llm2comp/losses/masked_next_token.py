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

The masked batch is made by data/masking.py (BERT's 80/10/10 recipe, drawn per sample index);
`MaskedNextTokenObjective` is the nn.Module the training loop calls: `forward(examples)` runs the
encoder on the masked texts (the adapter on: unlike the compression objectives' frozen decoder,
the LM head here reads the states of the encoder being trained) and returns L. Logits are computed
only at the masked positions, never for the whole (B, T, V).

Source: BehnamGhader et al., "LLM2Vec: Large Language Models Are Secretly Powerful Text
Encoders", arXiv 2404.05961, Sec. 2 (masked next token prediction); the LLM2Comp paper
(arXiv 2511.17129) compares its compression objectives against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.masking import MaskedExample
from ..errors import InvalidSetting
from .compression import lm_logits


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


class MaskedNextTokenObjective(nn.Module):
    """forward(examples) -> the MNTP loss L (module docstring) of one micro-batch of `MaskedExample`s.

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
