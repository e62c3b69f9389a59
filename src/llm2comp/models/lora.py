"""LoRA settings and target modules, mapped per architecture.

The paper adapts q, v, o, gate, up and down projections (not k). Architectures name these modules
differently; we map each role to the names that exist in the model, so the same recipe works on
Llama/Mistral/Qwen/Gemma (`q_proj` ...), GPT-2 (`c_attn`, `c_proj`, `c_fc`), Phi (`dense`, `fc1`,
`fc2`), Phi-3 (`qkv_proj`, `gate_up_proj`) and GPT-NeoX-style models (`query_key_value`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, InvalidSetting
from ..typed_settings import build, plain, setting

# role -> candidate leaf-module names, first match per role wins (fused modules cover several roles)
_ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "q": ("q_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query"),
    "v": ("v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "value"),
    "o": ("o_proj", "out_proj", "dense", "c_proj"),
    "gate": ("gate_proj", "gate_up_proj", "w1", "c_fc", "fc1", "dense_h_to_4h"),
    "up": ("up_proj", "gate_up_proj", "w3", "c_fc", "fc1", "dense_h_to_4h"),
    "down": ("down_proj", "w2", "c_proj", "fc2", "dense_4h_to_h"),
}
DEFAULT_ROLES = ("q", "v", "o", "gate", "up", "down")


@dataclass
class LoraSettings:
    """A config's `lora:` block: rank, scale, dropout and which layers (by role, or by explicit name)."""

    r: int = setting(16, minimum=1)
    alpha: int | float = setting(32, above=0)
    dropout: float = setting(0.05, minimum=0, below=1)
    roles: tuple[str, ...] = setting(DEFAULT_ROLES, choices=tuple(_ROLE_CANDIDATES))
    target_modules: list[str] | None = setting(None)  # explicit names override `roles`

    def __post_init__(self):
        if not self.roles:
            raise ConfigError(f"lora.roles must be a non-empty list of {sorted(_ROLE_CANDIDATES)}, got []")
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("lora.target_modules must be a list of module names, or null; got []")

    def to_dict(self) -> dict:
        return plain(self)

    @classmethod
    def from_mapping(cls, data) -> LoraSettings:
        """Settings from a config's `lora:` block; every error names the key (`lora.r`, ...)."""
        return build(cls, data, where="lora")


def linear_leaf_names(model: nn.Module) -> set[str]:
    """Names (last path component) of the linear-like leaves of the decoder layers."""
    names = set()
    for path, module in model.named_modules():
        if not path or any(True for _ in module.children()):
            continue
        kind = type(module).__name__
        if kind in ("Linear", "Conv1D") and "lm_head" not in path:
            names.add(path.rsplit(".", 1)[-1])
    return names


def lora_target_modules(model: nn.Module, roles: tuple[str, ...] = DEFAULT_ROLES) -> list[str]:
    present = linear_leaf_names(model)
    targets: list[str] = []
    for role in roles:
        if role not in _ROLE_CANDIDATES:
            raise InvalidSetting(f"unknown LoRA role {role!r}; known: {sorted(_ROLE_CANDIDATES)}")
        match = next((name for name in _ROLE_CANDIDATES[role] if name in present), None)
        if match is not None and match not in targets:
            targets.append(match)
    if not targets:
        raise InvalidSetting(
            f"no LoRA target found for roles {roles} among the model's linear layers {sorted(present)}; "
            "pass LoraSettings(target_modules=[...]) explicitly"
        )
    return targets


def add_lora(causal_lm: nn.Module, settings: LoraSettings, adapter_name: str = "default"):
    """Wrap `causal_lm` in a fresh trainable LoRA adapter (peft). Returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules or lora_target_modules(causal_lm, settings.roles)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        bias="none",
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in causal_lm.modules()),
    )
    return get_peft_model(causal_lm, config, adapter_name=adapter_name)
