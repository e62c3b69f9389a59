"""The GPU check, one command: correctness on CUDA, and speed and memory at the paper's shape.

    PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check.json          # one GPU, <= 8 min
    PYTHONPATH=src python benchmarks/gpu_check.py --cpu-tiny --out check.json   # CPU, tiny, ~1 min (CI)

Self-contained: no Hub, no real weights. Backbones are random-init from transformers config
objects; the tokenizer is a word-level one built in-process (one pseudo-word = one token), so token
counts are exact. Only llm2comp modules that need torch, transformers, peft, accelerate (and
sentence-transformers for one baseline) are imported: no fastapi, uvicorn, mteb or gguf.

Correctness (tiny Llama / Qwen2 / Mistral, fp32, TF32 off):
- fp32 embeddings on the device equal CPU fp32 (max relative error), bf16 close to fp32 (cosine),
  embeddings do not depend on what else is in the batch (on the device);
- each stage's first-step loss equals on CPU and the device: in-process (KL objective, SimCSE and
  supervised InfoNCE on the same weights), and through the recipes (a 3-stage pipeline run in
  a subprocess on each device, first two steps' losses from metrics.jsonl);
- GradCache (CachedInfoNCE) equals plain InfoNCE on the device, loss and gradients;
- gradient checkpointing leaves the gradients unchanged (stage 1 and stage 3 with GradCache);
- CUDA only: the same pipeline under accelerate's FSDP (1 process, torchrun): each stage's model
  folder loads and gives the non-FSDP run's embeddings.
Speed (CUDA: a Llama-2-7B-shaped random model in bf16, SDPA; --cpu-tiny: a tiny stand-in, fp32):
- the chip's bf16 matmul rate, measured in the same run (8192^3 matmuls for 3 s);
- stage-1 KL step at the paper's per-device shape (batch 4 x 503 text tokens split 251 / 252,
  k = 8, LoRA r 16 on q v o gate up down, autocast bf16, AdamW step included), with and without
  gradient checkpointing: s/step, tokens/s, MFU (model FLOPs counted as `llm2comp plan` counts
  them, against the measured matmul rate), peak memory (torch.cuda.max_memory_allocated) against
  the plan's estimate, and the SDPA kernel the encoder's forward actually ran (profiler);
- SDPA with the bidirectional 4-D mask (the project's own mask): which backends accept it, its
  time against a causal mask of the same shape and against is_causal without a mask;
- one stage-3 GradCache step at the paper's per-device batch (128 queries, positives and hard
  negatives; 128 / 256 tokens per query / document, chunk 32, checkpointing on);
- encode tokens/s: LLM2Comp.encode vs sentence-transformers (mean pooling) vs a bare transformers
  forward with mean pooling, same model (a 1B Llama-shaped one, bf16), same GPU, same texts.
Prints one markdown table; --out writes every check with its numbers as JSON. A section that
fails records its error and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

ARCHES = ("llama", "qwen2", "mistral")
TINY_VOCAB = 2048
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "_"]  # ids 0-4; "_" is MNTP's blank mask token
DECODER_LAYERS = {"llama": "LlamaDecoderLayer", "qwen2": "Qwen2DecoderLayer", "mistral": "MistralDecoderLayer"}
TOL_FP32 = 1e-4  # relative: fp32 on two devices / two code paths (different kernels, summation orders)
COS_BF16 = 0.99  # bf16 keeps ~3 significant digits; a tiny random model's embeddings stay above 0.99


# ------------------------------------------------------------------------------------ building blocks

def enable_gradient_checkpointing(model) -> None:
    """The project's own switch (recomputations keep the adapter state of their forward)."""
    from llm2comp.training.activation_checkpointing import enable_gradient_checkpointing as enable

    enable(model)

def words(n: int = TINY_VOCAB - len(SPECIALS)) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    out = []
    for a in syllables:
        for b in syllables:
            out.append(a + b)
            if len(out) == n:
                return out
    return out


def build_tokenizer():
    """A word-level fast tokenizer: pseudo-words are single tokens, with BOS, EOS, pad and unk."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + words())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def make_texts(rng: random.Random, n: int, low: int, high: int) -> list[str]:
    vocabulary = words()
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(low, high))) for _ in range(n)]


def tiny_config(arch: str, vocab: int = TINY_VOCAB):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "mistral":
        return tf.MistralConfig(head_dim=16, sliding_window=4, **common)
    raise ValueError(arch)


def llama_config(hidden: int, layers: int, heads: int, intermediate: int, vocab: int = 32000):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, intermediate_size=intermediate, vocab_size=vocab,
                       max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                       tie_word_embeddings=False)


def save_backbone(config, folder: Path, tokenizer, dtype=None, device: str = "cpu", seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def in_memory_encoder(config, tokenizer, device, dtype, k: int, max_length: int, seed: int = 0):
    """An LLM2Comp over a random-init backbone built directly on `device` (no folder, no copy)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm2comp import LLM2Comp, LLM2CompConfig
    from llm2comp.models.memory import MemoryTokens

    torch.manual_seed(seed)
    with torch.device(device):
        causal = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    memory = MemoryTokens(k, config.hidden_size)
    memory.init_from_embeddings(causal.get_input_embeddings().weight.detach().float().cpu(), seed=seed)
    settings = LLM2CompConfig(backbone="random-init (gpu_check)", num_memory_tokens=k, max_length=max_length)
    return LLM2Comp(causal, tokenizer, settings, memory.to(device))


