"""Tiny stage-1 runs for the trainer tests (used in-process and from subprocesses)."""

from __future__ import annotations

import json
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
    """A tiny run's config for any stage; the stage-1 defaults a later stage does not read are left out."""
    from llm2comp.recipes.stage_config import config_class
    from llm2comp.recipes.stage_config import stage_config as StageConfig
    from llm2comp.typed_settings import flat_keys

    values = dict(stage="pretrain", model=str(model_dir), output_dir=str(output_dir), num_memory_tokens=2,
                  max_length=64, lora={"r": 4, "alpha": 8, "dropout": 0.0}, objective="kl",
                  data={"type": "text", "path": str(corpus)}, max_tokens=60, batch_size=4, lr=5e-3,
                  warmup_steps=1, max_steps=6, save_every=2, keep_last=2, log_every=1, seed=0)
    read = set(flat_keys(config_class(overrides.get("stage", "pretrain"), overrides.get("objective", "kl"))))
    values = {key: value for key, value in values.items() if key in read}
    values.update(overrides)
    return StageConfig(**values)


def write_sentences(path, n=24, seed=1):
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + f" number {i}."
                              for i in range(n)) + "\n")
    return path


def write_pairs(path, n=24, seed=2):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(WORDS)
        rows.append({"query": f"what about the {topic} {i}?",
                     "positive": f"The {topic} {i} is " + " ".join(rng.choice(WORDS) for _ in range(8)) + ".",
                     "negative": "Unrelated: " + " ".join(rng.choice(WORDS) for _ in range(8)) + ".",
                     "task": "msmarco_passage"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# twelve sentences of mixed length: queries, positives and hard negatives of the contrastive loss tests
CONTRASTIVE_TEXTS = [
    "The cat sat on the mat.",
    "Bushfires forced hundreds of residents to leave their homes in the Southern Highlands.",
    "A storm cell moved east across the Blue Mountains.",
    "Stocks rose.",
    "The committee will meet again next week to discuss the budget and the new road proposals.",
    "Rain is expected tomorrow.",
    "He plays the violin every evening after dinner with his two sisters.",
    "Quantum computers use qubits.",
    "The river flooded the lower town.",
    "She finished the marathon in under four hours, a personal best.",
    "Paris is the capital of France.",
    "New rules for fishing boats come into force in March.",
]


def reference_info_nce(q, p, h, temperature):
    """Explicit loops: -log softmax of cos(q_i, c)/tau at q_i's positive, averaged over queries."""
    import torch

    candidates = list(p) + (list(h) if h is not None else [])
    total = 0.0
    for i, query in enumerate(q):
        logits = [torch.dot(query, c) / (query.norm() * c.norm()) / temperature for c in candidates]
        log_normaliser = torch.logsumexp(torch.stack(logits), dim=0)
        total = total + (log_normaliser - logits[i])
    return total / len(q)


def memory_and_backbone_targets(encoder, examples):
    """(B, d) memory means of the examples' contexts and (B, d) the frozen backbone's mean over [BOS]
    context (the stage-1 alignment target), computed by hand, one text at a time."""
    import torch

    from llm2comp.models.backbone import body_of
    from llm2comp.models.pooling import masked_mean

    with torch.no_grad():
        memory = encoder.memory_states(encoder.collate([e.context for e in examples])).mean(1)
        with encoder.frozen() as lm:
            targets = []
            for e in examples:
                hidden = body_of(lm)(input_ids=torch.tensor([[1] + e.context])).last_hidden_state
                targets.append(masked_mean(hidden, torch.ones(hidden.shape[:2]))[0])
    return memory, torch.stack(targets)
