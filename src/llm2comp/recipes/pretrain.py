"""Stage 1 recipe: context-compression pre-training (KL / NLL / reconstruction).

    llm2comp train --config configs/pretrain_quickstart.yaml

config: `PretrainConfig` = what every stage reads (recipes/stage_config.py) + the objective, its
        optional terms (`CompressionTerms`), the corpus filters and the memory diagnostics.
setup:  the backbone + fresh LoRA + k memory vectors; texts -> token ids -> split examples.
train:  `CompressionObjective` on the shared loop (checkpoints, resume, NaN stop).
save:   `output_dir/model`, an LLM2Comp folder that `encode` and the next stage load.

LLM2Vec's MNTP baseline (`objective: mntp`) is its own recipe: recipes/mntp.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.compression_examples import make_example
from ..data.corpora import load_corpus
from ..data.reading import DataError
from ..errors import ConfigError
from ..losses.compression import OBJECTIVES, CompressionObjective, CompressionTerms
from ..models.layout import prefix_ids, text_budget
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
from .stage_config import StageConfig


@dataclass
class Stage1Data(StageConfig):
    """What both stage-1 recipes (compression here, MNTP in recipes/mntp.py) read: the same corpus,
    the same held-out texts, the same snapshots, so that their models compare on equal data (the
    memory gap on the held texts, `gap_every`, is logged for the compression objectives only)."""

    min_chars: int = setting(0, minimum=0)
    max_tokens: int = setting(512, minimum=1)  # longer texts dropped
    held_out_texts: int = setting(0, minimum=0)  # texts kept out of training to measure the memory gap
    # log the memory gap on the held texts every N steps (0: only at the end)
    gap_every: int = setting(0, minimum=0, on_resume="harmless")
    snapshot_steps: list[int] = setting(factory=list, minimum=1, on_resume="harmless")  # also save a model then


@dataclass
class PretrainConfig(Stage1Data):
    objective: str = setting("kl", choices=OBJECTIVES)
    # optional terms beyond the paper (0 = off; see losses/compression.py and docs/pretrain.md)
    terms: CompressionTerms = setting(factory=CompressionTerms, flat=True)


def build_examples(texts: list[str], tokenizer, cfg, make, skipped: str) -> tuple[list, dict]:
    """Tokenise every text and make its example with `make(ids, index)` (None: too short for it, counted
    as `skipped`); texts longer than `max_tokens` or the encoder's text budget are dropped."""
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    budget = text_budget(cfg.encoder.max_length, len(prefix_ids(tokenizer)), cfg.encoder.num_memory_tokens)
    examples, too_short, too_long = [], 0, 0
    for index, row in enumerate(ids):
        if len(row) > min(cfg.max_tokens, budget):
            too_long += 1
            continue
        example = make(row, index)
        if example is None:
            too_short += 1
        else:
            examples.append(example)
    stats = {"texts": len(texts), "examples": len(examples), skipped: too_short, "skipped_too_long": too_long}
    if not examples:
        raise DataError(f"no usable training example among {len(texts)} texts ({stats})")
    return examples, stats


def example_tokens(batch) -> int:
    return sum(len(e.context) + len(e.target) + len(e.full or ()) for e in batch)


def split_held_out(texts: list[str], count: int) -> tuple[list[str], list[str]]:
    """(training texts, held texts): the last `count` texts of the shuffled corpus are never trained on."""
    if count < 0:
        raise ConfigError(f"held_out_texts must be >= 0, got {count}")
    if count and count >= len(texts):
        raise ConfigError(f"held_out_texts={count} leaves no training text out of {len(texts)}")
    return (texts[:-count], texts[-count:]) if count else (texts, [])