def load_encoder(folder: Path, tokenizer, **kwargs):
    """`LLM2Comp.from_pretrained(folder)` with the check's tokenizer: transformers 5's AutoTokenizer
    rebuilds a folder's tokenizer as the model type's own class (Qwen2Tokenizer for a qwen2
    config.json, which turns the word-level vocabulary into empty ids), so it is replaced when it
    does not tokenize as the in-process one."""
    from llm2comp import LLM2Comp

    model = LLM2Comp.from_pretrained(folder, **kwargs)
    probe = " ".join(words()[:5])
    if model.tokenizer(probe, add_special_tokens=False)["input_ids"] != \
            tokenizer(probe, add_special_tokens=False)["input_ids"]:
        model.tokenizer = tokenizer
    return model


def randomize_lora(model, seed: int = 1, scale: float = 0.05) -> None:
    """Non-zero LoRA weights so that the adapter changes the outputs. The same as tests/conftest.py's
    helper, kept here on purpose: this script runs on a bare GPU image from `src/` alone, without the
    tests package or pytest."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def relative_error(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def grads_of(model) -> dict:
    return {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}


def grad_difference(a: dict, b: dict) -> float:
    """||a - b|| / ||a|| over every parameter that has a gradient in either (missing = all differs)."""
    if set(a) != set(b):
        return math.inf
    num = math.fsum(float((a[n] - b[n]).pow(2).sum()) for n in a)
    den = math.fsum(float(a[n].pow(2).sum()) for n in a)
    return math.sqrt(num / max(den, 1e-30))


# ------------------------------------------------------------------------------------ the report
class Report:
    """Every check: section, name, passed (True / False / None = informational), numbers, error."""

    def __init__(self):
        self.checks: list[dict] = []
        self.env: dict = {}

    def add(self, section: str, name: str, passed, numbers: dict | None = None, target: str = "", error: str = ""):
        row = {"section": section, "name": name, "passed": passed, "numbers": numbers or {}, "target": target,
               "error": error}
        self.checks.append(row)
        status = {True: "ok", False: "FAILED", None: "info"}[passed]
        print(f"[{status}] {section}: {name} {json.dumps(row['numbers'])[:300]} {error[:300]}", flush=True)
        return row

    @contextlib.contextmanager
    def section(self, section: str, name: str, target: str = ""):
        """Runs the block; an exception becomes a failed check with its error."""
        started = time.perf_counter()
        try:
            yield
        except Exception as error:  # noqa: BLE001 - every failure is reported, the run goes on
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            self.add(section, name, False, {"seconds": round(time.perf_counter() - started, 2)}, target,
                     error=detail.splitlines()[0][:500])
            traceback.print_exc()

    def markdown(self) -> str:
        rows = []
        for c in self.checks:
            result = {True: "pass", False: "**FAIL**", None: "measured"}[c["passed"]]
            numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in c["numbers"].items())
            if c["error"]:
                numbers = (numbers + "; " if numbers else "") + "error: " + c["error"].replace("|", "/")
            rows.append([c["section"], c["name"], result, numbers, c["target"]])
        return harness.markdown_table(["section", "check", "result", "numbers", "target"], rows)


def _fmt(value) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


# ------------------------------------------------------------------------------------ correctness
def check_embeddings(report: Report, arch: str, folder: Path, tokenizer, device: str, rng: random.Random) -> None:
    import numpy as np

    texts = make_texts(rng, 12, 3, 40)
    with report.section(arch, "fp32 embeddings: device == CPU", f"max rel. error <= {TOL_FP32:g}"):
        cpu = load_encoder(folder, tokenizer, num_memory_tokens=4, max_length=64).encode(texts, batch_size=4)
        spread = float(np.std(cpu, axis=0).mean())  # texts must get different embeddings for the check to mean anything
        model = load_encoder(folder, tokenizer, num_memory_tokens=4, max_length=64, device=device)
        on_device = model.encode(texts, batch_size=4)
        error = relative_error(cpu, on_device)
        report.add(arch, "fp32 embeddings: device == CPU", error <= TOL_FP32 and spread > 1e-3,
                   {"max_rel_error": error, "spread_across_texts": spread}, f"<= {TOL_FP32:g}; texts differ")
    with report.section(arch, "batch composition invariance (device)", f"max rel. error <= {TOL_FP32:g}"):
        alone = np.stack([model.encode([t], batch_size=1)[0] for t in texts])
        shuffled = list(range(len(texts)))
        rng.shuffle(shuffled)
        mixed = model.encode([texts[i] for i in shuffled], batch_size=len(texts))
        mixed = mixed[np.argsort(shuffled)]
        error = relative_error(alone, mixed)
        report.add(arch, "batch composition invariance (device)", error <= TOL_FP32, {"max_rel_error": error},
                   f"<= {TOL_FP32:g}")
    with report.section(arch, "bf16 close to fp32 (device)", f"min cosine >= {COS_BF16}"):
        half = load_encoder(folder, tokenizer, num_memory_tokens=4, max_length=64, device=device,
                            dtype="bfloat16").encode(texts, batch_size=4)
        a, b = np.asarray(on_device, dtype=np.float64), np.asarray(half, dtype=np.float64)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        report.add(arch, "bf16 close to fp32 (device)", float(cosine.min()) >= COS_BF16,
                   {"min_cosine": float(cosine.min()), "dtype_out": str(half.dtype)}, f">= {COS_BF16}")


def trained_pair(folder: Path, tokenizer, device: str, lora_dropout: float = 0.0):
    """The same LoRA-adapted tiny model (non-zero adapter) on CPU and on `device`, in train mode."""
    from llm2comp import LoraSettings

    cpu = load_encoder(folder, tokenizer, num_memory_tokens=4, max_length=64)
    cpu.add_lora(LoraSettings(r=4, alpha=8, dropout=lora_dropout))
    randomize_lora(cpu.model)
    cpu.memory.weight.requires_grad_(True)
    moved = copy.deepcopy(cpu).to(device)
    return cpu.train(), moved.train()


def stage_batches(model, rng: random.Random) -> dict:
    from llm2comp.data.compression_examples import CompressionExample

    texts = make_texts(rng, 6, 24, 40)
    ids = model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    examples = [CompressionExample(r[: len(r) // 2], r[len(r) // 2:], r) for r in ids]
    sentences = model.tokenize(make_texts(rng, 6, 4, 20))[0]
    triple = [model.tokenize(make_texts(rng, 6, lo, hi))[0] for lo, hi in ((3, 10), (10, 30), (10, 30))]
    return {"examples": examples, "sentences": sentences, "triple": triple}


def stage_losses(model, batches) -> dict:
    from llm2comp.losses.compression import CompressionObjective
    from llm2comp.losses.info_nce import InfoNCE

    return {"pretrain_kl": float(CompressionObjective(model, "kl")(batches["examples"])),
            "unsupervised_simcse": float(InfoNCE(model)((batches["sentences"], batches["sentences"]))),
            "supervised_infonce": float(InfoNCE(model)(batches["triple"]))}


def check_training_maths(report: Report, arch: str, folder: Path, tokenizer, device: str, rng: random.Random,
                         checkpointing: bool) -> None:
    import torch

    from llm2comp.losses.cached_info_nce import CachedInfoNCE
    from llm2comp.losses.compression import CompressionObjective
    from llm2comp.losses.info_nce import InfoNCE

    cpu, model = trained_pair(folder, tokenizer, device)
    batches = stage_batches(cpu, rng)
    with report.section(arch, "first-step losses: device == CPU (fp32, in-process)", f"rel. <= {TOL_FP32:g}"):
        a, b = stage_losses(cpu, batches), stage_losses(model, batches)
        errors = {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a}
        report.add(arch, "first-step losses: device == CPU (fp32, in-process)",
                   max(errors.values()) <= TOL_FP32, {**{f"{k}_cpu": v for k, v in a.items()},
                                                      "max_rel_error": max(errors.values())}, f"<= {TOL_FP32:g}")
    with report.section(arch, "GradCache == InfoNCE (device)", f"loss and grads rel. <= {TOL_FP32:g}"):
        model.zero_grad(set_to_none=True)
        plain_loss = InfoNCE(model)(batches["triple"])
        plain_loss.backward()
        plain = float(plain_loss)
        plain_grads = grads_of(model)
        model.zero_grad(set_to_none=True)
        cached_loss = CachedInfoNCE(model, chunk_size=2)(batches["triple"])
        cached_loss.backward()
        cached = float(cached_loss)
        error = max(abs(plain - cached) / abs(plain), grad_difference(plain_grads, grads_of(model)))
        report.add(arch, "GradCache == InfoNCE (device)", error <= TOL_FP32,
                   {"loss": plain, "max_rel_error": error, "chunk_size": 2}, f"<= {TOL_FP32:g}")
    if not checkpointing:
        return
    checkpointed = copy.deepcopy(model)
    enable_gradient_checkpointing(checkpointed)
    for name, run in (("stage 1 KL", lambda m: CompressionObjective(m, "kl")(batches["examples"]).backward()),
                      ("stage 3 GradCache", lambda m: CachedInfoNCE(m, chunk_size=2)(batches["triple"]).backward())):
        title = f"gradient checkpointing: same gradients, {name}"
        with report.section(arch, title, "rel. <= 1e-5"):
            grads = []
            for m in (model, checkpointed):
                m.zero_grad(set_to_none=True)
                torch.manual_seed(0)
                run(m)
                grads.append(grads_of(m))
            error = grad_difference(*grads)
            report.add(arch, title, error <= 1e-5, {"rel_error": error}, "<= 1e-5")


# ------------------------------------------------------------------------------------ recipes (subprocess)
def write_recipe_inputs(folder: Path, model_dir: Path) -> Path:
    rng = random.Random(0)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_texts(rng, 24, 30, 50)) + "\n")
    sentences = folder / "sentences.txt"
    sentences.write_text("\n".join(make_texts(rng, 24, 5, 15)) + "\n")
    pairs = folder / "pairs.jsonl"
    with pairs.open("w") as out:
        for i in range(24):
            query, positive, negative = make_texts(rng, 1, 3, 8)[0], *make_texts(rng, 2, 10, 25)
            out.write(json.dumps({"query": f"{query} {i}", "positive": positive, "negative": negative}) + "\n")
    config = folder / "pipeline.yaml"
    config.write_text(f"""model: {model_dir}
