"""LLM2Comp: a causal LM turned into a text encoder with k memory tokens.

    input      [BOS] text [M1..Mk] [pad...]      (memory vectors written into the k slots)
    encoder    the backbone (+ LoRA) under a bidirectional 4-D mask, no LM head
    embedding  e = 1/k * sum_j h_L(M_j)           (final-layer, post-norm memory states)

The same weights also serve as the frozen causal decoder/teacher of stage 1: `frozen()` switches
the LoRA adapter off, and the causal LM is called with an ordinary 2-D mask.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..errors import InvalidSetting
from ..inputs import normalize_inputs
from . import saving
from .attention import attention_layout, check_attention_mode, model_attention_mask, position_ids_for
from .backbone import body_of, frozen_input_embeddings, load_causal_lm, untie_output_embeddings
from .config import LLM2CompConfig, check_config_fields, is_llm2comp_folder
from .default_model import DEFAULT_MODEL_NAME, backbone_note
from .embedding_api import EmbeddingAPI
from .folder_checks import check_folder_after_load, check_folder_before_load
from .long_texts import check_long_texts
from .lora import LoraSettings, add_lora
from .memory import EncoderBatch, MemoryTokens, embed_with_memory
from .pooling import check_pooling, pool


class LLM2Comp(nn.Module, EmbeddingAPI):
    def __init__(self, causal_lm: nn.Module, tokenizer, config: LLM2CompConfig,
                 memory: MemoryTokens | None = None):
        super().__init__()
        check_attention_mode(config.attention)
        check_pooling(config.pooling, config.num_memory_tokens)
        check_long_texts(config.long_texts)
        if (memory is None) != (config.num_memory_tokens == 0):
            raise ValueError("memory tokens must be given exactly when num_memory_tokens > 0")
        self.attention_layout = attention_layout(causal_lm.config)  # refuses families that cannot work
        self.trust_remote_code = False  # the caller's choice at load time (never read from a file)
        self.model = causal_lm
        self.memory = memory
        self.tokenizer = tokenizer
        self.config = config
        self.config.embedding_dim = self.hidden_size
        self.merged_adapters: list[saving.AdapterRecord] = []  # earlier stages, already in the weights
        self.original_input_embeddings: nn.Module | None = None  # frozen copy, once the table trains

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = DEFAULT_MODEL_NAME,
        *,
        num_memory_tokens: int = 8,
        pooling: str = "memory_mean",
        attention: str = "bidirectional",
        max_length: int = 512,
        dtype: str | torch.dtype | None = torch.float32,
        device: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        revision: str | None = None,
        trust_remote_code: bool = False,
        seed: int = 0,
        long_texts: str | None = None,
        long_text_overlap: int | None = None,
        backend: str = "torch",
        **config_overrides,
    ) -> LLM2Comp:
        """Load a saved LLM2Comp folder, or wrap a fresh backbone (Hub id, folder, or default).

        For a saved folder the architecture arguments (k, pooling, attention, max length) come from
        its config; `dtype`, `device`, `attn_implementation`, the long-text defaults (`long_texts`,
        `long_text_overlap`; None keeps the config's) and backbone config overrides still apply.
        `trust_remote_code=True` lets a backbone run Python code it ships; no file can ask for it.
        A folder's files are checked before the backbone's weights load (`config.py`, `folder_checks.py`):
        a wrong field, tokenizer, adapter or backbone is named, never left to a raw error.

        `backend` "onnx" / "onnx-int8" loads the folder's ONNX export (`llm2comp export`) instead of the
        PyTorch weights and returns an `OnnxLLM2Comp` with the same encode API (backends/onnx_model.py);
        only the long-text defaults apply to it.
        """
        from ..backends.onnx_model import OnnxLLM2Comp, check_backend

        if check_backend(backend) != "torch":
            return OnnxLLM2Comp.from_folder(name_or_path, backend, long_texts=long_texts,
                                            long_text_overlap=long_text_overlap)
        load_args = dict(dtype=dtype, device=check_device(device), attn_implementation=attn_implementation,
                         **config_overrides)
        if is_llm2comp_folder(name_or_path):
            check_folder_before_load(name_or_path, LLM2CompConfig.load(name_or_path),
                                     trust_remote_code=trust_remote_code)
            model = saving.load_model(cls, name_or_path, trust_remote_code=trust_remote_code, **load_args)
            model.trust_remote_code = trust_remote_code
            check_folder_after_load(model, name_or_path)
            return model.set_long_texts(long_texts, long_text_overlap)
        check_config_fields(dict(num_memory_tokens=num_memory_tokens, pooling=pooling, attention=attention,
                                 max_length=max_length), "LLM2Comp.from_pretrained")  # before the backbone loads
        causal_lm, tokenizer, resolved = load_causal_lm(name_or_path, revision=revision,
                                                        trust_remote_code=trust_remote_code, **load_args)
        backbone = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL_NAME
        if os.path.exists(backbone):
            backbone = os.path.abspath(backbone)
        config = LLM2CompConfig(backbone=backbone, backbone_revision=revision,
                                num_memory_tokens=num_memory_tokens, pooling=pooling, attention=attention,
                                max_length=max_length, backbone_note=backbone_note(resolved))
        memory = None
        if num_memory_tokens > 0:
            memory = MemoryTokens(num_memory_tokens, causal_lm.config.hidden_size)
            memory.init_from_embeddings(causal_lm.get_input_embeddings().weight, seed=seed)
            memory.to(causal_lm.device)
        model = cls(causal_lm, tokenizer, config, memory).set_long_texts(long_texts, long_text_overlap)
        model.trust_remote_code = trust_remote_code
        return model

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ adapters
    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "peft_config")

    def add_lora(self, settings: LoraSettings | None = None) -> None:
        """Add a fresh trainable LoRA adapter; an existing one is merged into the weights first."""
        if self.has_adapter:
            self.merge_adapter()
        self.model = add_lora(self.model, settings or LoraSettings())

    def merge_adapter(self) -> None:
        """Fold the active LoRA into the weights (kept on record so `save` can write it)."""
        if not self.has_adapter:
            return
        self.merged_adapters.append(saving.AdapterRecord.capture(self.model))
        self.model = self.model.merge_and_unload()

    def train_input_embeddings(self) -> None:
        """Make the input-embedding table trainable (saved as input_embeddings.safetensors), keeping
        the frozen original LLM exact: a tied LM head gets its own frozen copy of the table (it is
        never trained), and `frozen()` reads the original table (`original_input_embeddings`), so the
        stage-1 teacher and decoder stay the backbone they were."""
        if self.original_input_embeddings is None:
            untie_output_embeddings(self.model)
            self.original_input_embeddings = frozen_input_embeddings(self.model)
        self.model.get_input_embeddings().weight.requires_grad_(True)
        self.config.input_embeddings = True

    @contextlib.contextmanager
    def frozen(self):
        """The original backbone: the LoRA adapter switched off, and the original input embeddings when
        the table is trained (for the stage-1 teacher/decoder)."""
        context = self.model.disable_adapter() if self.has_adapter else contextlib.nullcontext()
        with context, self._original_table():
            yield self.model

    @contextlib.contextmanager
    def _original_table(self):
        if self.original_input_embeddings is None:
            yield
            return
        base = self.model.get_base_model() if self.has_adapter else self.model
        trained = base.get_input_embeddings()
        base.set_input_embeddings(self.original_input_embeddings)
        try:
            yield
        finally:
            base.set_input_embeddings(trained)

    def load_original_decoder(self) -> nn.Module:
        """The frozen original LLM as a separate module, for a model whose adapters are merged (a loaded
        folder: `frozen()` would give the adapted weights). Loaded again from `config.backbone`."""
        if self.config.backbone == "backbone":
            raise InvalidSetting("this folder was saved with merge=True: its original backbone is not recorded")
        causal_lm, _, _ = load_causal_lm(self.config.backbone, revision=self.config.backbone_revision,
                                         dtype=next(self.model.parameters()).dtype, device=self.device,
                                         trust_remote_code=self.trust_remote_code)
        return causal_lm.eval().requires_grad_(False)

    # ------------------------------------------------------------------ forward
    def hidden_states(self, batch: EncoderBatch) -> torch.Tensor:
        """Final-layer (post-norm) hidden states (B, T, d) under the configured attention mode."""
        batch = batch.to(self.device)
        body = body_of(self.model)
        embeds = embed_with_memory(self.model.get_input_embeddings(), batch, self.memory)
        mask = model_attention_mask(batch.valid, self.config.attention, embeds.dtype, self.attention_layout)
        output = body(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids_for(batch.valid),
                      use_cache=False)
        return output.last_hidden_state

    def memory_states(self, batch: EncoderBatch) -> torch.Tensor:
        """The k compressed vectors per text, (B, k, d): what the stage-1 decoder reads."""
        hidden = self.hidden_states(batch)
        slots = batch.memory_slot.to(hidden.device)
        batch_index, position = (slots >= 0).nonzero(as_tuple=True)  # row-major: memory order kept
        return hidden[batch_index, position].view(hidden.shape[0], self.num_memory_tokens, -1)

    def forward(self, batch: EncoderBatch) -> torch.Tensor:
        """Pooled embeddings (B, d), with gradients when training."""
        return pool(self.hidden_states(batch), batch.to(self.device), self.config.pooling)

    def decode_memory(self, texts, max_new_tokens: int = 32, batch_size: int = 8, decoder=None) -> list[str]:
        """What the frozen original LLM writes from each text's k memory states (greedy): the probe of
        whether the memory carries the text. See `llm2comp.models.decoding`.

        decoder: the frozen original LLM; by default the adapter switched off, or for a loaded folder
        (adapters merged) the backbone loaded again (`load_original_decoder`)."""
        from .decoding import decode_memory

        if decoder is None and self.merged_adapters:
            decoder = self.load_original_decoder()
        items, single = normalize_inputs(texts)
        outputs = decode_memory(self, [text for _, text in items], max_new_tokens=max_new_tokens,
                                batch_size=batch_size, decoder=decoder)
        return outputs[0] if single else outputs

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike, merge: bool = False,
             extra_files: dict[str, str | bytes] | None = None, overwrite: bool = False) -> None:
        """Write the model folder (see docs/model_format.md). `merge=True` also merges in memory.

        `extra_files` (name -> text or bytes) are written into the folder before it appears. An existing
        `path` is replaced only when it is empty or a model folder; `overwrite=True` writes into any other
        folder, keeping the files that are not the model's. A file is never replaced.
        """
        saving.save_model(self, path, merge=merge, extra_files=extra_files, overwrite=overwrite)


def check_device(device: str | torch.device | None) -> str | torch.device | None:
    """A device torch can parse (`"cpu"`, `"cuda:1"`, ...); anything else is refused by name."""
    if device is None or isinstance(device, torch.device):
        return device
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidSetting(f"device {device!r} is not a device torch knows; use e.g. 'cpu', 'cuda' or "
                             "'cuda:0'") from None
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise InvalidSetting(f"device {device!r} asks for CUDA, but torch sees no CUDA GPU here; use 'cpu'")
    return device
