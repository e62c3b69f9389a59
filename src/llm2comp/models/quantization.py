"""Quantised embeddings, and binary search with rescoring.

    precision  dtype  shape of n vectors of width d   what a value is
    float32    f4     (n, d)                          the float embedding
    int8       i1     (n, d)                          floor((x - lo) / step) - 128, step = (hi - lo) / 255
    uint8      u1     (n, d)                          floor((x - lo) / step)
    binary     i1     (n, ceil(d / 8))                the sign bits x > 0, packed 8 to a byte (big-endian
                                                      bit order, np.packbits), minus 128
    ubinary    u1     (n, ceil(d / 8))                the same bytes without the offset

The codes are sentence-transformers' (`sentence_transformers.quantize_embeddings`, called here),
so they mix with an index built by it.

int8 / uint8 need per-dimension ranges [lo, hi]. Calibrating on the texts being encoded (what
`quantize_embeddings` does when given nothing) would make a text's code depend on the other texts
of the call, so here they must come from outside: `ranges` (2, d), or `calibration_embeddings` (n >= 2,
d) whose per-dimension min / max become the ranges; with neither, int8 / uint8 are refused. The
binary codes are a sign per value and need nothing. Either way one text always gets the same code.

Binary search (`rank_binary`): documents are ranked by the Hamming distance between their sign bits
and the query's; with a rescore multiplier m, the best `top * m` of them are ranked again by the cosine
between the float query and the document's sign vector (its bits unpacked to +-1). The rescoring
reads only the binary index (no float documents are kept): its ranking equals sentence-transformers'
rescoring (float query . bits unpacked to 0/1), which differs from it by a per-query constant.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidSetting, InvalidType, MissingDependency

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
CALIBRATED = ("int8", "uint8")
BINARY = ("binary", "ubinary")
ST_HINT = "pip install sentence-transformers   (or: pip install 'llm2comp[st]')"
_POPCOUNT = np.array([bin(byte).count("1") for byte in range(256)], dtype=np.uint8)


def check_precision(precision, allowed=PRECISIONS, name: str = "precision") -> str:
    """`precision` when it is one of `allowed`; `InvalidSetting` naming them otherwise."""
    if not isinstance(precision, str) or precision not in allowed:
        raise InvalidSetting(f"{name} must be one of {', '.join(allowed)}; got {precision!r}")
    return precision


def code_dtype(precision: str) -> np.dtype:
    """The numpy dtype of `precision`'s codes."""
    return np.dtype({"float32": np.float32, "int8": np.int8, "uint8": np.uint8, "binary": np.int8,
                     "ubinary": np.uint8}[check_precision(precision)])


