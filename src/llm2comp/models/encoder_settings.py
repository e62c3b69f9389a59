"""The encoder a training stage builds: k memory tokens, input length, weights' precision, kernels.

These are the `LLM2Comp.from_pretrained` arguments a stage config sets (flat keys in its YAML:
`num_memory_tokens: 8`, `max_length: 512`, ...), plus the two switches that change how the
encoder trains but not what it computes: the trainable input-embedding table and activation
checkpointing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..typed_settings import setting

DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto")


@dataclass
class EncoderSettings:
    num_memory_tokens: int = setting(8, minimum=0)  # k; the paper finds 1-8 stable, 8 best; 0 for objective mntp
    max_length: int = setting(512, minimum=2)  # encoder input: BOS + text + k memory tokens
    dtype: str = setting("float32", choices=DTYPES)
    attn_implementation: str = setting("sdpa", on_resume="harmless")  # same maths, another kernel
    train_input_embeddings: bool = setting(False)  # the authors' release trained the whole embedding matrix
    gradient_checkpointing: bool = setting(False, on_resume="harmless")  # recomputes, same gradients
