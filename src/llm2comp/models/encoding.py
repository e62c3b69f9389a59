"""The inference loop behind `LLM2Comp.encode`: sort by length, batch, restore input order."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..inputs import apply_instruction


def encode_items(model, items: list[tuple[str | None, str]], *, batch_size: int = 32,
                 show_progress_bar: bool | None = None, normalize: bool = False,
                 padding_side: str = "right") -> torch.Tensor:
    """Embed `[(instruction, text), ...]` and return a float32 CPU tensor (n, d) in input order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not items:
        return torch.empty(0, model.hidden_size)
    template = model.config.instruction_template
    texts = [apply_instruction(instruction, text, template) for instruction, text in items]
    ids, truncated = model.tokenize(texts)
    model.warn_truncated(truncated)
    # longest first: the first batch shows the peak memory at once, and padding stays small
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty(len(ids), model.hidden_size)
    show = show_progress_bar if show_progress_bar is not None else len(ids) > 4 * batch_size
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(order), batch_size), desc="encode", disable=not show, unit="batch"):
                chosen = order[start:start + batch_size]
                batch = model.collate([ids[i] for i in chosen], padding_side=padding_side)
                embedded = model(batch).float()
                if normalize:
                    embedded = torch.nn.functional.normalize(embedded, dim=-1)
                out[chosen] = embedded.cpu()
    finally:
        model.train(was_training)
    return out
