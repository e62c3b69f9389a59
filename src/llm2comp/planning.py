"""Plan a training run before renting GPUs: size, memory, FLOPs and time per stage, no weights loaded.

    llm2comp plan --config configs/llama2_7b_pipeline.yaml --gpus 8 --gpu-memory 80GB

The backbone's config.json is the only input besides the training config: the model is built on
PyTorch's `meta` device (shapes, no storage), so parameter counts and the LoRA target modules are
exactly those training would see. Everything below is an ESTIMATE from a counting model; it was
checked against measured peaks (tests/test_plan.py, docs/planning.md) and agrees within the factor
stated there, not to the byte.

Notation: B batch per device, T tokens a pass processes per text (padded width), L layers,
h hidden size, q = heads * head_dim, kv = kv_heads * head_dim, f intermediate size, V vocabulary,
s bytes of an activation (2 under bf16/fp16 weights or autocast, else 4), w bytes of a weight.

Memory per device (bytes):
- weights: every backbone parameter once (tied embeddings once) * w; sharded (FSDP FULL_SHARD /
  ZeRO-3) divides it by the GPUs and adds the gather buffer of two decoder layers (current + prefetch).
- trainable states: LoRA (r * (in + out) per targeted linear, fp32 as peft keeps adapters) and
  the k memory vectors (fp32): 4 param + 4 grad + 8 AdamW = 16 per parameter; trained input
  embeddings: grad + two AdamW states in the weight dtype, 3w per parameter. Several GPUs without
  sharding (DDP) add one gradient bucket copy (4 per fp32 trainable parameter); sharding divides
  the states by the GPUs.
- activations saved for backward, per layer and token of a pass with gradients (SDPA: the
  efficient kernels keep q, k, v, the output and a log-sum-exp, never the T x T scores):
      base  = 2 norms * 4h (RMSNorm/LayerNorm compute in fp32) + (2q + 2kv) * s (SDPA inputs + output)
              + 3f * s (gated MLP: gate out, act out, up out; 2f ungated)
      LoRA  = each adapted linear keeps its input: with lora dropout p > 0 its own dropout output and
              mask, in * (s + 1) (CUDA; on CPU the mask is a noise tensor, in * 2s); with p = 0 the
              shared inputs once: the two norm outputs h and the MLP product f, * s (o reads SDPA's
              saved output). Adapter off (the stage-1 student) or frozen weights: nothing.
  Outside the layers per token: the final hidden states (4 + s) * h, and a 4-D mask of B * T^2 * s.
  Gradient checkpointing keeps only each layer's input, h * s per token and layer, plus one layer's
  full activations while it is recomputed. eager attention adds the scores: 3 * heads * T * s per
  token and layer (probabilities, their dropout, the softmax output).
- stage 1 (kl): encoder pass (LoRA on, grad), teacher pass (no grad: only a transient of one
  layer), student pass (adapter off, grad reaches the memory through its inputs). The full-vocab KL
  at the N continuation positions holds N * V * (2s + 20) bytes at its peak (both logits, their fp32
  copies, exp(teacher), the difference and their product). nll: N * V * (s + 12), no teacher.
  Peak = encoder + student activations + logits + one layer's activations of the largest pass
  (backward working set / recompute) + outside-layer terms.
- stages 2-3 (InfoNCE): every text of the step (2B views; 3B for query, positive, hard negative)
  keeps its graph until the loss; with GradCache (`cache_chunk_size` c) only c texts at a time do.
Widths: a stage-1 text has T_text = min(max_tokens, max_length - k - 1) tokens (or `text_tokens`),
split uniformly in [10, T_text - 10]; a padded batch reaches the expected largest split,
10 + (T_text - 20) * B / (B + 1), on both sides; N = B * T_text / 2 (expected). Contrastive widths:
the stage's maximum (query_max_length, document_max_length, BOS + text + k) or `text_tokens`.

FLOPs per step (per device), P = parameters of the decoder layers, P_lora the adapter's:
- forward 2 * (P + P_lora) per token; attention 4 * L * q * T per token (scores and values, every
  pass counted as full attention: padded 4-D masks run the full square);
- backward of a pass with gradients: input gradients 2P + 2 * P_lora (+ attention twice its
  forward), weight gradients only for LoRA, 2 * P_lora per token (frozen weights get none);
- the LM head, 2 * h * V per logit position and pass (teacher forward, student forward + backward);
- gradient checkpointing recomputes each trained pass's forward (executed, not model FLOPs);
  GradCache adds a no-grad forward of every chunk but the last.
Step time = executed FLOPs / (mfu * peak FLOP/s); run time = step time * max_steps * grad_accum.
Communication (DDP all-reduce of the tiny LoRA gradients; FSDP's all-gather of the weights in every
pass, reported as bytes per step) is not in the time.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError, InvalidSetting

GIB = 2**30
MIN_SPLIT = 10  # data/compression_examples.py: tokens kept on each side of the split point
USABLE_SHARE = 0.9  # of a GPU's memory: CUDA context, allocator caching and fragmentation take the rest
_HALF = ("bfloat16", "bf16", "float16", "fp16")
_GATED = ("gate_proj", "gate_up_proj", "w1", "w3")


# ----------------------------------------------------------------------------------------- hardware
@dataclass(frozen=True)
class Hardware:
    gpus: int = 1
    gpu_memory: float = 80 * GIB  # bytes
    mfu: float = 0.4  # share of the peak the executed matmul FLOPs reach
    gpu_tflops: float = 989.0  # peak dense bf16 TFLOP/s of one GPU (H100/H200 SXM: 989)
    shard: bool = False  # FSDP FULL_SHARD / DeepSpeed ZeRO-3: weights and states divided by the GPUs
    device: str = "cuda"  # "cpu": dropout keeps a full-precision noise tensor instead of a bool mask

    def __post_init__(self):
        if self.gpus < 1:
            raise InvalidSetting(f"--gpus must be >= 1, got {self.gpus}")
        if not 0 < self.mfu <= 1:
            raise InvalidSetting(f"--mfu must be in (0, 1], got {self.mfu}")
        if self.gpu_tflops <= 0:
            raise InvalidSetting(f"--gpu-tflops must be > 0, got {self.gpu_tflops}")
        if self.gpu_memory <= 0:
            raise InvalidSetting(f"--gpu-memory must be > 0, got {self.gpu_memory}")
        if self.device not in ("cuda", "cpu"):
            raise InvalidSetting(f"device must be cuda or cpu, got {self.device!r}")


def parse_memory(text: str) -> float:
    """'80GB', '24 GiB', '81920MB', '80' (GB) -> bytes. GB and GiB both mean 2**30: a GPU sold as
    "80 GB" has 80 GiB."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb|m|tib|tb|t)?\s*", str(text).lower())
    if not match:
        raise InvalidSetting(f"--gpu-memory {text!r}: expected a size such as 80GB, 24GiB or 81920MB")
    scale = {"t": 2**40, "g": GIB, "m": 2**20}[(match.group(2) or "g")[0]]
    return float(match.group(1)) * scale


