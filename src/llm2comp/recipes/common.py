"""What every stage recipe does the same way: accelerator, model loading, reuse, final save."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import yaml

from ..atomic import ensure_writable_dir
from ..models.config import is_llm2comp_folder
from ..models.encoder import LLM2Comp
from ..models.lora import LoraSettings
from ..training.checkpoint import list_checkpoints
from ..training.config import StageConfig
from ..training.loop import LoopSettings, check_resumable
from ..training.resume import check_resume
from ..yaml_files import read_yaml

TRAINING_CONFIG = "training_config.yaml"  # in the model folder: the settings that made it, and data statistics

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
    """A stage whose final model folder is complete is done; rerunning it reuses the result.

    Only when it was made with the same settings: a "meaning" difference raises `ResumeMismatch`; a
    harmless one (e.g. a larger `max_steps`) with `accept_resume_changes` makes the stage continue
    from its last checkpoint instead, and save the model again.
    """
    folder = final_model_dir(cfg)
    if not (is_llm2comp_folder(folder) and (folder / TRAINING_CONFIG).is_file()):
        return False
    saved = read_yaml(folder / TRAINING_CONFIG)
    saved = saved if isinstance(saved, dict) else {}
    return not check_resume(saved, cfg.to_dict(), folder, accept_harmless=cfg.accept_resume_changes)


def check_output_dir(cfg: StageConfig, resume: bool) -> None:
    """Before any data or model loads: the output folder is writable, and what it holds (a finished
    model, checkpoints) was made with the same settings when it is to be reused or resumed."""
    ensure_writable_dir(cfg.output_dir, "output_dir")
    if not resume or finished(cfg):
        return
    existing = list_checkpoints(Path(cfg.output_dir) / "checkpoints")
    if existing:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        check_resumable(existing[-1], cfg.to_dict(), world_size)


def stage_tokenizer(cfg: StageConfig):
    """The tokenizer alone, so that data errors surface before a large model is loaded."""
    from ..models.backbone import load_tokenizer, resolve_backbone_path

    return load_tokenizer(resolve_backbone_path(cfg.model))


def load_encoder(cfg: StageConfig, **config_overrides) -> LLM2Comp:
    """The stage's starting model with a fresh trainable LoRA (a previous stage's LoRA is merged)."""
    model = LLM2Comp.from_pretrained(cfg.model, num_memory_tokens=cfg.num_memory_tokens, max_length=cfg.max_length,
                                     dtype=cfg.dtype, attn_implementation=cfg.attn_implementation, seed=cfg.seed,
                                     **config_overrides)
    model.add_lora(LoraSettings.from_mapping(cfg.lora))
    if model.memory is not None:  # none for MNTP (and the models it trains)
        model.memory.weight.requires_grad_(True)
    if cfg.train_input_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(True)
        model.config.input_embeddings = True  # saved with the model (input_embeddings.safetensors)
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
    if accelerator.is_main_process:  # the config goes in before the folder appears: never a folder without it
        record = yaml.safe_dump({**cfg.to_dict(), "data_stats": data_stats}, sort_keys=False)
        model.save(target, extra_files={TRAINING_CONFIG: record})
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