output_dir: OUTPUT
num_memory_tokens: 4
max_length: 64
dtype: float32
lora: {{r: 4, alpha: 8, dropout: 0.0}}
seed: 0
save_every: 0
warmup_steps: 0
log_every: 1
max_steps: 2
batch_size: 4
stages:
  pretrain: {{objective: kl, data: {{type: text, path: {corpus}}}, max_tokens: 58, lr: 5.0e-3}}
  unsupervised: {{data: {{type: text, path: {sentences}}}, lr: 1.0e-3}}
  supervised: {{data: {{type: pairs, path: {pairs}}}, query_max_length: 16, document_max_length: 32,
               cache_chunk_size: 2, lr: 1.0e-3}}
""")
    return config


def recipe_worker(config_path: str, output_dir: str, out: str) -> None:
    """Runs the pipeline (every stage, 2 steps) and writes losses and each stage's embeddings."""
    import logging

    import numpy as np
    import torch

    logging.getLogger("llm2comp").setLevel(logging.WARNING)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    from llm2comp import LLM2Comp
    from llm2comp.recipes.pipeline import load_pipeline, run_pipeline

    configs = load_pipeline(config_path, ["--output_dir", output_dir])
    run_pipeline(configs, resume=False)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    probes = make_texts(random.Random(5), 6, 4, 30)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {"device": device}
    for cfg in configs:
        rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
        model = LLM2Comp.from_pretrained(Path(cfg.output_dir) / "model", device=device)
        result[cfg.stage] = {"losses": [r["loss"] for r in rows],
                             "embeddings": np.asarray(model.encode(probes), dtype=float).tolist()}
    Path(out).write_text(json.dumps(result))


