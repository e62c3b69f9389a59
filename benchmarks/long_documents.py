"""Long documents: nDCG@10 and cost of long_texts = truncate / segments / multivector on WikiLongDocRetrieval.

    .venv/bin/python benchmarks/long_documents.py --pooling mean --output long_mean.json      # untrained
    .venv/bin/python benchmarks/long_documents.py --model runs/x/model --output long_trained.json

The task (evaluation/long_documents.py) is built bounded by default: whole Wikipedia articles of
600-2,000 words (23 articles, 46 query sentences taken from past word 128 and removed from their
article), read with windows of `--max-length 128` tokens, so an article spans 7-24 windows and no
query sentence lies in the part a truncating model reads. Every mode runs on the same loaded model,
one after the other, after a short warm-up; the corpus encoding is timed on its own (the queries are
short and cost the same in every mode). Prints a markdown table and writes the figures to --output.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import harness
import torch

from llm2comp.atomic import atomic_write_bytes
from llm2comp.evaluation import Embedder
from llm2comp.evaluation.long_documents import long_document_task
from llm2comp.evaluation.runner import load_model
from llm2comp.models.layout import model_text_budget
from llm2comp.models.long_texts import plan_windows

MODES = ("truncate", "segments", "multivector")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--pooling", default=None, help="mean / last for the untrained baselines")
    parser.add_argument("--max-length", type=int, default=128, help="window size: BOS + text + memory tokens")
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--skip-words", type=int, default=128)
    parser.add_argument("--min-words", type=int, default=600)
    parser.add_argument("--max-words", type=int, default=2000)
    parser.add_argument("--articles", type=int, default=None, help="cap on articles (seeded subset)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="JSON file for the figures")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    model = load_model(args.model, args.pooling)
    model.config.max_length = args.max_length
    task = long_document_task(args.articles, args.seed, skip_words=args.skip_words, min_words=args.min_words,
                              max_words=args.max_words)
    budget = model_text_budget(model, args.max_length)
    lengths = [len(ids) for ids in model.tokenizer(task.corpus, add_special_tokens=False)["input_ids"]]
    windows = sum(len(plan_windows(n, budget, args.overlap)) for n in lengths)
    setup = {"model": args.model, "pooling": model.config.pooling, "num_memory_tokens": model.num_memory_tokens,
             "max_length": args.max_length, "overlap": args.overlap, "articles": len(task.corpus),
             "queries": len(task.queries), "corpus_tokens": sum(lengths), "min_tokens": min(lengths),
             "max_tokens": max(lengths), "corpus_windows": windows, "torch_threads": torch.get_num_threads(),
             "load_average_at_start": round(os.getloadavg()[0], 2)}
    print(json.dumps(setup))
    model.encode(["warm-up text"] * 4, batch_size=4)
    rows = []
    for mode in args.modes.split(","):
        embed = Embedder(model, batch_size=args.batch_size, show_progress_bar=False, long_texts=mode,
                         overlap=None if mode == "truncate" else args.overlap)  # truncate cuts no windows
        start = time.perf_counter()
        (embed.windows if mode == "multivector" else embed)(task.corpus, None)
        corpus_s = time.perf_counter() - start
        metrics = task.evaluate(embed)  # the corpus is cached: queries + ranking
        total_s = time.perf_counter() - start
        rows.append({"mode": mode, "ndcg_at_10": metrics["ndcg_at_10"], "mrr_at_10": metrics["mrr_at_10"],
                     "recall_at_10": metrics["recall_at_10"], "corpus_s": round(corpus_s, 1),
                     "total_s": round(total_s, 1), "load_average_after": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    base = next((r["corpus_s"] for r in rows if r["mode"] == "truncate"), None)  # "-" without a truncate run
    print("\n" + harness.markdown_table(
        ["long_texts", "nDCG@10", "MRR@10", "recall@10", "corpus encoding, s", "x truncate"],
        [[r["mode"], f"{100 * r['ndcg_at_10']:.2f}", f"{100 * r['mrr_at_10']:.2f}", f"{100 * r['recall_at_10']:.2f}",
          f"{r['corpus_s']:.1f}", harness.format_ratio(harness.ratio(r["corpus_s"], base), digits=1)] for r in rows],
        align="lrrrrr"))
    atomic_write_bytes(args.output, (json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
