"""Stage 1: the context-compression objective on one copy of the weights (KL / NLL / RC).

    encoder  LLM2Comp (LoRA on, bidirectional) reads [BOS] context [M1..Mk] -> m (B, k, d)
    student  the backbone with the adapter OFF, causal, reads [E(BOS), m_1..m_k, E(target)]
             (models/layout.py: `decoder_inputs`)
    teacher  the backbone with the adapter OFF, causal, reads [BOS] context continuation (no_grad)

    L_objective = 1/B sum_b L_b, L_b the mean over text b's target positions of
        kl              KL(p_teacher || p_student)              (losses/kl_continuation.py)
        nll             -log p_student(x_i)                     (losses/nll_continuation.py)
        reconstruction  -log p_student(x_i), target = context   (losses/reconstruction.py)

Examples (context, target, full text) are made from tokenised texts by
data/compression_examples.py. Logits are computed only at the positions the loss uses (the LM head
is applied to gathered hidden states), so neither pass materialises (B, T, V).

Optional terms (`CompressionTerms`, all off by default = the paper's recipe) attack the shortcut in
which one text-independent prefix satisfies the continuation loss:

    L = L_objective + w_rc * L_rc + w_align * L_align + w_margin * L_margin

L_rc: the decoder reproduces the context from the memory (losses/reconstruction.py);
L_align: memory mean vs the frozen LLM's mean-pooled states of the context: cosine
(losses/embedding_alignment.py), or with `alignment_temperature` > 0 in-batch InfoNCE (losses/info_nce.py:
each memory mean must pick its own text's teacher embedding among the batch's, which the common
direction of anisotropic embeddings cannot satisfy); with an external `teacher` (models/teachers.py)
instead the in-batch similarity-distribution term of losses/teacher_alignment.py, which any width allows;
L_margin: the own memory must beat another text's memory by a margin (losses/memory_margin.py).

`CompressionObjective` is an nn.Module: `forward(examples)` returns the scalar loss, which the
training loop backpropagates (one forward, one backward per micro-batch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..data.compression_examples import CompressionExample
from ..models.attention import position_ids_for
from ..models.backbone import body_of
from ..models.layout import decoder_inputs
from ..models.teachers import TeacherSettings
from ..typed_settings import setting, validate
from .embedding_alignment import embedding_alignment_loss
from .info_nce import info_nce
from .kl_continuation import kl_continuation_loss
from .memory_margin import memory_margin_loss
from .nll_continuation import token_nll_loss
from .reconstruction import reconstruction_loss
from .teacher_alignment import TeacherAlignment, check_stage1_teacher

OBJECTIVES = ("kl", "nll", "reconstruction")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    return objective


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

    Returns (N, d) states, the (N,) text index of each and its (N,) offset j, N = sum_b length_b.
    """
    offsets = torch.arange(int(lengths.max()), device=hidden.device)  # (J,)
    keep = offsets[None, :] < lengths[:, None]  # (B, J)
    positions = first[:, None] + offsets[None, :]  # (B, J)
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None].expand_as(positions)
    return hidden[rows[keep], positions[keep]], rows[keep], offsets[None, :].expand_as(positions)[keep]


def lm_logits(causal_lm: nn.Module, states: torch.Tensor) -> torch.Tensor:
    """The LM head on selected states, with the model's final soft-capping if it has one (Gemma 2)."""
    logits = causal_lm.get_output_embeddings()(states)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@dataclass(frozen=True)
class CompressionTerms:
    """Weights of the optional stage-1 terms (0 = off). See the module docstring."""

    reconstruction_weight: float = setting(0.0, minimum=0)  # + w * reconstruction from the memory
    alignment_weight: float = setting(0.0, minimum=0)  # + w * alignment of the memory mean to the teacher's
    margin_weight: float = setting(0.0, minimum=0)  # + w * max(0, margin - (other memory's loss - own))
    margin: float = setting(1.0, minimum=0)
    alignment_temperature: float = setting(0.0, minimum=0)  # 0: cosine alignment; > 0: in-batch InfoNCE
    # whose embedding the memory mean is aligned to (models/teachers.py, losses/teacher_alignment.py)
    teacher: TeacherSettings | str = setting(factory=TeacherSettings)

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "teacher", check_stage1_teacher(self))


