"""Stage 2 recipe: unsupervised contrastive learning (SimCSE) on sentences.

    llm2comp train --config configs/unsupervised_quickstart.yaml

setup: the stage-1 model (its LoRA merged) + a fresh LoRA, attention dropout switched on (the
       two dropout draws of a sentence are its two views; `eval()` switches dropout off again).
train: InfoNCE of view 1 against view 2 over the (global) batch, temperature 0.05; optionally
       GradCache-cached (`cache_chunk_size`) for large batches on small hardware.
save:  `output_dir/model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.sentences import load_sentences
from ..losses.teacher_alignment import with_teacher
from ..models.backbone import attention_dropout_override
from ..training.batches import BatchStream
from ..training.loop import train_loop
from ..typed_settings import setting
from .common import (
    ContrastiveConfig,
    contrastive_loss,
    final_model_dir,
    load_encoder,
    log,
    make_accelerator,
    save_final,
    stage_output,
)


@dataclass
class UnsupervisedConfig(ContrastiveConfig):
    attention_dropout: float = setting(0.0, minimum=0, below=1)  # SimCSE's views (paper: 0.2)
    max_tokens: int = setting(512, minimum=1)  # longer sentences dropped


def run_unsupervised(cfg: UnsupervisedConfig, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False) -> Path:
    from ..losses.info_nce import SimCSE

    with stage_output(cfg, resume) as done:
        if done:
            log.info("stage 2 already finished: reusing %s", final_model_dir(cfg))
            return final_model_dir(cfg)
        corpus = load_sentences(cfg.data, seed=cfg.seed, limit=cfg.max_samples)
        log.info("stage 2 data: %s", corpus.stats)
        accelerator = make_accelerator(cfg)
        dropout = (attention_dropout_override(cfg.model, cfg.attention_dropout, trust_remote_code=trust_remote_code)
                   if cfg.attention_dropout else {})
        model = load_encoder(cfg, trust_remote_code=trust_remote_code, **dropout)
        ids, truncated = model.tokenize(corpus.texts)
        model.warn_truncated(truncated)
        text_of = ({tuple(row): text for row, text in zip(ids, corpus.texts)}  # what a teacher embeds
                   if cfg.distillation.teacher_weight else None)
        ids = [row for row in ids if len(row) <= cfg.max_tokens]  # long sentences cost the most on small hardware
        corpus.stats["kept_max_tokens"] = len(ids)
        stream = BatchStream(ids, cfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)

        objective = SimCSE(contrastive_loss(cfg, model))  # built once; the loop prepares its encoder
        objective = with_teacher(objective, cfg, lambda batch: batch, text_of)  # + teacher_weight * L_teacher
        train_loop(objective, stream, cfg.loop, accelerator=accelerator, output_dir=cfg.output_dir,
                   config=cfg.to_dict(), resume=resume, count_tokens=lambda batch: 2 * sum(map(len, batch)),
                   callbacks=callbacks)
        return save_final(model, cfg, accelerator, corpus.stats)
