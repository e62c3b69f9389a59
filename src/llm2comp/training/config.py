"""One plain config for every training stage, read from YAML with command-line overrides.

    llm2comp train --config configs/pretrain_quickstart.yaml --max_steps 50 --lora.r 8

Unknown keys are errors (a typo never silently falls back to a default). The resolved config is
saved with every checkpoint and next to the trained model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

STAGES = ("pretrain", "unsupervised", "supervised")


@dataclass
class StageConfig:
    stage: str = "pretrain"  # pretrain | unsupervised | supervised
    model: str = "smollm2-135m"  # backbone (Hub id / folder / default) or the previous stage's model folder
    output_dir: str = "runs/pretrain"  # checkpoints/, metrics.jsonl, loss_curve.png, model/
    # --- the encoder
    num_memory_tokens: int = 8  # k; the paper finds 1-8 stable, 8 best for retrieval; 0 for objective mntp
    max_length: int = 512  # encoder input: BOS + text + k memory tokens
    dtype: str = "float32"  # weights' dtype; use mixed_precision for bf16 compute
    attn_implementation: str = "sdpa"
    lora: dict = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05})
    train_input_embeddings: bool = False  # the authors' release trained the whole embedding matrix
    gradient_checkpointing: bool = False
    # --- the objective
    objective: str = "kl"  # pretrain: kl | nll | reconstruction | mntp (LLM2Vec);  later stages: info_nce
    mask_ratio: float = 0.2  # mntp: share of each text's tokens that is masked (LLM2Vec: 0.2)
    temperature: float = 0.05  # contrastive stages
    attention_dropout: float = 0.0  # SimCSE's second view comes from dropout (paper: 0.2)
    # stage-1 terms beyond the paper (0 = off; see training/compression.py and docs/pretrain.md)
    reconstruction_weight: float = 0.0  # + w * reconstruction of the context from the memory
    alignment_weight: float = 0.0  # + w * (1 - cos(memory mean, frozen LLM's mean-pooled context))
    margin_weight: float = 0.0  # + w * max(0, margin - (loss with another text's memory - own))
    margin: float = 1.0
    alignment_temperature: float = 0.0  # 0: cosine alignment; > 0: in-batch InfoNCE alignment at this temperature
    memory_lr: float | None = None  # a separate lr for the k memory vectors (None: lr)
    cache_chunk_size: int = 0  # > 0: GradCache-style cached contrastive loss with this chunk size
    query_max_length: int = 512
    document_max_length: int = 1024
    # --- data (see docs/pretrain.md for the source types)
    data: dict = field(default_factory=lambda: {"type": "wiki_default"})
    min_chars: int = 0
    max_tokens: int = 512  # texts with more tokens are dropped (the release kept < 512)
    max_samples: int | None = None  # after the seeded shuffle
    held_out_texts: int = 0  # stage 1: texts kept out of training to measure the memory gap on
    gap_every: int = 0  # stage 1: log the memory gap on the held texts every N steps (0: only at the end)
    snapshot_steps: list = field(default_factory=list)  # also save a model folder at these steps
    # --- optimisation
    batch_size: int = 4  # per process
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_steps: int = 3200
    max_steps: int = 32000
    max_grad_norm: float | None = 2.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    seed: int = 42
    save_every: int = 1000
    keep_last: int = 3
    log_every: int = 10

    def __post_init__(self):
        for name in ("lr", "weight_decay", "temperature", "attention_dropout", "max_grad_norm", "memory_lr",
                     "reconstruction_weight", "alignment_weight", "margin_weight", "margin", "mask_ratio",
                     "alignment_temperature"):
            value = getattr(self, name)
            if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
                try:
                    setattr(self, name, float(value))
                except ValueError:
                    raise ValueError(f"{name} must be a number, got {value!r}") from None
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("batch_size", "grad_accum", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.objective == "mntp" and self.num_memory_tokens != 0:
            raise ValueError(f"objective mntp (LLM2Vec) trains the encoder without memory tokens and embeds "
                             f"with mean pooling: set num_memory_tokens: 0 (got {self.num_memory_tokens})")
        if self.objective != "mntp" and self.num_memory_tokens < 1:
            raise ValueError(f"num_memory_tokens must be >= 1 for objective {self.objective!r}, "
                             f"got {self.num_memory_tokens} (only objective mntp trains without memory tokens)")

    def to_dict(self) -> dict:
        return asdict(self)


def _parse_value(text: str):
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`["--lr", "3e-5", "--lora.r", "8", "--name=value"]` -> nested updates of `data`."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    tokens = list(overrides)
    while tokens:
        key = tokens.pop(0)
        if not key.startswith("--"):
            raise ValueError(f"expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ValueError(f"--{key} needs a value")
        key = key.replace("-", "_")
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ValueError(f"--{key}: {parent} is not a section")
        target[leaf] = _parse_value(value)
    return data


def load_stage_config(path: str | Path | None = None, overrides: list[str] = (), **defaults) -> StageConfig:
    data: dict = dict(defaults)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of keys to values")
        data.update(loaded)
    data = apply_overrides(data, list(overrides))
    known = {f.name for f in fields(StageConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}{f' in {path}' if path else ''}; known keys: {sorted(known)}")
    return StageConfig(**data)