def run_recipes(config: Path, work: Path, variant: str) -> dict:
    """variant: 'cpu' (CUDA hidden), 'device' (whatever the process sees) or 'fsdp' (1-process FSDP)."""
    out, output_dir = work / f"recipes-{variant}.json", work / f"run-{variant}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, str(Path(__file__).resolve())]
    if variant == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if variant == "fsdp":
        env.update({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
                    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
                    "FSDP_TRANSFORMER_CLS_TO_WRAP": DECODER_LAYERS["llama"], "FSDP_USE_ORIG_PARAMS": "true",
                    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT", "FSDP_SYNC_MODULE_STATES": "true"})
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
                   str(harness.free_port()), str(Path(__file__).resolve())]
    command += ["--worker", "recipes", "--worker-config", str(config), "--worker-output", str(output_dir),
                "--out", str(out)]
    return harness.run_child(command, f"{variant} pipeline", env=env, timeout=420, result_file=out)


def check_recipes(report: Report, work: Path, model_dir: Path, cuda: bool) -> None:
    config = write_recipe_inputs(work, model_dir)
    runs = {}
    for variant in ("cpu", "device") if cuda else ("cpu",):
        with report.section("recipes", f"pipeline, 3 stages x 2 steps ({variant})"):
            runs[variant] = run_recipes(config, work, variant)
    if "cpu" in runs:
        other = runs.get("device", runs["cpu"])
        note = "" if cuda else " (no CUDA: CPU against itself)"
        for stage in ("pretrain", "unsupervised", "supervised"):
            a, b = runs["cpu"][stage]["losses"], other[stage]["losses"]
            error = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))
            report.add("recipes", f"{stage}: losses of steps 1-2, device == CPU{note}", error <= TOL_FP32,
                       {"cpu": a, "device": b, "max_rel_error": error}, f"<= {TOL_FP32:g}")
    if not cuda:
        report.add("recipes", "FSDP (1 process) step per stage", None, {"skipped": "needs CUDA"})
        return
    with report.section("recipes", "FSDP (1 process): pipeline runs", "completes"):
        runs["fsdp"] = run_recipes(config, work, "fsdp")
    if "fsdp" in runs and "device" in runs:
        for stage in ("pretrain", "unsupervised", "supervised"):
            plain, sharded = runs["device"][stage], runs["fsdp"][stage]
            error = relative_error(plain["embeddings"], sharded["embeddings"])
            loss_error = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(plain["losses"], sharded["losses"]))
            report.add("recipes", f"{stage}: FSDP model folder loads and equals non-FSDP",
                       max(error, loss_error) <= 1e-3, {"embedding_max_rel_error": error,
                                                        "loss_max_rel_error": loss_error}, "<= 1e-3")


