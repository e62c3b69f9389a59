"""CT (NLL): predict the continuation from the compressed context.

    L = 1/B sum_b 1/|C_b| sum_{i in C_b} -log p_s(x_i | BOS, m_1..m_k, x_{a+1..i-1})

with m = encoder(x_{1..a}) and p_s the frozen LLM. Mean over a text's continuation positions,
then over texts. Source: arXiv 2511.17129, Sec. 3 (continuation objective).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reduction import mean_per_text


def token_nll_loss(student_logits: torch.Tensor, targets: torch.Tensor, text_index: torch.Tensor,
                   num_texts: int, per_text: bool = False) -> torch.Tensor:
    """student_logits (N, V), targets (N,) token ids, text_index (N,) -> scalar (or (num_texts,)
    per-text means with `per_text=True`)."""
    per_position = F.cross_entropy(student_logits.float(), targets, reduction="none")
    per_text_loss = mean_per_text(per_position, text_index, num_texts)
    return per_text_loss if per_text else per_text_loss.mean()
