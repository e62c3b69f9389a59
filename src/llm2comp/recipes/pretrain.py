"""Stage 1 recipe: context-compression pre-training (KL / NLL / reconstruction).

    llm2comp train --config configs/pretrain_quickstart.yaml

setup: the backbone + fresh LoRA + k memory vectors; texts -> token ids -> split examples.
train: `CompressionObjective` on the shared loop (checkpoints, resume, NaN stop).
save:  `output_dir/model`, an LLM2Comp folder that `encode` and the next stage load.
"""

from __future__ import annotations

from pathlib import Path

from ..data.corpora import load_corpus
from ..training.batches import BatchStream
from ..training.compression import CompressionObjective, check_objective, make_example
from ..training.config import StageConfig
from ..training.loop import train_loop
from .common import (
    final_model_dir,
    finished,
    load_encoder,
    log,
    loop_settings,
    make_accelerator,
    save_final,
    stage_tokenizer,
)


def build_examples(texts: list[str], tokenizer, cfg: StageConfig) -> tuple[list, dict]:
    """Tokenise and split every text; texts too short to split are skipped and counted."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    budget = cfg.max_length - cfg.num_memory_tokens - 1
    examples, too_short, too_long = [], 0, 0
    for index, row in enumerate(ids):
        if len(row) > min(cfg.max_tokens, budget):
            too_long += 1
            continue
        example = make_example(row, cfg.objective, cfg.seed, index)
        if example is None:
            too_short += 1
        else:
            examples.append(example)
    stats = {"texts": len(texts), "examples": len(examples), "skipped_too_short_to_split": too_short,
             "skipped_too_long": too_long}
    if not examples:
        raise ValueError(f"no usable training example among {len(texts)} texts ({stats})")
    return examples, stats


def example_tokens(batch) -> int:
    return sum(len(e.context) + len(e.target) + len(e.full or ()) for e in batch)


def run_pretrain(cfg: StageConfig, *, resume: bool = True, callbacks=()) -> Path:
    check_objective(cfg.objective)
    if resume and finished(cfg):
        log.info("stage 1 already finished: reusing %s", final_model_dir(cfg))
        return final_model_dir(cfg)
    tokenizer = stage_tokenizer(cfg)
    corpus = load_corpus(cfg.data, min_chars=cfg.min_chars, max_tokens=cfg.max_tokens, tokenizer=tokenizer,
                         seed=cfg.seed, limit=cfg.max_samples)
    examples, split_stats = build_examples(corpus.texts, tokenizer, cfg)
    data_stats = {**corpus.stats, **split_stats}
    log.info("stage 1 data: %s", data_stats)
    accelerator = make_accelerator(cfg)
    model = load_encoder(cfg)
    stream = BatchStream(examples, cfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                         world_size=accelerator.num_processes)
    objective = CompressionObjective(model, cfg.objective)
    train_loop(objective, stream, loop_settings(cfg), accelerator=accelerator, output_dir=cfg.output_dir,
               config=cfg.to_dict(), resume=resume, count_tokens=example_tokens, callbacks=callbacks)
    return save_final(model, cfg, accelerator, data_stats)
