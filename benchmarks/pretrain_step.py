"""Seconds, throughput and peak memory of one stage-1 KL step, one copy of the weights vs two.

    .venv/bin/python benchmarks/pretrain_step.py            # SmolLM2-135M, batch 8, 64 + 64 tokens, fp32
    .venv/bin/python benchmarks/pretrain_step.py --quick    # 2 steps each, a smoke run

One step = encoder forward (LoRA on, bidirectional) on [BOS] context [M1..M8], student forward on
[BOS, memory, continuation] and teacher forward on the full text (adapter off, causal), full-vocab
KL, backward into LoRA and memory vectors. Texts: bundled Wikipedia paragraphs cut to exactly
64 + 64 tokens. Variants, each in a fresh subprocess so that its peak RSS is its own:
- `one-copy` (ours): teacher and decoder are the backbone with the adapter switched off;
- `two-copy` (the authors' release): a second, separately loaded frozen backbone serves them.
FLOPs per step count the matmuls that run: 2 * P * tokens for every forward, plus 2 * P * tokens
for the backward of the encoder and student (input gradients; frozen weights get none), plus the
LM head on the positions the loss uses (P = non-embedding parameters). The fp32 matmul ceiling
(2048 x 2048, torch, all threads) is measured in the same run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

SEQ_CONTEXT, SEQ_CONTINUATION, BATCH, K = 64, 64, 8, 8


def matmul_ceiling(seconds: float = 3.0) -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
    return 2 * 2048**3 * runs / (time.perf_counter() - start) / 1e9


def worker(variant: str, steps: int) -> dict:
    import torch

    from llm2comp import LLM2Comp, LoraSettings
    from llm2comp.data import load_corpus
    from llm2comp.models.backbone import load_causal_lm
    from llm2comp.training.compression import CompressionExample, CompressionObjective

    torch.manual_seed(0)
    model = LLM2Comp.from_pretrained("smollm2-135m", num_memory_tokens=K)
    model.add_lora(LoraSettings(dropout=0.0))
    decoder = None
    if variant == "two-copy":
        decoder, _, _ = load_causal_lm("smollm2-135m")
        decoder.requires_grad_(False)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    need = SEQ_CONTEXT + SEQ_CONTINUATION
    corpus = load_corpus("wiki_default", tokenizer=model.tokenizer, seed=0, limit=BATCH * (steps + 1) * 3)
    rows = [r[:need] for r in model.tokenizer(corpus.texts, add_special_tokens=False)["input_ids"] if len(r) >= need]
    objective = CompressionObjective(model, "kl", decoder=decoder)
    non_embedding = sum(p.numel() for n, p in model.model.named_parameters() if "embed" not in n and "lora_" not in n)
    vocab, hidden = model.model.get_output_embeddings().weight.shape
    times = []
    for step in range(steps + 1):
        batch = rows[step * BATCH:(step + 1) * BATCH]
        examples = [CompressionExample(r[:SEQ_CONTEXT], r[SEQ_CONTEXT:], r) for r in batch]
        start = time.perf_counter()
        objective(examples).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    encoder_tokens = BATCH * (1 + SEQ_CONTEXT + K)
    student_tokens = BATCH * (1 + K + SEQ_CONTINUATION)
    teacher_tokens = BATCH * (1 + need)
    head = 2 * hidden * vocab * BATCH * SEQ_CONTINUATION * 3  # student fwd + bwd, teacher fwd
    flops = 2 * non_embedding * (2 * encoder_tokens + 2 * student_tokens + teacher_tokens) + head
    median = statistics.median(times[1:])
    return {"variant": variant, "s_per_step": median, "tokens_per_s": (encoder_tokens + student_tokens
            + teacher_tokens) / median, "gflops": flops / median / 1e9, "rss_model_mb": rss_model,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["one-copy", "two-copy"])
    args = parser.parse_args()
    steps = 1 if args.quick else args.steps
    if args.worker:
        print(json.dumps(worker(args.worker, steps)))
        return
    ceiling = matmul_ceiling()
    results = {}
    for variant in ("one-copy", "two-copy"):
        out = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(steps)],
                             capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    ceiling_after = matmul_ceiling()
    print(f"fp32 matmul ceiling: {ceiling:.1f} GFLOP/s before, {ceiling_after:.1f} after\n")
    print("| variant | s/step | tokens/s | GFLOP/s | % of ceiling | RSS after load (MB) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    best = max(ceiling, ceiling_after)
    for r in results.values():
        print(f"| {r['variant']} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | {r['gflops']:.1f} | "
              f"{100 * r['gflops'] / best:.0f}% | {r['rss_model_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    one, two = results["one-copy"], results["two-copy"]
    print(f"\npeak RSS one-copy / two-copy = {one['peak_rss_mb'] / two['peak_rss_mb']:.2f}; "
          f"time one-copy / two-copy = {one['s_per_step'] / two['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
