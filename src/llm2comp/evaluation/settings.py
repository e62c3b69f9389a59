"""`EvalSettings`: every setting of one evaluation, checked once when it is made.

    from llm2comp.evaluation import EvalSettings, evaluate
    settings = EvalSettings(max_items=100, batch_size=32, long_texts="segments")
    results = evaluate("runs/stage3/final", "offline", settings, output_dir="eval/trained")

The same object goes to `evaluate`, `compare_models` and `cached_evaluate`; `key()` is the part that
decides the scores (everything but the progress bar), which `cached_evaluate` stores with the results.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidSetting, InvalidType

# the settings that only change what is shown, never a score: left out of `key()`
DISPLAY_ONLY = ("show_progress_bar",)
# settings added after results were first cached: left out of `key()` at their default, so results saved
# before them (made as the default makes them) stay reusable
LATER_DEFAULTS = {"precision": "float32", "rescore_multiplier": None, "backend": "torch", "truncate_dim": None}
EVAL_PRECISIONS = ("float32", "int8", "binary")


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate a model; invalid values raise `InvalidSetting` / `InvalidType` naming the field.

    max_items / seed: per-task cap and the seed of every subsample (None: a suite file's `seed:`,
        else 0). batch_size: encoding batch size.
    instructions: task name -> instruction, overriding the suite's / the MTEB defaults ("" = none).
    long_texts: truncate | segments | multivector for texts beyond max_length (None: the model's
        default; models/long_texts.py); multivector scores retrieval and reranking by MaxSim.
        overlap: tokens shared by consecutive windows (None: the model's `long_text_overlap`).
    pooling: for a model given by name or path: mean / last = the untrained token-pooling baselines
        (None: the model's own). dtype / device / trust_remote_code: how such a model is loaded.
    diagnostics: add the singular-value spectrum and the memory-token correlation.
    show_progress_bar: progress bars while encoding (display only: not part of `key()`).
    precision: float32 | int8 | binary: retrieval and reranking score quantised embeddings
        (`retrieval.rank_quantized`: int8 codes calibrated on the task's documents, binary by Hamming
        distance); other tasks stay float. rescore_multiplier: with binary, the best 10 x m by Hamming
        are rescored by the float query . the documents' +-1 bits (None: no rescoring).
    truncate_dim: score the first n components of every embedding (Matryoshka sizes; None: all).
    backend: torch, or a saved folder's ONNX export (onnx, onnx-int8; backends/).
    """

    max_items: int | None = None
    seed: int | None = None
    batch_size: int = 16
    instructions: dict[str, str] | None = field(default=None, hash=False)
    long_texts: str | None = None
    overlap: int | None = None
    pooling: str | None = None
    diagnostics: bool = True
    dtype: str = "float32"
    device: str | None = None
    trust_remote_code: bool = False
    backend: str = "torch"  # torch, or a saved folder's ONNX export (backends/)
    show_progress_bar: bool = True
    precision: str = "float32"
    truncate_dim: int | None = None
    rescore_multiplier: int | None = None

    def __post_init__(self):
        from ..models.long_texts import check_long_texts
        from ..models.pooling import POOLING_MODES

        for key, minimum, optional in (("batch_size", 1, False), ("max_items", 1, True), ("seed", 0, True),
                                       ("overlap", 0, True)):
            value = getattr(self, key)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise InvalidSetting(f"{key} must be a whole number >= {minimum}" + (" or None" if optional else "")
                                     + f", got {value!r}")
            object.__setattr__(self, key, int(value))  # numpy ints become plain ints (JSON, keys)
        if self.long_texts is not None:
            check_long_texts(self.long_texts)
        if self.instructions is not None:
            if not (isinstance(self.instructions, dict)
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in self.instructions.items())):
                raise InvalidType("instructions must be a dict of task name -> instruction text ('' = none), got "
                                  f"{type(self.instructions).__name__}")
            object.__setattr__(self, "instructions", dict(self.instructions))  # a caller's dict may change later
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise InvalidSetting(f"pooling must be one of {POOLING_MODES}, got {self.pooling!r}")
        for key in ("diagnostics", "trust_remote_code", "show_progress_bar"):
            if not isinstance(getattr(self, key), bool):
                raise InvalidType(f"{key} must be True or False, got {getattr(self, key)!r}")
        self._check_loading()
        self._check_precision()
        if self.truncate_dim is not None and (isinstance(self.truncate_dim, bool) or not isinstance(self.truncate_dim, int)
                                              or self.truncate_dim < 1):
            raise InvalidSetting(f"truncate_dim must be a whole number >= 1, got {self.truncate_dim!r}")

    def _check_precision(self) -> None:
        from ..models.quantization import check_precision

        check_precision(self.precision, EVAL_PRECISIONS)
        if self.precision != "float32" and self.long_texts == "multivector":
            raise InvalidSetting(f"precision {self.precision!r} scores one vector per text; long_texts "
                                 "'multivector' gives several (use 'segments', or precision 'float32')")
        if self.rescore_multiplier is not None:
            value = self.rescore_multiplier
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidSetting(f"rescore_multiplier must be a whole number >= 1 or None, got {value!r}")
            if self.precision != "binary":
                raise InvalidSetting(f"rescore_multiplier applies to precision 'binary' only; precision is "
                                     f"{self.precision!r}")
            object.__setattr__(self, "rescore_multiplier", int(value))

    def _check_loading(self) -> None:
        """dtype and device as the model loader reads them, so a typo fails before the suite is read."""
        from ..models.backbone import parse_dtype
        from ..models.encoder import check_device

        if not isinstance(self.dtype, str):
            raise InvalidType(f"dtype must be a name such as 'float32' or 'bfloat16', got {self.dtype!r}")
        parse_dtype(self.dtype)
        if self.device is not None and not isinstance(self.device, str):
            raise InvalidType(f"device must be a name such as 'cpu' or 'cuda:0', or None, got {self.device!r}")
        check_device(self.device)

    def replace(self, **changes) -> EvalSettings:
        """A copy with `changes` (checked again)."""
        return dataclasses.replace(self, **changes)

    def key(self) -> dict:
        """Every setting that can change a result, as plain JSON values (instructions sorted by task)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in DISPLAY_ONLY
                  and not (f.name in LATER_DEFAULTS and getattr(self, f.name) == LATER_DEFAULTS[f.name])}
        if values["instructions"] is not None:
            values["instructions"] = dict(sorted(values["instructions"].items()))
        return values


def check_settings(settings) -> EvalSettings:
    """`settings` itself (None: the defaults); anything but an `EvalSettings` is refused by name."""
    if settings is None:
        return EvalSettings()
    if not isinstance(settings, EvalSettings):
        raise InvalidType(f"settings must be an EvalSettings (llm2comp.evaluation.EvalSettings), got "
                          f"{type(settings).__name__} {settings!r:.80}; e.g. evaluate(model, suite, "
                          "EvalSettings(max_items=100), output_dir=...)")
    return settings