def hardware_from_accelerate(path: str | Path) -> dict:
    """`{"gpus": num_processes, "shard": bool}` from an `accelerate config` YAML file: FSDP with a full
    sharding strategy, or DeepSpeed ZeRO stage 3, shard the weights."""
    from .yaml_files import read_yaml

    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not an accelerate config (expected a mapping)")
    kind = str(data.get("distributed_type", "NO")).upper()
    shard = False
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        strategy = str(fsdp.get("fsdp_sharding_strategy", fsdp.get("fsdp_reshard_after_forward", "FULL_SHARD")))
        shard = strategy.upper() in ("FULL_SHARD", "1", "TRUE", "HYBRID_SHARD")
    elif kind == "DEEPSPEED":
        shard = int((data.get("deepspeed_config") or {}).get("zero_stage", 0)) == 3
    out = {"shard": shard}
    if data.get("num_processes"):
        out["gpus"] = int(data["num_processes"])
    return out


# ----------------------------------------------------------------------------------------- backbone
@dataclass(frozen=True)
class BackboneShape:
    """What the plan needs of a backbone, read from its config on the meta device."""

    source: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    params: int  # every parameter once (tied embeddings once)
    embedding_params: int  # the input embedding matrix
    layer_params: int  # all decoder layers (the matmul parameters P)
    largest_layer_params: int
    gated_mlp: bool
    config_dtype: str | None
    # one decoder layer's linear leaves: name -> (in_features, out_features), in module order
    linears: dict = field(default_factory=dict)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


def _decoder_layers(model, layers: int):
    from torch import nn

    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return module
    raise InvalidSetting(f"{type(model).__name__}: no list of {layers} decoder layers found")


