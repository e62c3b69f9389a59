"""What every stage recipe does the same way: accelerator, model loading, reuse, final save."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import yaml

from ..models.config import is_llm2comp_folder
from ..models.encoder import LLM2Comp
from ..models.lora import LoraSettings
from ..training.config import StageConfig
from ..training.loop import LoopSettings

log = logging.getLogger("llm2comp")


def make_accelerator(cfg: StageConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # several processes without a GPU (e.g. `torchrun --nproc_per_node 2` on a CPU box): DDP over gloo
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=multi_cpu or None)
    set_seed(cfg.seed)
    return accelerator


def final_model_dir(cfg: StageConfig) -> Path:
    return Path(cfg.output_dir) / "model"


def finished(cfg: StageConfig) -> bool:
    """A stage whose final model folder exists is done; rerunning it reuses the result."""
    return is_llm2comp_folder(final_model_dir(cfg))


def stage_tokenizer(cfg: StageConfig):
    """The tokenizer alone, so that data errors surface before a large model is loaded."""
    from ..models.backbone import load_tokenizer, resolve_backbone_path

    return load_tokenizer(resolve_backbone_path(cfg.model))


def load_encoder(cfg: StageConfig, **config_overrides) -> LLM2Comp:
    """The stage's starting model with a fresh trainable LoRA (a previous stage's LoRA is merged)."""
    model = LLM2Comp.from_pretrained(cfg.model, num_memory_tokens=cfg.num_memory_tokens, max_length=cfg.max_length,
                                     dtype=cfg.dtype, attn_implementation=cfg.attn_implementation, seed=cfg.seed,
                                     **config_overrides)
    model.add_lora(LoraSettings(**cfg.lora))
    if model.memory is not None:  # none for MNTP (and the models it trains)
        model.memory.weight.requires_grad_(True)
    if cfg.train_input_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(True)
    if cfg.gradient_checkpointing:
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def loop_settings(cfg: StageConfig) -> LoopSettings:
    return LoopSettings(max_steps=cfg.max_steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        warmup_steps=cfg.warmup_steps, grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm,
                        save_every=cfg.save_every, keep_last=cfg.keep_last, log_every=cfg.log_every,
                        lr_by_name={"memory.weight": cfg.memory_lr} if cfg.memory_lr else {})


def save_final(model: LLM2Comp, cfg: StageConfig, accelerator, data_stats: dict, target: Path | None = None) -> Path:
    target = target or final_model_dir(cfg)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        model.save(target)
        (target / "training_config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "data_stats": data_stats},
                                                                    sort_keys=False))
    accelerator.wait_for_everyone()
    return target


def contrastive_loss(cfg: StageConfig, model, accelerator, scale: float):
    """InfoNCE over the global batch, GradCache-cached when `cache_chunk_size` > 0.

    The loss runs its own backward (`accelerator.backward(loss * scale)`, scale = 1/grad_accum).
    """
    from ..losses.cached_info_nce import CachedInfoNCE
    from ..losses.info_nce import InfoNCE

    def backward(loss):
        accelerator.backward(loss * scale)

    if cfg.cache_chunk_size > 0:
        return CachedInfoNCE(model, temperature=cfg.temperature, chunk_size=cfg.cache_chunk_size,
                             backward_fn=backward)
    return InfoNCE(model, temperature=cfg.temperature, backward_fn=backward)
