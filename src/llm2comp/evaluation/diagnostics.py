"""The paper's two analyses of an embedding model: dimensional collapse and memory-token redundancy.

1. Singular-value spectrum of the embeddings of a corpus (N texts x d). Embeddings are L2-normalised
   and mean-centred (so the shared mean direction does not count as a dimension), then
   sigma_1 >= ... >= sigma_r are their singular values and lambda_i = sigma_i^2 the variances.
   Reported:
   - `effective_dim`: the participation ratio (sum_i lambda_i)^2 / sum_i lambda_i^2 -- the number of
     equally strong directions that would hold the same variance (r when all are equal, 1 when one
     dominates). The paper does not publish its definition; this one matches its scale (~10 for an
     untrained LLM, 100+ after contrastive training).
   - `effective_rank` (Roy & Vetterli): exp(H(p)), p_i = sigma_i / sum_j sigma_j, H in nats; gentler
     on weak directions, so much larger than `effective_dim` for anisotropic embeddings.
   - `dims_90` / `dims_99`: how many leading directions hold 90% / 99% of the variance.
   Both are bounded by min(N, d); compare models on the same corpus.
2. Memory-token correlation (LLM2Comp models, k >= 2): the k final-layer memory states of each text,
   (N, k, d). Each token's states are centred over the corpus, then corr(i, j) is the cosine between
   token i's and token j's centred (N x d) state matrices: 1 means token j varies with the text
   exactly as token i does (redundant memory), 0 means unrelated. Reported: the k x k matrix, the mean
   off-diagonal value and the number of token pairs above 0.95.
Plots (PNG) need matplotlib (lazy import).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import MissingDependency
from .base import normalize_rows

MATPLOTLIB_HINT = "pip install matplotlib   (or: pip install 'llm2comp[eval]')"
REDUNDANT = 0.95


def embedding_spectrum(embeddings: np.ndarray) -> dict:
    """Singular values (normalised to sigma_1 = 1) and effective-dimension measures; module docstring."""
    x = normalize_rows(np.asarray(embeddings, dtype=np.float64))
    if x.shape[0] < 2:
        raise ValueError("the spectrum needs at least 2 embeddings")
    x = x - x.mean(0, keepdims=True)
    sigma = np.linalg.svd(x, compute_uv=False)
    sigma = sigma[sigma > sigma[0] * 1e-10] if sigma[0] > 0 else sigma[:1]
    p = sigma / sigma.sum()
    variance = sigma**2 / (sigma**2).sum()
    cumulative = np.cumsum(variance)
    return {
        "n_texts": int(x.shape[0]),
        "dimension": int(x.shape[1]),
        "effective_dim": float((sigma**2).sum() ** 2 / (sigma**4).sum()),  # participation ratio
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "dims_90": int(np.searchsorted(cumulative, 0.90) + 1),
        "dims_99": int(np.searchsorted(cumulative, 0.99) + 1),
        "singular_values": (sigma / sigma[0]).tolist(),
    }


@torch.no_grad()
def memory_states(model, texts: list[str], batch_size: int = 16) -> torch.Tensor:
    """The k final-layer memory states of each text, (N, k, d), via `model.memory_states`."""
    if model.num_memory_tokens < 1:
        raise ValueError("the model has no memory tokens (a mean/last-token baseline)")
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            ids, _ = model.tokenize(texts[start:start + batch_size])
            out.append(model.memory_states(model.collate(ids)).float().cpu())  # (B, k, d)
    finally:
        model.train(was_training)
    return torch.cat(out)


def memory_correlation(states) -> np.ndarray:
    """k x k correlation of memory tokens across a corpus from states (N, k, d); module docstring."""
    states = np.asarray(states, dtype=np.float64)
    centred = states - states.mean(0, keepdims=True)  # (N, k, d), each token centred over texts
    flat = centred.transpose(1, 0, 2).reshape(states.shape[1], -1)  # (k, N*d)
    norms = np.clip(np.linalg.norm(flat, axis=1), 1e-12, None)
    return (flat @ flat.T) / np.outer(norms, norms)


def correlation_summary(matrix: np.ndarray) -> dict:
    k = matrix.shape[0]
    off = matrix[~np.eye(k, dtype=bool)]
    upper = matrix[np.triu_indices(k, 1)]
    return {"k": int(k), "mean_offdiag": float(off.mean()) if off.size else float("nan"),
            "redundant_pairs": int((upper > REDUNDANT).sum()), "matrix": matrix.round(4).tolist()}


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise MissingDependency(f"diagnostic plots need matplotlib: {MATPLOTLIB_HINT}") from error
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_spectra(spectra: dict[str, dict], path: str | Path) -> Path:
    """Log-scale normalised singular values, one line per model label."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, spectrum in spectra.items():
        values = spectrum["singular_values"]
        axis.plot(np.arange(1, len(values) + 1), values,
                  label=f"{label} (eff. dim {spectrum['effective_dim']:.1f})")
    axis.set_yscale("log")
    axis.set_xlabel("singular value index")
    axis.set_ylabel("sigma_i / sigma_1")
    axis.set_title("Embedding singular-value spectrum")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def plot_correlation(matrix: np.ndarray, path: str | Path, title: str = "Memory-token correlation") -> Path:
    plt = _pyplot()
    matrix = np.asarray(matrix)
    k = matrix.shape[0]
    figure, axis = plt.subplots(figsize=(4.5, 4))
    image = axis.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r")
    for i in range(k):
        for j in range(k):
            axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if abs(matrix[i, j]) > 0.6 else "black")
    axis.set_xticks(range(k), [f"M{j + 1}" for j in range(k)])
    axis.set_yticks(range(k), [f"M{j + 1}" for j in range(k)])
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
