"""The sentence-transformers door: an LLM2Comp model as a `SentenceTransformer`.

    SentenceTransformer(path, trust_remote_code=True)   a saved folder (format 2, see models/st_files.py)
    llm2comp.to_sentence_transformer(model_or_path)     the same object built in Python, no flag needed

sentence-transformers 6 imports a module class from outside its own package only with
`trust_remote_code=True`; the class below is llm2comp's own code, installed with the package.

`LLM2CompModule` is an input module (sentence-transformers 6's module API): `preprocess` turns texts
into the encoder layout `[BOS] text [M1..Mk]`, `forward` returns the mean of the k memory states
as `sentence_embedding`. A prompt is an instruction, applied by the model's template
(`"{instruction}: {text}"`); `encode_document` (task "document") refuses one, as
`LLM2Comp.encode_document` does. The embeddings are `LLM2Comp.encode`'s (tested, fp32, atol 1e-5):
both paths tokenize, truncate and collate the same way, and batching does not change a vector.
Texts beyond `max_length` follow the model's `long_texts`: cut (`truncate`), or cut into windows
whose embeddings `forward` averages back into one vector per text (`segments`, and `multivector`
too: sentence-transformers returns one vector per input, so it gets the segments mean).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

try:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import InputModule
except ImportError as error:  # pragma: no cover - exercised only without the package
    raise ImportError("the sentence-transformers door needs sentence-transformers>=6: "
                      "pip install 'llm2comp[st]'") from error

import torch

from .inputs import normalize_inputs
from .models.encoder import LLM2Comp
from .models.layout import rows_for
from .models.long_texts import WindowEmbeddings
from .models.memory import EncoderBatch
from .models.st_files import (
    DOCUMENT_PROMPT_NAMES,
    MODULE_CONFIG_NAME,
    ST_CONFIG_NAME,
    add_requirement,
    check_prompts,
)

LOAD_OPTIONS = ("dtype", "torch_dtype", "attn_implementation")  # accepted in `model_kwargs`
FEATURES = ("input_ids", "attention_mask", "memory_slot", "text_mask")  # EncoderBatch, in field order


class LLM2CompModule(InputModule):
    """A whole LLM2Comp encoder as one sentence-transformers input module."""

    config_file_name = MODULE_CONFIG_NAME
    save_in_root = True

    def __init__(self, model: LLM2Comp, dtype: str = "float32"):
        super().__init__()
        self.llm2comp = model
        self.tokenizer = model.tokenizer
        self.load_dtype = dtype  # what `load` passes to LLM2Comp.from_pretrained

    def get_config_dict(self) -> dict:
        return {"dtype": self.load_dtype}

    # ------------------------------------------------------------------ module API
    def preprocess(self, inputs, prompt: str | None = None, task: str | None = None, **kwargs) -> dict:
        """Texts -> padded encoder batch. `prompt` is the instruction of every plain text."""
        if prompt and task in DOCUMENT_PROMPT_NAMES:
            raise ValueError(f"documents take no instruction, got prompt {prompt!r} with task {task!r}; "
                             "instructions go on queries only")
        items, _ = normalize_inputs(list(inputs), instruction=prompt or None)
        model = self.llm2comp
        # one vector per input: multivector is served as its segments mean
        mode = "truncate" if model.config.long_texts == "truncate" else "segments"
        rows = rows_for(model, items, mode, model.config.long_text_overlap)
        model.warn_truncated(rows.truncated)
        # windows: one row each; forward averages them back into one vector per text
        windows = {} if mode == "truncate" else {"window_owner": rows.owner, "window_weight": rows.weights}
        batch = model.collate(rows.ids)
        return {**dict(zip(FEATURES, (batch.input_ids, batch.valid, batch.memory_slot, batch.text_mask))), **windows}

    def forward(self, features: dict, **kwargs) -> dict:
        batch = EncoderBatch(*(features[name] for name in FEATURES))
        embeddings = self.llm2comp(batch)
        if "window_owner" in features:  # e = sum_s w_s e_s / sum_s w_s per text (models/long_texts.py)
            owner = features["window_owner"]
            windows = WindowEmbeddings(embeddings, owner, features["window_weight"], int(owner.max()) + 1)
            embeddings = windows.weighted_mean()
        features["sentence_embedding"] = embeddings
        return features

    def get_embedding_dimension(self) -> int:
        return self.llm2comp.hidden_size

    @property
    def max_seq_length(self) -> int:
        """BOS + text + k memory tokens; longer texts are cut, the memory tokens never."""
        return self.llm2comp.config.max_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.llm2comp.config.max_length = int(value)

    # ------------------------------------------------------------------ saving and loading
    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the llm2comp folder into `output_path`, next to what sentence-transformers writes.

        The prompts sentence-transformers saved (its `prompts`, possibly edited by the user) become
        the model's default prompts; the saved `config_sentence_transformers.json` is kept and only
        gains the llm2comp requirement.
        """
        if not safe_serialization:
            raise ValueError("llm2comp folders are safetensors only; save with safe_serialization=True")
        if not isinstance(self.llm2comp, LLM2Comp):
            raise ValueError("an ONNX-backed model is saved by exporting its folder (llm2comp export), not by "
                             "SentenceTransformer.save; load it with the torch backend to save it")
        output = Path(output_path)
        model = self.llm2comp
        original = model.config.prompts
        st_config = output / ST_CONFIG_NAME
        if st_config.is_file():  # written by SentenceTransformer.save just before this call
            prompts = json.loads(st_config.read_text()).get("prompts") or {}
            model.config.prompts = check_prompts({k: v for k, v in prompts.items() if v}, str(st_config))
        try:
            with tempfile.TemporaryDirectory(prefix=".llm2comp-", dir=output.parent) as scratch:
                written = Path(scratch) / "model"
                model.save(written)
                for entry in written.iterdir():
                    target = output / entry.name
                    if entry.name == ST_CONFIG_NAME and target.is_file():
                        continue
                    if target.is_dir():
                        shutil.rmtree(target)
                    os.replace(entry, target)
        finally:
            model.config.prompts = original
        self.save_config(str(output))
        add_requirement(output)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder: str | None = None,
             revision: str | None = None, local_files_only: bool = False, model_kwargs: dict | None = None,
             **kwargs) -> LLM2CompModule:
        backend = kwargs.get("backend", "torch")
        if backend not in ("torch", "onnx"):
            raise ValueError(f"llm2comp models run on the torch or onnx backends, not {backend!r}")
        model_kwargs = dict(model_kwargs or {})
        file_name = model_kwargs.pop("file_name", None)
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        folder = cls.load_dir_path(model_name_or_path, **hub)
        if backend == "onnx":  # the folder's `llm2comp export` (backends/); model_kwargs file_name picks int8
            return cls(LLM2Comp.from_pretrained(folder, backend=onnx_backend_for(file_name)))
        options = {**cls.load_config(model_name_or_path, **hub), **model_kwargs}
        unknown = sorted(set(options) - set(LOAD_OPTIONS))
        if unknown:
            raise TypeError(f"model_kwargs {unknown} are not supported by llm2comp models; use {list(LOAD_OPTIONS)}")
        dtype = options.pop("torch_dtype", None) or options.pop("dtype", "float32")
        model = LLM2Comp.from_pretrained(folder, dtype=dtype, **options)
        return cls(model, dtype=dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch."))


def onnx_backend_for(file_name: str | None) -> str:
    """sentence-transformers' `model_kwargs={"file_name": ...}` -> our backend name (None: fp32)."""
    from .backends import ONNX_FILES

    if file_name is None:
        return "onnx"
    by_file = {name: backend for backend, name in ONNX_FILES.items()}
    name = Path(file_name).name
    if name not in by_file:
        raise ValueError(f"file_name {file_name!r} is not an llm2comp export; use one of {sorted(by_file)}")
    return by_file[name]


def to_sentence_transformer(model_or_path, *, prompts: dict[str, str] | None = None,
                            device: str | torch.device | None = None, truncate_dim: int | None = None,
                            **load_kwargs) -> SentenceTransformer:
    """A `SentenceTransformer` over an LLM2Comp model (an instance, shared not copied, or a folder/id).

    The model's saved prompts (`config.prompts`) are its prompts, updated by `prompts`; `encode_query`
    applies the "query" prompt as the instruction. Needs no `trust_remote_code`: the module is built
    here, not imported from a folder. `st.save(path)` writes a folder that both
    `SentenceTransformer(path, trust_remote_code=True)` and `LLM2Comp.from_pretrained(path)` load.
    `truncate_dim` is sentence-transformers' (the first n components); a size the model was not trained
    for (not in its config's `matryoshka_dims`, not the full size) gives a warning, as `encode` does.
    """
    model = model_or_path if isinstance(model_or_path, LLM2Comp) else LLM2Comp.from_pretrained(model_or_path,
                                                                                                 **load_kwargs)
    merged = {**model.config.prompts, **(prompts or {})}
    check_prompts(merged, "prompts")
    if truncate_dim is not None:
        model._check_truncate_dim(truncate_dim)  # whole number in [1, d]; warns for an untrained size
    return SentenceTransformer(modules=[LLM2CompModule(model)], prompts=merged, similarity_fn_name="cosine",
                               device=str(device or model.device), truncate_dim=truncate_dim)
