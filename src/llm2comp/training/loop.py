"""The training loop every stage shares, on HF Accelerate (one CPU, one GPU, DDP, FSDP, DeepSpeed).

It owns: AdamW, linear warm-up then decay, gradient accumulation, clipping, mixed precision,
progress bar (loss / lr / tokens per second), a JSONL metrics log and a loss-curve PNG, atomic
checkpoints every N steps, resume (only with the settings the checkpoint was made with, see
resume.py), and a stop on a non-finite loss that keeps the last good checkpoint. What a step
computes is the stage's business, through one contract for every objective (an nn.Module):

    loss = objective(batch)                                  # each micro-batch
    accelerator.backward(loss * (1 / grad_accum))            # accelerate's GradScaler, DeepSpeed, ...

GradCache (losses/cached_info_nce.py) obeys it too: its chunk backwards run from a hook on the
returned loss, inside this backward, with the 1/grad_accum (and GradScaler) factor as its gradient.

What is prepared (`trained_module`): a stage-1 objective (one forward, one backward) is prepared
whole, so DDP wraps the objective. A contrastive objective forwards its encoder several times per
step (one pass per text group or chunk; GradCache re-embeds chunks inside the backward, one backward
each): it has a `forward_through` method, and the loop prepares its `encoder` alone and hands the
wrapper back, so that every pass is a forward of the DDP wrapper (what arms DDP's reducer, once per
backward; see losses/cached_info_nce.py). The trainable parameters, their checkpoint names and the
clipping are then the encoder's. The backward runs inside the micro-step's `no_sync` block, so that
forwards inside the backward (GradCache's) see the same sync decision as the micro-step's forward,
and outside `accelerator.autocast()`, which wraps the forward only (as torch advises: backward ops
run in the precision autocast chose for their forward ops; under autocast, the InfoNCE logits'
backward matmuls would run in bf16/fp16). GradCache re-enters the forward's autocast state itself
for the chunks it re-embeds in the backward.

Sharded training (FSDP, DeepSpeed) goes through accelerate only, and every path is safe for it by
construction: the parameters clipped are the prepared model's (FSDP replaces them with shards),
checkpoints gather the full trainable tensors and optimizer state on every process
(training/sharded_state.py) before rank 0 writes them, and a resumed optimizer state is loaded after
`prepare`, when torch can shard it. A run whose accelerate config asks for FSDP or DeepSpeed but
whose accelerator runs something else (accelerate falls back to plain data parallelism on CPU)
stops before its first step (`check_distributed_type`).

Several processes stop together: the loss is averaged over processes before it is checked, so
when one rank's loss is not finite every rank sees it and raises at the same step. Every rank
always runs its backward (a NaN gradient is never applied), so no rank is left waiting in a
gradient all-reduce that another skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from ..errors import InvalidSetting, LLM2CompError, ResumeMismatch
from ..typed_settings import setting
from .batches import BatchStream
from .checkpoint import (
    list_checkpoints,
    load_checkpoint,
    read_checkpoint_meta,
    read_optimizer_state,
    remove_stale_checkpoints,
    save_checkpoint,
)
from .resume import WAY_OUT, check_resume
from .sharded_state import (
    full_optimizer_state,
    full_trainable_state,
    load_optimizer_state,
    optimizer_parameter_names,
)

log = logging.getLogger("llm2comp")


class TrainingDiverged(LLM2CompError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class LoopSettings:
    """The optimisation a stage runs (flat keys of its config: `lr: 1e-4`, `max_steps: 200`, ...)."""

    max_steps: int = setting(32000, minimum=1, on_resume="harmless")  # raise it to extend a run
    lr: float = setting(1e-4, above=0)
    memory_lr: float | None = setting(None, above=0)  # a separate lr for the k memory vectors (None: lr)
    weight_decay: float = setting(1e-5, minimum=0)
    warmup_steps: int = setting(0, minimum=0)
    grad_accum: int = setting(1, minimum=1)
    max_grad_norm: float | None = setting(2.0, above=0)
    save_every: int = setting(0, minimum=0, on_resume="harmless")  # 0: only at the end
    keep_last: int = setting(3, minimum=0, on_resume="harmless")  # 0: keep every checkpoint
    log_every: int = setting(1, minimum=1, on_resume="harmless")
    progress: bool = setting(True, config=False)
    # parameter-name suffix -> its own lr (`memory_lr` adds "memory.weight")
    lr_by_name: dict = setting(factory=dict, config=False)


@dataclass
class LoopResult:
    step: int
    resumed_from: int | None
    history: list[dict] = field(default_factory=list)


def trained_module(objective: torch.nn.Module) -> torch.nn.Module:
    """The module the loop optimises, prepares and checkpoints: the objective's `encoder` for an objective
    with `forward_through` (the contrastive ones, module docstring), else the objective itself."""
    return objective.encoder if callable(getattr(objective, "forward_through", None)) else objective


def _as_float(value) -> float:
    """A norm as a float; under FSDP torch returns it as a DTensor (`full_tensor()` is its public value)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def _read_history(path: Path, up_to: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to]


