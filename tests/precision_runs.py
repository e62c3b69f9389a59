"""The first training steps of every stage in one precision, through the recipes (run as a subprocess).

    python tests/precision_runs.py MODEL_DIR OUT_DIR MIXED_PRECISION DTYPE

accelerate fixes the mixed precision once per process (AcceleratorState), so each precision runs in
its own process. Writes OUT_DIR/losses.json: {stage: {"loss": [...], "grad_norm": [...]}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `tests` as a package

STEPS = 3


def main(model_dir: str, out_dir: str, mixed_precision: str, dtype: str) -> None:
    import torch

    torch.set_num_threads(1)
    from llm2comp.recipes.pretrain import run_pretrain
    from llm2comp.recipes.supervised import run_supervised
    from llm2comp.recipes.unsupervised import run_unsupervised
    from tests.test_contrastive_recipes import write_pairs, write_sentences
    from tests.training_helpers import tiny_stage_config, write_corpus

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(mixed_precision=mixed_precision, dtype=dtype, max_steps=STEPS, save_every=0, warmup_steps=0)
    stages = {
        "kl": (run_pretrain, dict(lr=5e-3)),
        "simcse": (run_unsupervised, dict(stage="unsupervised", lr=1e-3, attention_dropout=0.2,
                                          data={"type": "text", "path": str(write_sentences(out / "s.txt"))})),
        "supervised_gradcache": (run_supervised, dict(stage="supervised", lr=1e-3, cache_chunk_size=2,
                                                      data={"type": "pairs",
                                                            "path": str(write_pairs(out / "p.jsonl"))})),
    }
    corpus = write_corpus(out / "c.txt")
    results = {}
    for name, (run, overrides) in stages.items():
        cfg = tiny_stage_config(model_dir, corpus, out / name, **{**common, **overrides})
        run(cfg)
        rows = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        results[name] = {"loss": [r["loss"] for r in rows], "grad_norm": [r["grad_norm"] for r in rows]}
    (out / "losses.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])