class CompressionObjective(nn.Module):
    """forward(examples) -> scalar loss for one micro-batch of `CompressionExample`s.

    decoder: None (default) reuses the encoder's weights with the adapter switched off; a separate
    frozen causal LM can be given instead (the authors' two-copy design, kept for comparison).
    terms: optional extra terms (`CompressionTerms`); the paper's recipe has none.
    teacher: the alignment's `TeacherAlignment` (losses/teacher_alignment.py) for an external
    `terms.teacher`; None loads the configured one (the backbone teacher needs none).
    """

    def __init__(self, encoder, objective: str = "kl", decoder: nn.Module | None = None,
                 terms: CompressionTerms | None = None, teacher: TeacherAlignment | None = None):
        super().__init__()
        self.encoder = encoder
        self.objective = check_objective(objective)
        self.decoder = [decoder] if decoder is not None else None  # a list: not registered as a submodule
        self.terms = terms or CompressionTerms()
        if teacher is None and self.terms.teacher.external and self.terms.alignment_weight > 0:
            teacher = TeacherAlignment.from_settings(self.terms.teacher)
        self.teacher = teacher  # None: the backbone's own mean pooling, from the frozen teacher pass

    def _frozen(self):
        return contextlib.nullcontext(self.decoder[0]) if self.decoder else self.encoder.frozen()

    def _prefix(self) -> list[int]:
        return self.encoder.prefix_ids()

    def compress(self, examples: list[CompressionExample]) -> torch.Tensor:
        """The encoder's k memory states of each example's context, (B, k, d)."""
        return self.encoder.memory_states(self.encoder.collate([e.context for e in examples]))

    def forward(self, examples: list[CompressionExample]) -> torch.Tensor:
        terms = self.terms
        memory = self.compress(examples)
        with self._frozen() as causal_lm:
            teacher = self._teacher_outputs(causal_lm, examples,
                                            context_mean=terms.alignment_weight > 0 and self.teacher is None)
            own = self._objective_loss(causal_lm, memory, examples, teacher)
            loss = own.mean()
            if terms.margin_weight > 0 and len(examples) > 1:
                other = self._objective_loss(causal_lm, memory.roll(1, dims=0), examples, teacher)
                loss = loss + terms.margin_weight * memory_margin_loss(own, other, terms.margin)
            if terms.reconstruction_weight > 0:
                targets = [e.context for e in examples]
                logits, flat, text_index, _ = self._student(causal_lm, memory, targets)
                loss = loss + terms.reconstruction_weight * reconstruction_loss(logits, flat, text_index, len(examples))
        if terms.alignment_weight > 0 and self.teacher is not None:  # similarity distributions: any width
            align = self.teacher(memory.mean(dim=1), self.context_texts(examples))
            loss = loss + terms.alignment_weight * align
        elif terms.alignment_weight > 0:
            pooled, target = memory.mean(dim=1), teacher["context_mean"]
            if terms.alignment_temperature > 0:  # text b's memory must pick text b's teacher embedding
                align = info_nce(pooled, target.detach(), temperature=terms.alignment_temperature)
            else:
                align = embedding_alignment_loss(pooled, target)
            loss = loss + terms.alignment_weight * align
        return loss

    def context_texts(self, examples: list[CompressionExample]) -> list[str]:
        """The contexts as text (decoded from their token ids): what an external teacher embeds."""
        return [self.encoder.tokenizer.decode(e.context, skip_special_tokens=True) for e in examples]

    @torch.no_grad()
    def per_text_losses(self, examples: list[CompressionExample], roll: int = 0,
                        first: int | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B,) objective loss of each text when the decoder reads the memory of text (b - roll) mod B.

        roll=0 is each text's own memory; roll=1 another text's (the memory-gap diagnostic). With
        `first`, also the (B,) loss over each text's first `first` target tokens: returns (all, first).
        """
        memory = self.compress(examples)
        with self._frozen() as causal_lm:
            teacher = self._teacher_outputs(causal_lm, examples, context_mean=False)
            return self._objective_loss(causal_lm, memory.roll(roll, dims=0), examples, teacher, first=first)

    def _objective_loss(self, causal_lm, memory, examples, teacher, first: int | None = None):
        """(B,) per-text loss of the configured objective with the decoder reading `memory` (and, with
        `first`, the same over the first `first` target tokens of each text)."""
        logits, flat_targets, text_index, offsets = self._student(causal_lm, memory, [e.target for e in examples])
        teacher_logits = teacher.get("logits")

        def loss(keep=slice(None)):
            if self.objective == "kl":
                return kl_continuation_loss(teacher_logits[keep], logits[keep], text_index[keep], len(examples),
                                            per_text=True)
            return token_nll_loss(logits[keep], flat_targets[keep], text_index[keep], len(examples), per_text=True)

        return loss() if first is None else (loss(), loss(offsets < first))

    def _student(self, causal_lm, memory, target_rows: list[list[int]]):
        """Decoder pass on [BOS, m_1..m_k, target]; logits at the N target-predicting positions.

        Returns (N, V) logits, the (N,) target ids, the (N,) text index of each and its (N,) offset
        in its text's target.
        """
        device = memory.device
        targets, target_valid = (t.to(device) for t in _pad(target_rows, self.encoder.pad_id()))
        lengths = target_valid.sum(1)
        decoder_in = decoder_inputs(causal_lm.get_input_embeddings(), self._prefix(), memory, targets, target_valid)
        embeds, valid = decoder_in.embeds, decoder_in.attention_mask  # (B, p + k + J, d), (B, p + k + J)
        hidden = body_of(causal_lm)(inputs_embeds=embeds, attention_mask=valid,
                                    position_ids=position_ids_for(valid), use_cache=False).last_hidden_state
        first = torch.full((memory.shape[0],), decoder_in.last_memory, device=device)  # last memory slot
        states, text_index, offsets = _gather_predicting_states(hidden, first, lengths)
        return lm_logits(causal_lm, states), targets[target_valid.bool()], text_index, offsets

    @torch.no_grad()
    def _teacher_outputs(self, causal_lm, examples, context_mean: bool) -> dict:
        """What the frozen LLM reading the uncompressed text provides (no gradient).

        "logits": for KL, the (N, V) logits at the positions predicting the continuation;
        "context_mean": with `context_mean`, the (B, d) mean of its final states over [BOS] context.
        """
        out = {}
        need_logits = self.objective == "kl"
        if not (need_logits or context_mean):
            return out
        prefix = self._prefix()
        rows = [prefix + (e.full if need_logits else e.context) for e in examples]
        device = self.encoder.device
        ids, valid = (t.to(device) for t in _pad(rows, self.encoder.pad_id()))
        hidden = body_of(causal_lm)(input_ids=ids, attention_mask=valid, position_ids=position_ids_for(valid),
                                    use_cache=False).last_hidden_state
        context_len = torch.tensor([len(prefix) + len(e.context) for e in examples], device=device)
        if need_logits:
            lengths = torch.tensor([len(e.target) for e in examples], device=device)
            states, _, _ = _gather_predicting_states(hidden, context_len - 1, lengths)
            out["logits"] = lm_logits(causal_lm, states)
        if context_mean:  # causal: the states over the context do not depend on what follows it
            in_context = torch.arange(hidden.shape[1], device=device)[None, :] < context_len[:, None]
            weights = in_context.to(hidden.dtype).unsqueeze(-1)
            out["context_mean"] = (hidden * weights).sum(1) / weights.sum(1)
        return out
