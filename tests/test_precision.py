"""Mixed precision and half-precision weights against float32, for every stage, on a tiny model.

What runs where on CPU: `mixed_precision: bf16` is real CPU autocast (accelerate's native AMP);
`mixed_precision: fp16` is *not* (accelerate enables fp16 autocast and its GradScaler only on GPUs),
so the fp16 runs here are fp16 *weights* without a scaler, and the scaler's path is checked with a
real `torch.amp.GradScaler("cpu")` put where accelerate puts its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_pre_hook

from llm2comp import LLM2Comp, LoraSettings
from llm2comp.losses.info_nce import info_nce
from llm2comp.losses.kl_continuation import kl_continuation_loss
from llm2comp.training.batches import BatchStream
from llm2comp.training.loop import warn_low_precision_trainables

from .conftest import randomize_lora

REPO = Path(__file__).resolve().parents[1]
STAGES = ("kl", "simcse", "supervised_gradcache")


@pytest.fixture(scope="module")
def fp32_runs(tiny_llama_dir, tmp_path_factory) -> dict:
    """The first steps of each stage in float32, in this process (accelerate's default "no")."""
    from .precision_runs import main

    out = tmp_path_factory.mktemp("fp32")
    threads = torch.get_num_threads()
    try:
        main(str(tiny_llama_dir), str(out), "no", "float32")
    finally:
        torch.set_num_threads(threads)
    return json.loads((out / "losses.json").read_text())



class RowsToGroups(BatchStream):
    """Batches of (query, positive, negative) rows as the (queries, positives, negatives) groups InfoNCE reads."""

    def next_batch(self):
        return tuple(map(list, zip(*super().next_batch())))

def run_in_subprocess(model_dir: Path, out: Path, mixed_precision: str, dtype: str) -> dict:
    """accelerate fixes the mixed precision once per process, so each precision gets its own."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "tests" / "precision_runs.py"), str(model_dir), str(out),
                           mixed_precision, dtype], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "losses.json").read_text())


def relative(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) / abs(y) for x, y in zip(a, b)]


@pytest.mark.parametrize("mixed_precision,dtype", [("bf16", "float32"), ("bf16", "bfloat16")],
                         ids=["bf16-autocast", "bf16-weights"])
def test_bf16_first_steps_match_fp32_for_every_stage(fp32_runs, tiny_llama_dir, tmp_path, mixed_precision, dtype):
    """Losses and gradient norms of the first 3 steps within 5% (relative) of float32, per stage.

    Why 5%: bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per operation); a 2-layer
    model rounds each activation a few dozen times and 3 optimizer steps compound the difference.
    Measured: at most 0.7% (autocast) and 2.3% (bf16 weights, SimCSE step 2). A real precision bug
    (logits in bf16 / 0.05, a lost gradient) moves the values by far more.
    """
    runs = run_in_subprocess(tiny_llama_dir, tmp_path, mixed_precision, dtype)
    assert set(runs) == set(STAGES)
    for stage in STAGES:
        for key in ("loss", "grad_norm"):
            got, want = runs[stage][key], fp32_runs[stage][key]
            assert len(got) == len(want) == 3
            assert max(relative(got, want)) < 0.05, (stage, key, got, want)


def test_fp16_weights_without_a_scaler_lose_small_gradients(fp32_runs, tiny_llama_dir, tmp_path):
    """fp16 weights with no gradient scaler (what a CPU, or a GPU with `mixed_precision: no`, runs).

    Losses agree with float32 within 1% (fp16 keeps 11 significant bits), but the KL gradient is
    small (loss ~0.004 spread over N positions x 49k logits): its entries fall below fp16's smallest
    numbers (6e-8) and vanish, so the gradient norm comes out *lower* at every step (measured 4-14%)
    -- the reason fp16 training needs the scaler (see the scaler tests below), and bf16 (float32's
    exponent range, within 0.5% above) is the recommended half precision.
    """
    runs = run_in_subprocess(tiny_llama_dir, tmp_path, "fp16", "float16")
    for stage in STAGES:
        assert max(relative(runs[stage]["loss"], fp32_runs[stage]["loss"])) < 0.01, stage
    kl, reference = runs["kl"]["grad_norm"], fp32_runs["kl"]["grad_norm"]
    assert all(got < want for got, want in zip(kl, reference)), (kl, reference)


def test_bf16_model_embeddings_are_close_to_fp32(tiny_llama_dir):
    """Cosine(bf16 embedding, fp32 embedding) >= 0.995 per text (measured >= 0.999): bf16 rounding of
    a 64-d state changes its direction by about 2^-8 per layer."""
    texts = ["river city music", "a garden in winter with a long bridge", "the planet"]
    embeddings = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=3, max_length=64, dtype=dtype)
        model.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
        randomize_lora(model.model)
        embeddings[dtype] = model.encode(texts, convert_to_tensor=True).float()
    cosine = F.cosine_similarity(embeddings[torch.float32], embeddings[torch.bfloat16], dim=-1)
    assert cosine.min() >= 0.995, cosine
    assert (embeddings[torch.float32] - embeddings[torch.bfloat16]).abs().max() > 0  # really two precisions


def test_info_nce_logits_stay_float32_under_autocast():
    """Regression: inside `accelerator.autocast()` (bf16), `q @ c.T` ran in bf16 although q and c had
    been cast to float32 -- autocast recasts matmul inputs. The loss moved by 6e-3 here."""
    torch.manual_seed(0)
    q, p, h = (torch.randn(16, 64) for _ in range(3))
    reference = info_nce(q, p, h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = info_nce(q, p, h)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference, atol=1e-6, rtol=1e-6)


def test_kl_log_softmax_runs_in_float32_under_autocast(monkeypatch):
    """The KL's log-softmax is float32 even for bf16 logits inside autocast (autocast must not downcast it)."""
    seen = []
    real = F.log_softmax

    def spy(x, *args, **kwargs):
        seen.append(x.dtype)
        out = real(x, *args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(F, "log_softmax", spy)
    torch.manual_seed(0)
    teacher, student = (torch.randn(6, 100).bfloat16() for _ in range(2))
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    reference = kl_continuation_loss(teacher.float(), student.float(), index, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = kl_continuation_loss(teacher, student, index, 2)
    assert seen and set(seen) == {torch.float32}
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference, atol=1e-7, rtol=1e-6)


def test_trainable_weights_stay_float32_with_bf16_backbone_weights(tiny_llama_dir, tmp_path):
    """`dtype: bfloat16`: the backbone is bf16, the LoRA and the memory vectors that AdamW updates are
    float32 (a bf16 weight drops updates below 2^-8 of itself); trained input embeddings would be bf16,
    and the loop names them in a warning."""
    from llm2comp.recipes.common import load_encoder

    from .training_helpers import tiny_stage_config

    cfg = tiny_stage_config(tiny_llama_dir, tmp_path / "unused", tmp_path / "run", dtype="bfloat16")
    model = load_encoder(cfg)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for _, p in trainable)
    assert {p.dtype for p in frozen} == {torch.bfloat16}
    assert warn_low_precision_trainables(trainable) == []
    cfg = tiny_stage_config(tiny_llama_dir, tmp_path / "unused", tmp_path / "run", dtype="bfloat16",
                            train_input_embeddings=True)
    model = load_encoder(cfg)
    low = warn_low_precision_trainables([(n, p) for n, p in model.named_parameters() if p.requires_grad])
    assert low and all("embed_tokens" in name for name in low)