# ------------------------------------------------------------------------------------ speed
def sdpa_ops(fn) -> list[str]:
    """The aten scaled-dot-product ops `fn()` ran (the kernel SDPA chose)."""
    from torch.profiler import ProfilerActivity, profile

    kernels = ("_efficient_attention", "_flash_attention", "_cudnn_attention", "_scaled_dot_product_attention_math")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sorted({e.key for e in prof.key_averages()
                   if "scaled_dot_product" in e.key and any(kernel in e.key for kernel in kernels)})


def peak_memory(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def plan_for(config, stage: str, **values) -> dict:
    from llm2comp.planning import Hardware, plan_stage, shape_from_config
    from llm2comp.recipes.stage_config import stage_config as StageConfig

    split = values.pop("split", None)
    device = values.pop("device", "cuda")
    cfg = StageConfig(stage=stage, model="random-init", **values)
    return plan_stage(cfg, shape_from_config(config), Hardware(device="cuda" if device.startswith("cuda") else "cpu"),
                      split=split)


def stage1_speed(report: Report, shape: dict, encoder_config, tokenizer, device: str, rate: float) -> None:
    import torch

    from llm2comp import LoraSettings
    from llm2comp.data.compression_examples import CompressionExample
    from llm2comp.losses.compression import CompressionObjective

    dtype, batch, k, text = shape["dtype"], shape["batch"], shape["k"], shape["text_tokens"]
    context = text // 2
    lora = {"r": 16, "alpha": 32, "dropout": 0.05}
    model = in_memory_encoder(encoder_config, tokenizer, device, dtype, k, text + k + 1)
    model.add_lora(LoraSettings(**lora))
    model.memory.weight.requires_grad_(True)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    objective = CompressionObjective(model, "kl")
    rng = random.Random(0)
    vocab = len(tokenizer)
    rows = [[rng.randrange(5, vocab) for _ in range(text)] for _ in range(batch * 8)]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                else contextlib.nullcontext())
    with torch.no_grad(), autocast:  # the kernel the encoder's attention runs (bidirectional 4-D mask)
        probe = model.collate([r[:context] for r in rows[:batch]])
        ops = sdpa_ops(functools.partial(model.memory_states, probe))
    report.add("speed", "SDPA op run by the encoder forward (bidirectional 4-D mask)", None,
               {"ops": ops or ["(none found: math composite)"]})
    for checkpointing in (False, True):
        name = f"stage-1 KL step, batch {batch} x {text} tokens, k {k}, {'with' if checkpointing else 'no'} checkpointing"
        with report.section("speed", name):
            if checkpointing:
                enable_gradient_checkpointing(model)
            else:
                model.model.gradient_checkpointing_disable()
            reset_peak(device)
            times = []
            for step in range(shape["steps"] + 1):
                chunk = rows[(step % 8) * batch:(step % 8 + 1) * batch]
                examples = [CompressionExample(r[:context], r[context:], r) for r in chunk]
                sync(device)
                started = time.perf_counter()
                with autocast:
                    loss = objective(examples)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sync(device)
                times.append(time.perf_counter() - started)
            seconds = harness.median(times, skip=1, what=name)
            plan = plan_for(encoder_config, "pretrain", num_memory_tokens=k, max_length=text + k + 1, lora=lora,
                            batch_size=batch, dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
                            mixed_precision="bf16" if device.startswith("cuda") else "no",
                            gradient_checkpointing=checkpointing, split=(context, text - context), device=device)
            tokens = sum(p["tokens"] for p in plan["passes"])
            mfu = plan["flops_per_step"]["model_per_device"] / seconds / rate
            peak = peak_memory(device)
            estimate = plan["memory_bytes"]["total_checkpointed" if checkpointing else "total_full"] / 2**30
            numbers = {"s_per_step": seconds, "tokens_per_s": tokens / seconds, "mfu": mfu,
                       "executed_flops_util": plan["flops_per_step"]["executed_per_device"] / seconds / rate,
                       "peak_gib": peak, "plan_gib": estimate,
                       "measured_over_plan": (peak / estimate) if peak else None, "loss": float(loss)}
            target = "MFU >= 0.40; peak <= 80 GiB" if checkpointing else "MFU >= 0.40"
            report.add("speed", name, None, numbers, target)
    del model, optimizer, objective


