"""The embedding API every LLM2Comp encoder shares, whatever runs its forward pass.

`LLM2Comp` (PyTorch, models/encoder.py) and `OnnxLLM2Comp` (ONNX Runtime, backends/onnx_model.py)
both inherit it. What a class must provide: `tokenizer`, `config` (an `LLM2CompConfig`),
`hidden_size`, `training` / `train()` / `eval()`, and `__call__(batch: EncoderBatch)` returning the
pooled (B, d) embeddings. Everything else -- tokenising, the `[BOS] text [M1..Mk]` layout, batching,
long texts, instructions, truncation, normalisation, quantised outputs, similarity -- lives here,
once, so every backend embeds a text exactly the same way up to its forward pass.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..errors import InvalidSetting
from ..inputs import normalize_inputs
from . import layout
from .encoding import encode_items, encode_windows
from .long_texts import WindowEmbeddings, check_long_texts, check_overlap
from .maxsim import check_widths, dense_embeddings, is_multivector, maxsim
from .memory import EncoderBatch, build_encoder_batch
from .quantization import check_calibration, check_precision, quantize


class EmbeddingAPI:
    """sentence-transformers-style encoding on top of a forward pass (module docstring)."""

    def set_long_texts(self, mode: str | None = None, overlap: int | None = None):
        """Set the default long-text mode and window overlap (None keeps the current); returns self."""
        if mode is not None:
            self.config.long_texts = check_long_texts(mode)
        if overlap is not None:
            if not isinstance(overlap, int) or isinstance(overlap, bool) or overlap < 0:
                raise InvalidSetting(f"long_text_overlap must be an int >= 0, got {overlap!r}")
            self.config.long_text_overlap = overlap
        if self.config.long_texts != "truncate":  # windows are used: the overlap must fit one
            check_overlap(self.config.long_text_overlap,
                          layout.model_text_budget(self))
        return self

    @property
    def num_memory_tokens(self) -> int:
        return self.config.num_memory_tokens

    def get_sentence_embedding_dimension(self) -> int:
        return self.hidden_size

    # ------------------------------------------------------------------ tokenisation
    def prefix_ids(self) -> list[int]:
        """The ids put before every text: [BOS] when the tokenizer has one, else nothing."""
        return layout.prefix_ids(self.tokenizer)

    def pad_id(self) -> int:
        """The id written into padding slots: the pad token, else EOS, else 0 (masked out anyway)."""
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return candidate
        return 0

    def tokenize(self, texts: list[str], max_length: int | None = None) -> tuple[list[list[int]], int]:
        """Token ids without special tokens, cut to fit `max_length` (default: the model's); returns
        (ids, n_truncated)."""
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return layout.truncate_ids(ids, layout.model_text_budget(self, max_length))

    def collate(self, texts_ids: list[list[int]], padding_side: str = "right") -> EncoderBatch:
        return build_encoder_batch(texts_ids, num_memory=self.num_memory_tokens, prefix_ids=self.prefix_ids(),
                                   pad_id=self.pad_id(), padding_side=padding_side)

    def warn_truncated(self, count: int) -> None:
        if count:
            warnings.warn(f"{count} text(s) longer than max_length={self.config.max_length} were truncated "
                          f"(the {self.num_memory_tokens} memory tokens are always kept; long_texts='segments' "
                          "keeps all of the text)", stacklevel=3)

    # ------------------------------------------------------------------ encode API
    def encode(self, texts, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False,
               normalize_embeddings: bool = False, instruction: str | None = None, padding_side: str = "right",
               long_texts: str | None = None, overlap: int | None = None, precision: str = "float32",
               ranges=None, calibration_embeddings=None, truncate_dim: int | None = None):
        """Embed a str or a list of str / (instruction, text) pairs, sentence-transformers style.

        A top-level tuple is refused (`InvalidType`): `("doc a", "doc b")` could be two documents or one
        pair; pass `["doc a", "doc b"]`, or `[("instruction", "text")]`.

        Texts are sorted by length into batches and returned in input order. A single str gives a
        1-D result; an empty list gives shape (0, d). `long_texts` (default: the config's) says what
        happens to a text longer than `max_length`: `truncate`, `segments` (token-weighted mean of
        window embeddings) or `multivector` (a list with one (windows, d) array per text; a single
        str gives one (windows, d) array); `overlap` is the tokens consecutive windows share. See
        `long_texts.py` for the formula.

        `precision` (float32 | int8 | uint8 | binary | ubinary) gives sentence-transformers' quantised
        codes (numpy; a tensor with `convert_to_tensor`) of the embeddings, after `normalize_embeddings`;
        multivector windows are quantised one by one. int8 / uint8 need `ranges` (2, d) or
        `calibration_embeddings` (n, d, made as these are, e.g. normalised alike), never the texts of the
        call, so that a text's code does not depend on the others (`quantization.py`).

        `truncate_dim` keeps the first n components (before `normalize_embeddings` and `precision`, as
        sentence-transformers does); a size the model was not trained for (not in its config's
        `matryoshka_dims`, not the full size) gives a warning (losses/matryoshka.py).
        """
        items, single = normalize_inputs(texts, instruction)
        if truncate_dim is not None:
            truncate_dim = self._check_truncate_dim(truncate_dim)
        mode = check_long_texts(long_texts or self.config.long_texts)
        calibration = check_calibration(check_precision(precision), ranges, calibration_embeddings,
                                        truncate_dim or self.hidden_size)
        embeddings = encode_items(self, items, mode=mode, overlap=self._overlap(overlap), batch_size=batch_size,
                                  show_progress_bar=show_progress_bar,
                                  normalize=normalize_embeddings and truncate_dim is None, padding_side=padding_side)
        if truncate_dim is not None:  # the first n components, then unit length when asked
            cut = [part[..., :truncate_dim] for part in embeddings] if isinstance(embeddings, list) else \
                [embeddings[..., :truncate_dim]]
            if normalize_embeddings:
                cut = [torch.nn.functional.normalize(part, dim=-1) for part in cut]
            embeddings = cut if isinstance(embeddings, list) else cut[0]
        if single:
            embeddings = embeddings[0]
        if precision != "float32":
            codes = quantize(embeddings, precision, **calibration)
            if convert_to_tensor or not convert_to_numpy:
                return [torch.from_numpy(part) for part in codes] if isinstance(codes, list) else torch.from_numpy(codes)
            return codes
        if convert_to_tensor or not convert_to_numpy:
            return embeddings
        if isinstance(embeddings, list):
            return [part.float().numpy() for part in embeddings]
        return embeddings.float().numpy()

    def _check_truncate_dim(self, size) -> int:
        """`truncate_dim` as a whole number in [1, hidden size]; warns for a size not trained for."""
        from .config import is_trained_size, untrained_size_message

        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= self.hidden_size:
            raise InvalidSetting(f"truncate_dim must be a whole number in [1, {self.hidden_size}] (the model's "
                                 f"dimension), got {size!r}")
        if not is_trained_size(self.config, size, self.hidden_size):
            warnings.warn(f"truncate_dim {size}: {untrained_size_message(self.config, size, self.hidden_size)}",
                          UserWarning, stacklevel=3)
        return size

    def encode_windows(self, texts, batch_size: int = 32, show_progress_bar: bool | None = None,
                       instruction: str | None = None, padding_side: str = "right",
                       overlap: int | None = None) -> WindowEmbeddings:
        """Every window's raw embedding, with the text it belongs to and its weight: the `segments`
        (`.weighted_mean()`) and `multivector` (`.split()`) views of one pass."""
        items, _ = normalize_inputs(texts, instruction)
        return encode_windows(self, items, overlap=self._overlap(overlap), batch_size=batch_size,
                              show_progress_bar=show_progress_bar, padding_side=padding_side)

    def _overlap(self, overlap: int | None) -> int:
        return self.config.long_text_overlap if overlap is None else overlap

    def encode_query(self, texts, instruction: str | None = None, **kwargs):
        """Embed queries; `instruction` (default: the model's saved `prompts["query"]`, if training set
        one) is applied as `{instruction}: {query}`."""
        if instruction is None:
            instruction = self.config.prompts.get("query") or None
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_document(self, texts, **kwargs):
        """Embed documents: never with an instruction."""
        if kwargs.pop("instruction", None):
            raise InvalidSetting("documents take no instruction; instructions go on queries only")
        items, _ = normalize_inputs(texts)
        if any(instruction for instruction, _ in items):
            raise InvalidSetting("documents take no instruction; pass plain strings to encode_document")
        return self.encode(texts, **kwargs)

    @staticmethod
    def similarity(a, b) -> torch.Tensor:
        """Cosine similarity matrix between two sets of embeddings (numpy or torch), shape (n, m).

        Each side is (n, d) or one (d,) vector (one row). When either side is multivector (a list of
        (windows, d) arrays), MaxSim (`maxsim.py`). A 3-D array, or sides of different widths d, are
        refused (`InvalidSetting`, naming both shapes).
        """
        if is_multivector(a) or is_multivector(b):
            return maxsim(a, b, names=("a", "b"))
        dense_a, dense_b = dense_embeddings(a, "a"), dense_embeddings(b, "b")
        check_widths(dense_a, dense_b, a, b, ("a", "b"))
        return nn.functional.normalize(dense_a, dim=-1) @ nn.functional.normalize(dense_b, dim=-1).T
