"""Checkpoint tensors read and written the same way for one process, DDP and FSDP.

With FSDP each process holds a shard of every parameter (a DTensor) and of its optimizer moments,
so a checkpoint cannot be read off one process's `named_parameters()` / `optimizer.state_dict()`.
torch's public `torch.distributed.checkpoint.state_dict` API gathers the *full* tensors instead,
and scatters them back on resume; it also handles a plain module and a DDP wrapper, so the loop
takes one path whatever the wrapping ("FSDP-safe by construction"):

- `full_trainable_state(model)` / `full_optimizer_state(model, optimizer)` are collectives: every
  process calls them (never behind `if is_main_process`); with several processes the full tensors
  land on rank 0, on CPU (`cpu_offload`), the other ranks get empty dicts;
- the optimizer state is written in torch's index format (`"<index>.<key>"`, index = position of
  the parameter in the param groups), the file format of checkpoint.py, so checkpoints of either
  kind resume the same way; `load_optimizer_state` maps indices to parameter names (FQNs) and every
  process loads the full state, which torch shards to its own parameters.

Frozen parameters (the backbone under LoRA) are never gathered (`ignore_frozen_params`).

`unsharded(module)` (a collective too) puts an FSDP2 model's trainable parameters in full for a block,
e.g. for rank 0 to write the model folder (LoRA, memory vectors) from them; without FSDP it does nothing.
"""

from __future__ import annotations

import contextlib

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
LOAD = StateDictOptions(full_state_dict=True)


def inner_optimizer(optimizer):
    """The torch optimizer inside accelerate's `AcceleratedOptimizer` (its public `.optimizer`)."""
    return getattr(optimizer, "optimizer", optimizer)


def full_trainable_state(model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
    """Collective: the full trainable parameters by name, on CPU (on rank 0; {} elsewhere when distributed).

    names: the trainable parameters' names (the unwrapped module's `named_parameters()`). Only these are
    kept: torch lists a tied weight under each of its names (e.g. `lm_head.weight` of a frozen tied
    embedding), and `ignore_frozen_params` does not recognise the second name as frozen.
    """
    state = get_model_state_dict(model, options=GATHER)
    return {name: value.contiguous() for name, value in state.items() if name in names}


def to_indexed(state: dict) -> dict:
    """A name-keyed optimizer state dict (torch.distributed.checkpoint) in `optimizer.state_dict()` format."""
    order = [name for group in state.get("param_groups", []) for name in group["params"]]
    index = {name: position for position, name in enumerate(order)}
    groups, start = [], 0
    for group in state.get("param_groups", []):
        groups.append({**group, "params": list(range(start, start + len(group["params"])))})
        start += len(group["params"])
    return {"state": {index[name]: entry for name, entry in state.get("state", {}).items()}, "param_groups": groups}


def to_named(state: dict, names: list[str]) -> dict:
    """The inverse of `to_indexed`: `names[i]` is the parameter at index i of the param groups."""
    groups = [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]]
    return {"state": {names[int(i)]: entry for i, entry in state["state"].items()}, "param_groups": groups}


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """Collective: the full optimizer state in `optimizer.state_dict()` format (rank 0; empty elsewhere)."""
    return to_indexed(get_optimizer_state_dict(model, inner_optimizer(optimizer), options=GATHER))


def optimizer_parameter_names(model: torch.nn.Module, optimizer) -> list[str]:
    """The name of each parameter of `optimizer`, in param-group order (before any wrapping)."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    return [name_of[id(param)] for group in inner_optimizer(optimizer).param_groups for param in group["params"]]


def load_optimizer_state(model: torch.nn.Module, optimizer, state: dict, names: list[str]) -> None:
    """Every process: load a full index-keyed optimizer state into the (possibly sharded) optimizer."""
    set_optimizer_state_dict(model, inner_optimizer(optimizer), to_named(state, names), options=LOAD)


@contextlib.contextmanager
def unsharded(module: torch.nn.Module):
    """Every process: inside the block the *trainable* parameters of `module` are full plain tensors.

    FSDP2 keeps DTensor shards registered even after `unshard()` (its state_dict, and so peft's, stays
    sharded), so each sharded trainable parameter is gathered (`DTensor.full_tensor()`, a collective) and
    put in its place for the block, then the shard goes back. Frozen parameters are left as they are
    (the backbone is never gathered); a module that is not sharded is unchanged.
    """
    from torch.distributed.tensor import DTensor

    swapped = []
    for owner in module.modules():
        for name, param in list(owner.named_parameters(recurse=False)):
            if param.requires_grad and isinstance(param, DTensor):
                swapped.append((owner, name, param))
                setattr(owner, name, torch.nn.Parameter(param.full_tensor().detach(), requires_grad=False))
    try:
        yield module
    finally:
        for owner, name, param in swapped:
            setattr(owner, name, param)
