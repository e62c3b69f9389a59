"""LoRA targets map the paper's roles (q, v, o, gate, up, down; not k) onto each architecture."""

import pytest
import transformers as tf
from transformers import AutoModelForCausalLM

from llm2comp.models.lora import LoraSettings, add_lora, lora_target_modules

from .conftest import tiny_config


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("llama", ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("gemma3", ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("gpt2", ["c_attn", "c_proj", "c_fc"]),
    ],
)
def test_targets_per_architecture(arch, expected):
    model = AutoModelForCausalLM.from_config(tiny_config(arch))
    assert lora_target_modules(model) == expected


def test_phi_targets():
    config = tf.PhiConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=4)
    model = AutoModelForCausalLM.from_config(config)
    assert lora_target_modules(model) == ["q_proj", "v_proj", "dense", "fc1", "fc2"]


def test_only_lora_trains_and_k_proj_is_untouched():
    model = add_lora(AutoModelForCausalLM.from_config(tiny_config("llama")), LoraSettings())
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any("k_proj" in name for name in trainable)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.05)
