"""RC (reconstruction): the frozen decoder reproduces the compressed text itself.

    L = 1/B sum_b 1/n_b sum_{i=1..n_b} -log p_s(x_i | BOS, m_1..m_k, x_{1..i-1}),  m = encoder(x_{1..n_b})

The same token cross-entropy as the continuation NLL, with the whole text as both the encoder's
input and the decoder's target (no split point). Source: arXiv 2511.17129, Sec. 3 (reconstruction).
"""

from __future__ import annotations

from .nll_continuation import token_nll_loss

reconstruction_loss = token_nll_loss

__all__ = ["reconstruction_loss"]
