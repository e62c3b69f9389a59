"""Stage 1 recipe: context-compression pre-training (KL / NLL / reconstruction), or LLM2Vec's MNTP.

    llm2comp train --config configs/pretrain_quickstart.yaml
    llm2comp train --config configs/pretrain_mntp_quickstart.yaml     # the paper's MNTP baseline

setup: the backbone + fresh LoRA + k memory vectors; texts -> token ids -> split examples
       (mntp: no memory vectors, mean pooling; texts -> token ids -> masked examples).
train: `CompressionObjective` / `MaskedNextTokenObjective` on the shared loop (checkpoints,
       resume, NaN stop), same data, same LoRA.
save:  `output_dir/model`, an LLM2Comp folder that `encode` and the next stage load.
"""

from __future__ import annotations

from pathlib import Path

from ..data.corpora import load_corpus
from ..data.reading import DataError
from ..errors import ConfigError
from ..training.batches import BatchStream
from ..training.compression import OBJECTIVES, CompressionObjective, CompressionTerms, make_example
from ..training.config import StageConfig
from ..training.loop import train_loop
from ..training.masked_prediction import (
    MNTP,
    MaskedNextTokenObjective,
    MaskingSpec,
    mask_text,
    masked_example_tokens,
)
from .common import (
    final_model_dir,
    load_encoder,
    log,
    loop_settings,
    make_accelerator,
    save_final,
    stage_output,
    stage_tokenizer,
)

PRETRAIN_OBJECTIVES = (*OBJECTIVES, MNTP)


def check_pretrain_objective(objective: str) -> str:
    if objective not in PRETRAIN_OBJECTIVES:
        raise ConfigError(f"stage 1 objective must be one of {PRETRAIN_OBJECTIVES}, got {objective!r}")
    return objective


def example_maker(tokenizer, cfg: StageConfig):
    """(ids, sample index) -> one training example, or None when the text is too short for it."""
    if cfg.objective == MNTP:
        spec = MaskingSpec.from_tokenizer(tokenizer, cfg.mask_ratio)
        return lambda ids, index: mask_text(ids, spec, cfg.seed, index)
    return lambda ids, index: make_example(ids, cfg.objective, cfg.seed, index)


def build_examples(texts: list[str], tokenizer, cfg: StageConfig) -> tuple[list, dict]:
    """Tokenise and split (or mask) every text; texts too short for it are skipped and counted."""
    make = example_maker(tokenizer, cfg)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    budget = cfg.max_length - cfg.num_memory_tokens - 1
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
    short = "skipped_nothing_to_mask" if cfg.objective == MNTP else "skipped_too_short_to_split"
    stats = {"texts": len(texts), "examples": len(examples), short: too_short, "skipped_too_long": too_long}
    if not examples:
        raise DataError(f"no usable training example among {len(texts)} texts ({stats})")
    return examples, stats


def example_tokens(batch) -> int:
    return sum(len(e.context) + len(e.target) + len(e.full or ()) for e in batch)


def compression_terms(cfg: StageConfig) -> CompressionTerms:
    return CompressionTerms(reconstruction_weight=cfg.reconstruction_weight, alignment_weight=cfg.alignment_weight,
                            margin_weight=cfg.margin_weight, margin=cfg.margin,
                            alignment_temperature=cfg.alignment_temperature)


def split_held_out(texts: list[str], count: int) -> tuple[list[str], list[str]]:
    """(training texts, held texts): the last `count` texts of the shuffled corpus are never trained on."""
    if count < 0:
        raise ConfigError(f"held_out_texts must be >= 0, got {count}")
    if count and count >= len(texts):
        raise ConfigError(f"held_out_texts={count} leaves no training text out of {len(texts)}")
    return (texts[:-count], texts[-count:]) if count else (texts, [])