def code_width(precision: str, dim: int) -> int:
    """Values per vector: `dim`, or ceil(dim / 8) bytes of packed bits for binary / ubinary."""
    return -(-dim // 8) if check_precision(precision) in BINARY else dim


def bytes_per_vector(precision: str, dim: int) -> int:
    """Bytes one vector of width `dim` takes in `precision` (the index size per document)."""
    return code_width(precision, dim) * code_dtype(precision).itemsize


def _float_array(value, name: str, dim: int | None) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidType(f"{name} must be a float array, got {type(value).__name__}") from None
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        width = "d" if dim is None else str(dim)
        raise InvalidSetting(f"{name} must be a 2-D float array of width {width}; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidSetting(f"{name} holds NaN or infinite values")
    return array


def check_calibration(precision: str, ranges=None, calibration_embeddings=None, dim: int | None = None,
                      names: tuple[str, str] = ("ranges", "calibration_embeddings")) -> dict:
    """The calibration to pass to `quantize`, checked: `{"ranges": (2, d)}` or `{"calibration_embeddings":
    (n, d)}` for int8 / uint8 (exactly one of them), `{}` otherwise (giving one there is refused)."""
    check_precision(precision)
    given = [name for name, value in zip(names, (ranges, calibration_embeddings)) if value is not None]
    if precision not in CALIBRATED:
        if given:
            raise InvalidSetting(f"{given[0]} applies to precision int8 / uint8 only; precision is {precision!r}")
        return {}
    if len(given) != 1:
        problem = "both were given" if given else "neither was given"
        raise InvalidSetting(f"precision {precision!r} needs {names[0]} (2, d) or {names[1]} (n >= 2, d), exactly "
                             f"one ({problem}): the per-dimension ranges of the codes. Ranges taken from the texts "
                             "being encoded would make a text's code depend on the other texts of the call; "
                             "take them once from a representative sample of float embeddings")
    if ranges is not None:
        array = _float_array(ranges, names[0], dim)
        if array.shape[0] != 2 or (array[0] > array[1]).any():
            raise InvalidSetting(f"{names[0]} must be (2, d): row 0 the minima, row 1 the maxima; got shape "
                                 f"{array.shape}" + ("" if array.shape[0] != 2 else " with a minimum greater than its "
                                                     "maximum"))
        return {"ranges": array}
    array = _float_array(calibration_embeddings, names[1], dim)
    if array.shape[0] < 2:
        raise InvalidSetting(f"{names[1]} must hold at least 2 embeddings to give ranges; got {array.shape[0]}")
    return {"calibration_embeddings": array}


def load_quantizer(precision: str = "binary"):
    """sentence-transformers' `quantize_embeddings`, imported when first needed (the first import takes
    seconds); `MissingDependency` with an install hint when it is not installed."""
    try:
        from sentence_transformers import quantize_embeddings as st_quantize
    except ImportError as error:
        raise MissingDependency(f"precision {precision!r} uses sentence-transformers' quantize_embeddings: "
                                f"{ST_HINT}") from error
    return st_quantize


def quantize_embeddings(embeddings, precision: str, **calibration):
    """sentence-transformers' `quantize_embeddings`. `embeddings`: float (n, d), (d,) or a list of
    (windows, d) arrays; `calibration`: what `check_calibration` returned."""
    return load_quantizer(precision)(embeddings, precision=precision, **calibration)


def quantize(embeddings, precision: str, *, ranges=None, calibration_embeddings=None):
    """Float embeddings (numpy or torch: (n, d), (d,), or a list of (windows, d)) as `precision` codes
    (numpy; a list stays a list, each array quantised with the same ranges). float32 returns float32."""
    check_precision(precision)
    if isinstance(embeddings, (list, tuple)):
        parts = [_as_numpy(part) for part in embeddings]
        dim = parts[0].shape[-1] if parts else None
    else:
        parts = _as_numpy(embeddings)
        dim = parts.shape[-1]
    calibration = check_calibration(precision, ranges, calibration_embeddings, dim)
    if precision == "float32":
        return parts
    if isinstance(parts, list):
        return [quantize_embeddings(part, precision, **calibration) for part in parts]
    return quantize_embeddings(parts, precision, **calibration)


def _as_numpy(embeddings) -> np.ndarray:
    if hasattr(embeddings, "detach"):
        return embeddings.detach().float().cpu().numpy()
    return np.asarray(embeddings, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- binary search
def packed_bits(codes: np.ndarray) -> np.ndarray:
    """binary (int8) or ubinary (uint8) codes as the packed sign bits (uint8, the ubinary bytes)."""
    codes = np.asarray(codes)
    if codes.dtype == np.int8:
        return codes.view(np.uint8) ^ np.uint8(0x80)  # undo the -128 offset of `binary`
    if codes.dtype == np.uint8:
        return codes
    raise InvalidType(f"binary codes must be int8 (binary) or uint8 (ubinary), got {codes.dtype}")


def hamming_distances(query_bits: np.ndarray, doc_bits: np.ndarray) -> np.ndarray:
    """Differing bits between every packed query row and every packed document row, (Q, N) int32."""
    if query_bits.shape[-1] != doc_bits.shape[-1]:
        raise InvalidSetting(f"queries have {query_bits.shape[-1]} bytes of bits, documents {doc_bits.shape[-1]}")
    out = np.empty((len(query_bits), len(doc_bits)), dtype=np.int32)
    for row, query in enumerate(query_bits):
        out[row] = _POPCOUNT[np.bitwise_xor(doc_bits, query)].sum(axis=1, dtype=np.int32)
    return out


def sign_vectors(codes: np.ndarray, dim: int) -> np.ndarray:
    """binary / ubinary codes unpacked to +-1 float32 vectors of width `dim` (bit 1 = positive)."""
    bits = np.unpackbits(packed_bits(codes), axis=-1)[..., :dim]
    return bits.astype(np.float32) * 2 - 1


def rank_binary(query_embeddings, doc_codes, top_k: int, rescore_multiplier: int | None = None,
                rescore_top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores), each (Q, top_k) best first: documents by Hamming distance to the query's sign
    bits (ties in corpus order; score 1 - 2 * distance / d, the cosine of the two sign vectors).

    With `rescore_multiplier` m, the best `rescore_top * m` (`rescore_top`: default `top_k`) are ranked
    again by the cosine of the float query with their +-1 sign vectors (the score they then carry) and
    put first; any further ranks keep the Hamming order.
    """
    queries = _as_numpy(query_embeddings)
    if queries.ndim != 2:
        raise InvalidSetting(f"queries must be (n, d) float embeddings; got shape {queries.shape}")
    dim = queries.shape[1]
    doc_bits = packed_bits(doc_codes)
    if doc_bits.ndim != 2 or doc_bits.shape[1] != code_width("binary", dim):
        raise InvalidSetting(f"documents must be (n, {code_width('binary', dim)}) binary codes for queries of width "
                             f"{dim}; got shape {doc_bits.shape}")
    top_k = min(top_k, len(doc_bits))
    candidates = 0
    if rescore_multiplier is not None:
        if isinstance(rescore_multiplier, bool) or not isinstance(rescore_multiplier, (int, np.integer)) \
                or rescore_multiplier < 1:
            raise InvalidSetting(f"rescore_multiplier must be a whole number >= 1 or None; got {rescore_multiplier!r}")
        candidates = min(len(doc_bits), (top_k if rescore_top is None else rescore_top) * int(rescore_multiplier))
    query_bits = packed_bits(quantize_embeddings(queries, "ubinary"))
    distances = hamming_distances(query_bits, doc_bits)
    order = np.argsort(distances, axis=1, kind="stable")[:, :max(top_k, candidates)]
    scores = 1 - 2 * np.take_along_axis(distances, order, axis=1) / dim
    if candidates:
        norms = np.clip(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12, None)
        chosen = order[:, :candidates]
        cosines = np.einsum("qd,qkd->qk", queries / norms, sign_vectors(doc_bits[chosen], dim)) / np.sqrt(dim)
        again = np.argsort(-cosines, axis=1, kind="stable")
        order[:, :candidates] = np.take_along_axis(chosen, again, axis=1)
        scores[:, :candidates] = np.take_along_axis(cosines, again, axis=1)
    return order[:, :top_k], scores[:, :top_k].astype(np.float64)