def _linear_shape(module) -> tuple[int, int] | None:
    kind = type(module).__name__
    if kind == "Linear":
        return int(module.in_features), int(module.out_features)
    if kind == "Conv1D":  # GPT-2: weight (in, out)
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


def shape_from_config(config, source: str = "") -> BackboneShape:
    """A BackboneShape from a transformers config object, by building the model on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, layers = int(text.hidden_size), int(text.num_hidden_layers)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    stack = _decoder_layers(model, layers)
    linears = {}
    for path, module in stack[0].named_modules():
        shape = _linear_shape(module)
        if shape is not None:
            linears[path.rsplit(".", 1)[-1]] = shape
    layer_sizes = [sum(p.numel() for p in layer.parameters()) for layer in stack]
    intermediate = int(getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return BackboneShape(
        source=source, model_type=str(getattr(config, "model_type", "?")), hidden=hidden, layers=layers,
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, intermediate=intermediate,
        vocab=int(model.get_input_embeddings().weight.shape[0]),
        params=sum(p.numel() for p in model.parameters()),
        embedding_params=int(model.get_input_embeddings().weight.numel()),
        layer_params=sum(layer_sizes), largest_layer_params=max(layer_sizes),
        gated_mlp=any(name in linears for name in _GATED),
        config_dtype=str(dtype).replace("torch.", "") if dtype is not None else None, linears=linears)


def backbone_config_path(model: str) -> str:
    """The folder (or Hub id) whose config.json describes `model`'s backbone, without loading weights:
    the default alias -> its converted cache folder; an LLM2Comp folder -> its merged `backbone/` or
    the backbone it records; a folder with config.json -> itself; anything else -> a Hub id."""
    from .models.config import LLM2CompConfig, is_llm2comp_folder
    from .models.default_model import is_default_model_name, resolve_default_model

    if is_default_model_name(model):
        return str(resolve_default_model())
    path = Path(model)
    if is_llm2comp_folder(path):
        recorded = LLM2CompConfig.load(path).backbone
        return str(path / "backbone") if recorded == "backbone" else backbone_config_path(recorded)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {model}: the folder has no config.json (a transformers model folder or an "
                              "LLM2Comp folder is needed; weights are not)")
        return str(path)
    if str(model).startswith((".", "/", "~")):
        raise ConfigError(f"model {model}: the folder does not exist")
    return str(model)


def load_backbone_shape(model: str) -> BackboneShape:
    """The backbone shape of a config's `model` (a Hub id needs the Hub or its cache)."""
    from .errors import ModelLoadError
    from .models.backbone import load_backbone_config

    where = backbone_config_path(model)
    try:
        config = load_backbone_config(where)
    except ModelLoadError as error:
        raise ConfigError(f"model {model}: its config.json could not be read ({str(error).splitlines()[0]}); "
                          "pass --backbone-config FOLDER holding a copy of it") from None
    return shape_from_config(config, source=where)


# ----------------------------------------------------------------------------------------- counting
def lora_targets(shape: BackboneShape, lora: dict) -> list[str]:
    """The linear leaves of a decoder layer the config's LoRA adapts (models/lora.py's role mapping)."""
    from .models.lora import _ROLE_CANDIDATES, LoraSettings

    settings = LoraSettings.from_mapping(lora)
    if settings.target_modules:
        return [name for name in settings.target_modules if name in shape.linears]
    targets = []
    for role in settings.roles:
        match = next((name for name in _ROLE_CANDIDATES[role] if name in shape.linears), None)
        if match is not None and match not in targets:
            targets.append(match)
    return targets


def lora_params(shape: BackboneShape, lora: dict) -> int:
    r = int(lora.get("r", 16))
    return shape.layers * sum(r * sum(shape.linears[name]) for name in lora_targets(shape, lora))


def _lora_input_kind(shape: BackboneShape, name: str) -> str:
    """Which tensor a linear reads: 'norm1' / 'norm2' (h), 'attn' (q) or 'mlp' (f)."""
    width = shape.linears[name][0]
    if width == shape.intermediate and width != shape.hidden:
        return "mlp"
    if name in ("o_proj", "out_proj", "dense", "c_proj", "wo") and width == shape.q_dim:
        return "attn"
    attention = ("q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query", "value")
    return "norm1" if name in attention else "norm2"


