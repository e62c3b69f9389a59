"""One typed config for the training stages, read from YAML with command-line overrides.

    llm2comp train --config configs/pretrain_quickstart.yaml --max_steps 50 --lora.r 8

Every key is declared once below with `setting(...)`: its type (the annotation), the stages that
read it, its allowed values, and what a change means on resume. Before any data or model loads:

- a key no stage knows, or one the chosen stage does not read (`objective` in stage 2), is an error
  naming the stage and the key;
- every value must have its declared type (`max_steps: "ten"` or `2.7` is an error, a float field
  takes an int) and range; nested blocks (`lora`) are checked key by key; no number anywhere may
  be NaN or infinite (`lr: .inf`); a key written twice in one file is an error (yaml_files.py);
- errors name where the value came from: ``run.yaml:7`` or the ``--lr`` override.

Adding a setting is one line: `name: type = setting(default, stages=PRETRAIN)`.

Resume (`on_resume`): "meaning" settings (the default) change what is trained, so a checkpoint or a
finished model made with other values is never continued or reused (training/resume.py);
"harmless" ones (`max_steps` to extend a run, `save_every`, `keep_last`, logging) may change when
`accept_resume_changes` is set; "free" ones are never compared. The resolved config (the keys the
stage reads) is saved with every checkpoint and next to the trained model.
"""

from __future__ import annotations

import copy
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError
from ..yaml_files import read_yaml_with_lines

STAGES = ("pretrain", "unsupervised", "supervised")
PRETRAIN = ("pretrain",)
UNSUPERVISED = ("unsupervised",)
SUPERVISED = ("supervised",)
CONTRASTIVE = ("unsupervised", "supervised")
RESUME_KINDS = ("meaning", "harmless", "free")
# bundled, offline: Wikipedia paragraphs (stage 1), their sentences (stage 2), title -> paragraph pairs (stage 3)
DEFAULT_DATA = {"pretrain": {"type": "wiki_default"}, "unsupervised": {"type": "wiki_default"},
                "supervised": {"type": "wiki_demo"}}


