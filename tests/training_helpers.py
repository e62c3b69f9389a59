"""Tiny stage-1 runs for the trainer tests (used in-process and from subprocesses)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("river mountain city music science history language garden winter ocean market engine "
         "painting theory animal forest planet village station bridge library harvest").split()


def write_corpus(path: Path, n: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(24, 40))) + "." for _ in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_stage_config(model_dir: Path, corpus: Path, output_dir: Path, **overrides):
    from llm2comp.training.config import StageConfig

    values = dict(stage="pretrain", model=str(model_dir), output_dir=str(output_dir), num_memory_tokens=2,
                  max_length=64, lora={"r": 4, "alpha": 8, "dropout": 0.0}, objective="kl",
                  data={"type": "text", "path": str(corpus)}, max_tokens=60, batch_size=4, lr=5e-3,
                  warmup_steps=1, max_steps=6, save_every=2, keep_last=2, log_every=1, seed=0)
    values.update(overrides)
    return StageConfig(**values)