def layer_bytes_per_token(shape: BackboneShape, s: int, lora: dict | None, attn: str = "sdpa",
                          width: int = 0, mask_bytes: int = 1) -> float:
    """Activation bytes one decoder layer saves for backward per token of a pass with gradients.

    lora: the adapter's settings when it is on in this pass (None: adapter off or absent).
    attn 'eager' adds the T x T scores (width = T). mask_bytes: per element of a dropout mask (1 on
    CUDA, a bool; s on CPU, where dropout multiplies by a noise tensor of the input's dtype)."""
    h, q, kv, f = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    total = 2 * 4 * h + (2 * q + 2 * kv) * s + (3 if shape.gated_mlp else 2) * f * s
    if attn == "eager":
        total += 3 * shape.heads * width * s
    if lora:
        targets = lora_targets(shape, lora)
        if float(lora.get("dropout", 0.05)) > 0:
            total += sum(shape.linears[name][0] * (s + mask_bytes) for name in targets)
        else:  # the attention output o reads is SDPA's saved output (a view): nothing new
            sizes = {"norm1": h, "norm2": h, "attn": 0, "mlp": f}
            total += sum(sizes[kind] * s for kind in {_lora_input_kind(shape, name) for name in targets})
    return total


@dataclass
class Pass:
    """One forward pass of a step: `texts` rows of padded `width` tokens."""

    name: str
    texts: int
    width: int
    grad: bool  # gradients flow through its activations
    lora: bool  # the adapter is on
    real_tokens: float = 0.0  # tokens that are not padding

    @property
    def tokens(self) -> int:
        return self.texts * self.width


@dataclass
class StagePlan:
    stage: str
    objective: str
    passes: list
    logit_positions: float = 0.0
    logit_bytes_per_position: float = 0.0
    logit_passes: int = 0  # LM-head applications counted in FLOPs
    chunk_texts: int = 0  # GradCache: texts per chunk (0: off)
    numbers: dict = field(default_factory=dict)


def _text_budget(cfg, text_tokens: int | None) -> int:
    from .models.layout import text_budget

    # the tokenizer is not read here: one BOS is assumed, as the supported families' tokenizers have
    budget = min(cfg.max_tokens, text_budget(cfg.encoder.max_length, 1, cfg.encoder.num_memory_tokens))
    return max(1, min(budget, text_tokens)) if text_tokens else budget


def stage_passes(cfg, s: int, text_tokens: int | None = None, split: tuple[int, int] | None = None) -> StagePlan:
    """The passes of one optimizer micro-step of `cfg` (a stage config) and its logit positions.

    split: (context, continuation) tokens of every stage-1 text, instead of the config's random split."""
    k, batch = cfg.encoder.num_memory_tokens, cfg.batch_size
    if cfg.stage == "pretrain":
        total = _text_budget(cfg, text_tokens) if split is None else sum(split)
        if cfg.objective == "mntp":
            n = max(1.0, cfg.mask_ratio * total) * batch
            passes = [Pass("encoder (MNTP)", batch, 1 + total, True, True, batch * (1 + total))]
            return StagePlan("pretrain", "mntp", passes, n, s + 12, 2)
        if split is not None:
            context, continuation = split
            context_width, target_width, n = context, continuation, batch * continuation
        elif cfg.objective == "reconstruction":
            context_width = target_width = total
            n = batch * total
        else:
            largest = MIN_SPLIT + (total - 2 * MIN_SPLIT) * batch / (batch + 1)
            context_width = target_width = max(1, round(largest)) if total >= 2 * MIN_SPLIT else total
            n = batch * total / 2
        passes = [Pass("encoder", batch, 1 + context_width + k, True, True, batch * (1 + total / 2 + k))]
        if cfg.objective == "kl" or cfg.terms.alignment_weight > 0:
            teacher_width = 1 + (total if cfg.objective == "kl" else context_width)
            passes.append(Pass("teacher", batch, teacher_width, False, False, batch * teacher_width))
        passes.append(Pass("student", batch, 1 + k + target_width, True, False, batch * (1 + k + total / 2)))
        if cfg.terms.margin_weight > 0:
            passes.append(Pass("student, other memory", batch, 1 + k + target_width, True, False))
        if cfg.terms.reconstruction_weight > 0:
            passes.append(Pass("student, reconstruction", batch, 1 + k + context_width, True, False))
            n += batch * total / 2
        per_position = 2 * s + 20 if cfg.objective == "kl" else s + 12
        heads = 3 if cfg.objective == "kl" else 2
        return StagePlan("pretrain", cfg.objective, passes, n, per_position, heads)
    chunk = getattr(cfg, "cache_chunk_size", 0)
    if cfg.stage == "unsupervised":
        width = 1 + _text_budget(cfg, text_tokens) + k
        passes = [Pass("view 1", batch, width, True, True, batch * width),
                  Pass("view 2", batch, width, True, True, batch * width)]
    else:
        def width_of(limit):
            return min(limit, 1 + text_tokens + k) if text_tokens else limit

        passes = [Pass(name, batch, width_of(limit), True, True, batch * width_of(limit)) for name, limit in
                  (("queries", cfg.query_max_length), ("positives", cfg.document_max_length),
                   ("hard negatives", cfg.document_max_length))]
    return StagePlan(cfg.stage, "infonce", passes, chunk_texts=chunk)