def setting(default=MISSING, *, factory=MISSING, stages: tuple[str, ...] = STAGES, on_resume: str = "meaning",
            choices: tuple | None = None, minimum: float | None = None, above: float | None = None,
            below: float | None = None):
    """A config field: `default` (or `factory` for a mutable one), the stages that read it, what a change
    means on resume, and the allowed values (`choices`, `minimum` <= v, `above` < v, v < `below`)."""
    assert on_resume in RESUME_KINDS and set(stages) <= set(STAGES)
    metadata = {"stages": tuple(stages), "on_resume": on_resume, "choices": choices, "minimum": minimum,
                "above": above, "below": below}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StageConfig:
    stage: str = setting("pretrain", choices=STAGES)
    # backbone (Hub id / folder / default) or the previous stage's model folder
    model: str = setting("smollm2-135m")
    output_dir: str = setting("runs/pretrain", on_resume="free")  # checkpoints/, metrics.jsonl, loss_curve.png, model/
    # --- the encoder
    num_memory_tokens: int = setting(8, minimum=0)  # k; the paper finds 1-8 stable, 8 best; 0 for objective mntp
    max_length: int = setting(512, minimum=2)  # encoder input: BOS + text + k memory tokens
    dtype: str = setting("float32", choices=("float32", "fp32", "bfloat16", "bf16", "float16", "fp16", "auto"))
    attn_implementation: str = setting("sdpa", on_resume="harmless")  # same maths, another kernel
    lora: dict = setting(factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05})  # models/lora.py LoraSettings
    train_input_embeddings: bool = setting(False)  # the authors' release trained the whole embedding matrix
    gradient_checkpointing: bool = setting(False, on_resume="harmless")  # recomputes, same gradients
    # --- the objective
    objective: str = setting("kl", stages=PRETRAIN, choices=("kl", "nll", "reconstruction", "mntp"))  # mntp: LLM2Vec
    mask_ratio: float = setting(0.2, stages=PRETRAIN, above=0, below=1)  # mntp: share of tokens masked (LLM2Vec: 0.2)
    temperature: float = setting(0.05, stages=CONTRASTIVE, above=0)
    attention_dropout: float = setting(0.0, stages=UNSUPERVISED, minimum=0, below=1)  # SimCSE's views (paper: 0.2)
    # stage-1 terms beyond the paper (0 = off; see training/compression.py and docs/pretrain.md)
    reconstruction_weight: float = setting(0.0, stages=PRETRAIN, minimum=0)  # + w * reconstruction from the memory
    # + w * (1 - cos(memory mean, frozen LLM's mean-pooled context))
    alignment_weight: float = setting(0.0, stages=PRETRAIN, minimum=0)
    # + w * max(0, margin - (loss with another text's memory - own))
    margin_weight: float = setting(0.0, stages=PRETRAIN, minimum=0)
    margin: float = setting(1.0, stages=PRETRAIN, minimum=0)
    # 0: cosine alignment; > 0: in-batch InfoNCE alignment at this temperature
    alignment_temperature: float = setting(0.0, stages=PRETRAIN, minimum=0)
    memory_lr: float | None = setting(None, above=0)  # a separate lr for the k memory vectors (None: lr)
    cache_chunk_size: int = setting(0, stages=CONTRASTIVE, minimum=0)  # > 0: GradCache-cached loss, this chunk size
    query_max_length: int = setting(512, stages=SUPERVISED, minimum=1)
    document_max_length: int = setting(1024, stages=SUPERVISED, minimum=1)
    # --- data (see docs/pretrain.md for the source types)
    data: dict | None = setting(None)  # None: the stage's offline default (DEFAULT_DATA)
    min_chars: int = setting(0, stages=PRETRAIN, minimum=0)
    max_tokens: int = setting(512, stages=("pretrain", "unsupervised"), minimum=1)  # longer texts dropped
    max_samples: int | None = setting(None, minimum=1)  # after the seeded shuffle
    held_out_texts: int = setting(0, stages=PRETRAIN, minimum=0)  # texts kept out of training to measure the memory gap
    # log the memory gap on the held texts every N steps (0: only at the end)
    gap_every: int = setting(0, stages=PRETRAIN, minimum=0, on_resume="harmless")
    snapshot_steps: list = setting(factory=list, stages=PRETRAIN, on_resume="harmless")  # also save a model folder then
    # --- optimisation
    batch_size: int = setting(4, minimum=1)  # per process
    grad_accum: int = setting(1, minimum=1)
    lr: float = setting(1e-4, above=0)
    weight_decay: float = setting(1e-5, minimum=0)
    warmup_steps: int = setting(3200, minimum=0)
    max_steps: int = setting(32000, minimum=1, on_resume="harmless")  # raise it to extend a run
    max_grad_norm: float | None = setting(2.0, above=0)
    mixed_precision: str = setting("no", choices=("no", "bf16", "fp16"))
    seed: int = setting(42)
    save_every: int = setting(1000, minimum=0, on_resume="harmless")  # 0: only at the end
    keep_last: int = setting(3, minimum=0, on_resume="harmless")  # 0: keep every checkpoint
    log_every: int = setting(10, minimum=1, on_resume="harmless")
    # resume even though harmless settings changed (`--accept-resume-changes`)
    accept_resume_changes: bool = setting(False, on_resume="free")

    def __post_init__(self):
        for spec in fields(self):
            setattr(self, spec.name, check_value(spec, getattr(self, spec.name)))
        if self.data is None:
            self.data = dict(DEFAULT_DATA[self.stage])
        if self.objective == "mntp" and self.num_memory_tokens != 0 and self.stage == "pretrain":
            raise ConfigError(f"objective mntp (LLM2Vec) trains the encoder without memory tokens and embeds with "
                              f"mean pooling: set num_memory_tokens: 0 (got {self.num_memory_tokens})")
        if (self.objective != "mntp" or self.stage != "pretrain") and self.num_memory_tokens < 1:
            stage_objective = f" for objective {self.objective!r}" if self.stage == "pretrain" else ""
            raise ConfigError(f"num_memory_tokens must be >= 1{stage_objective}, got {self.num_memory_tokens} "
                              "(only stage-1 objective mntp trains without memory tokens)")
        if self.max_length <= self.num_memory_tokens + 1:
            raise ConfigError(f"max_length ({self.max_length}) must leave room for BOS, text and "
                              f"{self.num_memory_tokens} memory tokens")
        check_data_block(self.stage, self.data)

    def to_dict(self) -> dict:
        """The settings this stage reads (what checkpoints and `training_config.yaml` record)."""
        return {key: value for key, value in asdict(self).items() if self.stage in stages_reading(key)}


