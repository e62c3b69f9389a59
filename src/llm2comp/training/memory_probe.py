"""The memory gap: does the memory carry *this* text, or is it one prefix that suits any text?

For held texts split into context and continuation (as in training), with L_b(m) the stage-1 loss
of text b when the frozen decoder reads memory m:

    own   = 1/B sum_b L_b(m_b)                  each text's own memory
    other = 1/B sum_b L_b(m_{b-1 mod B})        another text's memory (rolled within the batch)
    gap   = other - own

gap > 0: the memory helps its own text more than another's, i.e. it carries content. A
text-independent prefix gives gap ~ 0 however low `own` falls. The same numbers restricted to the
first `first` continuation tokens (`*_first`) concentrate the signal where the memory matters most
(later tokens are predictable from the teacher-forced continuation itself).
"""

from __future__ import annotations

import torch

from ..data.compression_examples import make_example
from ..errors import InvalidSetting
from ..losses.compression import CompressionObjective
from ..models.layout import model_text_budget


def held_examples(model, texts: list[str], objective: str, seed: int) -> list:
    """Held texts -> examples split as in training; texts too short to split are dropped."""
    ids = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    budget = model_text_budget(model)
    examples = [make_example(row[:budget], objective, seed, index) for index, row in enumerate(ids)]
    return [e for e in examples if e is not None]


@torch.no_grad()
def memory_gap(objective: CompressionObjective, texts: list[str], *, seed: int = 0, first: int = 4,
               batch_size: int = 8) -> dict:
    """own / other / gap (and their first-`first`-token versions) over `texts`; see the module docstring."""
    encoder = objective.encoder
    examples = held_examples(encoder, texts, objective.objective, seed)
    if len(examples) < 2:
        raise InvalidSetting(f"the memory gap needs at least 2 usable held texts, got {len(examples)}")
    batch_size = max(batch_size, 2)
    was_training = objective.training
    objective.eval()
    sums = dict.fromkeys(("own", "other", "own_first", "other_first"), 0.0)
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            if len(chunk) < 2:  # a lone last text: roll it with the previous one
                chunk = examples[start - 1:start + 1]
                weight = slice(1, 2)
            else:
                weight = slice(None)
            for suffix, roll in (("own", 0), ("other", 1)):
                losses, first_losses = objective.per_text_losses(chunk, roll=roll, first=first)
                sums[suffix] += float(losses[weight].sum())
                sums[f"{suffix}_first"] += float(first_losses[weight].sum())
    finally:
        objective.train(was_training)
    n = len(examples)
    out = {key: value / n for key, value in sums.items()}
    out["gap"] = out["other"] - out["own"]
    out["gap_first"] = out["other_first"] - out["own_first"]
    out["texts"] = n
    return out