def weight_bytes_of(cfg, shape: BackboneShape) -> int:
    dtype = cfg.encoder.dtype if cfg.encoder.dtype != "auto" else (shape.config_dtype or "float32")
    return 2 if dtype in _HALF else 4


def activation_bytes_of(cfg, shape: BackboneShape) -> int:
    return 2 if weight_bytes_of(cfg, shape) == 2 or cfg.mixed_precision in ("bf16", "fp16") else 4


def plan_stage(cfg, shape: BackboneShape, hardware: Hardware, text_tokens: int | None = None,
               split: tuple[int, int] | None = None) -> dict:
    """Every number of the plan for one stage config on `hardware` (see the module docstring)."""
    w, s = weight_bytes_of(cfg, shape), activation_bytes_of(cfg, shape)
    plan = stage_passes(cfg, s, text_tokens, split)
    lora = cfg.lora.to_dict()
    n_lora = lora_params(shape, lora)
    n_memory = cfg.encoder.num_memory_tokens * shape.hidden
    gpus, shard = hardware.gpus, hardware.shard and hardware.gpus > 1
    # --- memory
    weights = shape.params * w / (gpus if shard else 1)
    if shard:
        weights += 2 * shape.largest_layer_params * w
    fp32_trainable = n_lora + n_memory
    states = fp32_trainable * 16 + (shape.embedding_params * 3 * w if cfg.encoder.train_input_embeddings else 0)
    if gpus > 1 and not shard:
        states += fp32_trainable * 4 + (shape.embedding_params * w if cfg.encoder.train_input_embeddings else 0)
    if shard:
        states /= gpus
    attn = cfg.encoder.attn_implementation
    mask_bytes = 1 if hardware.device == "cuda" else s

    def saved(p: Pass, checkpointed: bool, texts: int | None = None) -> float:
        rows = p.texts if texts is None else texts
        tokens = rows * p.width
        outside = tokens * (4 + s) * shape.hidden + rows * p.width ** 2 * s
        if checkpointed:
            return tokens * shape.hidden * s * shape.layers + outside
        per_layer = layer_bytes_per_token(shape, s, lora if p.lora else None, attn, p.width, mask_bytes)
        return tokens * per_layer * shape.layers + outside

    def one_layer(p: Pass, texts: int | None = None) -> float:
        rows = p.texts if texts is None else texts
        return rows * p.width * layer_bytes_per_token(shape, s, lora if p.lora else None, attn, p.width, mask_bytes)

    logits = plan.logit_positions * shape.vocab * plan.logit_bytes_per_position
    trained = [p for p in plan.passes if p.grad]
    activations = {}
    for checkpointed in (False, True):
        if plan.chunk_texts:  # GradCache: one chunk of the longest texts keeps its graph
            widest = max(trained, key=lambda p: p.width)
            rows = min(plan.chunk_texts, widest.texts)
            peak = saved(widest, checkpointed, rows) + (one_layer(widest, rows) if checkpointed else 0)
        else:
            peak = sum(saved(p, checkpointed) for p in trained) + logits
            largest = max(plan.passes, key=lambda p: p.tokens)
            peak += one_layer(largest) if checkpointed or plan.stage == "pretrain" else 0
        activations["checkpointed" if checkpointed else "full"] = peak
    total = {key: weights + states + value for key, value in activations.items()}
    usable = hardware.gpu_memory * USABLE_SHARE
    # --- FLOPs
    body, head = shape.layer_params, 2 * shape.hidden * shape.vocab

    def attention_flops(p: Pass) -> float:
        return 4 * shape.layers * shape.q_dim * p.width * p.tokens

    model_flops = executed = 0.0
    for p in plan.passes:
        adapter = n_lora if p.lora else 0
        forward = 2 * (body + adapter) * p.tokens + attention_flops(p)
        backward = (2 * body + 4 * adapter) * p.tokens + 2 * attention_flops(p) if p.grad else 0.0
        model_flops += forward + backward
        executed += forward + backward + (forward if p.grad and cfg.encoder.gradient_checkpointing else 0.0)
        if plan.chunk_texts and p.grad:  # the no-grad first pass of GradCache (all chunks but the last kept)
            executed += forward * max(0.0, 1 - min(plan.chunk_texts, p.texts) / (p.texts * len(trained)))
    model_flops += head * plan.logit_positions * plan.logit_passes
    executed += head * plan.logit_positions * plan.logit_passes
    micro_steps = cfg.loop.grad_accum
    step_seconds = executed * micro_steps / (hardware.mfu * hardware.gpu_tflops * 1e12)
    checkpointing = "checkpointed" if cfg.encoder.gradient_checkpointing else "full"
    gathered = shape.params * w * (len(plan.passes) + len(trained)) * micro_steps if shard else 0
    return {
        "stage": cfg.stage, "objective": plan.objective, "model": cfg.model,
        "dtype": {"weights": f"{8 * w}-bit", "activations": f"{8 * s}-bit"},
        "parameters": shape.params, "trainable_parameters": n_lora + n_memory + (
            shape.embedding_params if cfg.encoder.train_input_embeddings else 0),
        "lora_parameters": n_lora, "lora_targets": lora_targets(shape, lora), "memory_parameters": n_memory,
        "passes": [{**asdict(p), "tokens": p.tokens} for p in plan.passes],
        "batch_per_device": cfg.batch_size, "grad_accum": micro_steps, "gpus": gpus,
        "gradient_checkpointing": cfg.encoder.gradient_checkpointing, "cache_chunk_size": getattr(cfg, "cache_chunk_size", 0),
        "logit_positions": plan.logit_positions,
        "memory_bytes": {"weights": weights, "trainable_states": states,
                         "activations_full": activations["full"],
                         "activations_checkpointed": activations["checkpointed"], "logits": logits,
                         "total_full": total["full"], "total_checkpointed": total["checkpointed"],
                         "total_as_configured": total[checkpointing], "usable_per_gpu": usable},
        "fits": {"full": total["full"] <= usable, "checkpointed": total["checkpointed"] <= usable,
                 "as_configured": total[checkpointing] <= usable},
        "tokens_per_step": {"processed_per_device": sum(p.tokens for p in plan.passes) * micro_steps,
                            "real_per_device": sum(p.real_tokens for p in plan.passes) * micro_steps,
                            "all_devices": sum(p.tokens for p in plan.passes) * micro_steps * gpus},
        "flops_per_step": {"model_per_device": model_flops * micro_steps,
                           "executed_per_device": executed * micro_steps},
        "step_seconds": step_seconds, "max_steps": cfg.loop.max_steps,
        "run_hours": step_seconds * cfg.loop.max_steps / 3600,
        "fsdp_gathered_bytes_per_step": gathered,
    }


