"""Peak memory and time per step of the supervised contrastive loss, with and without GradCache.

    .venv/bin/python benchmarks/contrastive_step.py      # batch 64: uncached needs ~60 GB RAM on CPU
    .venv/bin/python benchmarks/contrastive_step.py --batch-size 16 --query-max-length 32 \
        --doc-max-length 48 --keep-graphs 0,1,3                # fits a 24 GB machine, ~25 min on 1 core

One step = InfoNCE of `batch` queries against all positives and one hard negative each (3 * batch
texts), forward and backward into the LoRA and memory gradients (no optimizer). Texts are
realistic and of mixed length: news paragraphs from gensim's bundled `lee_background.cor` (read as
a file, gensim is not imported): query = a paragraph's first sentence, positive = the rest of the
paragraph, hard negative = the rest of another paragraph. Every step uses new paragraphs; both
variants see the same batches.

Variants: `uncached` (InfoNCE: one forward per text group, whole graph kept) and
`cached-keepK` (CachedInfoNCE with `keep_graphs=K`; K=1 is the default, K=0 textbook GradCache).
Each variant runs in a fresh subprocess, so its peak RSS (VmHWM) is its own; "model only"
is the RSS after loading, before the first step. Times are the median of the steps after one
warm-up step. Target (issue 4): cached peak <= 0.5x uncached at <= 1.3x the time.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import harness


def lee_paragraphs() -> list[str]:
    from llm2comp.packaged import packaged_file

    path = packaged_file("gensim", "test", "test_data", "lee_background.cor", install_hint="pip install --no-deps gensim",
                         purpose="this benchmark's corpus")
    return [line.strip() for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]


def triples(paragraphs: list[str], step: int, batch: int) -> tuple[list[str], list[str], list[str]]:
    """(first sentence, rest, rest of the next paragraph) for `batch` paragraphs of this step."""
    queries, positives, negatives = [], [], []
    parts = [re.split(r"(?<=[.!?])\s+", p, maxsplit=1) for p in paragraphs]
    parts = [p for p in parts if len(p) == 2]
    for i in range(step * batch, (step + 1) * batch):
        first, rest = parts[i % len(parts)]
        queries.append(first)
        positives.append(rest)
        negatives.append(parts[(i + 1) % len(parts)][1])
    return queries, positives, negatives


def worker(args) -> dict:
    import torch

    from llm2comp import LLM2Comp
    from llm2comp.losses.cached_info_nce import CachedInfoNCE
    from llm2comp.losses.info_nce import InfoNCE

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LLM2Comp.from_pretrained(args.model)
    model.add_lora()
    model.train()
    if args.worker == "uncached":
        loss = InfoNCE(model)
    else:  # "cached-keepK"
        loss = CachedInfoNCE(model, chunk_size=args.chunk_size, keep_graphs=int(args.worker.split("keep")[1]))
    paragraphs = lee_paragraphs()
    batches = []
    for step in range(args.steps + 1):
        queries, positives, negatives = triples(paragraphs, step, args.batch_size)
        batches.append((model.tokenize(queries, max_length=args.query_max_length)[0],
                        model.tokenize(positives, max_length=args.doc_max_length)[0],
                        model.tokenize(negatives, max_length=args.doc_max_length)[0]))
    model_rss = harness.rss_mb()
    seconds, losses = [], []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        value = loss(batch)
        value.backward()
        losses.append(float(value))
        seconds.append(time.perf_counter() - start)
    tokens = [sum(len(ids) + 1 + model.num_memory_tokens for group in batch for ids in group)
              for batch in batches]  # text + BOS + memory, without padding
    return {"variant": args.worker, "seconds": seconds, "losses": losses, "tokens": tokens,
            "model_rss_mb": model_rss, "peak_rss_mb": harness.peak_rss_mb()}


def run_variant(variant: str, argv: list[str]) -> dict:
    return harness.run_child([sys.executable, os.path.abspath(__file__), *argv, "--worker", variant], variant)


def report(results: dict[str, dict], args) -> str:
    base = results["uncached"]
    for r in results.values():
        r["median_s"] = harness.median(r["seconds"], skip=1, what=f"{r['variant']} s/step")  # 1 warm-up step
    peak = harness.ratios(results, "uncached", "peak_rss_mb")
    above = harness.ratios(results, "uncached", lambda r: r["peak_rss_mb"] - r["model_rss_mb"])
    step = harness.ratios(results, "uncached", "median_s")
    table = harness.markdown_table(
        ["variant", "model RSS MB", "peak RSS MB", "peak - model MB", "s/step median (min-max)", "peak RSS / uncached",
         "above model / uncached", "time / uncached"],
        [[variant, f"{r['model_rss_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['peak_rss_mb'] - r['model_rss_mb']:.0f}",
          f"{r['median_s']:.1f} ({min(r['seconds'][1:]):.1f}-{max(r['seconds'][1:]):.1f})",
          harness.format_ratio(peak[variant]), harness.format_ratio(above[variant]),
          harness.format_ratio(step[variant])] for variant, r in results.items()])
    per_token = (base["peak_rss_mb"] - base["model_rss_mb"]) / max(base["tokens"])
    lines = [f"SmolLM2-135M + LoRA (r=16), batch {args.batch_size} x (query, positive, hard negative), "
             f"chunk {args.chunk_size}, query <= {args.query_max_length} / documents "
             f"<= {args.doc_max_length} tokens, {args.threads} threads, median of {args.steps} steps after "
             "1 warm-up",
             f"tokens per step (incl. BOS + memory): {base['tokens'][1:]}", "", table,
             "", "target (issue 4): cached peak RSS <= 0.5x uncached at <= 1.3x the time",
             f"uncached: {per_token:.2f} MB of peak RSS per token of its largest step",
             "losses per step (same batches): " + "; ".join(
                 f"{v} {[round(x, 3) for x in r['losses']]}" for v, r in results.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="measured steps, after one warm-up step")
    parser.add_argument("--query-max-length", type=int, default=64)
    parser.add_argument("--doc-max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared, busy CPU one thread was 8x faster than two")
    parser.add_argument("--keep-graphs", default="1",
                        help="comma-separated CachedInfoNCE keep_graphs values, one cached variant each")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        harness.emit(worker(args))
        return
    passed = list(argv if argv is not None else sys.argv[1:])
    variants = ["uncached"] + [f"cached-keep{int(k)}" for k in args.keep_graphs.split(",")]
    results = {variant: run_variant(variant, passed) for variant in variants}
    print(report(results, args))


if __name__ == "__main__":
    main()