def gap_logger(objective: CompressionObjective, held: list[str], cfg: StageConfig):
    """A loop callback that adds the memory gap on the held texts to the metrics row (see memory_probe),
    every `gap_every` steps, at every snapshot step and at the end."""
    from ..training.memory_probe import memory_gap

    every = cfg.gap_every or cfg.max_steps  # 0: only at the end (and at the snapshots)
    snapshots = {int(s) for s in cfg.snapshot_steps}

    def callback(step: int, row: dict) -> None:
        if step % every and step != cfg.max_steps and step not in snapshots:
            return
        gap = memory_gap(objective, held, seed=cfg.seed, batch_size=cfg.batch_size)
        row.update({f"memory_{key}": value for key, value in gap.items() if key != "texts"})
        log.info("step %d memory gap %.4f (own %.4f, other %.4f; first tokens %.4f)", step, gap["gap"],
                 gap["own"], gap["other"], gap["gap_first"])

    return callback


def check_gap_logging(accelerator, cfg: StageConfig) -> None:
    """The memory gap runs the objective outside the loop's forward, on one process's model: with
    FSDP / DeepSpeed sharding that model holds only its shard, so the diagnostic is refused up front."""
    sharded = getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type))
    if cfg.held_out_texts and sharded in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"held_out_texts={cfg.held_out_texts} (the memory-gap diagnostic) does not run under "
                          f"{sharded}: set held_out_texts: 0, or measure the gap on the saved model without sharding")


def snapshot_saver(model, cfg: StageConfig, accelerator, data_stats: dict):
    """A loop callback that saves a complete model folder at each of `cfg.snapshot_steps`."""
    steps = {int(s) for s in cfg.snapshot_steps}

    def callback(step: int, row: dict) -> None:
        if step in steps and step < cfg.max_steps:
            save_final(model, cfg, accelerator, data_stats, target=snapshot_dir(cfg, step))

    return callback


def snapshot_dir(cfg: StageConfig, step: int) -> Path:
    return Path(cfg.output_dir) / "snapshots" / f"step-{step:06d}"


def _corpus(cfg: StageConfig, tokenizer):
    return load_corpus(cfg.data, min_chars=cfg.min_chars, max_tokens=cfg.max_tokens, tokenizer=tokenizer,
                       seed=cfg.seed, limit=cfg.max_samples)


def held_texts(cfg: StageConfig) -> list[str]:
    """The texts a stage-1 run with this config keeps out of training (`held_out_texts`)."""
    return split_held_out(_corpus(cfg, stage_tokenizer(cfg)).texts, cfg.held_out_texts)[1]


def stage_objective(cfg: StageConfig, model):
    """The module the loop trains and its token counter, for the configured objective."""
    if cfg.objective == MNTP:
        return MaskedNextTokenObjective(model), masked_example_tokens
    return CompressionObjective(model, cfg.objective, terms=compression_terms(cfg)), example_tokens


def run_pretrain(cfg: StageConfig, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False) -> Path:
    check_pretrain_objective(cfg.objective)
    with stage_output(cfg, resume) as done:
        if done:
            log.info("stage 1 already finished: reusing %s", final_model_dir(cfg))
            return final_model_dir(cfg)
        tokenizer = stage_tokenizer(cfg, trust_remote_code=trust_remote_code)
        corpus = _corpus(cfg, tokenizer)
        texts, held = split_held_out(corpus.texts, cfg.held_out_texts)
        examples, split_stats = build_examples(texts, tokenizer, cfg)
        data_stats = {**corpus.stats, **split_stats}
        log.info("stage 1 data: %s", data_stats)
        accelerator = make_accelerator(cfg)
        check_gap_logging(accelerator, cfg)
        model = load_encoder(cfg, trust_remote_code=trust_remote_code, **({"pooling": "mean"} if cfg.objective == MNTP else {}))  # mean: as LLM2Vec
        stream = BatchStream(examples, cfg.batch_size, seed=cfg.seed, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
        objective, count_tokens = stage_objective(cfg, model)
        extra = [snapshot_saver(model, cfg, accelerator, data_stats)] if cfg.snapshot_steps else []
        if held and cfg.objective != MNTP:
            extra.append(gap_logger(objective, held, cfg))
        train_loop(objective, stream, loop_settings(cfg), accelerator=accelerator, output_dir=cfg.output_dir,
                   config=cfg.to_dict(), resume=resume, count_tokens=count_tokens, callbacks=[*extra, *callbacks])
        return save_final(model, cfg, accelerator, data_stats)