# ----------------------------------------------------------------------------------------- configs
def load_configs(path: str | Path, overrides: list[str] = (), stage: str | None = None) -> list:
    """The stage config(s) of a single-stage or pipeline file, read by the project's own readers."""
    from .recipes.pipeline import is_pipeline_file, load_pipeline
    from .recipes.stage_config import load_stage_config

    if not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such file")
    if is_pipeline_file(path):
        configs = load_pipeline(path, list(overrides))
        if stage:
            configs = [c for c in configs if c.stage == stage] or _no_stage(path, stage)
        return configs
    return [load_stage_config(path, list(overrides), **({"stage": stage} if stage else {}))]


def _no_stage(path, stage):
    raise ConfigError(f"{path} has no {stage!r} stage (--stage {stage})")


def plan_run(path: str | Path, hardware: Hardware, *, overrides: list[str] = (), stage: str | None = None,
             backbone_config: str | None = None, text_tokens: int | None = None) -> dict:
    """The plan of every stage of a config file: {"hardware", "backbone", "stages", "assumptions"}."""
    if text_tokens is not None and text_tokens < 1:
        raise InvalidSetting(f"--text-tokens must be >= 1, got {text_tokens}")
    configs = load_configs(path, overrides, stage)
    first_model = configs[0].model
    shapes: dict[str, BackboneShape] = {}
    stages = []
    for cfg in configs:
        model = cfg.model
        chained = not Path(model).exists() and Path(model).name == "model" and model != first_model
        key = backbone_config or (first_model if chained else model)  # a pipeline stage: the first backbone
        if key not in shapes:
            shapes[key] = load_backbone_shape(key)
        stages.append(plan_stage(cfg, shapes[key], hardware, text_tokens))
    shape = next(iter(shapes.values()))
    return {"config": str(path), "hardware": asdict(hardware),
            "backbone": {k: v for k, v in asdict(shape).items() if k != "linears"},
            "stages": stages, "assumptions": ASSUMPTIONS}