FIELDS = {spec.name: spec for spec in fields(StageConfig)}


def check_data_block(stage: str, data: dict) -> None:
    """The `data:` block's keys, for the reader of `stage` (nothing is read yet)."""
    if stage == "supervised":
        from ..data.pairs import check_pair_source

        check_pair_source(data)
    else:
        from ..data.sources import SourceSpec

        try:
            SourceSpec.from_config(data)
        except ConfigError as error:
            raise ConfigError(f"data: {error}") from None


def stages_reading(key: str) -> tuple[str, ...]:
    return FIELDS[key].metadata.get("stages", STAGES)


def resume_kind(key: str) -> str:
    """"meaning", "harmless" or "free" (module docstring); unknown keys count as "meaning"."""
    return FIELDS[key].metadata.get("on_resume", "meaning") if key in FIELDS else "meaning"


def default_value(key: str):
    spec = FIELDS[key]
    return spec.default_factory() if spec.default is MISSING else spec.default


_HINTS = typing.get_type_hints(StageConfig)
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
               dict: "a mapping ({key: value, ...})", list: "a list"}


def _converted(value, hint):
    """`value` as type `hint`, or raise TypeError (bool is not a number; an int is a float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        for member in members:
            try:
                return _converted(value, member)
            except TypeError:
                continue
        raise TypeError(" or ".join(_TYPE_NAMES.get(m, str(m)) for m in members) + " or null")
    kind = origin or hint
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError(_TYPE_NAMES[float]) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError(_TYPE_NAMES[float])
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(_TYPE_NAMES[int])
    if kind in (bool, str, list):
        if isinstance(value, kind):
            return value
        raise TypeError(_TYPE_NAMES[kind])
    if kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(_TYPE_NAMES[dict])
    return value  # another annotation: not checked here


def _non_finite(value, where: str = "") -> str | None:
    """"" (the value itself), ".key" / "[i]" (inside it) where a NaN or infinite float is, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where
    if isinstance(value, Mapping):
        items = ((f"{where}.{key}", item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for inner, item in items if (found := _non_finite(item, inner)) is not None), None)


def _find(value, where: str):
    """The element of `value` that `_non_finite` named."""
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", where):
        value = value[part[0]] if part[0] else value[int(part[1])]
    return value


def check_value(spec, value):
    """`value` converted to field `spec`'s type and checked against its choices and bounds."""
    name, meta = spec.name, spec.metadata
    try:
        value = _converted(value, _HINTS[name])
    except TypeError as error:
        raise ConfigError(f"{name} must be {error}, got {value!r} ({type(value).__name__})") from None
    if value is None:
        return value
    bad = _non_finite(value)
    if bad is not None:
        inner = f"{name}{bad}"
        raise ConfigError(f"{inner} must be a finite number, got {_find(value, bad)!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
    bounds = [(meta.get("minimum"), lambda v, b: v >= b, ">="), (meta.get("above"), lambda v, b: v > b, ">"),
              (meta.get("below"), lambda v, b: v < b, "<")]
    for bound, holds, sign in bounds:
        if bound is not None and not holds(value, bound):
            raise ConfigError(f"{name} must be {sign} {bound:g}, got {value!r}")
    if name == "lora":
        from ..models.lora import LoraSettings

        LoraSettings.from_mapping(value)
    return value


# ---------------------------------------------------------------------------------------------- reading
Locate = Callable[[str], str]  # key (dotted) -> "file.yaml:7" or "--key (command line)"


def stage_config_from(values: dict, locate: Locate = lambda key: key, *, stage_label: str | None = None
                      ) -> StageConfig:
    """A StageConfig from explicit `values`; every error names where the offending key was set."""
    stage = values.get("stage", default_value("stage"))
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{locate(unknown[0])}: unknown config key {unknown[0]!r}"
                          + (f" (also unknown: {unknown[1:]})" if unknown[1:] else "")
                          + f"; known keys: {sorted(FIELDS)}")
    if stage in STAGES:
        for key in values:
            readers = stages_reading(key)
            if stage not in readers:
                raise ConfigError(f"{locate(key)}: stage {stage_label or stage!r} does not read {key!r} (only "
                                  f"{', '.join(readers)} {'does' if len(readers) == 1 else 'do'}); remove it")
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = check_value(FIELDS[key], value)
            if key == "data" and checked[key] is not None:
                check_data_block(stage, checked[key])
        except ConfigError as error:
            raise ConfigError(f"{locate(key)}: {error}") from None
    try:
        return StageConfig(**checked)
    except ConfigError as error:
        raise ConfigError(f"{stage_label or stage} config: {error}") from None


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text) if text != "" else ""


