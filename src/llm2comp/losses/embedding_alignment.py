"""Alignment of the compressed embedding to the frozen LLM's own embedding of the same text.

    L_align = 1/B sum_b ( 1 - cos( 1/k sum_j m_bj ,  1/|x_b| sum_t h_t(x_b) ) )

m_bj are the encoder's k memory states of text b (the embedding the model will serve), h_t the
frozen causal LLM's final (post-norm) states over the same text ([BOS] included), i.e. the
untrained backbone's mean-pooled embedding. The teacher side carries no gradient.

Why: a continuation loss alone can be met by one text-independent prefix (the memory gap stays
at zero at small budgets); a per-text target cannot. The term anchors the memory mean to an
embedding that is already text-specific, while the continuation term teaches the memory to be a
prefix the decoder can read. Beyond the paper: LLM2Vec-Gen (arXiv 2603.10913) trains reconstruction
plus an L2 alignment of the compressed embedding to a teacher embedding, 1:1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_alignment_loss(student: torch.Tensor, teacher: torch.Tensor, per_text: bool = False) -> torch.Tensor:
    """student (B, d) with gradient, teacher (B, d) (detached here) -> scalar, or (B,) with `per_text`."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} embeddings differ in shape")
    per = 1.0 - F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)
    return per if per_text else per.mean()
