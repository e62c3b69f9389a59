"""CTKD, the paper's default objective: continuation with knowledge distillation ("KL").

For a text split into context x_{1..a} and continuation x_{a+1..j}:

    teacher  p_t(. | x_{<i})                      the frozen LLM reading the full, uncompressed text
    student  p_s(. | BOS, m_1..m_k, x_{a+1..i-1})  the frozen LLM reading the k memory states instead
                                                   of the context (m = encoder(context))
    L = 1/B sum_b 1/|C_b| sum_{i in C_b} KL(p_t || p_s)
      = 1/B sum_b 1/|C_b| sum_{i in C_b} sum_v p_t(v) (log p_t(v) - log p_s(v))

over every continuation position i in C_b, including the first continuation token (predicted by
the student from the last memory position), at temperature 1 over the full vocabulary. Both sides
are log-softmaxed (log space), in float32 with autocast off, so no probability underflows.
Gradients reach the encoder and the memory vectors only through the student's inputs; the teacher
is computed under no_grad.

Source: Zhang et al., "Learning to Compress", arXiv 2511.17129, Sec. 3 (CTKD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reduction import mean_per_text


def kl_continuation_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, text_index: torch.Tensor,
                         num_texts: int, temperature: float = 1.0, per_text: bool = False) -> torch.Tensor:
    """teacher_logits, student_logits (N, V) at the N continuation positions; text_index (N,) -> scalar
    (or the (num_texts,) per-text means with `per_text=True`)."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher {tuple(teacher_logits.shape)} and student {tuple(student_logits.shape)} "
                         "logits must align position by position")
    with torch.autocast(student_logits.device.type, enabled=False):  # float32 whatever the autocast
        log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        per_position = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # (N,)
    per_text_loss = mean_per_text(per_position, text_index, num_texts)
    return per_text_loss if per_text else per_text_loss.mean()
