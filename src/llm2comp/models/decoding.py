"""The decoding probe: what the frozen decoder writes when it reads only a text's k memory states.

    memory m = encoder([BOS] text [M1..Mk])              (adapter on, bidirectional)
    output   = greedy decode of the frozen LLM from [E(BOS), m_1..m_k]   (adapter off, causal)

For a model trained to continue (KL / NLL) the output should continue the text; for one trained to
reconstruct, it should repeat the text. A memory that carries nothing gives the same generic
sentence for every input: the quickest check that stage 1 learned to compress.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import InvalidSetting
from .layout import decoder_inputs


@torch.no_grad()
def decode_memory(model, texts: list[str], max_new_tokens: int = 32, batch_size: int = 8,
                  decoder=None) -> list[str]:
    """Greedy decoding from each text's memory states; returns the generated strings (input order).

    decoder: the frozen original LLM; None = `model.frozen()` (the adapter switched off)."""
    if model.num_memory_tokens < 1:
        raise InvalidSetting("decode_memory needs a model with memory tokens (num_memory_tokens >= 1)")
    if max_new_tokens < 1:
        raise InvalidSetting(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    was_training = model.training
    model.eval()
    tokenizer = model.tokenizer
    ids, truncated = model.tokenize(list(texts))
    model.warn_truncated(truncated)
    outputs: list[str] = []
    try:
        for start in range(0, len(ids), batch_size):
            memory = model.memory_states(model.collate(ids[start:start + batch_size]))  # (b, k, d)
            with (contextlib.nullcontext(decoder) if decoder is not None else model.frozen()) as causal_lm:
                embeds, mask, _ = decoder_inputs(causal_lm.get_input_embeddings(), model.prefix_ids(), memory)
                generated = causal_lm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                               max_new_tokens=max_new_tokens, pad_token_id=model.pad_id())
            # with inputs_embeds only, generate returns just the new tokens
            outputs.extend(tokenizer.batch_decode(generated, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return [text.strip() for text in outputs]