def _write_history(path: Path, rows: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in rows).encode())


def plot_loss_curve(rows: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a nicety; the JSONL log holds the numbers
        return
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot([r["step"] for r in rows], [r["loss"] for r in rows], linewidth=1)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parameter_groups(named: list, settings: LoopSettings) -> list[dict]:
    """AdamW groups: parameters whose name ends with a key of `lr_by_name` get that lr, the rest `lr`.

    The schedule (warm-up, decay) scales every group's lr by the same factor.
    """
    groups: dict[float, list] = {}
    by_name = {**settings.lr_by_name, **({"memory.weight": settings.memory_lr} if settings.memory_lr else {})}
    for name, param in named:
        lr = next((v for suffix, v in by_name.items() if name.endswith(suffix)), settings.lr)
        groups.setdefault(float(lr), []).append(param)
    return [{"params": ps, "lr": lr} for lr, ps in groups.items()]


def check_resumable(checkpoint: Path, config: dict, world_size: int) -> None:
    """Raise `ResumeMismatch` unless `checkpoint` was made with `config` and `world_size` (resume.py)."""
    meta = read_checkpoint_meta(checkpoint)
    saved_world = meta.get("world_size", world_size)
    if saved_world != world_size:
        raise ResumeMismatch(f"{checkpoint} was made by {saved_world} process(es), this run has {world_size}: the "
                             f"global batch (batch_size x processes) would change. Resume with {saved_world} "
                             f"process(es); otherwise {WAY_OUT}")
    check_resume(meta.get("config", {}), config, checkpoint,
                 accept_harmless=bool(config.get("accept_resume_changes", False)))


# what `accelerate launch` sets for a config's distributed_type -> the type the accelerator must report
SHARDING_REQUESTS = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}


def check_distributed_type(accelerator, environ=None) -> None:
    """Raise `InvalidSetting` when the accelerate config asked for FSDP / DeepSpeed and did not get it.

    On a machine without GPUs (or with `use_cpu: true`) accelerate silently runs plain data
    parallelism instead (DistributedType.MULTI_CPU): every process then holds a full copy of the
    model, which is not what a user who asked for sharding planned memory for.
    """
    environ = os.environ if environ is None else environ
    got = getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type))
    for variable, wanted in SHARDING_REQUESTS.items():
        if environ.get(variable, "false").lower() in ("true", "1") and got != wanted:
            raise InvalidSetting(
                f"the accelerate config asks for {wanted} ({variable}=true) but accelerate runs {got} on "
                f"{accelerator.device}: accelerate shards only on GPUs and falls back to plain data parallelism "
                "otherwise (each process would hold the whole model). Run on GPUs, or launch without "
                f"distributed_type: {wanted} (e.g. `accelerate launch --num_processes N ...`) to train with "
                "data parallelism on purpose")


def check_deepspeed_steps(accelerator, settings: LoopSettings, config: dict) -> None:
    """Raise `InvalidSetting` for DeepSpeed with several backward passes per optimizer step.

    Under DeepSpeed, accelerate's `backward` also steps the engine's optimizer; the loop's gradient
    accumulation (`grad_accum` > 1) and GradCache (`cache_chunk_size` > 0: one backward per chunk) call it
    several times per step, so the weights would be updated after every chunk.
    """
    if getattr(accelerator.distributed_type, "value", None) != "DEEPSPEED":
        return
    chunked = int(config.get("cache_chunk_size") or 0) > 0
    if settings.grad_accum > 1 or chunked:
        what = f"grad_accum={settings.grad_accum}" if settings.grad_accum > 1 else \
            f"cache_chunk_size={config.get('cache_chunk_size')} (GradCache)"
        raise InvalidSetting(f"DeepSpeed steps its optimizer inside every backward, and {what} runs several "
                             "backward passes per step. Use FSDP (configs/accelerate_fsdp.yaml), or grad_accum: 1 "
                             "and cache_chunk_size: 0 under DeepSpeed")


def warn_low_precision_trainables(named: list) -> list[str]:
    """Log (and return) the trainable parameters stored in fp16/bf16: AdamW updates smaller than the
    weight's precision (2^-8 relative in bf16) are lost, so these should be float32 (LoRA and memory
    vectors are, even with `dtype: bfloat16`)."""
    low = [name for name, param in named if param.dtype in (torch.float16, torch.bfloat16)]
    if low:
        log.warning("%d trainable parameter(s) are stored in half precision (e.g. %s): optimizer updates below "
                    "their precision are lost; keep trainable weights in float32", len(low), low[0])
    return low


