"""Stage 3 recipe: supervised contrastive learning on (query, positive, hard negative) rows.

    llm2comp train --config configs/supervised_quickstart.yaml

setup: the stage-2 model (its LoRA merged) + a fresh LoRA; rows read and de-duplicated; queries
       carry their instruction ("{instruction}: {query}"), documents none.
train: each query against every positive and hard negative of the global batch (gathered across
       processes), temperature 0.05; batches never hold two rows sharing a query or a positive, and
       hold one dataset (task) each, as E5 trains; optionally GradCache-cached.
save:  `output_dir/model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.batching import ContrastiveBatchSampler, pair_keys
from ..data.pairs import PairSet, check_pair_source, read_e5_mix, read_pairs
from ..errors import InvalidSetting
from ..losses.teacher_alignment import with_teacher
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
class SupervisedConfig(ContrastiveConfig):
    query_max_length: int = setting(512, minimum=1)
    document_max_length: int = setting(1024, minimum=1)


def load_pair_set(spec: dict) -> PairSet:
    """{type: pairs, path: FILE(S)[, task, instruction]} | {type: e5, path: FOLDER[, tasks]} | {type: wiki_demo}
    | {type: wiki_cloze}."""
    kind = check_pair_source(spec)
    if kind == "pairs":
        return read_pairs(spec["path"], task=spec.get("task"), instruction=spec.get("instruction"))
    if kind == "e5":
        return read_e5_mix(spec["path"], tasks=spec.get("tasks"))
    from ..data.demo_pairs import wiki_cloze_pairs, wiki_demo_pairs

    return wiki_cloze_pairs() if kind == "wiki_cloze" else wiki_demo_pairs()


class SamplerStream:
    """The trainer's batch-stream interface over a `ContrastiveBatchSampler` (resumable by position)."""

    def __init__(self, sampler: ContrastiveBatchSampler, collate):
        self.sampler, self.collate = sampler, collate
        self._iterator = iter(sampler)

    def state(self) -> dict:
        return {"epoch": self.sampler.epoch, "index": self.sampler.position}

    def restore(self, state: dict) -> None:
        self.sampler.set_epoch(int(state["epoch"]), int(state["index"]))
        self._iterator = iter(self.sampler)

    def next_batch(self):
        for _ in range(2):
            try:
                return self.collate(next(self._iterator))
            except StopIteration:
                self.sampler.set_epoch(self.sampler.epoch + 1)
                self._iterator = iter(self.sampler)
        raise InvalidSetting("the data cannot fill one global batch without duplicate queries or positives")


def run_supervised(cfg: SupervisedConfig, *, resume: bool = True, callbacks=(), trust_remote_code: bool = False) -> Path:
    with stage_output(cfg, resume) as done:
        if done:
            log.info("stage 3 already finished: reusing %s", final_model_dir(cfg))
            return final_model_dir(cfg)
        pairs = load_pair_set(cfg.data)
        log.info("stage 3 data: %s", pairs.summary())
        if cfg.max_samples:
            pairs = PairSet(pairs.examples[:cfg.max_samples], {**pairs.stats, "kept": min(len(pairs), cfg.max_samples)})
        accelerator = make_accelerator(cfg)
        model = load_encoder(cfg, trust_remote_code=trust_remote_code)
        template = model.config.instruction_template
        rows = pairs.examples
        queries, _ = model.tokenize([r.query_text(template) for r in rows], max_length=cfg.query_max_length)
        positives, _ = model.tokenize([r.positive for r in rows], max_length=cfg.document_max_length)
        with_negative = [i for i, r in enumerate(rows) if r.negatives]
        negatives, _ = model.tokenize([rows[i].negatives[0] for i in with_negative], max_length=cfg.document_max_length)
        negative_of = dict(zip(with_negative, negatives))
        keys, soft_keys = pair_keys(rows)
        groups = [r.group for r in rows] if any(r.group for r in rows) else None
        sampler = ContrastiveBatchSampler(keys, cfg.batch_size * accelerator.num_processes, soft_keys=soft_keys,
                                          groups=groups, seed=cfg.seed, num_replicas=accelerator.num_processes,
                                          rank=accelerator.process_index)

        def collate(indices):
            return ([queries[i] for i in indices], [positives[i] for i in indices],
                    [negative_of[i] for i in indices if i in negative_of])

        def count_tokens(batch):
            return sum(len(ids) for group in batch for ids in group)

        objective = contrastive_loss(cfg, model)  # built once; the loop prepares its encoder
        text_of = ({tuple(ids): row.query for ids, row in zip(queries, rows)}  # a teacher embeds the bare query
                   if cfg.distillation.teacher_weight else None)
        objective = with_teacher(objective, cfg, lambda batch: batch[0], text_of,  # + teacher_weight * L_teacher
                                 documents_of=lambda batch: batch[1] + batch[2])
        train_loop(objective, SamplerStream(sampler, collate), cfg.loop, accelerator=accelerator,
                   output_dir=cfg.output_dir, config=cfg.to_dict(), resume=resume, count_tokens=count_tokens,
                   callbacks=callbacks)
        model.config.prompts = {**model.config.prompts, **default_prompts(rows)}
        return save_final(model, cfg, accelerator, pairs.stats)


def default_prompts(rows) -> dict[str, str]:
    """`{"query": instruction}` when every training query carried the same instruction, else `{}`:
    saved with the model, it is what `encode_query` and sentence-transformers apply by default."""
    instructions = {row.instruction for row in rows}
    return {"query": instructions.pop()} if len(instructions) == 1 and None not in instructions else {}