def gap_logger(objective: CompressionObjective, held: list[str], cfg: PretrainConfig):
    """A loop callback that adds the memory gap on the held texts to the metrics row (see memory_probe),
    every `gap_every` steps, at every snapshot step and at the end."""
    from ..training.memory_probe import memory_gap

    max_steps = cfg.loop.max_steps
    every = cfg.gap_every or max_steps  # 0: only at the end (and at the snapshots)
    snapshots = set(cfg.snapshot_steps)

    def callback(step: int, row: dict) -> None:
        if step % every and step != max_steps and step not in snapshots:
            return
        gap = memory_gap(objective, held, seed=cfg.seed, batch_size=cfg.batch_size)
        row.update({f"memory_{key}": value for key, value in gap.items() if key != "texts"})
        log.info("step %d memory gap %.4f (own %.4f, other %.4f; first tokens %.4f)", step, gap["gap"],
                 gap["own"], gap["other"], gap["gap_first"])

    return callback


def check_gap_logging(accelerator, cfg: PretrainConfig) -> None:
    """The memory gap runs the objective outside the loop's forward, on one process's model: with
    FSDP / DeepSpeed sharding that model holds only its shard, so the diagnostic is refused up front."""
    sharded = getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type))
    if cfg.held_out_texts and sharded in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"held_out_texts={cfg.held_out_texts} (the memory-gap diagnostic) does not run under "
                          f"{sharded}: set held_out_texts: 0, or measure the gap on the saved model without sharding")


def snapshot_saver(model, cfg: Stage1Data, accelerator, data_stats: dict):
    """A loop callback that saves a complete model folder at each of `cfg.snapshot_steps`."""
    steps = set(cfg.snapshot_steps)

    def callback(step: int, row: dict) -> None:
        if step in steps and step < cfg.loop.max_steps:
            save_final(model, cfg, accelerator, data_stats, target=snapshot_dir(cfg, step))

    return callback


def snapshot_dir(cfg: Stage1Data, step: int) -> Path:
    return Path(cfg.output_dir) / "snapshots" / f"step-{step:06d}"


def stage1_texts(cfg: Stage1Data, tokenizer):
    """(corpus, training texts, held texts) of a stage-1 run: the last `held_out_texts` are never trained on."""
    corpus = load_corpus(cfg.data, min_chars=cfg.min_chars, max_tokens=cfg.max_tokens, tokenizer=tokenizer,
                         seed=cfg.seed, limit=cfg.max_samples)
    texts, held = split_held_out(corpus.texts, cfg.held_out_texts)
    return corpus, texts, held


def held_texts(cfg: Stage1Data) -> list[str]:
    """The texts a stage-1 run with this config keeps out of training (`held_out_texts`)."""
    return stage1_texts(cfg, stage_tokenizer(cfg))[2]


def run_pretrain(cfg: PretrainConfig, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False) -> Path:
    with stage_output(cfg, resume) as done:
        if done:
            log.info("stage 1 already finished: reusing %s", final_model_dir(cfg))
            return final_model_dir(cfg)
        tokenizer = stage_tokenizer(cfg, trust_remote_code=trust_remote_code)
        corpus, texts, held = stage1_texts(cfg, tokenizer)
        examples, split_stats = build_examples(texts, tokenizer, cfg,
                                               lambda ids, index: make_example(ids, cfg.objective, cfg.seed, index),
                                               skipped="skipped_too_short_to_split")
        data_stats = {**corpus.stats, **split_stats}
        log.info("stage 1 data: %s", data_stats)
        accelerator = make_accelerator(cfg)
        check_gap_logging(accelerator, cfg)
        model = load_encoder(cfg, trust_remote_code=trust_remote_code)
        stream = BatchStream(examples, cfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
        objective = CompressionObjective(model, cfg.objective, terms=cfg.terms)
        extra = [snapshot_saver(model, cfg, accelerator, data_stats)] if cfg.snapshot_steps else []
        if held:
            extra.append(gap_logger(objective, held, cfg))
        train_loop(objective, stream, cfg.loop, accelerator=accelerator, output_dir=cfg.output_dir,
                   config=cfg.to_dict(), resume=resume, count_tokens=example_tokens, callbacks=[*extra, *callbacks])
        return save_final(model, cfg, accelerator, data_stats)
