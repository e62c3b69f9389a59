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
import sys
import time

import harness

SEQ_CONTEXT, SEQ_CONTINUATION, BATCH, K = 64, 64, 8, 8


def worker(variant: str, steps: int) -> dict:
    import torch

    from llm2comp import LLM2Comp, LoraSettings
    from llm2comp.data import load_corpus
    from llm2comp.data.compression_examples import CompressionExample
    from llm2comp.losses.compression import CompressionObjective
    from llm2comp.models.backbone import load_causal_lm

    torch.manual_seed(0)
    model = LLM2Comp.from_pretrained("smollm2-135m", num_memory_tokens=K)
    model.add_lora(LoraSettings(dropout=0.0))
    decoder = None
    if variant == "two-copy":
        decoder, _, _ = load_causal_lm("smollm2-135m")
        decoder.requires_grad_(False)
    rss_model = harness.peak_rss_mb()
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
    median = harness.median(times, skip=1, what=f"{variant} s/step")
    return {"variant": variant, "s_per_step": median, "tokens_per_s": (encoder_tokens + student_tokens
            + teacher_tokens) / median, "gflops": flops / median / 1e9, "rss_model_mb": rss_model,
            "peak_rss_mb": harness.peak_rss_mb(), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=["one-copy", "two-copy"])
    args = parser.parse_args()
    steps = 1 if args.quick else args.steps
    if args.worker:
        harness.emit(worker(args.worker, steps))
        return
    ceiling = harness.matmul_ceiling().flops / 1e9
    results = {variant: harness.run_child([sys.executable, __file__, "--worker", variant, "--steps", str(steps)],
                                          variant) for variant in ("one-copy", "two-copy")}
    ceiling_after = harness.matmul_ceiling().flops / 1e9
    print(f"fp32 matmul ceiling: {ceiling:.1f} GFLOP/s before, {ceiling_after:.1f} after\n")
    best = max(ceiling, ceiling_after)
    print(harness.markdown_table(
        ["variant", "s/step", "tokens/s", "GFLOP/s", "% of ceiling", "RSS after load (MB)", "peak RSS (MB)"],
        [[r["variant"], f"{r['s_per_step']:.2f}", f"{r['tokens_per_s']:.0f}", f"{r['gflops']:.1f}",
          f"{100 * r['gflops'] / best:.0f}%", f"{r['rss_model_mb']:.0f}", f"{r['peak_rss_mb']:.0f}"]
         for r in results.values()]))
    peak = harness.ratios(results, "two-copy", "peak_rss_mb")["one-copy"]
    step = harness.ratios(results, "two-copy", "s_per_step")["one-copy"]
    print(f"\npeak RSS one-copy / two-copy = {peak:.2f}; time one-copy / two-copy = {step:.2f}")


if __name__ == "__main__":
    main()