def sdpa_mask_speed(report: Report, shape: dict, device: str) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from llm2comp.models.attention import model_attention_mask

    batch, heads, width, head_dim = shape["batch"], shape["heads"], shape["text_tokens"] + shape["k"] + 1, \
        shape["head_dim"]
    dtype = shape["dtype"]
    valid = torch.ones(batch, width, dtype=torch.long, device=device)
    valid[-1, width * 3 // 4:] = 0  # one padded row, as in a real batch
    mask = model_attention_mask(valid, "bidirectional", dtype)
    causal = torch.full((width, width), torch.finfo(dtype).min, device=device, dtype=dtype).triu(1)
    causal = causal[None, None].expand(batch, 1, width, width).contiguous()
    q, k, v = (torch.randn(batch, heads, width, head_dim, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))

    def run(**kwargs):
        out = F.scaled_dot_product_attention(q, k, v, **kwargs)
        out.sum().backward()

    def timed(repeats: int = 10, **kwargs) -> float:
        run(**kwargs)
        sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            run(**kwargs)
        sync(device)
        return (time.perf_counter() - started) / repeats

    backends = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        try:
            with sdpa_kernel(backend):
                backends[backend.name] = round(timed(3, attn_mask=mask) * 1e3, 3)
        except RuntimeError as error:
            backends[backend.name] = "refused: " + str(error).splitlines()[0][:80]
    report.add("speed", f"SDPA backends accepting the bidirectional mask (fwd+bwd ms, {batch}x{heads}x{width}x{head_dim})",
               None, backends)
    default_ops = sdpa_ops(lambda: run(attn_mask=mask))
    numbers = {"bidirectional_mask_ms": timed(attn_mask=mask) * 1e3, "causal_mask_ms": timed(attn_mask=causal) * 1e3,
               "is_causal_no_mask_ms": timed(is_causal=True) * 1e3, "default_ops": default_ops}
    numbers["bidirectional_over_is_causal"] = numbers["bidirectional_mask_ms"] / numbers["is_causal_no_mask_ms"]
    report.add("speed", "SDPA default kernel: bidirectional 4-D mask vs causal", None, numbers,
               "same kernel family as a causal mask")


def stage3_speed(report: Report, shape: dict, encoder_config, tokenizer, device: str, rate: float) -> None:
    import torch

    from llm2comp import LoraSettings
    from llm2comp.losses.cached_info_nce import CachedInfoNCE

    batch, k, chunk = shape["s3_batch"], shape["k"], shape["s3_chunk"]
    q_len, d_len = shape["s3_query"], shape["s3_doc"]
    name = f"stage-3 GradCache step, {batch} x (query {q_len}, positive {d_len}, negative {d_len}), chunk {chunk}"
    with report.section("speed", name):
        lora = {"r": 16, "alpha": 32, "dropout": 0.05}
        model = in_memory_encoder(encoder_config, tokenizer, device, shape["dtype"], k, d_len)
        model.add_lora(LoraSettings(**lora))
        model.memory.weight.requires_grad_(True)
        enable_gradient_checkpointing(model)
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        rng = random.Random(1)
        vocab = len(tokenizer)

        def texts(n, length):
            return [[rng.randrange(5, vocab) for _ in range(length - 1 - k)] for _ in range(n)]

        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                    else contextlib.nullcontext())
        loss = CachedInfoNCE(model, chunk_size=chunk)
        with autocast:  # warm-up at one chunk
            warm_up = loss((texts(chunk, q_len), texts(chunk, d_len), texts(chunk, d_len)))
        warm_up.backward()
        optimizer.zero_grad(set_to_none=True)
        reset_peak(device)
        groups = (texts(batch, q_len), texts(batch, d_len), texts(batch, d_len))
        sync(device)
        started = time.perf_counter()
        with autocast:
            step_loss = loss(groups)
        step_loss.backward()  # GradCache's chunk re-embeddings run here, under the forward's autocast
        value = float(step_loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        seconds = time.perf_counter() - started
        plan = plan_for(encoder_config, "supervised", num_memory_tokens=k, max_length=d_len, lora=lora,
                        batch_size=batch, query_max_length=q_len, document_max_length=d_len, cache_chunk_size=chunk,
                        dtype="bfloat16" if shape["dtype"] == torch.bfloat16 else "float32",
                        mixed_precision="bf16" if device.startswith("cuda") else "no", gradient_checkpointing=True,
                        data={"type": "wiki_demo"}, device=device)
        tokens = batch * (q_len + 2 * d_len)
        peak = peak_memory(device)
        estimate = plan["memory_bytes"]["total_checkpointed"] / 2**30
        report.add("speed", name, None, {
            "s_per_step": seconds, "tokens_per_s": tokens / seconds,
            "mfu": plan["flops_per_step"]["model_per_device"] / seconds / rate, "peak_gib": peak,
            "plan_gib": estimate, "measured_over_plan": (peak / estimate) if peak else None, "loss": value})
        del model, optimizer


def same_tokenizer(st, tokenizer) -> bool | None:
    """Whether sentence-transformers tokenizes as the check does (else its tokens/s counts other tokens)."""
    probe = " ".join(words()[:5])
    try:
        return st.tokenizer(probe)["input_ids"][-5:] == tokenizer(probe)["input_ids"][-5:]
    except Exception:  # noqa: BLE001 - informational only
        return None


def encode_speed(report: Report, shape: dict, work: Path, tokenizer, device: str) -> None:
    import warnings

    import torch

    config = llama_config(**shape["encode_model"])
    folder = save_backbone(config, work / "encode-model", tokenizer, dtype=shape["dtype"], device=device)
    rng = random.Random(2)
    texts = make_texts(rng, shape["encode_texts"], *shape["encode_words"])
    text_tokens = sum(len(t.split()) for t in texts)
    batch_size = 32
    results = {}

    def timed(fn) -> float:
        fn(texts[:batch_size])
        sync(device)
        started = time.perf_counter()
        fn(texts)
        sync(device)
        return time.perf_counter() - started

    dtype_name = "bfloat16" if shape["dtype"] == torch.bfloat16 else "float32"
    with report.section("speed", "encode: LLM2Comp.encode"):
        ours = load_encoder(folder, tokenizer, dtype=dtype_name, device=device, max_length=512)
        results["llm2comp"] = timed(functools.partial(ours.encode, batch_size=batch_size))
        del ours
    with report.section("speed", "encode: sentence-transformers mean pooling"):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

        transformer = Transformer(str(folder), model_kwargs={"dtype": shape["dtype"]},
                                  modality_config={"text": {"method": "forward",
                                                            "method_output_name": "last_hidden_state"}},
                                  module_output_name="token_embeddings")
        st = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")],
                                 device=device)
        same_tokens = same_tokenizer(st, tokenizer)
        results["sentence_transformers"] = timed(functools.partial(st.encode, batch_size=batch_size))
        del st, transformer
    with report.section("speed", "encode: bare transformers forward + mean pooling"):
        from transformers import AutoModel

        bare = AutoModel.from_pretrained(folder, dtype=shape["dtype"], attn_implementation="sdpa").to(device).eval()

        def forward(batch_texts, bare=bare):
            order = sorted(range(len(batch_texts)), key=lambda i: len(batch_texts[i]))
            out = []
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    chunk = [batch_texts[i] for i in order[start:start + batch_size]]
                    inputs = tokenizer(chunk, padding=True, return_tensors="pt").to(device)
                    hidden = bare(**inputs).last_hidden_state
                    weights = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    out.append(((hidden * weights).sum(1) / weights.sum(1)).float().cpu())
            return out

        results["bare_transformers"] = timed(forward)
        del bare
    numbers = {f"{name}_tokens_per_s": text_tokens / s for name, s in results.items()}
    if "llm2comp" in results and "sentence_transformers" in results:
        numbers["llm2comp_over_st"] = results["sentence_transformers"] / results["llm2comp"]
    if "llm2comp" in results and "bare_transformers" in results:
        numbers["llm2comp_over_bare"] = results["bare_transformers"] / results["llm2comp"]
    numbers.update({"texts": len(texts), "text_tokens": text_tokens, "batch_size": batch_size,
                    "st_same_tokenizer": locals().get("same_tokens")})
    report.add("speed", f"encode tokens/s, {config.num_hidden_layers}-layer h{config.hidden_size} model", None,
               numbers, ">= 1.0x sentence-transformers")