# ------------------------------------------------------------------ the gradient scaler's path
SCALE = 2.0 ** 12


def _stage_run(stage: str, model_dir: Path, tmp_path: Path, *, scaler: bool, bypass: bool = False) -> list[list]:
    """Two steps of `stage` through `train_loop`; the gradients the optimizer sees at each step.

    scaler: put a real `torch.amp.GradScaler("cpu")` where accelerate puts its fp16 scaler (on GPUs);
    every backward must then be scaled by it, and its `step` unscales before AdamW reads the grads.
    bypass: backpropagate with a plain `loss.backward()` instead of `accelerator.backward` (the negative
    control).
    """
    from types import SimpleNamespace

    from accelerate import Accelerator

    from llm2comp.data.compression_examples import make_example
    from llm2comp.losses.compression import CompressionObjective
    from llm2comp.losses.info_nce import SimCSE
    from llm2comp.recipes.common import contrastive_loss
    from llm2comp.training.loop import LoopSettings, train_loop

    torch.manual_seed(0)
    encoder = LLM2Comp.from_pretrained(model_dir, num_memory_tokens=2, max_length=64)
    encoder.add_lora(LoraSettings(r=4, alpha=8, dropout=0.1))
    ids = [[(7 * i + 13 * j) % 3000 + 100 for j in range(22 + i % 5)] for i in range(8)]
    accelerator = Accelerator()
    if scaler:
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, growth_interval=10 ** 6)
    if stage == "kl":
        objective = CompressionObjective(encoder, "kl")
        items = [make_example(row, "kl", 0, i) for i, row in enumerate(ids)]
    else:
        cfg = SimpleNamespace(cache_chunk_size=0 if stage == "simcse" else 2, temperature=0.05)
        items = ids if stage.startswith("simcse") else [(row[:6], row[6:], row[3:12]) for row in ids]
        objective = contrastive_loss(cfg, encoder)
        objective = SimCSE(objective) if stage.startswith("simcse") else objective
    if bypass:  # a backward that never reaches accelerate's scaler
        accelerator.backward = lambda loss, **kwargs: loss.backward(**kwargs)

    seen = []

    def record(optimizer, args, kwargs):
        seen.append([p.grad.clone() for group in optimizer.param_groups for p in group["params"]])

    handle = register_optimizer_step_pre_hook(record)
    try:
        stream = (RowsToGroups if stage.startswith("supervised") else BatchStream)(items, 4, seed=0)
        train_loop(objective, stream, LoopSettings(max_steps=2, max_grad_norm=None,
                                                                          progress=False, lr=1e-3),
                   accelerator=accelerator, output_dir=tmp_path / f"{stage}-{scaler}-{bypass}",
                   config={"stage": stage})
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("stage", ["kl", "simcse", "simcse_gradcache", "supervised_gradcache"])
def test_every_backward_goes_through_the_accelerator_scaler(stage, tiny_llama_dir, tmp_path):
    """fp16 without a loss scaler underflows (above); accelerate scales in `accelerator.backward` and
    unscales in the optimizer's step. With a real GradScaler in accelerate's slot, the gradients AdamW
    sees equal the unscaled run's (a power-of-two scale is exact), for every objective: stage 1, SimCSE,
    and GradCache, whose chunk backwards run from a hook that receives the scaled gradient of its loss
    (had a chunk backward missed the scale, AdamW would get some gradients 2^12 too small, which the
    equality catches). Negative control: a backward that skips `accelerator.backward` never reaches the
    scaler, and torch's GradScaler refuses to step."""
    plain = _stage_run(stage, tiny_llama_dir, tmp_path, scaler=False)
    scaled = _stage_run(stage, tiny_llama_dir, tmp_path, scaler=True)
    assert len(plain) == len(scaled) == 2
    for step_plain, step_scaled in zip(plain, scaled):
        for a, b in zip(step_plain, step_scaled):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-9)
    with pytest.raises(AssertionError, match="did not use scaler.scale"):  # torch's own check
        _stage_run(stage, tiny_llama_dir, tmp_path, scaler=True, bypass=True)


