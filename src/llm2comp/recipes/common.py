"""What every stage recipe does the same way: its hold on the output folder, accelerator, model
loading, reuse, final save.

The output folder (`stage_output`, under the lock of training/run_lock.py, one run at a time):

- it must not be, lie inside, or contain the input model folder (`model:` as a local folder);
- a `metrics.jsonl` there must be llm2comp's training log (the run rewrites it); any other file of
  that name is refused, naming its first bad line;
- `model/` (and `snapshots/step-N/`) are replaced only when they are llm2comp model folders holding
  nothing else (models/saving.py); otherwise the run stops before any work;
- `--no-resume` moves a finished `model/` (and `snapshots/`) aside to `model.previous-<time>/`
  before it starts, so that an interrupted restart and a plain rerun agree: the rerun resumes the
  restart's checkpoints. An older finished model that the newest checkpoint does not match (left
  by an older version's `--no-resume`) is moved aside the same way when that checkpoint resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..atomic import ensure_writable_dir
from ..errors import ConfigError, OutputError, ResumeMismatch
from ..losses.teacher_alignment import DistillationSettings
from ..models.config import is_llm2comp_folder
from ..models.encoder import LLM2Comp
from ..models.saving import TRAINING_CONFIG, check_save_target
from ..training.activation_checkpointing import enable_gradient_checkpointing
from ..training.checkpoint import list_checkpoints
from ..training.loop import check_distributed_type, check_resumable
from ..training.resume import check_resume
from ..training.run_lock import holding_output_dir, is_main_process
from ..training.sharded_state import unsharded
from ..typed_settings import setting
from ..yaml_files import read_yaml
from .stage_config import StageConfig

# TRAINING_CONFIG (models/saving.py), in the model folder: the settings that made it, and data statistics
METRICS_FILE = "metrics.jsonl"

log = logging.getLogger("llm2comp")


def make_accelerator(cfg: StageConfig):
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    # several processes without a GPU (e.g. `torchrun --nproc_per_node 2` on a CPU box): DDP over gloo
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=multi_cpu or None)
    check_distributed_type(accelerator)  # before any model loads: FSDP / DeepSpeed asked for but not running
    set_seed(cfg.seed)
    return accelerator


def final_model_dir(cfg: StageConfig) -> Path:
    return Path(cfg.output_dir) / "model"


def snapshot_dirs(cfg: StageConfig) -> list[Path]:
    return [Path(cfg.output_dir) / "snapshots" / f"step-{int(step):06d}" for step in getattr(cfg, "snapshot_steps", [])]


def _saved_settings(folder: Path) -> dict:
    saved = read_yaml(folder / TRAINING_CONFIG)
    return saved if isinstance(saved, dict) else {}


def _has_run_record(folder: Path) -> bool:
    return is_llm2comp_folder(folder) and (folder / TRAINING_CONFIG).is_file()


def _checkpoint_resumes(cfg: StageConfig) -> bool:
    """The newest checkpoint exists and may be continued with `cfg`."""
    existing = list_checkpoints(Path(cfg.output_dir) / "checkpoints")
    if not existing:
        return False
    try:
        check_resumable(existing[-1], cfg.to_dict(), int(os.environ.get("WORLD_SIZE", "1")))
    except ResumeMismatch:
        return False
    return True


def finished(cfg: StageConfig) -> bool:
    """A stage whose final model folder is complete is done; rerunning it reuses the result.

    Only when it was made with the same settings: a "meaning" difference raises `ResumeMismatch`; a
    harmless one (e.g. a larger `max_steps`) with `accept_resume_changes` makes the stage continue
    from its last checkpoint instead, and save the model again. A mismatching model is not in the way
    when the newest checkpoint matches (a restart that was interrupted): that checkpoint resumes.
    """
    folder = final_model_dir(cfg)
    if not _has_run_record(folder):
        return False
    try:
        return not check_resume(_saved_settings(folder), cfg.to_dict(), folder,
                                accept_harmless=cfg.accept_resume_changes)
    except ResumeMismatch:
        if _checkpoint_resumes(cfg):
            return False
        raise


def _superseded(folder: Path, cfg: StageConfig) -> bool:
    """`folder` is a finished model that these settings may not reuse or extend."""
    if not _has_run_record(folder):
        return False
    try:
        check_resume(_saved_settings(folder), cfg.to_dict(), folder, accept_harmless=cfg.accept_resume_changes)
    except ResumeMismatch:
        return True
    return False


def check_not_input_folder(cfg: StageConfig) -> None:
    """The output folder must not be, lie inside or contain the (local) input model folder."""
    model = Path(cfg.model).expanduser()
    if not model.exists():
        return
    model, output = model.resolve(), Path(cfg.output_dir).expanduser().resolve()
    relation = ("is" if output == model else "is inside" if model in output.parents
                else "contains" if output in model.parents else None)
    if relation:
        raise ConfigError(f"output_dir {cfg.output_dir} {relation} the input model folder {cfg.model}: the run "
                          "would write its checkpoints and model there; choose an output_dir outside it")


def check_metrics_file(cfg: StageConfig) -> None:
    """A `metrics.jsonl` in the output folder must be a training log the run may rewrite."""
    path = Path(cfg.output_dir) / METRICS_FILE
    if not path.is_file():
        return
    way_out = ("it was not written by `llm2comp train`, which rewrites this file: move it away or choose another "
               "output_dir")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise OutputError(f"{path}: not UTF-8 text, so not a training log; {way_out}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise OutputError(f"{path}:{number}: not a JSON line of a training log; {way_out}") from None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int) and "loss" in row):
            raise OutputError(f"{path}:{number}: not a training-log row (a JSON object with `step` and `loss`); "
                              f"{way_out}")


def check_output_dir(cfg: StageConfig, resume: bool) -> None:
    """Before any data or model loads: the output folder is writable, is not the input model's, and
    what it holds (a finished model, checkpoints, the metrics log) may be reused, resumed or replaced."""
    ensure_writable_dir(cfg.output_dir, "output_dir")
    check_not_input_folder(cfg)
    check_metrics_file(cfg)
    if not resume or finished(cfg):
        return  # without resume the old model is moved aside (`stage_output`), never replaced
    way_out = "move those files out of it, or choose another output_dir"
    model = final_model_dir(cfg)
    if not _superseded(model, cfg):
        check_save_target(model, way_out=way_out)
    for folder in snapshot_dirs(cfg):
        check_save_target(folder, way_out=way_out)
    existing = list_checkpoints(Path(cfg.output_dir) / "checkpoints")
    if existing:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        check_resumable(existing[-1], cfg.to_dict(), world_size)


def set_aside(folder: Path) -> Path | None:
    """Rename `folder` to `NAME.previous-<time>` beside it (never deleted); returns the new path."""
    if not folder.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, number = folder.with_name(f"{folder.name}.previous-{stamp}"), 1
    while target.exists():
        number += 1
        target = folder.with_name(f"{folder.name}.previous-{stamp}-{number}")
    try:
        os.rename(folder, target)
    except OSError as error:
        raise OutputError(f"cannot move {folder} aside to {target}: {error.strerror or error}") from error
    log.info("moved the previous %s aside to %s", folder, target)
    return target


@contextlib.contextmanager
def hold_output(cfg: StageConfig):
    """Hold the stage's output folder's lock for the block; what needs no lock is checked first, so that
    a refused run creates nothing (the lock creates the folder)."""
    ensure_writable_dir(cfg.output_dir, "output_dir")
    check_not_input_folder(cfg)
    with holding_output_dir(cfg.output_dir) as lock:
        yield lock


@contextlib.contextmanager
def stage_output(cfg: StageConfig, resume: bool):
    """Hold the stage's output folder for the block (module docstring); yields True when the stage is
    already finished (its model is reused), else False, with the folder's state made consistent:
    without `resume` the old model and snapshots are moved aside, as is, with `resume`, an older
    finished model that the newest checkpoint supersedes."""
    with hold_output(cfg):
        check_output_dir(cfg, resume)
        if resume and finished(cfg):
            yield True
            return
        if is_main_process():
            model = final_model_dir(cfg)
            if not resume:
                set_aside(model)
                set_aside(Path(cfg.output_dir) / "snapshots")
            elif _superseded(model, cfg):
                set_aside(model)
        yield False


def stage_tokenizer(cfg: StageConfig, *, trust_remote_code: bool = False):
    """The tokenizer alone, so that data errors surface before a large model is loaded."""
    from ..models.backbone import load_tokenizer, resolve_backbone_path

    return load_tokenizer(resolve_backbone_path(cfg.model), trust_remote_code=trust_remote_code)


def load_encoder(cfg: StageConfig, *, trust_remote_code: bool = False, **config_overrides) -> LLM2Comp:
    """The stage's starting model with a fresh trainable LoRA (a previous stage's LoRA is merged).

    `trust_remote_code` comes from the caller (`llm2comp train --trust-remote-code`), never a file."""
    encoder = cfg.encoder
    model = LLM2Comp.from_pretrained(cfg.model, num_memory_tokens=encoder.num_memory_tokens,
                                     max_length=encoder.max_length, dtype=encoder.dtype,
                                     attn_implementation=encoder.attn_implementation, seed=cfg.seed,
                                     trust_remote_code=trust_remote_code, **config_overrides)
    model.add_lora(cfg.lora)
    if model.memory is not None:  # none for MNTP (and the models it trains)
        model.memory.weight.requires_grad_(True)
    if encoder.train_input_embeddings:
        model.train_input_embeddings()  # saved with the model; a tied LM head keeps a frozen copy
    if encoder.gradient_checkpointing:
        enable_gradient_checkpointing(model)  # recomputes with the adapter state of the forward (stage 1)
    return model


def save_final(model: LLM2Comp, cfg: StageConfig, accelerator, data_stats: dict, target: Path | None = None) -> Path:
    target = target or final_model_dir(cfg)
    if hasattr(cfg, "matryoshka_dims"):  # the contrastive stages: the prefix sizes this run trained (or none)
        model.config.matryoshka_dims = list(cfg.matryoshka_dims)
    accelerator.wait_for_everyone()
    with unsharded(model):  # every process (FSDP: the trainable shards gathered); then rank 0 writes
        if accelerator.is_main_process:  # the config goes in before the folder appears: never a folder without it
            record = yaml.safe_dump({**cfg.to_dict(), "data_stats": data_stats}, sort_keys=False)
            model.save(target, extra_files={TRAINING_CONFIG: record})
    accelerator.wait_for_everyone()
    return target


@dataclass
class ContrastiveConfig(StageConfig):
    """What both contrastive stages read besides the common settings: InfoNCE's temperature, GradCache,
    the Matryoshka sizes (losses/matryoshka.py) and a teacher (losses/teacher_alignment.py)."""

    temperature: float = setting(0.05, above=0)
    cache_chunk_size: int = setting(0, minimum=0)  # > 0: GradCache-cached loss, this chunk size
    matryoshka_dims: list[int] = setting(factory=list, minimum=1)  # also train these prefix sizes
    distillation: DistillationSettings = setting(factory=DistillationSettings, flat=True)  # teacher, teacher_weight

    def __post_init__(self):
        super().__post_init__()
        from ..errors import ConfigError, InvalidSetting
        from ..losses.matryoshka import check_matryoshka_dims

        try:
            check_matryoshka_dims(self.matryoshka_dims)
        except InvalidSetting as error:
            raise ConfigError(str(error)) from None


def contrastive_loss(cfg: StageConfig, model):
    """The stage-2/3 objective module: InfoNCE over the global batch, GradCache-cached when
    `cache_chunk_size` > 0. Built once per run; the loop calls it on every micro-batch and
    backpropagates its loss (scaled by 1/grad_accum), GradCache's chunk backwards included."""
    from ..losses.cached_info_nce import CachedInfoNCE
    from ..losses.info_nce import InfoNCE

    dims = getattr(cfg, "matryoshka_dims", [])  # checked against the model's hidden size by the loss
    if cfg.cache_chunk_size > 0:
        return CachedInfoNCE(model, temperature=cfg.temperature, chunk_size=cfg.cache_chunk_size,
                             matryoshka_dims=dims)
    return InfoNCE(model, temperature=cfg.temperature, matryoshka_dims=dims)