# ------------------------------------------------------------------------------------ main
def shapes(cpu_tiny: bool) -> dict:
    import torch

    if cpu_tiny:
        return {"dtype": torch.float32, "model": dict(hidden=128, layers=2, heads=4, intermediate=256, vocab=TINY_VOCAB),
                "batch": 2, "text_tokens": 63, "k": 8, "steps": 2, "heads": 4, "head_dim": 32,
                "s3_batch": 8, "s3_query": 24, "s3_doc": 32, "s3_chunk": 4,
                "encode_model": dict(hidden=128, layers=2, heads=4, intermediate=256, vocab=TINY_VOCAB),
                "encode_texts": 48, "encode_words": (8, 48), "matmul": (torch.float32, 512, 0.5)}
    return {"dtype": torch.bfloat16, "model": dict(hidden=4096, layers=32, heads=32, intermediate=11008),
            "batch": 4, "text_tokens": 503, "k": 8, "steps": 3, "heads": 32, "head_dim": 128,
            "s3_batch": 128, "s3_query": 128, "s3_doc": 256, "s3_chunk": 32,
            "encode_model": dict(hidden=2048, layers=16, heads=16, intermediate=5504),
            "encode_texts": 1024, "encode_words": (16, 256), "matmul": (torch.bfloat16, 8192, 3.0)}


