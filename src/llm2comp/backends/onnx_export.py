"""Export a saved LLM2Comp folder's encoder to ONNX, optionally with int8 weights.

    llm2comp export --model runs/quickstart/unsupervised/model --backend onnx --quantize int8

The graph is the whole encoder forward pass of `LLM2Comp.forward`, traced with `torch.onnx.export`
(its TorchScript path, dynamic batch and sequence axes):

    inputs   input_ids, valid, memory_slot (B, T) int64   -- the `EncoderBatch` of models/memory.py
    output   embedding (B, d) float32                     -- the pooled vector (memory mean)

so the layout (`[BOS] text [M1..Mk]`), the tokenizer and the batching stay in Python and are shared
with the PyTorch backend (models/embedding_api.py); the memory vectors, the merged LoRA adapters,
the bidirectional 4-D mask and the pooling are inside the graph. The LM head is not.

int8 (`--quantize int8`): every weight MatMul becomes an int8 `MatMulInteger` with int8 weights per
output channel and the activations quantised at run time with one scale per token
after SmoothQuant's per-channel scaling, calibrated on 64 built-in texts (`int8_per_token.py` says
why per token and why smoothing; `int8_calibration.py` measures). `keep_float32` names node-name
parts whose MatMuls stay fp32 (none by default). Measured: docs/backends.md.

What is written (`<folder>/onnx/`, in one rename; an existing file is never replaced without
`overwrite=True`): `model.onnx` or `model_int8.onnx`, and `export.json`, which records for each file the
fingerprint of the model files the graph was made from (`onnx_model.model_fingerprint`): the
runtime refuses a graph exported from another model.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidSetting, OutputError
from ..models.memory import EncoderBatch
from . import EXPORT_DIR, EXPORT_RECORD, ONNX_FILES
from .int8_per_token import DEFAULT_ALPHA
from .onnx_model import INPUT_NAMES, OUTPUT_NAME, model_fingerprint, require_onnxruntime

QUANTIZE_CHOICES = ("none", "int8")
KEEP_FLOAT32: tuple[str, ...] = ()  # node-name parts whose MatMuls stay fp32 under int8 (none: all quantised)
OPSET = 17


class EncoderGraph(nn.Module):
    """`LLM2Comp.forward` with the batch as separate tensors, the form an exporter traces."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, valid, memory_slot):
        text_mask = valid * (memory_slot < 0).long()  # only `last` / `mean` pooling read it
        return self.model(EncoderBatch(input_ids, valid, memory_slot, text_mask))


def export_onnx(folder: str | os.PathLike, *, quantize: str = "none", overwrite: bool = False,
                keep_float32: tuple[str, ...] = KEEP_FLOAT32, example_texts: list[str] | None = None,
                smoothing: float | None = DEFAULT_ALPHA, calibration_texts: list[str] | None = None) -> Path:
    """Write `<folder>/onnx/model.onnx` (quantize "none") or `model_int8.onnx` ("int8"); returns its path.

    int8 only: `smoothing` is the SmoothQuant strength alpha in [0, 1] (None: no smoothing), measured on
    `calibration_texts` (default: 64 paragraphs of the bundled Wikipedia excerpt)."""
    from ..models.config import is_llm2comp_folder
    from ..models.encoder import LLM2Comp

    if quantize not in QUANTIZE_CHOICES:
        raise InvalidSetting(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
    if smoothing is not None and not 0.0 <= smoothing <= 1.0:
        raise InvalidSetting(f"smoothing (alpha) must lie in [0, 1] or be None (off), got {smoothing!r}")
    if calibration_texts is not None and not calibration_texts:
        raise InvalidSetting("calibration_texts is empty; give some texts, or None for the built-in ones")
    folder = Path(folder)
    if not is_llm2comp_folder(folder):
        raise InvalidSetting(f"{folder} is not a saved LLM2Comp folder (no llm2comp_config.json); save the model "
                             "first (LLM2Comp.save or a training run), then export it")
    require_onnxruntime()
    backend = "onnx-int8" if quantize == "int8" else "onnx"
    target_dir = folder / EXPORT_DIR
    target = target_dir / ONNX_FILES[backend]
    if target.exists() and not overwrite:
        raise OutputError(f"{target} exists; pass overwrite=True (--overwrite) to export again")
    model = LLM2Comp.from_pretrained(folder, dtype=torch.float32, device="cpu").eval()
    fingerprint = model_fingerprint(folder)
    target_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir, prefix=".export-") as scratch:
        scratch = Path(scratch)
        float_path = scratch / ONNX_FILES["onnx"]
        _trace(model, float_path, example_texts)
        if quantize == "int8":
            written = scratch / ONNX_FILES["onnx-int8"]
            from .int8_per_token import quantize_matmuls

            statistics, texts_used = (None, 0) if smoothing is None else _calibrate(
                model, float_path, keep_float32, calibration_texts)
            quantized_nodes, kept = quantize_matmuls(float_path, written, keep_float32, activation_max=statistics,
                                                     alpha=smoothing if smoothing is not None else DEFAULT_ALPHA)
        else:
            written, quantized_nodes, kept = float_path, None, []
        record = _read_record(target_dir)
        record.setdefault("files", {})[backend] = {
            "file": target.name, "model_fingerprint": fingerprint, "opset": OPSET, "torch": torch.__version__, "onnxruntime": _ort_version(),
            "hidden_size": model.hidden_size, "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
            **({"quantization": {"weights": "int8 per output channel", "activations": "int8, one scale per token",
                                 "quantized_matmuls": quantized_nodes, "float32_matmuls": len(kept),
                                 "kept_float32": list(keep_float32),
                                 "smoothing": None if smoothing is None else {"alpha": smoothing,
                                                                              "calibration_texts": texts_used}}}
               if quantize == "int8" else {}),
        }
        os.replace(written, target)  # same file system: one rename
        record_path = scratch / EXPORT_RECORD
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(record_path, target_dir / EXPORT_RECORD)
    return target


def _trace(model, path: Path, example_texts: list[str] | None) -> None:
    texts = example_texts or ["An example text for tracing.", "A second, somewhat longer example text."]
    ids, _ = model.tokenize(texts)
    batch = model.collate(ids)
    args = (batch.input_ids, batch.valid, batch.memory_slot)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the backbone's shape checks, fixed by design
        torch.onnx.export(EncoderGraph(model), args, str(path), input_names=list(INPUT_NAMES),
                          output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _calibrate(model, float_path: Path, keep_float32: tuple[str, ...], texts: list[str] | None) -> tuple[dict, int]:
    """(per-channel max |X| of every quantised MatMul input, number of texts it was measured on)."""
    from .int8_calibration import channel_max, default_calibration_texts, encoder_batches

    texts = texts if texts is not None else default_calibration_texts()
    return channel_max(float_path, encoder_batches(model, texts), keep_float32, threads=torch.get_num_threads()), len(texts)


def _read_record(target_dir: Path) -> dict:
    path = target_dir / EXPORT_RECORD
    if not path.is_file():
        return {"format": 1}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"format": 1}  # rewritten below; the ONNX files it described are checked again at load
    return record if isinstance(record, dict) else {"format": 1}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__