def train_loop(objective: torch.nn.Module, stream: BatchStream, settings: LoopSettings, *, accelerator,
               output_dir: str | Path, config: dict, resume: bool = True, count_tokens: Callable = len,
               callbacks: list[Callable] = ()) -> LoopResult:
    """Train `objective`'s trainable parameters for `settings.max_steps` optimizer steps.

    objective: an nn.Module, `objective(batch) -> loss` (scalar); see the module docstring.
    """
    from transformers import get_linear_schedule_with_warmup

    output_dir = Path(output_dir)
    checkpoints = output_dir / "checkpoints"
    trained = trained_module(objective)
    named = [(n, p) for n, p in trained.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters")
    warn_low_precision_trainables(named)
    check_distributed_type(accelerator)
    check_deepspeed_steps(accelerator, settings, config)
    optimizer = torch.optim.AdamW(parameter_groups(named, settings), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.max_steps)
    step, resumed_from = 0, None
    if accelerator.is_main_process:
        remove_stale_checkpoints(checkpoints)
        if not resume:  # starting over: an older run's later steps must not be resumed or kept instead
            for old in list_checkpoints(checkpoints):
                log.info("not resuming: removing %s", old)
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    existing = list_checkpoints(checkpoints) if resume else []
    if existing:
        check_resumable(existing[-1], config, accelerator.num_processes)
        meta = load_checkpoint(existing[-1], model=trained, optimizer=None, scheduler=scheduler)
        step = resumed_from = meta["step"]
        stream.restore(meta["data"])
    names = optimizer_parameter_names(trained, optimizer)
    trainable_names = {name for name, _ in named}
    model, optimizer = accelerator.prepare(trained, optimizer)
    if trained is objective:
        compute = model  # the prepared objective (DDP: one armed forward, one backward)
    else:
        objective.forward_through(model)  # every encoder pass a forward of the prepared wrapper
        compute = objective
    # after prepare (FSDP replaces the parameters by their shards: clipping the old ones would do nothing),
    # and all of them: accelerate's FSDP clips across shards only when given exactly `model.parameters()`
    params = list(model.parameters())
    if existing:  # after prepare, so that a sharded optimizer gets its own shard of the saved state
        load_optimizer_state(model, optimizer, read_optimizer_state(existing[-1]), names)
    if accelerator.is_main_process:
        log.info("training on world size %d (%s, %s)%s", accelerator.num_processes, accelerator.distributed_type,
                 accelerator.device, f"; resumed from step {resumed_from}" if resumed_from else "")
    metrics_path = output_dir / "metrics.jsonl"
    history = _read_history(metrics_path, step) if accelerator.is_main_process else []

    def checkpoint(at: int) -> None:
        accelerator.wait_for_everyone()
        weights = full_trainable_state(model, trainable_names)  # collectives: every process, before any rank-0-only branch
        optimizer_state = full_optimizer_state(model, optimizer)
        if accelerator.is_main_process:
            save_checkpoint(checkpoints, model=None, optimizer=None, weights=weights, optimizer_state=optimizer_state,
                            scheduler=scheduler, step=at, data_state=stream.state(), config=config,
                            keep_last=settings.keep_last, world_size=accelerator.num_processes)
            _write_history(metrics_path, history)
        accelerator.wait_for_everyone()

    bar = tqdm(total=settings.max_steps, initial=step, desc="train", unit="step",
               disable=not (settings.progress and accelerator.is_main_process))
    try:  # the bar's last line is written before any message about a stop (Ctrl-C, divergence)
        model.train()
        optimizer.zero_grad(set_to_none=True)  # a gradient left from before the run must not join step 1
        while step < settings.max_steps:
            started, tokens, losses = time.perf_counter(), 0, []
            for micro in range(settings.grad_accum):
                batch = stream.next_batch()
                tokens += count_tokens(batch)
                sync = accelerator.no_sync(model) if micro < settings.grad_accum - 1 else contextlib.nullcontext()
                with sync:
                    with accelerator.autocast():  # the forward only: torch advises against backward under autocast
                        micro_loss = compute(batch)
                    # always, even when not finite: other ranks wait in its all-reduce; inside `sync`: the
                    # forwards that GradCache runs in this backward must see this micro-step's sync decision
                    accelerator.backward(micro_loss * (1.0 / settings.grad_accum))
                losses.append(micro_loss.detach().float())
            loss = accelerator.reduce(torch.stack(losses).mean().to(accelerator.device), "mean").item()
            if not math.isfinite(loss):
                last = list_checkpoints(checkpoints)
                where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
                raise TrainingDiverged(f"loss became {loss} at step {step + 1}; stopping ({where}). "
                                       "Lower the learning rate or use fp32/bf16 instead of fp16.")
            grad_norm = None
            if settings.max_grad_norm:
                grad_norm = _as_float(accelerator.clip_grad_norm_(params, settings.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - started
            row = {"step": step, "loss": loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                   "tokens_per_s": tokens * accelerator.num_processes / max(elapsed, 1e-9), "seconds": elapsed}
            history.append(row)
            if step % settings.log_every == 0 or step == settings.max_steps:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:.0f}")
            bar.update(1)
            for callback in callbacks:  # before the checkpoint, so that what they log is saved with it
                callback(step, row)
            if settings.save_every and step % settings.save_every == 0 and step < settings.max_steps:
                checkpoint(step)
    finally:
        bar.close()
    checkpoint(step)
    if accelerator.is_main_process and history:
        plot_loss_curve(history, output_dir / "loss_curve.png", title=str(config.get("stage", "training")))
    return LoopResult(step=step, resumed_from=resumed_from, history=history)