def environment(device: str) -> dict:
    import importlib.metadata as metadata
    import re

    import torch

    env = {"python": sys.version.split()[0], "device": device,
           "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"}
    for package in ("torch", "transformers", "peft", "accelerate", "sentence-transformers"):
        try:
            env[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env[package] = None
    pyproject = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"transformers>=([0-9.]+)', pyproject)
    env["pyproject_transformers_lower_bound"] = match.group(1) if match else None
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json", help="where to write the JSON report")
    parser.add_argument("--cpu-tiny", action="store_true", help="CPU, tiny models and a tiny speed stand-in (~1 min)")
    parser.add_argument("--skip-speed", action="store_true", help="correctness only")
    parser.add_argument("--worker", choices=["recipes"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "recipes":
        recipe_worker(args.worker_config, args.worker_output, args.out)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    cuda = torch.cuda.is_available() and not args.cpu_tiny
    if not cuda and not args.cpu_tiny:
        print("no CUDA device: run with --cpu-tiny for the CPU mode", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 comparisons mean fp32
    torch.backends.cudnn.allow_tf32 = False
    device = "cuda" if cuda else "cpu"
    report = Report()
    report.env = environment(device)
    started = time.perf_counter()
    tokenizer = build_tokenizer()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        work = Path(tmp)
        rng = random.Random(0)
        folders = {arch: save_backbone(tiny_config(arch), work / arch, tokenizer) for arch in ARCHES}
        for arch in ARCHES:
            check_embeddings(report, arch, folders[arch], tokenizer, device, rng)
            check_training_maths(report, arch, folders[arch], tokenizer, device, rng, checkpointing=arch == "llama")
        check_recipes(report, work, folders["llama"], cuda)
        report.env["correctness_seconds"] = round(time.perf_counter() - started, 1)
        if not args.skip_speed:
            shape = shapes(args.cpu_tiny)
            encoder_config = llama_config(**shape["model"])
            dtype, size, seconds = shape["matmul"]
            rate = harness.matmul_ceiling(size, seconds, dtype=dtype, device=device).flops
            report.add("speed", f"matmul rate ({str(dtype).replace('torch.', '')}, {size}^3)", None,
                       {"tflops": rate / 1e12})
            with report.section("speed", "stage-1 KL step"):
                stage1_speed(report, shape, encoder_config, tokenizer, device, rate)
            with report.section("speed", "SDPA kernels"):
                sdpa_mask_speed(report, shape, device)
            if cuda:
                torch.cuda.empty_cache()
            stage3_speed(report, shape, encoder_config, tokenizer, device, rate)
            if cuda:
                torch.cuda.empty_cache()
            with report.section("speed", "encode"):
                encode_speed(report, shape, work, tokenizer, device)
    report.env["seconds"] = round(time.perf_counter() - started, 1)
    table = report.markdown()
    header = (f"GPU check {time.strftime('%Y-%m-%d')} on {report.env['gpu']} (torch {report.env['torch']}, "
              f"transformers {report.env['transformers']}, peft {report.env['peft']}, accelerate "
              f"{report.env['accelerate']}, sentence-transformers {report.env['sentence-transformers']}); "
              f"{report.env['seconds']} s")
    print("\n" + header + "\n\n" + table)
    Path(args.out).write_text(json.dumps({"env": report.env, "checks": report.checks}, indent=2, default=str))
    failed = [c for c in report.checks if c["passed"] is False]
    print(f"\n{len(failed)} failed check(s); JSON: {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