def test_clipping_goes_through_the_accelerator_with_the_prepared_parameters(tiny_llama_dir, tmp_path, monkeypatch):
    """`accelerator.clip_grad_norm_` (which unscales fp16 gradients first) gets the prepared model's full
    parameter list at every step: accelerate's FSDP clips sharded gradients only when the list is exactly
    `model.parameters()`, and FSDP replaces the parameters in `prepare` (old code: the trainable
    parameters captured before `prepare`)."""
    from accelerate import Accelerator

    from llm2comp.data.compression_examples import make_example
    from llm2comp.losses.compression import CompressionObjective
    from llm2comp.training.loop import LoopSettings, train_loop

    encoder = LLM2Comp.from_pretrained(tiny_llama_dir, num_memory_tokens=2, max_length=64)
    encoder.add_lora(LoraSettings(r=4, alpha=8, dropout=0.0))
    accelerator = Accelerator()
    calls = []
    real_prepare, real_clip = accelerator.prepare, accelerator.clip_grad_norm_

    def prepare(*things):
        prepared = real_prepare(*things)
        calls.append(("prepared", list(prepared[0].parameters())))
        return prepared

    def clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        calls.append(("clip", parameters))
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(accelerator, "prepare", prepare)
    monkeypatch.setattr(accelerator, "clip_grad_norm_", clip)
    ids = [[(5 * i + 11 * j) % 3000 + 100 for j in range(24)] for i in range(8)]
    items = [make_example(row, "kl", 0, i) for i, row in enumerate(ids)]
    train_loop(CompressionObjective(encoder, "kl"), BatchStream(items, 4), LoopSettings(max_steps=3, progress=False),
               accelerator=accelerator, output_dir=tmp_path / "run", config={"stage": "toy"})
    (kind, prepared), *clips = calls
    assert kind == "prepared" and [k for k, _ in clips] == ["clip"] * 3
    for _, parameters in clips:
        assert len(parameters) == len(prepared) and all(a is b for a, b in zip(parameters, prepared))
