"""Training checkpoints: safetensors + JSON only, written atomically, the last K kept.

    checkpoints/step-000200/
        trainable.safetensors   every trainable parameter, by name (LoRA, memory vectors, ...)
        optimizer.safetensors   AdamW moment tensors, keyed "<param index>.<name>"
        state.json              step, data position, optimizer hyper-parameters and scalar state,
                                scheduler state, python/numpy RNG state, the resolved config and
                                the number of processes (resume compares both: training/resume.py)
        rng.safetensors         torch CPU (and CUDA) RNG state

A killed run resumes from the newest complete checkpoint (a folder appears only once fully
written, through one rename), so nothing already written is ever lost or half-read; the hidden
temporary of a checkpoint killed mid-write is removed when training starts again
(`remove_stale_checkpoints`). A truncated or corrupt file names itself.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..atomic import atomic_directory, remove_stale_temporaries
from ..errors import CorruptFile
from ..tensor_files import read_tensors

_STEP_DIR = re.compile(r"^step-(\d+)$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def _optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an index-keyed optimizer state dict (`optimizer.state_dict()` format) into tensors and JSON."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"{index}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = float(value)
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """The index-keyed optimizer state dict (`optimizer.state_dict()` format) from its saved parts."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entries in meta["scalars"].items():
        for key, value in entries.items():
            state.setdefault(int(index), {})[key] = torch.tensor(value)
    return {"state": state, "param_groups": meta["param_groups"]}


def read_optimizer_state(path: Path) -> dict:
    """A checkpoint's optimizer state dict (full tensors, `optimizer.state_dict()` format)."""
    path = Path(path)
    return _optimizer_state(read_tensors(path / "optimizer.safetensors"), read_checkpoint_meta(path)["optimizer"])


def save_checkpoint(folder: Path, *, model, optimizer, scheduler, step: int, data_state: dict,
                    config: dict, keep_last: int = 3, world_size: int = 1, weights: dict | None = None,
                    optimizer_state: dict | None = None) -> Path:
    """`weights` / `optimizer_state`: already gathered (full) trainable tensors and optimizer state dict
    (training/sharded_state.py, for sharded models); by default read from `model` / `optimizer`."""
    folder = Path(folder)
    target = folder / f"step-{step:06d}"
    tensors, optimizer_meta = _optimizer_tensors(optimizer_state if optimizer_state is not None
                                                 else optimizer.state_dict())
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    numpy_state = np.random.get_state()
    meta = {
        "step": step,
        "data": data_state,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict(),
        "python_rng": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy_rng": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "config": config,
        "world_size": world_size,
    }
    with atomic_directory(target) as tmp:
        save_file(weights if weights is not None else trainable_state(model), str(tmp / "trainable.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
    for old in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def remove_stale_checkpoints(folder: Path) -> list[Path]:
    """Remove the hidden temporaries of checkpoint writes that were killed (`.step-NNNNNN.tmp-*`)."""
    return remove_stale_temporaries(folder, r"step-\d+")


def read_checkpoint_meta(path: Path) -> dict:
    """The `state.json` of a checkpoint (step, data position, config, ...); a bad file names itself."""
    file = Path(path) / "state.json"
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFile(f"{file} is not valid JSON ({error}); delete {path} to resume from an earlier "
                          "checkpoint") from error
    if not isinstance(meta, dict) or "step" not in meta:
        raise CorruptFile(f"{file} is not a checkpoint state (no 'step')")
    return meta


def load_checkpoint(path: Path, *, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer (unless None: see `read_optimizer_state`), scheduler and RNG; return the
    saved meta (step, data position)."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    weights = read_tensors(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise CorruptFile(f"{path}: checkpoint holds parameters the model lacks, e.g. {missing[:3]}; "
                         "was it written by a different recipe?")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(read_tensors(path / "optimizer.safetensors"), meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    rng = read_tensors(path / "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available() and "cuda0" in rng:
        torch.cuda.set_rng_state_all([rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng])
    python_rng = meta["python_rng"]
    random.setstate((python_rng[0], tuple(python_rng[1]), python_rng[2]))
    numpy_rng = meta["numpy_rng"]
    np.random.set_state((numpy_rng[0], np.array(numpy_rng[1], dtype=np.uint32), *numpy_rng[2:]))
    return meta
