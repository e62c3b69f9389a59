"""LLM2Vec's MNTP as stage 1 (the paper's baseline): masked next-token prediction, no memory tokens.

    llm2comp train --config configs/pretrain_mntp_quickstart.yaml

config: `MntpConfig` = the stage-1 data settings (recipes/pretrain.py: same corpus, held-out texts
        and snapshots as compression) + `mask_ratio`; `objective: mntp`, `num_memory_tokens: 0`.
setup:  the backbone + fresh LoRA, no memory vectors, mean pooling (as LLM2Vec embeds);
        texts -> token ids -> masked examples (data/masking.py).
train:  `MaskedNextTokenObjective` on the shared loop.
save:   `output_dir/model`, an LLM2Comp folder with mean pooling.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.masking import MaskingSpec, mask_text, masked_example_tokens
from ..errors import ConfigError
from ..losses.masked_next_token import MaskedNextTokenObjective
from ..models.encoder_settings import EncoderSettings
from ..training.batches import BatchStream
from ..training.loop import train_loop
from ..typed_settings import setting
from .common import (
    final_model_dir,
    load_encoder,
    log,
    make_accelerator,
    save_final,
    stage_output,
    stage_tokenizer,
)
from .pretrain import Stage1Data, build_examples, snapshot_saver, stage1_texts


def _no_memory() -> EncoderSettings:
    return EncoderSettings(num_memory_tokens=0)


@dataclass
class MntpConfig(Stage1Data):
    encoder: EncoderSettings = setting(factory=_no_memory, flat=True)  # MNTP trains no memory tokens
    objective: str = setting("mntp", choices=("mntp",))
    mask_ratio: float = setting(0.2, above=0, below=1)  # share of tokens masked (LLM2Vec: 0.2)

    def check_memory_tokens(self) -> None:
        if self.encoder.num_memory_tokens != 0:
            raise ConfigError(f"objective mntp (LLM2Vec) trains the encoder without memory tokens and embeds with "
                              f"mean pooling: set num_memory_tokens: 0 (got {self.encoder.num_memory_tokens})")


def run_mntp(cfg: MntpConfig, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False) -> Path:
    with stage_output(cfg, resume) as done:
        if done:
            log.info("stage 1 (mntp) already finished: reusing %s", final_model_dir(cfg))
            return final_model_dir(cfg)
        tokenizer = stage_tokenizer(cfg, trust_remote_code=trust_remote_code)
        corpus, texts, _ = stage1_texts(cfg, tokenizer)  # held texts stay out, as in the compression arms
        spec = MaskingSpec.from_tokenizer(tokenizer, cfg.mask_ratio)
        examples, mask_stats = build_examples(texts, tokenizer, cfg,
                                              lambda ids, index: mask_text(ids, spec, cfg.seed, index),
                                              skipped="skipped_nothing_to_mask")
        data_stats = {**corpus.stats, **mask_stats}
        log.info("stage 1 (mntp) data: %s", data_stats)
        accelerator = make_accelerator(cfg)
        model = load_encoder(cfg, trust_remote_code=trust_remote_code, pooling="mean")  # mean: as LLM2Vec
        stream = BatchStream(examples, cfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
        extra = [snapshot_saver(model, cfg, accelerator, data_stats)] if cfg.snapshot_steps else []
        train_loop(MaskedNextTokenObjective(model), stream, cfg.loop, accelerator=accelerator,
                   output_dir=cfg.output_dir, config=cfg.to_dict(), resume=resume, count_tokens=masked_example_tokens,
                   callbacks=[*extra, *callbacks])
        return save_final(model, cfg, accelerator, data_stats)
