"""An LLM2Comp encoder whose forward pass runs an exported ONNX graph under ONNX Runtime (CPU).

    model = LLM2Comp.from_pretrained("runs/quickstart/unsupervised/model", backend="onnx-int8")
    model.encode(["a text"])            # the same API, layout and results (within tolerance) as torch

It loads the tokenizer, `llm2comp_config.json` and `onnx/<file>` only: no backbone weights, adapters,
peft or accelerate (the graph holds the merged weights), so it starts fast and holds the graph's
memory alone. Everything but the forward pass -- tokenising, `[BOS] text [M1..Mk]`, batching,
long texts, instructions, normalisation, quantised outputs -- is the shared `EmbeddingAPI`.

A graph is used only for the model it was exported from: `export.json` records a fingerprint of
the folder's model files (`model_fingerprint`: config, memory vectors, adapters, trained input
embeddings, merged backbone, tokenizer), and loading recomputes and compares it. Retraining into
the folder, or copying `onnx/` into another model, is refused with the command that re-exports.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..errors import CorruptFile, InvalidSetting, MissingDependency, MissingFile
from ..models.embedding_api import EmbeddingAPI
from ..models.memory import EncoderBatch
from . import BACKENDS, EXPORT_DIR, EXPORT_RECORD, ONNX_FILES

INPUT_NAMES = ("input_ids", "valid", "memory_slot")
OUTPUT_NAME = "embedding"
ONNX_REQUIREMENTS = "onnxruntime==1.32.0 onnx==1.23.2"
# what a model is made of (models/saving.py): files, and folders hashed file by file
FINGERPRINT_FILES = ("llm2comp_config.json", "memory_tokens.safetensors", "input_embeddings.safetensors",
                     "tokenizer.json", "tokenizer_config.json")
FINGERPRINT_DIRS = ("adapters", "backbone")


def require_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise MissingDependency(f"the ONNX backends need ONNX Runtime: pip install {ONNX_REQUIREMENTS}  (or: pip "
                                "install 'llm2comp[onnx]')") from None


def model_fingerprint(folder: str | os.PathLike) -> str:
    """sha256 over the names and bytes of the folder's model files (module docstring), in sorted order."""
    folder = Path(folder)
    paths = [folder / name for name in FINGERPRINT_FILES if (folder / name).is_file()]
    for name in FINGERPRINT_DIRS:
        if (folder / name).is_dir():
            paths += [path for path in (folder / name).rglob("*") if path.is_file()]
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def export_command(folder, backend: str) -> str:
    quantize = " --quantize int8" if backend == "onnx-int8" else ""
    return f"llm2comp export --model {folder} --backend onnx{quantize}"


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InvalidSetting(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


class OnnxLLM2Comp(EmbeddingAPI):
    """The encode API over an ONNX Runtime session (module docstring)."""

    training = False

    def __init__(self, session, tokenizer, config, hidden_size: int, backend: str, path: Path):
        self.session = session
        self.tokenizer = tokenizer
        self.config = config
        self.hidden_size = hidden_size
        self.backend = backend
        self.path = path
        self._inputs = [item.name for item in session.get_inputs()]  # an unused input is pruned by the exporter

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, backend: str = "onnx", *, threads: int | None = None,
                    long_texts: str | None = None, long_text_overlap: int | None = None) -> OnnxLLM2Comp:
        from ..models.backbone import load_tokenizer
        from ..models.config import LLM2CompConfig, is_llm2comp_folder

        if check_backend(backend) == "torch":
            raise InvalidSetting("OnnxLLM2Comp runs the ONNX backends; use LLM2Comp.from_pretrained for torch")
        folder = Path(folder)
        if not is_llm2comp_folder(folder):
            raise InvalidSetting(f"backend {backend!r} needs a saved LLM2Comp folder with an ONNX export; {folder} "
                                 "is not one (no llm2comp_config.json)")
        require_onnxruntime()
        entry, path = _export_entry(folder, backend)
        if entry.get("model_fingerprint") != model_fingerprint(folder):
            raise InvalidSetting(f"{path} was exported from another model than the one in {folder} (its model files "
                                 f"changed since, or onnx/ was copied from elsewhere); export it again: "
                                 f"{export_command(folder, backend)} --overwrite")
        config = LLM2CompConfig.load(folder)
        tokenizer = load_tokenizer(str(folder))
        model = cls(_session(path, threads), tokenizer, config, int(entry["hidden_size"]), backend, folder)
        return model.set_long_texts(long_texts, long_text_overlap)

    # ------------------------------------------------------------------ what EmbeddingAPI needs
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def weights_dtype(self) -> str:
        return "int8" if self.backend == "onnx-int8" else "float32"

    def eval(self) -> OnnxLLM2Comp:
        return self

    def train(self, mode: bool = True) -> OnnxLLM2Comp:
        if mode:
            raise InvalidSetting(f"the {self.backend} backend only encodes; train with the torch backend")
        return self

    def __call__(self, batch: EncoderBatch) -> torch.Tensor:
        feeds = {"input_ids": batch.input_ids, "valid": batch.valid, "memory_slot": batch.memory_slot}
        (embedding,) = self.session.run([OUTPUT_NAME], {name: feeds[name].numpy() for name in self._inputs})
        return torch.from_numpy(embedding)


def _export_entry(folder: Path, backend: str) -> tuple[dict, Path]:
    record_path = folder / EXPORT_DIR / EXPORT_RECORD
    command = export_command(folder, backend)
    if not record_path.is_file():
        raise MissingFile(f"{folder} has no ONNX export ({record_path} is missing); make it with: {command}")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFile(f"{record_path} is not readable JSON ({error}); export again: {command} --overwrite") from None
    entry = record.get("files", {}).get(backend) if isinstance(record, dict) else None
    if not isinstance(entry, dict) or not {"file", "model_fingerprint", "hidden_size"} <= set(entry):
        raise MissingFile(f"{record_path} lists no {backend!r} export; make it with: {command}")
    path = folder / EXPORT_DIR / ONNX_FILES[backend]
    if not path.is_file():
        raise MissingFile(f"{path} is missing (listed in {record_path}); export again: {command} --overwrite")
    return entry, path


def _session(path: Path, threads: int | None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own exception types for an unreadable graph
        raise CorruptFile(f"ONNX Runtime could not load {path}: {error}") from None
