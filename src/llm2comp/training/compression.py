"""Stage 1: the context-compression pretext task on one copy of the weights.

    encoder  LLM2Comp (LoRA on, bidirectional) reads [BOS] context [M1..Mk] -> m (B, k, d)
    student  the backbone with the adapter OFF, causal, reads [E(BOS), m_1..m_k, E(continuation)]
    teacher  the backbone with the adapter OFF, causal, reads [BOS] context continuation (no_grad)

Logits are computed only at the positions the loss uses (the LM head is applied to gathered
hidden states), so neither pass materialises (B, T, V).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..losses.kl_continuation import kl_continuation_loss
from ..losses.nll_continuation import token_nll_loss
from ..losses.reconstruction import reconstruction_loss
from ..models.attention import position_ids_for
from ..models.backbone import body_of

OBJECTIVES = ("kl", "nll", "reconstruction")
MIN_SPLIT = 10  # tokens kept on each side of the split point


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


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
    """Cut one tokenised text into a training example; None when too short to split."""
    if objective == "reconstruction":
        return CompressionExample(context=ids, target=ids) if len(ids) >= 1 else None
    cut = split_point(len(ids), seed, index)
    if cut is None:
        return None
    return CompressionExample(context=ids[:cut], target=ids[cut:], full=ids if objective == "kl" else None)


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    valid = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        valid[i, :len(row)] = 1
    return ids, valid


def _gather_predicting_states(hidden: torch.Tensor, first: torch.Tensor, lengths: torch.Tensor):
    """States at positions first_b + j (j < length_b) of each row b, which predict target token j.

    Returns (N, d) states and the (N,) text index of each, N = sum_b length_b.
    """
    offsets = torch.arange(int(lengths.max()), device=hidden.device)  # (J,)
    keep = offsets[None, :] < lengths[:, None]  # (B, J)
    positions = first[:, None] + offsets[None, :]  # (B, J)
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(positions)
    return hidden[rows[keep], positions[keep]], rows[keep]


def lm_logits(causal_lm: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """The LM head on selected states, with the model's final soft-capping if it has one (Gemma 2)."""
    logits = causal_lm.get_output_embeddings()(states)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


class CompressionObjective(nn.Module):
    """forward(examples) -> scalar loss for one micro-batch of `CompressionExample`s.

    decoder: None (default) reuses the encoder's weights with the adapter switched off; a separate
    frozen causal LM can be given instead (the authors' two-copy design, kept for comparison).
    """

    def __init__(self, encoder, objective: str = "kl", decoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.objective = check_objective(objective)
        self.decoder = [decoder] if decoder is not None else None  # a list: not registered as a submodule

    def _frozen(self):
        return contextlib.nullcontext(self.decoder[0]) if self.decoder else self.encoder.frozen()

    def _prefix(self) -> list[int]:
        return self.encoder.prefix_ids()

    def forward(self, examples: list[CompressionExample]) -> torch.Tensor:
        encoder = self.encoder
        device = encoder.device
        memory = encoder.memory_states(encoder.collate([e.context for e in examples]))  # (B, k, d)
        targets, target_valid = (t.to(device) for t in _pad([e.target for e in examples], encoder.pad_id()))
        lengths = target_valid.sum(1)
        with self._frozen() as causal_lm:
            student_logits, text_index = self._student(causal_lm, memory, targets, target_valid, lengths)
            if self.objective == "kl":
                with torch.no_grad():
                    teacher_logits = self._teacher(causal_lm, examples, lengths)
        num_texts = len(examples)
        if self.objective == "kl":
            return kl_continuation_loss(teacher_logits, student_logits, text_index, num_texts)
        flat_targets = targets[target_valid.bool()]
        loss_fn = reconstruction_loss if self.objective == "reconstruction" else token_nll_loss
        return loss_fn(student_logits, flat_targets, text_index, num_texts)

    def _student(self, causal_lm, memory, targets, target_valid, lengths):
        """Decoder pass on [BOS, m_1..m_k, target]; logits at the N target-predicting positions."""
        embed = causal_lm.get_input_embeddings()
        batch, k = memory.shape[0], memory.shape[1]
        parts = [memory.to(embed.weight.dtype), embed(targets)]
        prefix = self._prefix()
        if prefix:
            bos = embed(torch.tensor(prefix, device=targets.device))  # (p, d)
            parts.insert(0, bos.unsqueeze(0).expand(batch, -1, -1))
        embeds = torch.cat(parts, dim=1)  # (B, p + k + J, d)
        head_valid = torch.ones(batch, len(prefix) + k, dtype=torch.long, device=targets.device)
        valid = torch.cat([head_valid, target_valid], dim=1)
        hidden = body_of(causal_lm)(inputs_embeds=embeds, attention_mask=valid,
                                    position_ids=position_ids_for(valid), use_cache=False).last_hidden_state
        first = torch.full((batch,), len(prefix) + k - 1, device=targets.device)  # last memory slot
        states, text_index = _gather_predicting_states(hidden, first, lengths)
        return lm_logits(causal_lm, states), text_index

    def _teacher(self, causal_lm, examples, lengths):
        """The frozen LLM on the full text; logits at the positions predicting the continuation."""
        prefix = self._prefix()
        ids, valid = (t.to(lengths.device) for t in _pad([prefix + e.full for e in examples],
                                                          self.encoder.pad_id()))
        hidden = body_of(causal_lm)(input_ids=ids, attention_mask=valid, position_ids=position_ids_for(valid),
                                    use_cache=False).last_hidden_state
        first = torch.tensor([len(prefix) + len(e.context) - 1 for e in examples], device=ids.device)
        states, _ = _gather_predicting_states(hidden, first, lengths)
        return lm_logits(causal_lm, states)