ASSUMPTIONS = [
    "estimates from a counting model (llm2comp/planning.py docstring), not measurements",
    "every text at its maximum length unless --text-tokens; stage-1 split at its expected largest point",
    f"fits = total <= {USABLE_SHARE:.0%} of the GPU memory (CUDA context and allocator slack take the rest)",
    "time = executed FLOPs / (mfu x peak); communication and data loading not counted",
]


# ----------------------------------------------------------------------------------------- output
def _gib(value: float) -> str:
    return f"{value / GIB:,.1f}"


def _count(value: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:,.2f}{unit}"
    return f"{value:,.0f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def render_markdown(result: dict) -> str:
    """The plan as markdown: one table of memory and time, one row per stage."""
    hw, bb = result["hardware"], result["backbone"]
    lines = [f"# Plan for {result['config']} (ESTIMATES)", "",
             f"backbone: {bb['model_type']} from {bb['source']}: {_count(bb['params'])} parameters, "
             f"{bb['layers']} layers, hidden {bb['hidden']}, vocab {bb['vocab']}",
             f"hardware: {hw['gpus']} GPU(s) x {_gib(hw['gpu_memory'])} GiB, {hw['gpu_tflops']:g} TFLOP/s peak, "
             f"MFU {hw['mfu']:.0%}" + (", weights sharded (FSDP / ZeRO-3)" if hw["shard"] else ""), "",
             "| stage | trainable | weights GiB | LoRA+optimizer GiB | activations GiB (no ckpt / ckpt) "
             "| total GiB (no ckpt / ckpt) | fits (no ckpt / ckpt) | tokens/step/device | TFLOP/step/device "
             "| s/step | run |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for st in result["stages"]:
        mem, fits = st["memory_bytes"], st["fits"]
        configured = "ckpt" if st["gradient_checkpointing"] else "no ckpt"
        lines.append(
            f"| {st['stage']} ({st['objective']}) | {_count(st['trainable_parameters'])} | {_gib(mem['weights'])} "
            f"| {_gib(mem['trainable_states'])} | {_gib(mem['activations_full'])} / "
            f"{_gib(mem['activations_checkpointed'])} | {_gib(mem['total_full'])} / {_gib(mem['total_checkpointed'])} "
            f"| {'yes' if fits['full'] else 'no'} / {'yes' if fits['checkpointed'] else 'no'} (config: {configured}) "
            f"| {st['tokens_per_step']['processed_per_device']:,.0f} "
            f"| {st['flops_per_step']['executed_per_device'] / 1e12:,.1f} | {st['step_seconds']:.2f} "
            f"| {_duration(st['step_seconds'] * st['max_steps'])} ({st['max_steps']:,} steps) |")
    advice = [f"- {st['stage']}: does not fit as configured; " + (
        "set gradient_checkpointing: true" if st["fits"]["checkpointed"] and not st["gradient_checkpointing"]
        else "set cache_chunk_size (GradCache), lower batch_size, or shard the weights (--shard / FSDP)")
        for st in result["stages"] if not st["fits"]["as_configured"]]
    if advice:
        lines += ["", *advice]
    lines += ["", "assumptions: " + "; ".join(result["assumptions"])]
    return "\n".join(lines)


def total_hours(result: dict) -> float:
    return math.fsum(st["run_hours"] for st in result["stages"])
