"""Gradient (activation) checkpointing that is correct when the adapter is switched off mid-step.

Stage 1 runs the same decoder layers three times per step: the encoder with the LoRA adapter on,
the teacher and the student decoder with it off (`LLM2Comp.frozen()`). With checkpointing, a layer
recomputes its forward during the backward -- after the `frozen()` block has ended, so with the
adapter back on: the student's recomputation then differs from its forward (torch's non-reentrant
checkpoint stops with "Recomputed values ... have different metadata"; a reentrant one would
silently produce wrong gradients). `enable_gradient_checkpointing` gives torch's checkpoint a
`context_fn` that records, at each forward, whether the adapter was off, and recomputes in that
same state.

The teacher pass runs under `no_grad`: checkpointing keeps nothing and recomputes nothing there.
Gradients equal those without checkpointing (tests/test_gradient_checkpointing.py).
"""

from __future__ import annotations

import contextlib

from torch import nn


def _tuner_layers(peft_model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in peft_model.modules() if isinstance(module, BaseTunerLayer)]


def adapters_disabled(peft_model: nn.Module) -> bool:
    """True inside `disable_adapter()` (peft's public `disable_adapters` flag of its tuner layers)."""
    layers = _tuner_layers(peft_model)
    return bool(layers) and all(layer.disable_adapters for layer in layers)


@contextlib.contextmanager
def adapter_state(peft_model: nn.Module, disabled: bool):
    """Run the block with the adapter off (`disabled`) or on, whatever it is now; restore it after."""
    if not _tuner_layers(peft_model) or adapters_disabled(peft_model) == disabled:
        yield
        return
    switch_to, switch_back = ((peft_model.base_model.disable_adapter_layers, peft_model.base_model.enable_adapter_layers)
                              if disabled else
                              (peft_model.base_model.enable_adapter_layers, peft_model.base_model.disable_adapter_layers))
    switch_to()
    try:
        yield
    finally:
        switch_back()


def enable_gradient_checkpointing(model) -> None:
    """Checkpoint every decoder layer of `model` (an LLM2Comp), non-reentrant, through transformers'
    public `activation_checkpointing_enable` (`gradient_checkpointing_enable` before 5.24); recomputations
    run with the adapter state of their forward."""
    def context_fn():
        causal_lm = model.model  # looked up at each forward: `add_lora` / `merge_adapter` replace it
        if not hasattr(causal_lm, "peft_config"):
            return contextlib.nullcontext(), contextlib.nullcontext()
        return contextlib.nullcontext(), adapter_state(causal_lm, adapters_disabled(causal_lm))

    kwargs = {"use_reentrant": False, "context_fn": context_fn}
    enable = getattr(model.model, "activation_checkpointing_enable", None)  # transformers >= 5.24's name
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:  # earlier 5.x: the same, under its older public name
        model.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
