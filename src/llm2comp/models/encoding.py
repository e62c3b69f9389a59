"""The inference loop behind `LLM2Comp.encode`: texts to rows, sort by length, batch, restore input order.

Texts become encoder rows by `layout.rows_for` (one per text, or one per window of a long text);
the rows are embedded here and `EncoderRows.combine` gives one result per text.

Batching is where CPU encoding time goes: every padded position costs as much as a real token in
each layer's matmuls, and every forward pass has a fixed cost (dispatch and thread synchronisation
of a few hundred small ops, which grows sharply when other jobs share the cores). Texts are sorted
longest first and the sorted list is cut into contiguous batches by a small dynamic programme that
minimises padded positions plus a per-batch overhead, within the memory envelope of the plain
"sort, then slice every `batch_size`" layout (`batch_size` rows of the longest text). A few long
outliers no longer pad a batch of shorter texts, and short texts share larger batches.

Embeddings do not depend on the batching (tested: batch size, order, neighbours, padding side), so
the plan only changes speed. `plan_batches` is the project's one length-sorted batch planner: the
contrastive losses' chunks (`info_nce.plan_chunks`) and evaluation (which hands all its texts to
`encode` at once) use it too.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..errors import InvalidSetting
from .layout import row_overhead, rows_for
from .long_texts import WindowEmbeddings

# What one more forward pass costs, in padded-token equivalents: dispatch and thread
# synchronisation of every op in every layer, plus the lower matmul efficiency of a smaller batch.
# Measured with SmolLM2-135M on a 2-core CPU: ~25 tokens on a quiet machine, ~350 while other jobs
# share the cores (each op's thread barrier then waits for a descheduled thread). 128 keeps both
# cases within ~3% of their best plan.
BATCH_OVERHEAD_TOKENS = 128
# Short texts may share a batch with up to this many times `batch_size` texts (token budget permitting).
MAX_TEXTS_FACTOR = 4


def check_batch_size(batch_size, name: str = "batch_size") -> int:
    """A whole number >= 1 (1.5, "8" and True are refused)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidSetting(f"{name} must be a whole number >= 1, got {batch_size!r}")
    return batch_size


def plan_batches(row_lengths: list[int], batch_size: int, *, overhead_tokens: int = BATCH_OVERHEAD_TOKENS,
                 max_texts_factor: int = MAX_TEXTS_FACTOR) -> list[list[int]]:
    """Group indices into batches, longest first, with little padding and few forward passes.

    `row_lengths` are the padded-row lengths the items need. Items are sorted by decreasing length
    (ties keep input order) and the sorted list is cut into contiguous runs minimising
    `padded positions + overhead_tokens x runs` (an exact dynamic programme). Each run fits the
    memory envelope of the plain layout, `batch_size` rows of the longest length
    (`n x row length <= batch_size x longest`), and holds at most `max_texts_factor x batch_size`
    items: long texts get smaller batches, short ones larger (`max_texts_factor=1`: never more than
    `batch_size` items, for a hard cap such as a GradCache chunk).
    """
    check_batch_size(batch_size)
    order = sorted(range(len(row_lengths)), key=lambda i: -row_lengths[i])
    lengths = [row_lengths[i] for i in order]
    n = len(order)
    if n == 0:
        return []
    budget = batch_size * lengths[0]
    max_texts = max_texts_factor * batch_size
    best = [0] * (n + 1)  # best[j]: minimal cost of the first j sorted items
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        best_cost, best_start = None, j - 1
        # a run start..j-1 is padded to lengths[start] (sorted decreasingly)
        for start in range(j - 1, max(-1, j - 1 - max_texts), -1):
            padded = lengths[start] * (j - start)
            if padded > budget:
                break  # earlier starts are longer and hold more items
            cost = best[start] + padded
            if best_cost is None or cost < best_cost:
                best_cost, best_start = cost, start
        best[j] = best_cost + overhead_tokens
        cut[j] = best_start
    batches = []
    end = n
    while end > 0:
        batches.append(order[cut[end]:end])
        end = cut[end]
    batches.reverse()
    return batches


def encode_items(model, items: list[tuple[str | None, str]], *, mode: str = "truncate", overlap: int = 0,
                 batch_size: int = 32, show_progress_bar: bool | None = None, normalize: bool = False,
                 padding_side: str = "right"):
    """Embed `[(instruction, text), ...]` under long-text `mode`, in input order: `truncate` and
    `segments` a float32 CPU tensor (n, d), `multivector` a list of n tensors (S_i, d)."""
    check_batch_size(batch_size)
    rows = rows_for(model, items, mode, overlap)
    model.warn_truncated(rows.truncated)
    vectors = embed_rows(model, rows.ids, batch_size=batch_size, show_progress_bar=show_progress_bar,
                         padding_side=padding_side)
    out = rows.combine(vectors, mode)
    if not normalize:
        return out
    if isinstance(out, list):
        return [torch.nn.functional.normalize(part, dim=-1) for part in out]
    return torch.nn.functional.normalize(out, dim=-1)


def encode_windows(model, items: list[tuple[str | None, str]], *, overlap: int, batch_size: int = 32,
                   show_progress_bar: bool | None = None, padding_side: str = "right") -> WindowEmbeddings:
    """Cut every `(instruction, text)` into windows and embed all windows at once: each window's raw
    vector with its text and weight."""
    rows = rows_for(model, items, "segments", overlap)  # planning only; the model runs once below
    return rows.windows(embed_rows(model, rows.ids, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                   padding_side=padding_side))


def embed_rows(model, ids: list[list[int]], *, batch_size: int = 32, show_progress_bar: bool | None = None,
               padding_side: str = "right") -> torch.Tensor:
    """Pooled embeddings of token-id rows that already fit `max_length`: float32 CPU (n, d), input order.

    Every row is laid out as `[BOS] row [M1..Mk]`; rows are grouped by `plan_batches`. Long texts cut
    into windows come through here too, so their windows share batches with each other and with
    ordinary texts.
    """
    check_batch_size(batch_size)
    # longest first: the first batch shows the peak memory at once
    row_lengths = [len(row) + row_overhead(model) for row in ids]
    batches = plan_batches(row_lengths, batch_size)
    out = torch.empty(len(ids), model.hidden_size)
    show = show_progress_bar if show_progress_bar is not None else len(ids) > 4 * batch_size
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for chosen in tqdm(batches, desc="encode", disable=not show, unit="batch"):
                batch = model.collate([ids[i] for i in chosen], padding_side=padding_side)
                out[chosen] = model(batch).float().cpu()
    finally:
        model.train(was_training)
    return out