def parse_overrides(overrides: list[str]) -> list[tuple[str, object]]:
    """`["--lr", "3e-5", "--lora.r", "8", "--name=value"]` -> [("lr", 3e-05), ("lora.r", 8), ...]."""
    tokens, parsed = list(overrides), []
    while tokens:
        key = tokens.pop(0)
        if not key.startswith("--"):
            raise ConfigError(f"expected --key value, got {key!r}")
        key = key[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif tokens and not tokens[0].startswith("--"):
            value = tokens.pop(0)
        else:
            raise ConfigError(f"--{key} needs a value")
        parsed.append((key.replace("-", "_"), _parse_value(value)))
    return parsed


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`["--lr", "3e-5", "--lora.r", "8", "--name=value"]` -> nested updates of `data` (a copy)."""
    data = copy.deepcopy(data)
    for key, value in parse_overrides(overrides):
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--{key}: {parent} is not a section")
        target[leaf] = value
    return data


def locator(path: Path | None, lines: dict, overrides: list[str], prefix: tuple[str, ...] = ()) -> Locate:
    """Where a key was set: the last `--key` override that names it, else its line in the file."""
    overridden = {key for key, _ in parse_overrides(overrides)}

    def locate(key: str) -> str:
        for name in (key, *(f"{'.'.join(prefix[i:])}.{key}" for i in range(len(prefix)))):
            if name in overridden or any(o.startswith(name + ".") for o in overridden):
                return f"--{name} (command line)"
        for candidate in (prefix + tuple(key.split(".")), tuple(key.split("."))):
            if candidate in lines:
                return f"{path}:{lines[candidate]}"
        return str(path) if path else f"config key {key!r}"

    return locate


def load_stage_config(path: str | Path | None = None, overrides: list[str] = (), **defaults) -> StageConfig:
    """A single-stage config from a YAML file, `--key value` overrides and keyword defaults.

    A `stage` given as a default (`--stage` on the command line) must agree with the file's.
    """
    data: dict = dict(defaults)
    lines: dict = {}
    if path is not None:
        path = Path(path)
        loaded, lines = read_yaml_with_lines(path)
        if loaded is None or loaded == {}:  # never the large built-in defaults by accident
            raise ConfigError(f"{path}: the file holds no settings (it is empty or only comments), so it "
                              "would run the large built-in defaults; write the settings the run needs, or start "
                              "from a shipped config such as configs/pretrain_quickstart.yaml")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values, got {type(loaded).__name__}")
        if "stage" in defaults and "stage" in loaded and loaded["stage"] != defaults["stage"]:
            raise ConfigError(f"{path}:{lines.get(('stage',), '?')}: the file is a {loaded['stage']!r} config but "
                              f"--stage {defaults['stage']} was given; drop --stage or use a "
                              f"{defaults['stage']} config")
        data.update(loaded)
    data = apply_overrides(data, list(overrides))
    return stage_config_from(data, locator(path, lines, list(overrides)))
